"""
Tests for the files the parent of C{twistd smtpd --workers} read at start
and hands to its workers: L{twisted_smtpd._core.files} keeping and using
them, L{twisted_smtpd._twistd.startcopies} passing them on, and
L{WorkerPool} giving them to each worker it starts.
"""

from __future__ import annotations

import os

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import CertificateAuthority
from tests.test_workers import _PoolTestCase
from twisted_smtpd._core import files
from twisted_smtpd._core.files import (
    checkReadable,
    forgetStartCopies,
    keepReads,
    keptReads,
    readLimited,
    readRegular,
    useStartCopies,
)
from twisted_smtpd._twistd import workers
from twisted_smtpd._twistd.startcopies import START_COPIES, copiesFile, useCopiesFromParent
from twisted_smtpd._twistd.tap import Options
from twisted_smtpd._twistd.tapservice import makeService
from twisted_smtpd._twistd.workers import WorkerPool


class _CopiesTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        keptReads()
        self.addCleanup(forgetStartCopies)
        self.addCleanup(keptReads)

    def write(self, name: str, content: bytes) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(content)
        return path


class FileCopiesTests(_CopiesTestCase):
    """
    Reading a file this process cannot open from its parent's copy, and
    keeping what is read.
    """

    def test_copyStandsInForMissingFile(self) -> None:
        """
        A file that cannot be opened is read from the copy, until the
        copies are forgotten.
        """
        path = os.path.join(self.directory, "gone.pem")
        useStartCopies({path: b"copied"})
        self.assertEqual(readRegular(path, "certificate"), b"copied")
        checkReadable(path)
        forgetStartCopies()
        self.assertRaises(FileNotFoundError, readRegular, path, "certificate")
        self.assertRaises(FileNotFoundError, checkReadable, path)

    def test_fileReadFirst(self) -> None:
        """
        A file that can be opened is read, whatever the copy holds: it may
        have changed since the start.
        """
        path = self.write("key.pem", b"on disk")
        useStartCopies({path: b"copied"})
        self.assertEqual(readRegular(path, "key"), b"on disk")

    def test_copyWithinLimit(self) -> None:
        """
        A copy is read within the limit as a file is: one byte more than
        the limit, for the caller to refuse.
        """
        path = os.path.join(self.directory, "gone.conf")
        useStartCopies({path: b"0123456789"})
        self.assertEqual(readLimited(path, 4), b"01234")
        self.assertRaises(ValueError, readRegular, path, "file", 4)

    def test_otherPathsUntouched(self) -> None:
        """
        Only the paths copied stand in.
        """
        useStartCopies({os.path.join(self.directory, "a"): b"a"})
        self.assertRaises(
            FileNotFoundError, readRegular, os.path.join(self.directory, "b"), "certificate"
        )

    def test_keptReads(self) -> None:
        """
        Between L{keepReads} and L{keptReads}, every file read whole and
        within its limit is kept, by its path as given; a file checked
        with L{checkReadable} is read so that it is kept too.
        """
        certificate = self.write("cert.pem", b"certificate")
        ca = self.write("ca.pem", b"authorities")
        large = self.write("large", b"x" * 10)
        readRegular(certificate, "certificate")
        keepReads()
        readRegular(certificate, "certificate")
        checkReadable(ca)
        self.assertRaises(ValueError, readRegular, large, "file", 4)
        self.assertEqual(keptReads(), {certificate: b"certificate", ca: b"authorities"})
        readRegular(certificate, "certificate")
        self.assertEqual(keptReads(), {})

    def test_notKeptByDefault(self) -> None:
        """
        Without L{keepReads}, nothing is kept.
        """
        readRegular(self.write("cert.pem", b"certificate"), "certificate")
        self.assertIsNone(files._kept)


class PassedToWorkerTests(_CopiesTestCase):
    """
    L{copiesFile} and L{useCopiesFromParent}: the copies through an
    inherited descriptor.
    """

    def test_roundTrip(self) -> None:
        """
        What the parent wrote is what the worker reads, paths that are not
        UTF-8 (as a command line gives them) and any bytes included; the
        worker closes the descriptor and drops the variable.
        """
        odd = os.path.join(self.directory, "k\udcffey.pem")
        copies = {odd: bytes(range(256)), os.path.join(self.directory, "c.pem"): b""}
        fd = copiesFile(copies)
        inherited = os.dup(fd)
        self.addCleanup(os.close, fd)
        environ = {START_COPIES: str(inherited), "OTHER": "1"}
        useCopiesFromParent(environ)
        self.assertEqual(environ, {"OTHER": "1"})
        self.assertEqual(files._startCopies, copies)
        self.assertRaises(OSError, os.fstat, inherited)

    def test_eachWorkerReadsAll(self) -> None:
        """
        The descriptor's position is shared by the parent and every worker:
        each reads the whole file wherever it stands.
        """
        path = os.path.join(self.directory, "key.pem")
        fd = copiesFile({path: b"key" * 30_000})
        self.addCleanup(os.close, fd)
        for _ in range(2):
            useCopiesFromParent({START_COPIES: str(os.dup(fd))})
            self.assertEqual(files._startCopies, {path: b"key" * 30_000})

    def test_noCopies(self) -> None:
        """
        Without the variable, or with one that names no descriptor, no copy
        is used.
        """
        for environ in ({}, {START_COPIES: "x"}, {START_COPIES: "987654"}):
            useCopiesFromParent(environ)
            self.assertEqual(files._startCopies, {})


class PoolCopiesTests(_PoolTestCase):
    """
    L{WorkerPool} hands its copies to every worker it starts.
    """

    def test_everyWorkerInherits(self) -> None:
        """
        Each worker, and one started again, inherits the one descriptor of
        the copies at the number its environment names; it is closed once
        the pool has stopped.
        """
        pool, clock, _ = self.pool(startCopies={"/etc/key.pem": b"key"})
        clock.spawned[0][0].processEnded(Failure(ProcessTerminated(1)))
        clock.advance(60)
        self.assertEqual(len(clock.spawned), 3)
        given = {
            childFDs[int(environ[START_COPIES])]
            for environ, childFDs in zip(clock.environments, clock.childFDs, strict=True)
        }
        self.assertEqual(len(given), 1)
        (descriptor,) = given
        assert isinstance(descriptor, int)
        os.fstat(descriptor)
        stopping = pool.stopService()
        for worker, _ in clock.spawned:
            if not worker.ended.called:
                worker.processEnded(Failure(ProcessDone(0)))
        self.successResultOf(stopping)
        self.assertRaises(OSError, os.fstat, descriptor)

    def test_noCopiesNoDescriptor(self) -> None:
        """
        Without copies, no descriptor and no variable.
        """
        _, clock, _ = self.pool()
        for environ in clock.environments:
            self.assertNotIn(START_COPIES, environ)


class OptionsCopiesTests(_CopiesTestCase):
    """
    C{twistd smtpd --workers}: the parent's service hands its workers the
    files its options read.
    """

    def test_parentKeepsWhatOptionsRead(self) -> None:
        """
        The configuration file, the certificate and the key read while the
        options were parsed are the pool's copies.
        """
        issued = CertificateAuthority(self.directory).server("mail.example.com")
        config = self.write("smtpd.conf", b"[smtpd]\nbanner = hello\n")
        options = Options()
        options.parseOptions(
            [
                "--config",
                config,
                "--workers",
                "2",
                "--sink",
                "--tls-cert",
                issued.certificatePath,
                "--tls-key",
                issued.keyPath,
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ]
        )
        listeners = options["workerListeners"]
        self.addCleanup(lambda: [s.close() for spec in listeners for s in spec.sockets])
        service = makeService(options)
        pools = [s for s in _services(service) if isinstance(s, WorkerPool)]
        self.assertEqual(len(pools), 1)
        copies = pools[0]._startCopies
        with open(issued.keyPath, "rb") as f:
            self.assertEqual(copies[issued.keyPath], f.read())
        self.assertEqual(
            set(copies), {config, issued.certificatePath, issued.keyPath}, sorted(copies)
        )
        self.assertIsNone(files._kept)


def _services(service: object) -> list[object]:
    found = [service]
    for attribute in ("pool", "_pool", "_service", "service"):
        inner = getattr(service, attribute, None)
        if inner is not None and inner is not service:
            found += _services(inner)
    return found


class CopiesFileFailsTests(_PoolTestCase):
    """
    When the anonymous file cannot be made, the workers start without it.
    """

    def test_startedWithoutCopies(self) -> None:
        """
        One warning line; every worker is started, without copies.
        """

        def refuse(copies: object) -> int:
            raise OSError(24, "Too many open files")

        self.patch(workers, "copiesFile", refuse)
        _, clock, log = self.pool(startCopies={"/etc/key.pem": b"key"})
        self.assertEqual(len(clock.spawned), 2)
        for environ in clock.environments:
            self.assertNotIn(START_COPIES, environ)
        warned = log.matching("cannot be handed to the workers")
        self.assertEqual(len(warned), 1, warned)
        self.assertIn("Too many open files", warned[0])
