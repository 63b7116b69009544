# -*- test-case-name: tests.test_tls -*-
"""
The self-signed certificate a server serves when none is configured.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from twisted_smtpd._core.address import literalAddress

#: The keys L{selfSignedBuilder} makes certificates for.
SelfSignableKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | dsa.DSAPrivateKey


def _subjectAlternativeName(hostname: str) -> x509.GeneralName:
    """
    The name a self-signed certificate for C{hostname} is for: an IP
    address for an address or an address literal (C{[192.0.2.1]},
    C{[IPv6:2001:db8::1]}, L{literalAddress}), else a DNS name in A-labels (RFC 5280 section
    7.2), else, when IDNA cannot encode it, C{twisted-smtpd}.
    """
    address = literalAddress(hostname)
    if address is None:
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(hostname)
    if address is not None:
        return x509.IPAddress(address)
    try:
        return x509.DNSName(hostname.encode("idna").decode("ascii"))
    except UnicodeError:
        return x509.DNSName("twisted-smtpd")


def selfSignedCertificate(hostname: str = "localhost") -> tuple[bytes, bytes]:
    """
    Make a self-signed server certificate: an EC P-256 key, the subject
    alternative name C{hostname} (a DNS name, or an IP address, see
    L{_subjectAlternativeName}), valid for a year from an hour ago.  Any
    name gives a certificate: one that cannot be its common name (empty,
    longer than 64 characters, not encodable as UTF-8) gives the common
    name C{twisted-smtpd}.

    @return: The certificate and the unencrypted PKCS#8 private key, both PEM.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    commonName = hostname
    try:
        hostname.encode("utf-8")
    except UnicodeError:
        commonName = ""
    if not 0 < len(commonName) <= 64:
        commonName = "twisted-smtpd"
    alternative = _subjectAlternativeName(hostname)
    certificate = (
        selfSignedBuilder(key, commonName)
        .add_extension(x509.SubjectAlternativeName([alternative]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def selfSignedBuilder(key: SelfSignableKey, commonName: str) -> x509.CertificateBuilder:
    """
    A certificate of C{key}'s public key issued by itself to C{commonName},
    valid for a year from an hour ago, with a random serial number, to be
    signed with C{key}.
    """
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
    )
