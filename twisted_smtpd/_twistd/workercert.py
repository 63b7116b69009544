# -*- test-case-name: tests.test_workercert -*-
"""
One self-signed certificate for every worker of C{--workers}.

Without a configured certificate each server makes a self-signed one when it
starts.  Were each worker to make its own, one server would present as many
certificates as it has workers, at random, and a client pinning the first
one it saw (or an operator publishing the fingerprint) would see it change
from one connection to the next.  The parent makes one instead, writes it to
a private directory and hands both files to every worker with C{--tls-cert}
and C{--tls-key}; the directory is removed once the workers have stopped.
A parent killed outright (SIGKILL, the OOM killer) cannot remove it: its
workers, which learn of its death (L{ParentWatch
<twisted_smtpd._twistd.workerside.ParentWatch>}) and are told the directory
(L{SHARED_CERTIFICATE}), remove it then, so that no copy of the private key
stays behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import suppress
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from twisted_smtpd._serving.selfsigned import selfSignedCertificate
from twisted_smtpd._twistd.logfile import GivesLogObserver

#: The environment variable naming, to each worker, the directory its
#: parent made for the shared certificate.
SHARED_CERTIFICATE = "TWISTED_SMTPD_SHARED_CERTIFICATE"

#: The files in that directory.
_FILES = ("cert.pem", "key.pem")


def removeSharedCertificate(directory: str) -> None:
    """
    Remove the certificate and key files L{SharedCertificate} wrote, then
    their directory; only those (a directory holding anything else stays).
    """
    for name in _FILES:
        with suppress(OSError):
            os.unlink(os.path.join(directory, name))
    with suppress(OSError):
        os.rmdir(directory)


def _writePrivate(path: str, data: bytes) -> None:
    """
    Write C{data} to the new file C{path}, readable by its owner only.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class SharedCertificate(GivesLogObserver, MultiService):
    """
    Run C{service} (the workers' parent) with a self-signed certificate for
    C{hostname} made for all its workers.

    @ivar directory: The private (0700) directory holding C{cert.pem} and
        C{key.pem} while running, else C{None}.
    """

    _log = Logger()

    def __init__(self, service: IService, pool: Any, hostname: str) -> None:
        """
        @param service: The service to run (the L{WorkerPool
            <twisted_smtpd._twistd.workers.WorkerPool>}, or a service holding it).
        @param pool: The L{WorkerPool <twisted_smtpd._twistd.workers.WorkerPool>}
            whose workers get the certificate.
        @param hostname: The name the certificate is for.
        """
        super().__init__()
        self._pool = pool
        self._hostname = hostname
        self.directory: str | None = None
        service.setServiceParent(self)

    def startService(self) -> None:
        """
        Make the certificate and its key, then start the workers with them.
        """
        directory = tempfile.mkdtemp(prefix="smtpd-tls-")
        os.chmod(directory, 0o700)
        self.directory = directory
        certificatePEM, keyPEM = selfSignedCertificate(self._hostname)
        certificate = os.path.join(directory, "cert.pem")
        key = os.path.join(directory, "key.pem")
        _writePrivate(key, keyPEM)
        _writePrivate(certificate, certificatePEM)
        fingerprint = hashlib.sha256(
            x509.load_pem_x509_certificate(certificatePEM).public_bytes(serialization.Encoding.DER)
        ).hexdigest()
        self._log.warn(
            "No TLS certificate configured: serving a self-signed certificate for "
            "{hostname} (SHA-256 {fingerprint}) from every worker; clients that verify "
            "certificates will refuse it",
            hostname=self._hostname,
            fingerprint=fingerprint,
        )
        self._pool.extraArguments = ["--tls-cert", certificate, "--tls-key", key]
        self._pool.extraEnvironment = {SHARED_CERTIFICATE: directory}
        super().startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop the workers, then remove the certificate's directory.
        """
        d: Deferred[Any] = maybeDeferred(super().stopService)

        def removeDirectory(result: object) -> object:
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None
            return result

        return d.addBoth(removeDirectory)
