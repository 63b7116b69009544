# -*- test-case-name: tests.test_logwriter -*-
"""
L{BufferedLogWriter}: the buffered text and JSON log of C{twistd smtpd}.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import sys

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_logging import _session
from twisted_smtpd._core.replies import Reply
from twisted_smtpd._core.session import Address, Envelope
from twisted_smtpd._serving.logwriter import BufferedLogWriter


class RunningClock(Clock):
    """
    A L{Clock} that says the reactor runs.
    """

    running = True


def _message(writer: BufferedLogWriter) -> None:
    from twisted_smtpd._serving.logging import SessionLogger

    session = _session(
        envelope=Envelope(
            mailFrom=Address("a@example.org"),
            rcptTo=[Address("b@example.com"), Address("c\u00e9@example.com")],
        )
    )
    replies = (Reply(250, "2.0.0", ('OK: "queued"',)),)
    SessionLogger(writer=writer)("message", session, {"size": 10, "replies": replies})


class BufferingTests(SynchronousTestCase):
    """
    Lines wait at most C{interval} seconds while the reactor runs.
    """

    def test_flushedOnTimer(self) -> None:
        """
        Nothing is written until the interval passes; then every line at
        once, in order.
        """
        out = io.StringIO()
        clock = RunningClock()
        writer = BufferedLogWriter(out, reactor=clock, interval=0.5)
        _message(writer)
        Logger(namespace="other", observer=writer).info("second")
        self.assertEqual(out.getvalue(), "")
        clock.advance(0.5)
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertRegex(
            lines[0],
            r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000 \[twisted_smtpd\.session#info\] sid1 message"
            r" 10 bytes from <a@example\.org> to <b@example\.com>,<c\u00e9@example\.com>: 250",
        )
        self.assertTrue(lines[1].endswith(" [other#info] second"), lines[1])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_limit(self) -> None:
        """
        Past C{limit} characters the buffer is written at once.
        """
        out = io.StringIO()
        writer = BufferedLogWriter(out, reactor=RunningClock(), limit=100)
        _message(writer)
        self.assertEqual(out.getvalue().count("\n"), 1)

    def test_notRunning(self) -> None:
        """
        Before the reactor runs and after it stopped, lines are written at
        once.
        """
        out = io.StringIO()
        clock = Clock()
        writer = BufferedLogWriter(out, reactor=clock)
        _message(writer)
        self.assertEqual(out.getvalue().count("\n"), 1)

    def test_flush(self) -> None:
        """
        L{BufferedLogWriter.flush} writes now and cancels the timer.
        """
        out = io.StringIO()
        clock = RunningClock()
        writer = BufferedLogWriter(out, reactor=clock)
        _message(writer)
        writer.flush()
        self.assertEqual(out.getvalue().count("\n"), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_failure(self) -> None:
        """
        A failure's traceback follows its text line, indented.
        """
        out = io.StringIO()
        writer = BufferedLogWriter(out, reactor=Clock())
        try:
            raise ValueError("bad")
        except ValueError:
            Logger(namespace="x", observer=writer).failure("it {what}", Failure(), what="broke")
        first, *rest = out.getvalue().splitlines()
        self.assertTrue(first.endswith("[x#critical] it broke"), first)
        self.assertTrue(all(line.startswith("\t") for line in rest), rest)
        self.assertIn("ValueError: bad", out.getvalue())

    def test_outsideTextEscaped(self) -> None:
        """
        A line from a handler or from Twisted, and a traceback, keep no
        character that could end a line early or drive a terminal: a
        client's text (a C{Subject:} with a CR, an escape sequence) in an
        exception's message cannot start a line of its own, which a log
        reader splitting at CR or a filter would take for the server's.
        """
        out = io.StringIO()
        writer = BufferedLogWriter(out, reactor=Clock())
        hostile = (
            "x\r2026-12-06T10:00:00+0000 [twisted_smtpd.session#info] auth failed\x1b[2J\u2028"
        )
        try:
            raise ValueError(hostile)
        except ValueError:
            Logger(namespace="handler", observer=writer).failure(
                "subject {subject}", Failure(), subject=hostile
            )
        text = out.getvalue()
        for character in "\r\x1b\u2028":
            self.assertNotIn(character, text)
        first, *rest = text.split("\n")[:-1]
        self.assertTrue(
            first.endswith(
                "subject x\\x0d2026-12-06T10:00:00+0000"
                " [twisted_smtpd.session#info] auth failed\\x1b[2J\\u2028"
            ),
            first,
        )
        self.assertTrue(rest and all(line.startswith("\t") for line in rest), rest)
        self.assertIn("ValueError: x\\x0d2026", text)


class FullDisk(io.StringIO):
    """
    A log file on a disk that is full until L{full} is false.
    """

    full = True

    def write(self, text: str) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(text)


class UnwritableLogTests(SynchronousTestCase):
    """
    A log that cannot be written (a full disk) loses lines, counted, and
    says so on standard error at most once a minute; it never raises into
    the reactor.
    """

    def setUp(self) -> None:
        self.out = FullDisk()
        self.errors = io.StringIO()
        self.clock = RunningClock()
        self.patch(sys, "__stderr__", self.errors)
        self.writer = BufferedLogWriter(self.out, reactor=self.clock, interval=0.5)
        self.log = Logger(namespace="other", observer=self.writer)

    def test_timedFlushes(self) -> None:
        """
        Timed flushes into a full disk raise nothing (Twisted would log each
        as an unhandled error's traceback) and leave one line on standard
        error per minute, not one per flush; the lost lines are counted.
        """
        for second in range(130):
            self.log.info("line {n}", n=second)
            self.clock.advance(1)
        self.assertEqual(self.out.getvalue(), "")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        lines = self.errors.getvalue().splitlines()
        self.assertEqual(
            lines,
            [
                "twisted-smtpd: cannot write the log to standard output:"
                f" No space left on device (ENOSPC); lines lost so far: {lost},"
                " more until it can be written again"
                for lost in (1, 61, 121)
            ],
        )

    def test_recovered(self) -> None:
        """
        Once the disk takes writes again, the log says how many lines were
        lost before the lines that follow; standard error hears no more.
        """
        for n in range(3):
            self.log.info("lost {n}", n=n)
            self.clock.advance(1)
        self.out.full = False
        self.log.info("kept")
        self.clock.advance(1)
        self.log.info("kept too")
        self.clock.advance(1)
        lines = self.out.getvalue().splitlines()
        self.assertEqual(len(lines), 3, lines)
        self.assertTrue(
            lines[0].endswith(
                " [twisted_smtpd.log#warn] log lines lost while the log could not be written"
                " (No space left on device (ENOSPC)): 3"
            ),
            lines,
        )
        self.assertTrue(lines[1].endswith(" [other#info] kept"), lines)
        self.assertTrue(lines[2].endswith(" [other#info] kept too"), lines)
        self.assertEqual(len(self.errors.getvalue().splitlines()), 1)
        # Full again: standard error hears of it at once.
        self.out.full = True
        self.log.info("lost again")
        self.clock.advance(1)
        self.assertEqual(len(self.errors.getvalue().splitlines()), 2)

    def test_json(self) -> None:
        """
        In JSON the line about the lost lines is a JSON object with the
        count and the reason as fields.
        """
        self.writer.json = True
        self.log.info("lost")
        self.clock.advance(1)
        self.out.full = False
        self.writer.flush()
        self.log.info("kept")
        self.clock.advance(1)
        first, second = (json.loads(line) for line in self.out.getvalue().splitlines())
        self.assertEqual(
            (first["namespace"], first["level"], first["lost"], first["error"]),
            ("twisted_smtpd.log", "warn", 1, "No space left on device (ENOSPC)"),
        )
        self.assertEqual(second["text"], "kept")

    def test_readerGone(self) -> None:
        """
        Standard output whose reader is gone (a closed pipe) loses its lines
        the same way, when nothing else is to take them (a worker's).
        """

        class Closed(io.StringIO):
            def write(self, text: str) -> int:
                raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

        writer = BufferedLogWriter(Closed(), reactor=self.clock)
        Logger(namespace="other", observer=writer).info("lost")
        self.clock.advance(1)
        self.assertIn("Broken pipe (EPIPE); lines lost so far: 1,", self.errors.getvalue())

    def test_notRunning(self) -> None:
        """
        A line written at once (the reactor not running, or at exit) into a
        full disk raises nothing either.
        """
        writer = BufferedLogWriter(self.out, reactor=Clock())
        Logger(namespace="other", observer=writer).info("at exit")
        writer.flush()
        self.assertIn("lines lost so far: 1,", self.errors.getvalue())


class NoiseTests(SynchronousTestCase):
    """
    Twisted's legacy lines about its own ports and protocols are left out.
    """

    def legacy(self, writer: BufferedLogWriter, text: str) -> None:
        from twisted.logger._legacy import publishToNewObserver
        from twisted.python.log import textFromEventDict

        event = {"message": (text,), "isError": 0, "system": "-", "time": 0.0}
        publishToNewObserver(writer, event, textFromEventDict)

    def test_datagramProtocol(self) -> None:
        """
        The DNS resolver's UDP port, opened and closed around each reverse
        lookup and at the stop, leaves no line; other legacy lines stay.
        """
        out = io.StringIO()
        writer = BufferedLogWriter(out, reactor=Clock())
        protocol = "<twisted.names.dns.DNSDatagramProtocol object at 0x7f7480ccedd0>"
        for text in (
            f"Starting protocol {protocol}",
            "(UDP Port 44837 Closed)",
            f"Stopping protocol {protocol}",
            "(TCP Port 2525 Closed)",
        ):
            self.legacy(writer, text)
        self.assertEqual(out.getvalue(), "")
        self.legacy(writer, "Stopping protocol soon")
        self.legacy(writer, "(UDP Port 1 Closed) twice")
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[0].endswith(" [-] Stopping protocol soon"), lines)


class JSONTests(SynchronousTestCase):
    """
    JSON lines of the writer: one flat object per line.
    """

    def test_sessionLine(self) -> None:
        """
        A session line written by hand is valid JSON with the time, level,
        namespace, text and fields, non-ASCII and quotes escaped.
        """
        out = io.StringIO()
        _message(BufferedLogWriter(out, json=True, reactor=Clock()))
        (line,) = out.getvalue().splitlines()
        event = json.loads(line)
        self.assertEqual(
            (event["level"], event["namespace"], event["recipients"], event["codes"]),
            ("info", "twisted_smtpd.session", ["b@example.com", "c\u00e9@example.com"], [250]),
        )
        self.assertEqual(event["reply"], 'OK: "queued"')
        self.assertTrue(event["text"].startswith("sid1 message 10 bytes"))
        self.assertTrue(
            re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", event["time"]),
            event["time"],
        )

    def test_otherEvents(self) -> None:
        """
        Other events are flat objects without Twisted's keys.
        """
        out = io.StringIO()
        Logger(namespace="y", observer=BufferedLogWriter(out, json=True, reactor=Clock())).warn(
            "n={n}", n=3
        )
        event = json.loads(out.getvalue())
        self.assertEqual(event, {**event, "level": "warn", "namespace": "y", "text": "n=3", "n": 3})
        self.assertFalse([key for key in event if key.startswith("log_")])

    def test_tlsLine(self) -> None:
        """
        A TLS session line in JSON carries the protocol, cipher, SNI name
        and client as fields.
        """
        from twisted_smtpd._core.session import TLSInfo
        from twisted_smtpd._serving.logging import SessionLogger

        out = io.StringIO()
        tls = TLSInfo(servername="mx.example.com", protocol="TLSv1.3", cipher="TLS_AES_128")
        logger = SessionLogger(writer=BufferedLogWriter(out, json=True, reactor=Clock()))
        logger("secure", _session(tls=tls, clientHostname="c.example"), {})
        event = json.loads(out.getvalue())
        self.assertEqual(
            (event["protocol"], event["cipher"], event["servername"], event["client"]),
            ("TLSv1.3", "TLS_AES_128", "mx.example.com", "c.example[192.0.2.1]"),
        )
        self.assertEqual(
            event["text"],
            "sid1 TLS TLSv1.3 TLS_AES_128 from c.example[192.0.2.1] sni=mx.example.com",
        )


class FieldsTests(SynchronousTestCase):
    """
    The lines of every connection and message carry their fields in JSON;
    text lines, which gather none, read the same as before.
    """

    def _lines(self, json: bool) -> list[str]:
        from twisted_smtpd._serving.logging import SessionLogger

        out = io.StringIO()
        logger = SessionLogger(writer=BufferedLogWriter(out, json=json, reactor=Clock()))
        session = _session(
            clientHostname="c.example",
            localAddress=("198.51.100.1", 25),
            envelope=Envelope(mailFrom=Address("a@example.org"), rcptTo=[Address("b@example.com")]),
        )
        logger("connect", session, {})
        logger("message", session, {"size": 7, "replies": (Reply(250, "2.0.0", ("OK",)),)})
        # Two replies, as LMTP gives for two recipients.
        replies = (Reply(250, "2.0.0", ("OK",)), Reply(550, "5.1.1", ("no",)))
        logger("message", session, {"size": 7, "replies": replies})
        logger("close", session, {})
        return out.getvalue().splitlines()

    def test_jsonFields(self) -> None:
        """
        In JSON, the connect, message and close lines carry their fields.
        """
        connect, single, message, close = (json.loads(line) for line in self._lines(json=True))
        self.assertEqual(single["codes"], [250])
        self.assertEqual(
            (connect["session"], connect["client"], connect["clientHostname"], connect["local"]),
            ("sid1", "192.0.2.1:4000", "c.example", "198.51.100.1:25"),
        )
        self.assertEqual((message["codes"], message["recipients"]), ([250, 550], ["b@example.com"]))
        self.assertEqual(close["session"], "sid1")

    def test_text(self) -> None:
        """
        Text lines hold the same texts, after the time and the namespace.
        """
        lines = self._lines(json=False)
        texts = [line.split(" [twisted_smtpd.session#info] ", 1)[1] for line in lines]
        self.assertEqual(
            texts,
            [
                "sid1 connect from 192.0.2.1:4000 (c.example) to 198.51.100.1:25",
                "sid1 message 7 bytes from <a@example.org> to <b@example.com>: 250 OK",
                "sid1 message 7 bytes from <a@example.org> to <b@example.com>: 250,550 OK; 550 no",
                "sid1 close",
            ],
        )
        self.assertTrue(
            re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000", lines[0].split(" ", 1)[0]),
            lines[0],
        )
