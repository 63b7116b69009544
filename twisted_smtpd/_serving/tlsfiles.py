# -*- test-case-name: tests.test_tls -*-
"""
The files of the server's TLS configuration: certificate chains and their
private keys, CA bundles, read (regular files of bounded size only) and
checked (the key matches the first certificate, a supported key type),
and the SNI host names they are served for.
"""

from __future__ import annotations

import re
from typing import Any

from attrs import frozen
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from OpenSSL import crypto

from twisted_smtpd._core.files import readRegular

_PRIVATE_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    dsa.DSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


@frozen
class _Credentials:
    """
    A certificate chain and its private key, loaded and checked.

    @ivar certificate: The leaf certificate.
    @ivar chain: The certificates that follow it in the file.
    @ivar key: The private key.
    @ivar name: The certificate file's path, for errors.
    """

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: Any
    name: str = ""


def _read(path: str, what: str) -> bytes:
    """
    A certificate, key or CA file: a regular file of at most
    L{FILE_LIMIT <twisted_smtpd._core.files.FILE_LIMIT>} bytes.  A path
    naming something else, such as C{/dev/zero}, a log file or a named
    pipe, is refused before it fills the memory or blocks the start.

    @raise ValueError: C{"cannot read <what> <path>: <why>"}.
    """
    try:
        return readRegular(path, what)
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror or e}") from e


#: Where a PEM certificate block starts (OpenSSL reads both labels).
_BEGIN_CERTIFICATE = re.compile(rb"-----BEGIN (?:X509 )?CERTIFICATE-----")


def _loadCertificates(data: bytes, what: str, path: str) -> list[x509.Certificate]:
    """
    Every certificate of a PEM file, in order: all of them or none, as
    OpenSSL reads a chain file.  A block that cannot be read (corrupt, or
    truncated by a copy cut short) is an error naming it, not one
    certificate fewer or "no PEM certificate" for the whole file.

    @param what: How errors name the file (C{"certificate"}).
    @raise ValueError: C{"cannot read <what> <path>: ..."}.
    """
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    starts = [match.start() for match in _BEGIN_CERTIFICATE.finditer(data)]
    if certificates and len(certificates) == len(starts):
        _checkUsable(certificates, what, path)
        return certificates
    bounds = [*starts, len(data)]
    for number in range(1, len(starts) + 1):
        try:
            x509.load_pem_x509_certificate(data[bounds[number - 1] : bounds[number]])
        except ValueError:
            raise ValueError(
                f"cannot read {what} {path}: its certificate number {number} (of {len(starts)})"
                " is corrupt or truncated"
            ) from None
    if certificates:
        _checkUsable(certificates, what, path)
        return certificates
    raise ValueError(f"cannot read {what} {path}: no PEM certificate")


def _checkUsable(certificates: list[x509.Certificate], what: str, path: str) -> None:
    """
    Refuse a certificate C{cryptography} read but OpenSSL does not (a name
    whose UTF8String is not UTF-8), which would fail with pyOpenSSL's
    error, not naming the file, where its contexts are made.

    @raise ValueError: C{"cannot read <what> <path>: ..."}.
    """
    for number, certificate in enumerate(certificates, 1):
        try:
            crypto.X509.from_cryptography(certificate)
        except crypto.Error as e:
            reasons = e.args[0] if e.args and isinstance(e.args[0], list) else []
            why = str(reasons[0][-1]) if reasons and reasons[0] else "OpenSSL cannot read it"
            raise ValueError(
                f"cannot read {what} {path}: its certificate number {number}"
                f" (of {len(certificates)}) cannot be used: {why}"
            ) from None


def _parseCredentials(
    certificatePEM: bytes,
    keyPEM: bytes,
    certificateName: str,
    keyName: str,
    what: tuple[str, str] = ("certificate", "private key"),
) -> _Credentials:
    certificateWhat, keyWhat = what
    certificates = _loadCertificates(certificatePEM, certificateWhat, certificateName)
    try:
        key = serialization.load_pem_private_key(keyPEM, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ValueError(f"cannot read {keyWhat} {keyName}: no unencrypted PEM private key") from e
    if not isinstance(key, _PRIVATE_KEY_TYPES):
        raise ValueError(f"cannot read {keyWhat} {keyName}: unsupported key type")
    if certificates[0].public_key() != key.public_key():
        matching = [c.public_key() == key.public_key() for c in certificates]
        if any(matching):
            raise ValueError(
                f"cannot read {certificateWhat} {certificateName}: the certificate of {keyName} is"
                f" number {matching.index(True) + 1} of {len(certificates)}; the file must"
                " start with it, its chain after it"
            )
        raise ValueError(
            f"cannot read {certificateWhat} {certificateName}: it does not match {keyName}"
        )
    return _Credentials(certificates[0], tuple(certificates[1:]), key, certificateName)


def _readCredentials(
    certificatePath: str,
    keyPath: str | None,
    what: tuple[str, str] = ("certificate", "private key"),
) -> _Credentials:
    """
    Load a certificate chain file and its key (from C{keyPath}, or from the
    certificate file when C{None}).

    @param what: How errors name the certificate file and the key file.
    @raise ValueError: Naming the file that cannot be read or used.
    """
    certificatePEM = _read(certificatePath, what[0])
    keyPEM = certificatePEM if keyPath is None else _read(keyPath, what[1])
    return _parseCredentials(
        certificatePEM, keyPEM, certificatePath, keyPath or certificatePath, what
    )


def _readAuthorities(path: str) -> tuple[x509.Certificate, ...]:
    return tuple(_loadCertificates(_read(path, "CA certificates"), "CA certificates", path))
