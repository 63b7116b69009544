# -*- test-case-name: tests.test_workercert -*-
"""
Tests for L{twisted_smtpd._twistd.workercert}: one self-signed certificate made by
the parent of C{--workers} for all its workers.
"""

from __future__ import annotations

import hashlib
import os
import stat

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._twistd.tap import Options, makeService
from twisted_smtpd._twistd.workercert import SHARED_CERTIFICATE, SharedCertificate
from twisted_smtpd._twistd.workers import WorkerPool


class FakePool(Service):
    """
    A workers' parent that records the arguments its workers would get when
    it starts, and stops when told to.
    """

    def __init__(self) -> None:
        self.extraArguments: list[str] = []
        self.extraEnvironment: dict[str, str] = {}
        self.startedWith: list[str] | None = None
        self.stopped: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        self.startedWith = list(self.extraArguments)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.stopped


class SharedCertificateTests(SynchronousTestCase):
    """
    L{SharedCertificate} makes the certificate before the workers start and
    removes it once they have stopped.
    """

    def test_certificateForWorkers(self) -> None:
        """
        At start a certificate for the host name and its key are written,
        readable by their owner only, in a directory only its owner may
        enter; the workers get both with C{--tls-cert} and C{--tls-key};
        one warning names the certificate's fingerprint.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        pool = FakePool()
        shared = SharedCertificate(pool, pool, "mx.example.com")
        shared.startService()
        # The workers stop (after the service is told to), so that the
        # directory and the private key in it are removed.
        self.addCleanup(pool.stopped.callback, None)
        self.addCleanup(shared.stopService)
        directory = shared.directory
        assert directory is not None and pool.startedWith is not None
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)
        flag, certificatePath, keyFlag, keyPath = pool.startedWith
        self.assertEqual((flag, keyFlag), ("--tls-cert", "--tls-key"))
        # Told to the workers, which remove it if this process is killed.
        self.assertEqual(pool.extraEnvironment, {SHARED_CERTIFICATE: directory})
        for path in (certificatePath, keyPath):
            self.assertEqual(os.path.dirname(path), directory)
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(certificatePath, "rb") as f:
            certificate = x509.load_pem_x509_certificate(f.read())
        with open(keyPath, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
        self.assertEqual(
            certificate.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(names.value.get_values_for_type(x509.DNSName), ["mx.example.com"])
        fingerprint = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER))
        self.assertEqual(len(events), 1)
        self.assertIn(
            f"(SHA-256 {fingerprint.hexdigest()}) from every worker", formatEvent(events[0])
        )

    def test_removedOnceWorkersStopped(self) -> None:
        """
        The directory stays while the workers are stopping (one restarting
        or reloading still reads it) and is removed once they have stopped.
        """
        pool = FakePool()
        shared = SharedCertificate(pool, pool, "mx.example.com")
        shared.startService()
        directory = shared.directory
        assert directory is not None
        d = shared.stopService()
        self.assertNoResult(d)
        self.assertTrue(os.path.isdir(directory))
        pool.stopped.callback(None)
        self.successResultOf(d)
        self.assertFalse(os.path.exists(directory))
        self.assertIsNone(shared.directory)


class MakeServiceTests(SynchronousTestCase):
    """
    C{makeService} shares one certificate among the workers only when none
    is configured.
    """

    def parse(self, *arguments: str) -> Options:
        config = Options()
        config.parseOptions(
            ["--workers", "2", "--sink", "--listen", "tcp:0:interface=127.0.0.1", *arguments]
        )
        listeners = config["workerListeners"]
        self.addCleanup(lambda: [s.close() for spec in listeners for s in spec.sockets])
        return config

    def test_noCertificate(self) -> None:
        """
        Without C{--tls-cert} the workers' parent runs inside a
        L{SharedCertificate} for C{--hostname}.
        """
        service = makeService(self.parse("--hostname", "mx.example.com"))
        self.assertIsInstance(service, SharedCertificate)
        assert isinstance(service, SharedCertificate)
        self.assertEqual(service._hostname, "mx.example.com")
        self.assertIsInstance(service._pool, WorkerPool)
        self.assertEqual(list(service), [service._pool])

    def test_starttlsDisabled(self) -> None:
        """
        With STARTTLS disabled no certificate is made.
        """
        self.assertIsInstance(makeService(self.parse("--disable", "STARTTLS")), WorkerPool)

    def test_configuredCertificate(self) -> None:
        """
        With C{--tls-cert} the workers use it: no certificate is made.
        """
        from tests.certs import CertificateAuthority

        directory = self.mktemp()
        os.makedirs(directory)
        issued = CertificateAuthority(directory).server("mx.example.com")
        config = self.parse("--tls-cert", issued.certificatePath, "--tls-key", issued.keyPath)
        self.assertIsInstance(makeService(config), WorkerPool)
