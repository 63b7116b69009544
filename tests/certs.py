# -*- test-case-name: tests.test_tls -*-
"""
Certificates for tests, made on the fly with C{cryptography}: a CA, server
certificates for host names, client certificates, written as PEM files.

    ca = CertificateAuthority(self.mktemp())
    server = ca.server("mail.example.com")       # server.certificatePath, .keyPath
    client = ca.client("alice")                  # signed for clientAuth
    ServerTLS(server.certificatePath, server.keyPath, caCertificates=ca.certificatePath)

Keys are EC P-256, quick to make (RSA 2048 when asked, C{rsaKey=True}).
Every file lands in the directory given to the CA, named after the
certificate.  L{TLSClient} is a client connection
creator for in-memory handshakes (C{TLSMemoryBIOFactory} with
C{twisted.test.iosim}).
"""

from __future__ import annotations

import datetime
import itertools
import os
import re

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

_counter = itertools.count(1)


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


@frozen
class IssuedCertificate:
    """
    A certificate and its key, in memory and on disk.

    @ivar certificate: The certificate (C{cryptography}).
    @ivar key: Its private key.
    @ivar certificatePath: PEM file holding the certificate (then the CA
        certificate, when issued with C{chain=True}).
    @ivar keyPath: PEM file holding the key.
    @ivar combinedPath: PEM file holding the certificate followed by the key.
    """

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    certificatePath: str
    keyPath: str
    combinedPath: str

    @property
    def certificatePEM(self) -> bytes:
        """
        The certificate alone, PEM.
        """
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def keyPEM(self) -> bytes:
        """
        The unencrypted PKCS#8 key, PEM.
        """
        return _pem(self.key)


class CertificateAuthority:
    """
    A self-signed CA that issues server and client certificates into
    C{directory}.

    @ivar certificate: The CA certificate.
    @ivar certificatePath: PEM file holding it (give it as C{caCertificates}).
    """

    def __init__(self, directory: str, commonName: str = "twisted-smtpd test CA") -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.certificatePath = _write(
            self._path(commonName, "ca.pem"),
            self.certificate.public_bytes(serialization.Encoding.PEM),
        )

    def _path(self, label: str, suffix: str) -> str:
        safe = re.sub(r"[^A-Za-z0-9.-]", "_", label) or "cert"
        return os.path.join(self.directory, f"{next(_counter)}-{safe}-{suffix}")

    def issue(
        self,
        commonName: str,
        dnsNames: tuple[str, ...] = (),
        *,
        client: bool = False,
        chain: bool = False,
        notBefore: datetime.datetime | None = None,
        notAfter: datetime.datetime | None = None,
        rsaKey: bool = False,
    ) -> IssuedCertificate:
        """
        Sign a new certificate and write its files.

        @param commonName: The subject's CN.
        @param dnsNames: Subject alternative names (DNS).
        @param client: For client authentication rather than a server.
        @param chain: Append the CA certificate to the certificate file.
        @param notBefore: Start of validity (default: a day ago).
        @param notAfter: End of validity (default: in 30 days).
        @param rsaKey: An RSA key rather than an EC one.
        """
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        if rsaKey:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(notBefore or now - datetime.timedelta(days=1))
            .not_valid_after(notAfter or now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if dnsNames:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in dnsNames]),
                critical=False,
            )
        certificate = builder.sign(self._key, hashes.SHA256())
        certificatePEM = certificate.public_bytes(serialization.Encoding.PEM)
        if chain:
            certificatePEM += self.certificate.public_bytes(serialization.Encoding.PEM)
        return IssuedCertificate(
            certificate=certificate,
            key=key,
            certificatePath=_write(self._path(commonName, "cert.pem"), certificatePEM),
            keyPath=_write(self._path(commonName, "key.pem"), _pem(key)),
            combinedPath=_write(self._path(commonName, "combined.pem"), certificatePEM + _pem(key)),
        )

    def server(self, hostname: str, *moreNames: str) -> IssuedCertificate:
        """
        A server certificate for C{hostname} (CN and first DNS name) and
        C{moreNames}.
        """
        return self.issue(hostname, (hostname, *moreNames))

    def client(self, commonName: str) -> IssuedCertificate:
        """
        A client certificate for C{commonName}.
        """
        return self.issue(commonName, client=True)


@implementer(IOpenSSLClientConnectionCreator)
class TLSClient:
    """
    A test TLS client: sends an SNI name and a client certificate when told,
    verifies nothing (tests inspect what the server sent), and can be held
    to old protocol versions.
    """

    def __init__(
        self,
        servername: str | None = None,
        certificate: IssuedCertificate | None = None,
        maximumVersion: int | None = None,
    ) -> None:
        """
        @param servername: The SNI name to send, or C{None} for none.
        @param certificate: The client certificate to offer when asked.
        @param maximumVersion: An C{OpenSSL.SSL.TLS1_*_VERSION}; when given,
            every version and cipher down to TLS 1.0 is offered too.
        """
        self.servername = servername
        self.certificate = certificate
        self.maximumVersion = maximumVersion

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        """
        A new client connection (L{IOpenSSLClientConnectionCreator}).
        """
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        if self.maximumVersion is not None:
            context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
            context.set_min_proto_version(SSL.TLS1_VERSION)
            context.set_max_proto_version(self.maximumVersion)
        if self.certificate is not None:
            context.use_certificate(self.certificate.certificate)
            context.use_privatekey(self.certificate.key)
        connection = SSL.Connection(context, None)
        if self.servername is not None:
            connection.set_tlsext_host_name(self.servername.encode("ascii"))
        return connection
