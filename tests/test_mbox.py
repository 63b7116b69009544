# -*- test-case-name: tests.test_mbox -*-
"""
Tests for L{MboxHandler} and its mboxrd conversion.
"""

from __future__ import annotations

import errno
import fcntl
import mailbox
import os
import stat
import threading

from twisted.internet import reactor
from twisted.internet.error import ConnectionLost
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.test_client import endpointFor, startServer
from tests.test_handlers import ImmediateReactor, ManualThreadPool, feed, makeSession
from twisted_smtpd import SMTPError
from twisted_smtpd._client import deliver
from twisted_smtpd._session import Address, Envelope
from twisted_smtpd._stream import MessageStream
from twisted_smtpd.handlers import mbox
from twisted_smtpd.handlers.mbox import MboxHandler, MboxrdEncoder, fromLine
from twisted_smtpd.interfaces import ISMTPHandler

BODY = (
    b"From: alice@example.com\r\n"
    b"Subject: mbox\r\n"
    b"\r\n"
    b"From here on\r\n"
    b">From quoted already\r\n"
    b"Fromage is not quoted\r\n"
    b".dot\r\n"
)
CONVERTED = (
    b"From: alice@example.com\n"
    b"Subject: mbox\n"
    b"\n"
    b">From here on\n"
    b">>From quoted already\n"
    b"Fromage is not quoted\n"
    b".dot\n"
)


def encode(chunks: list[bytes]) -> bytes:
    encoder = MboxrdEncoder()
    return b"".join(encoder.encode(c) for c in chunks) + encoder.end()


class EncoderTests(SynchronousTestCase):
    """
    L{MboxrdEncoder} converts a message to mboxrd.
    """

    def test_convert(self) -> None:
        """
        CRLF becomes LF, C{>*From } lines get one more C{>}, and a blank
        line follows the message.
        """
        self.assertEqual(encode([BODY]), CONVERTED + b"\n")

    def test_everySplit(self) -> None:
        """
        The conversion is the same wherever the chunks are cut.
        """
        whole = encode([BODY])
        for cut in range(len(BODY) + 1):
            self.assertEqual(encode([BODY[:cut], BODY[cut:]]), whole)
        self.assertEqual(encode([bytes([b]) for b in BODY]), whole)

    def test_missingNewline(self) -> None:
        """
        A last line without a line end gets one; an empty message is just
        the blank line.
        """
        self.assertEqual(encode([b"From x\r\nend"]), b">From x\nend\n\n")
        self.assertEqual(encode([]), b"\n")

    def test_fromLine(self) -> None:
        """
        The separator names the sender (C{MAILER-DAEMON} for C{<>}) and the
        date in C{asctime} form.
        """
        self.assertEqual(
            fromLine("alice@example.com", 0), b"From alice@example.com Thu Jan  1 00:00:00 1970\n"
        )
        self.assertTrue(fromLine("", 0).startswith(b"From MAILER-DAEMON "))
        self.assertTrue(fromLine('"a b"@example.com', 0).startswith(b'From "a_b"@example.com '))


class MboxHandlerTests(SynchronousTestCase):
    """
    L{MboxHandler} appends durably, in a thread pool run by hand.
    """

    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp(), "mbox")
        os.makedirs(os.path.dirname(self.path))
        self.pool = ManualThreadPool()
        self.handler = MboxHandler(
            self.path,
            reactor=ImmediateReactor(),
            threadpool=self.pool,  # type: ignore[arg-type]
        )

    def deliver(self, body: bytes, sender: str = "alice@example.com") -> object:
        session = makeSession(envelope=Envelope(mailFrom=Address(sender)))
        stream = MessageStream()
        d = self.handler.onData(stream, session)
        feed(stream, body, chunkSize=7)
        self.assertNoResult(d)
        self.pool.runAll()
        return d

    def test_interface(self) -> None:
        """
        L{MboxHandler} provides L{ISMTPHandler}.
        """
        self.assertTrue(verifyObject(ISMTPHandler, self.handler))

    def test_readBack(self) -> None:
        """
        Messages read back with L{mailbox.mbox} have their senders and
        bodies; the file is private to its owner.
        """
        self.assertEqual(self.successResultOf(self.deliver(BODY)), "OK: delivered to mbox")
        self.successResultOf(self.deliver(b"Subject: second\r\n\r\nno final newline", ""))
        box = mailbox.mbox(self.path, create=False)
        messages = list(box)
        box.close()
        self.assertEqual(len(messages), 2)
        self.assertTrue(messages[0].get_from().startswith("alice@example.com "))
        self.assertTrue(messages[1].get_from().startswith("MAILER-DAEMON "))
        self.assertEqual(messages[0].as_bytes(), CONVERTED)
        self.assertEqual(messages[1]["Subject"], "second")
        self.assertEqual(messages[1].get_payload(), "no final newline\n")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_streamFailure(self) -> None:
        """
        A body that does not arrive whole writes nothing and passes the
        failure on.
        """
        stream = MessageStream()
        d = self.handler.onData(stream, makeSession())
        stream._write(b"Subject: partial\r\n")
        stream._fail(ConnectionLost())
        self.failureResultOf(d, ConnectionLost)
        self.assertEqual(self.pool.jobs, [])
        self.assertFalse(os.path.exists(self.path))

    def test_diskFull(self) -> None:
        """
        A failed append is answered 452 when the disk is full, and the file
        is cut back to what it was.
        """
        self.successResultOf(self.deliver(BODY))
        size = os.path.getsize(self.path)

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(mbox, "_fsync", full)
        error = self.failureResultOf(self.deliver(BODY), SMTPError).value
        self.assertEqual((error.code, error.enhanced), (452, "4.3.1"))
        self.assertEqual(os.path.getsize(self.path), size)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_waitsForLock(self) -> None:
        """
        An append waits while another program holds the mailbox's C{flock}.
        """
        self.successResultOf(self.deliver(BODY))
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as other:
            fcntl.flock(other, fcntl.LOCK_EX)
            thread = threading.Thread(target=self.handler._append, args=([b"From x\n\n"],))
            thread.start()
            thread.join(0.3)
            self.assertTrue(thread.is_alive())
            self.assertEqual(os.path.getsize(self.path), size)
            fcntl.flock(other, fcntl.LOCK_UN)
            thread.join(30)
        self.assertFalse(thread.is_alive())
        self.assertEqual(os.path.getsize(self.path), size + 8)


class MboxServerTests(TestCase):
    """
    L{MboxHandler} behind a real server.
    """

    async def test_delivered(self) -> None:
        """
        A message sent over SMTP is in the mbox when the 250 arrives.
        """
        path = os.path.join(self.mktemp(), "mbox")
        os.makedirs(os.path.dirname(path))
        server, port = await startServer(self, MboxHandler(path, reactor=reactor))
        result = await deliver(
            endpointFor(port),
            sender="alice@example.com",
            recipients=["bob@example.org"],
            stream=BODY,
            heloName="client.example",
            tls="none",
            reactor=reactor,
        )
        self.assertEqual(result.recipients[0].reply.code, 250)
        box = mailbox.mbox(path, create=False)
        self.assertEqual([m.as_bytes() for m in box], [CONVERTED])
        box.close()
