# -*- test-case-name: tests.test_metrics -*-
"""
L{ServerMetrics}: Prometheus metrics from the server's observer events,
read after real sessions over a L{StringTransport}; and the C{/metrics} and
C{/healthz} resources.
"""

from __future__ import annotations

import contextlib
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from tests.test_auth import PasswordHandler, b64
from tests.test_logging import Refusing
from tests.test_protocol import connect, take
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.session import Session
from twisted_smtpd._serving.metrics import (
    HealthResource,
    MetricsResource,
    ServerMetrics,
    metricsSite,
)
from twisted_smtpd._serving.metricshttp import MAX_CONNECTIONS, REQUEST_DEADLINE
from twisted_smtpd.interfaces import IMessageStream

MESSAGE = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nhello\r\n.\r\n"


class SlowData(Refusing):
    """
    C{onData} drains the body and answers with the L{Deferred} given.
    """

    def __init__(self, pending: Deferred[None]) -> None:
        super().__init__()
        self.pending = pending

    def onData(self, stream: IMessageStream, session: Session) -> object:
        stream.drain()
        return self.pending


class MetricsTests(SynchronousTestCase):
    """
    Counters after a known sequence of sessions.
    """

    def setUp(self) -> None:
        self.metrics = ServerMetrics()

    def value(self, name: str, **labels: str) -> float | None:
        value: float | None = self.metrics.registry.get_sample_value(name, labels)
        return value

    def session(self, handler: Any = None, **options: Any) -> Any:
        proto, transport, clock, factory = connect(handler or Refusing(), **options)
        factory.addObserver(self.metrics)
        # The observer joins after connectionMade: count the connect now.
        self.metrics("connect", proto.session, {})
        self.transport = transport
        return proto

    def test_sequence(self) -> None:
        """
        Two sessions: two messages (one with a refused recipient) and a
        session without a message; exact counts of connections, sessions
        by outcome, messages by code, bytes, recipients and refusals.
        """
        proto = self.session()
        proto.dataReceived(b"EHLO c\r\n" + MESSAGE)
        proto.dataReceived(MESSAGE.replace(b"DATA", b"RCPT TO:<x@example.com>\r\nDATA"))
        proto.connectionLost()
        other = self.session()
        other.dataReceived(b"EHLO c\r\nQUIT\r\n")
        other.connectionLost()
        self.assertEqual(self.value("smtpd_connections_total"), 2)
        self.assertEqual(self.value("smtpd_connections_open"), 0)
        self.assertEqual(self.value("smtpd_sessions_total", outcome="message"), 1)
        self.assertEqual(self.value("smtpd_sessions_total", outcome="no_message"), 1)
        self.assertEqual(self.value("smtpd_messages_total", reply_class="2xx", code="250"), 2)
        self.assertEqual(self.value("smtpd_received_bytes_total"), 14)
        self.assertEqual(self.value("smtpd_recipients_total"), 2)
        self.assertEqual(self.value("smtpd_refusals_total", command="RCPT", code="550"), 1)
        self.assertEqual(self.value("smtpd_delivery_seconds_count"), 2)
        self.assertEqual(self.value("smtpd_hook_seconds_count", hook="onRcptTo"), 3)

    def test_refusedAtConnect(self) -> None:
        """
        A session refused by C{onConnect} is counted as refused and no
        longer open, though no close event follows.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from twisted_smtpd._core.errors import SMTPError
        from twisted_smtpd._core.options import ServerOptions
        from twisted_smtpd._serving.server import SMTPServerFactory

        class Closed(Refusing):
            def onConnect(self, session: Session) -> object:
                raise SMTPError(554, "go away", "5.7.1")

        factory = SMTPServerFactory(
            Closed(),
            ServerOptions(name="mx.example.com", disableReverseLookup=True),
            reactor=Clock(),
        )
        factory.addObserver(self.metrics)
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "192.0.2.7", 4000),
            hostAddress=IPv4Address("TCP", "192.0.2.1", 25),
        )
        proto.makeConnection(transport)
        self.assertIn(b"554 5.7.1 go away", transport.value())
        proto.connectionLost()
        self.assertEqual(self.value("smtpd_connections_total"), 1)
        self.assertEqual(self.value("smtpd_connections_open"), 0)
        self.assertEqual(self.value("smtpd_sessions_total", outcome="refused"), 1)

    def test_refusedByOnSecureAtImplicitTLS(self) -> None:
        """
        A session of an implicit TLS listener that C{onSecure} refuses
        before the greeting began (C{onConnect} accepted it; a close event
        follows): it ends as one session, without a message, not also as a
        refused one.
        """
        from twisted.internet.interfaces import ISSLTransport
        from twisted.internet.task import Clock
        from zope.interface import directlyProvides

        from twisted_smtpd._core.options import ServerOptions
        from twisted_smtpd._serving.server import SMTPServerFactory

        class NoTLS(Refusing):
            def onSecure(self, session: Session) -> object:
                raise SMTPError(554, "go away", "5.7.1")

        factory = SMTPServerFactory(
            NoTLS(),
            ServerOptions(name="mx.example.com", disableReverseLookup=True),
            reactor=Clock(),
        )
        factory.addObserver(self.metrics)
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "192.0.2.7", 4000),
            hostAddress=IPv4Address("TCP", "192.0.2.1", 465),
        )
        directlyProvides(transport, ISSLTransport)
        proto.makeConnection(transport)
        proto.handshakeCompleted()
        self.assertIn(b"554 5.7.1 go away", transport.value())
        self.assertEqual(self.value("smtpd_connections_open"), 1)
        proto.connectionLost()
        self.assertEqual(self.value("smtpd_connections_total"), 1)
        self.assertEqual(self.value("smtpd_connections_open"), 0)
        self.assertEqual(self.value("smtpd_refusals_total", command="CONNECT", code="554"), 1)
        self.assertEqual(
            {
                outcome: self.value("smtpd_sessions_total", outcome=outcome)
                for outcome in ("refused", "no_message")
            },
            {"refused": None, "no_message": 1},
        )

    def test_refusalWordedAsTheServersOwn(self) -> None:
        """
        A handler's refusal with the very code and text of a reply the
        server logs apart (its shutdown, its handler timeout) is still a
        refusal: refused by C{onConnect}, the session is counted refused
        and not left open; refused by C{onRcptTo}, it is counted under
        C{RCPT}.
        """
        from twisted.internet.task import Clock

        from twisted_smtpd._core import replies as catalogue
        from twisted_smtpd._core.options import ServerOptions
        from twisted_smtpd._serving.server import SMTPServerFactory

        def error(reply: Any) -> SMTPError:
            return SMTPError(reply.code, reply.lines[0], reply.enhanced)

        class Closed(Refusing):
            def onConnect(self, session: Session) -> object:
                raise error(catalogue.SHUTDOWN)

        class Busy(Refusing):
            def onRcptTo(self, address: Any, session: Session) -> object:
                raise error(catalogue.HANDLER_TIMEOUT)

        factory = SMTPServerFactory(
            Closed(),
            ServerOptions(name="mx.example.com", disableReverseLookup=True),
            reactor=Clock(),
        )
        factory.addObserver(self.metrics)
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "192.0.2.7", 4000),
            hostAddress=IPv4Address("TCP", "192.0.2.1", 25),
        )
        proto.makeConnection(transport)
        self.assertIn(b"421 4.3.2 Service shutting down", transport.value())
        proto.connectionLost()
        other = self.session(Busy())
        other.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n")
        self.assertIn(b"421 4.3.0 Error: timeout waiting", self.transport.value())
        other.connectionLost()
        self.assertEqual(
            (
                self.value("smtpd_connections_open"),
                self.value("smtpd_sessions_total", outcome="refused"),
                self.value("smtpd_refusals_total", command="CONNECT", code="421"),
                self.value("smtpd_refusals_total", command="RCPT", code="421"),
            ),
            (0, 1, 1, 1),
        )
        self.assertEqual(self.metrics._open, set())

    def test_refusedForLimitIsAConnection(self) -> None:
        """
        A connection refused at connect for a limit (C{maxClients}) is
        counted as a connection, as one refused by C{onConnect} is: every
        connection accepted ends as exactly one session outcome.
        """
        from twisted.internet.task import Clock

        from twisted_smtpd._core.options import ServerOptions
        from twisted_smtpd._serving.server import SMTPServerFactory

        factory = SMTPServerFactory(
            Refusing(),
            ServerOptions(name="mx.example.com", disableReverseLookup=True, maxClients=1),
            reactor=Clock(),
        )
        factory.addObserver(self.metrics)
        sessions = []
        for port in (4000, 4001):
            proto = factory.buildProtocol(None)  # type: ignore[arg-type]
            transport = StringTransport(
                peerAddress=IPv4Address("TCP", "192.0.2.7", port),
                hostAddress=IPv4Address("TCP", "192.0.2.1", 25),
            )
            proto.makeConnection(transport)
            sessions.append((proto, transport))
        self.assertIn(b"421 4.7.0", sessions[1][1].value())
        self.assertEqual(self.value("smtpd_connections_open"), 1)
        for proto, _ in sessions:
            proto.connectionLost()
        self.assertEqual(self.value("smtpd_connections_total"), 2)
        self.assertEqual(self.value("smtpd_connections_open"), 0)
        self.assertEqual(self.value("smtpd_sessions_total", outcome="refused"), 1)
        self.assertEqual(self.value("smtpd_sessions_total", outcome="no_message"), 1)
        self.assertEqual(self.value("smtpd_refusals_total", command="CONNECT", code="421"), 1)

    def test_refusedLinesAreNotConnects(self) -> None:
        """
        Refused lines that did not parse (blank or unknown) are counted
        as C{UNKNOWN}, never as C{CONNECT}; a session closed for too many
        of them is counted once, as a session without a message.
        """
        proto = self.session(maxErrors=3)
        proto.dataReceived(b"EHLO c\r\n\r\nFOO bar\r\n\r\n")
        self.assertIn(b"421 ", self.transport.value())
        proto.connectionLost()
        self.assertIsNone(self.value("smtpd_refusals_total", command="CONNECT", code="500"))
        self.assertIsNone(self.value("smtpd_refusals_total", command="CONNECT", code="421"))
        self.assertEqual(self.value("smtpd_refusals_total", command="UNKNOWN", code="500"), 3)
        self.assertEqual(self.value("smtpd_refusals_total", command="UNKNOWN", code="421"), 1)
        self.assertIsNone(self.value("smtpd_sessions_total", outcome="refused"))
        self.assertEqual(self.value("smtpd_sessions_total", outcome="no_message"), 1)
        self.assertEqual(self.value("smtpd_connections_open"), 0)

    def test_auth(self) -> None:
        """
        AUTH successes and failures by mechanism.
        """
        proto = self.session(PasswordHandler(), allowInsecureAuth=True, authMethods=["PLAIN"])
        proto.dataReceived(b"EHLO c\r\nAUTH PLAIN " + b64(b"\0alice\0bad") + b"\r\n")
        proto.dataReceived(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        self.assertIn(b"235", take(self.transport))
        self.assertEqual(self.value("smtpd_auth_total", mechanism="PLAIN", result="failure"), 1)
        self.assertEqual(self.value("smtpd_auth_total", mechanism="PLAIN", result="success"), 1)

    def series(self, name: str) -> set[tuple[tuple[str, str], ...]]:
        """
        The label sets of the samples of C{name}.
        """
        return {
            tuple(sorted(sample.labels.items()))
            for metric in self.metrics.registry.collect()
            for sample in metric.samples
            if sample.name == name
        }

    def test_authMechanismFromClientBounded(self) -> None:
        """
        Failed logins whose mechanism is followed by a TAB, each with
        another user name, are counted in the one C{PLAIN} series: the
        client's bytes never become a label.
        """
        proto = self.session(
            PasswordHandler(),
            allowInsecureAuth=True,
            authOptional=True,
            authMethods=["PLAIN"],
            maxAuthFailures=50,
        )
        proto.dataReceived(b"EHLO c\r\n")
        for attempt in range(10):
            response = b64(b"\0user%d\0pw" % attempt)
            proto.dataReceived(b"AUTH PLAIN\t" + response + b"\r\n")
        self.assertEqual(take(self.transport).count(b"535 "), 10)
        self.assertEqual(
            self.series("smtpd_auth_total"), {(("mechanism", "PLAIN"), ("result", "failure"))}
        )

    def test_authMechanismLabelBounded(self) -> None:
        """
        The C{mechanism} label is one of the mechanisms the server knows, or
        C{other} for anything an event may carry besides.
        """
        from twisted_smtpd._core import replies as catalogue

        session = Session(id="s")
        self.metrics("auth", session, {"method": "CRAM-MD5"})
        self.metrics("auth", session, {"method": "X\tY"})
        self.metrics(
            "reject",
            session,
            {
                "reply": catalogue.AUTH_FAILED,
                "command": "AUTH",
                "mechanism": "PLAIN\tAGFsaWNl",
                "username": "alice",
                "closing": False,
            },
        )
        self.assertEqual(
            self.series("smtpd_auth_total"),
            {
                (("mechanism", "CRAM-MD5"), ("result", "success")),
                (("mechanism", "other"), ("result", "success")),
                (("mechanism", "other"), ("result", "failure")),
            },
        )

    def test_lineTooLongAfterAuth(self) -> None:
        """
        A line too long after a failed AUTH is a refused line that did not
        parse, not a second AUTH failure.
        """
        proto = self.session(PasswordHandler(), allowInsecureAuth=True, authMethods=["PLAIN"])
        proto.dataReceived(b"EHLO c\r\nAUTH PLAIN " + b64(b"\0alice\0bad") + b"\r\n")
        proto.dataReceived(b"NOOP " + b"x" * 3000 + b"\r\n")
        self.assertIn(b"500 5.5.6 ", take(self.transport))
        self.assertEqual(self.value("smtpd_auth_total", mechanism="PLAIN", result="failure"), 1)
        self.assertEqual(self.value("smtpd_refusals_total", command="AUTH", code="535"), 1)
        self.assertEqual(self.value("smtpd_refusals_total", command="UNKNOWN", code="500"), 1)

    def test_handlerErrors(self) -> None:
        """
        A hook failing unexpectedly is counted by hook.
        """

        class Broken(Refusing):
            def onMailFrom(self, address: Any, session: Session) -> object:
                raise RuntimeError("bug")

        proto = self.session(Broken())
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.value("smtpd_handler_errors_total", hook="onMailFrom"), 1)

    def test_slowHook(self) -> None:
        """
        A hook answering later is timed until it answers.
        """
        pending: Deferred[None] = Deferred()
        proto = self.session(SlowData(pending))
        proto.dataReceived(b"EHLO c\r\n" + MESSAGE)
        self.assertEqual(self.value("smtpd_delivery_seconds_count"), 0)
        pending.callback(None)
        self.assertEqual(self.value("smtpd_delivery_seconds_count"), 1)

    def test_xclientIsNoNewConnection(self) -> None:
        """
        XCLIENT, which tells of the connection again as another client's,
        counts no second connection: none is left open after the close.
        """
        proto = self.session(useXClient=True)
        proto.dataReceived(b"EHLO c\r\nXCLIENT ADDR=192.0.2.9\r\n")
        proto.connectionLost()
        self.assertEqual(self.value("smtpd_connections_total"), 1)
        self.assertEqual(self.value("smtpd_connections_open"), 0)

    def test_xclientRefusedClosesTheSession(self) -> None:
        """
        A session whose XCLIENT client C{onConnect} refuses is closed like
        any other: not left open, counted once, without a message.
        """

        class RefusingXClient(Refusing):
            def onConnect(self, session: Session) -> object:
                if session.remoteAddress[0] == "192.0.2.9":
                    raise SMTPError(554, "go away", "5.7.1")
                return None

        proto = self.session(RefusingXClient(), useXClient=True)
        proto.dataReceived(b"EHLO c\r\nXCLIENT ADDR=192.0.2.9\r\n")
        proto.connectionLost()
        self.assertEqual(self.value("smtpd_connections_open"), 0)
        self.assertEqual(self.value("smtpd_sessions_total", outcome="no_message"), 1)
        self.assertEqual(self.metrics._open, set())

    def test_malformedBdatCountedOnce(self) -> None:
        """
        A malformed BDAT, which closes the session, is one refusal.
        """
        proto = self.session()
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n")
        proto.dataReceived(b"BDAT x\r\n")
        proto.connectionLost()
        self.assertEqual(self.value("smtpd_refusals_total", command="BDAT", code="521"), 1)
        self.assertIsNone(self.value("smtpd_refusals_total", command="CONNECT", code="521"))

    def test_addedDuringSession(self) -> None:
        """
        Metrics added after a session connected still count its message as
        delivered when it closes.
        """
        proto, transport, clock, factory = connect(Refusing())
        proto.dataReceived(b"EHLO c\r\n")
        factory.addObserver(self.metrics)
        proto.dataReceived(MESSAGE)
        proto.connectionLost()
        self.assertEqual(self.value("smtpd_sessions_total", outcome="message"), 1)
        self.assertEqual(self.metrics._delivered, set())

    def test_answerAfterClose(self) -> None:
        """
        A message answered after its session closed is counted as
        unanswered, not as a reply given, and its session stays a session
        without a message, remembered nowhere.
        """
        pending: Deferred[None] = Deferred()
        proto = self.session(SlowData(pending))
        proto.dataReceived(b"EHLO c\r\n" + MESSAGE)
        proto.connectionLost()
        pending.callback(None)
        self.assertEqual(self.value("smtpd_messages_total", reply_class="2xx", code="250"), None)
        self.assertEqual(self.value("smtpd_messages_unanswered_total"), 1)
        self.assertEqual(self.value("smtpd_sessions_total", outcome="no_message"), 1)
        self.assertEqual(self.value("smtpd_connections_open"), 0)
        self.assertEqual(self.metrics._delivered, set())

    def test_lmtpAnswerAfterClose(self) -> None:
        """
        In LMTP, the replies of a message answered after its client left
        are not counted as replies given: the message is counted once as
        unanswered.
        """
        pending: Deferred[None] = Deferred()
        proto = self.session(SlowData(pending), lmtp=True)
        proto.dataReceived(
            b"LHLO c\r\n" + MESSAGE.replace(b"DATA", b"RCPT TO:<c@example.com>\r\nDATA")
        )
        proto.connectionLost()
        pending.callback(None)
        self.assertEqual(self.value("smtpd_messages_total", reply_class="2xx", code="250"), None)
        self.assertEqual(self.value("smtpd_messages_unanswered_total"), 1)
        proto = self.session(Refusing(), lmtp=True)
        proto.dataReceived(
            b"LHLO c\r\n" + MESSAGE.replace(b"DATA", b"RCPT TO:<c@example.com>\r\nDATA")
        )
        self.assertEqual(self.value("smtpd_messages_total", reply_class="2xx", code="250"), 2)


class ResourceTests(SynchronousTestCase):
    """
    The web resources.
    """

    def test_metrics(self) -> None:
        """
        C{/metrics} is the registry in Prometheus's text format.
        """
        metrics = ServerMetrics()
        metrics.connections.inc(3)
        request = DummyRequest([b""])
        body = MetricsResource(metrics.registry).render_GET(request)  # type: ignore[arg-type]
        self.assertIn(b"\nsmtpd_connections_total 3.0\n", body)
        self.assertTrue(
            request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
        )

    def test_health(self) -> None:
        """
        C{/healthz} is 200 while healthy, else 503.
        """
        state = {"ok": True}
        resource = HealthResource(lambda: state["ok"])
        request = DummyRequest([b""])
        self.assertEqual(resource.render_GET(request), b"ok\n")  # type: ignore[arg-type]
        state["ok"] = False
        request = DummyRequest([b""])
        resource.render_GET(request)  # type: ignore[arg-type]
        self.assertEqual(request.responseCode, 503)


class FlagTests(SynchronousTestCase):
    """
    C{--metrics} at parse time.
    """

    def test_missingLibrary(self) -> None:
        """
        Without C{prometheus_client}, C{--metrics} is one error naming the
        extra to install.
        """
        import sys

        from twisted.python import usage

        from tests.test_tap import parse

        saved = sys.modules.get("prometheus_client")

        def restore() -> None:
            # Not imported before: the next import must find it again.
            if saved is None:
                del sys.modules["prometheus_client"]
            else:
                sys.modules["prometheus_client"] = saved

        sys.modules["prometheus_client"] = None  # type: ignore[assignment]
        self.addCleanup(restore)
        e = self.assertRaises(usage.UsageError, parse, "--sink", "--metrics", "tcp:9101")
        self.assertEqual(
            str(e),
            "--metrics needs the prometheus_client library: pip install 'twisted-smtpd[metrics]'",
        )

    def test_badEndpoint(self) -> None:
        """
        An endpoint string that does not parse names the flag.
        """
        from twisted.python import usage

        from tests.test_tap import parse

        e = self.assertRaises(usage.UsageError, parse, "--sink", "--metrics", "bogus:1")
        self.assertIn("--metrics 'bogus:1'", str(e))

    def test_sslFilesInTheServersWords(self) -> None:
        """
        The files of an C{ssl:} endpoint are read as those of an C{ssl:}
        listener are: what is wrong with one is said in the server's words,
        naming it, not as OpenSSL's error list, and a file that is no
        regular one (a pipe, a device) is refused before it is read; a
        C{dhParameters} file must hold Diffie-Hellman parameters (Twisted
        would fail every handshake on it with a traceback).
        """
        import os

        from twisted.python import usage

        from tests.certs import CertificateAuthority
        from tests.test_tap import parse

        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        issued = ca.server("localhost")
        fifo = os.path.abspath(self.mktemp())
        os.mkfifo(fifo)
        key, certificate = issued.keyPath, issued.certificatePath
        cases = [
            (
                f"privateKey={certificate}:certKey={certificate}",
                f"cannot read privateKey {certificate}: no unencrypted PEM private key",
            ),
            (
                f"privateKey={key}:certKey={key}",
                f"cannot read certKey {key}: no PEM certificate",
            ),
            (
                f"privateKey={key}:certKey={fifo}",
                f"cannot read certKey {fifo}: not a regular file (a named pipe)",
            ),
            (
                f"privateKey={key}:certKey={certificate}:extraCertChain={key}",
                f"cannot read extraCertChain {key}: no PEM certificate",
            ),
            (
                f"privateKey={key}:certKey={certificate}:dhParameters={fifo}",
                f"cannot read dhParameters {fifo}: not a regular file (a named pipe)",
            ),
            (
                f"privateKey={key}:certKey={certificate}:dhParameters={key}",
                f"cannot use dhParameters {key}: no start line",
            ),
        ]
        for files, why in cases:
            description = f"ssl:0:interface=127.0.0.1:{files}"
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--metrics", description)
            self.assertEqual(str(e), f"--metrics {description!r}: {why}")

    def test_portOutOfRange(self) -> None:
        """
        A port above 65535 is refused in one line while the options are
        read, as a C{--listen} one is, not once the SMTP listeners listen.
        """
        from twisted.python import usage

        from tests.test_tap import parse

        for description, port in [("tcp:70000", 70000), ("tcp6:port=65536", 65536)]:
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--metrics", description)
            self.assertEqual(
                str(e), f"--metrics {description!r}: port {port} is out of range (0-65535)"
            )

    def test_sslMethodPinningRefused(self) -> None:
        """
        An C{ssl:} endpoint's C{sslmethod=} pinning a protocol version
        (C{TLSv1_METHOD}: TLS 1.0 only, which the SMTP listeners refuse) is
        refused in one line, by name or by place, as an C{ssl:} listener's
        is, naming the values taken; one that is no TLS server method of
        OpenSSL's (a misspelling) is refused saying so.  One allowing every
        version is taken, but not handed to Twisted, which would then lift
        its minimum (TLS 1.2): the metrics are served with that minimum.
        """
        import os

        from OpenSSL import SSL
        from twisted.python import usage

        from tests.certs import CertificateAuthority
        from tests.test_tap import parse
        from twisted_smtpd._twistd.metricsservice import MetricsListener

        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        issued = ca.server("localhost")
        files = f"privateKey={issued.keyPath}:certKey={issued.certificatePath}"
        for method in ("TLSv1_METHOD", "TLSv1_1_METHOD", "TLSv1_2_METHOD", "SSLv3_METHOD"):
            for description in [
                f"ssl:0:interface=127.0.0.1:{files}:sslmethod={method}",
                f"ssl:0:{issued.keyPath}:{issued.certificatePath}:{method}:127.0.0.1",
            ]:
                e = self.assertRaises(usage.UsageError, parse, "--sink", "--metrics", description)
                self.assertEqual(
                    str(e),
                    f"--metrics {description!r}: sslmethod={method} is refused: it would"
                    " pin the TLS version (without it, TLS 1.2 and later are spoken); it"
                    " takes SSLv23_METHOD, TLS_METHOD or TLS_SERVER_METHOD (every"
                    " version), or may be left out",
                )
        for method in ("bogus", "DTLS_METHOD", "TLS_CLIENT_METHOD"):
            description = f"ssl:0:interface=127.0.0.1:{files}:sslmethod={method}"
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--metrics", description)
            self.assertEqual(
                str(e),
                f"--metrics {description!r}: sslmethod={method} is refused: it is not one"
                " of OpenSSL's TLS server methods; it takes SSLv23_METHOD, TLS_METHOD or"
                " TLS_SERVER_METHOD (every version), or may be left out",
            )
        for method in ("SSLv23_METHOD", "TLS_METHOD", "TLS_SERVER_METHOD"):
            description = f"ssl:0:interface=127.0.0.1:{files}:sslmethod={method}"
            parse("--sink", "--metrics", description)
            listener = MetricsListener(description, None, lambda: True)
            options = listener.endpoint._sslContextFactory
            self.assertEqual(options.method, SSL.TLS_METHOD)
            self.assertTrue(options._options & SSL.OP_NO_TLSv1, method)
            self.assertTrue(options._options & SSL.OP_NO_TLSv1_1, method)
            self.assertEqual(listener.description, description)


class ListenerTests(SynchronousTestCase):
    """
    The metrics web listener bounds what a client can hold: request bodies,
    slow requests, connections.
    """

    def setUp(self) -> None:
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.factory = metricsSite(ServerMetrics().registry, lambda: True, reactor=self.clock)
        self.factory.doStart()
        self.addCleanup(self.factory.doStop)

    def connect(self, port: int = 40000) -> tuple[Any, StringTransport]:
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        protocol.makeConnection(transport)
        return protocol, transport

    def test_get(self) -> None:
        """
        C{GET /healthz} is answered, split at every byte.
        """
        protocol, transport = self.connect()
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n":
            protocol.dataReceived(bytes([byte]))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"), transport.value())
        self.assertTrue(transport.value().endswith(b"\r\n\r\nok\n"))
        self.assertFalse(transport.disconnecting)

    def test_noAccessLine(self) -> None:
        """
        A scrape leaves no line in the log (Twisted's access log would add
        one per request, with the client's User-Agent).
        """
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"u" * 8000 + b"\r\n\r\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual([e for e in logged if "uuuu" in str(e)], [])

    def test_bodyRefused(self) -> None:
        """
        A request announcing a body (a length, or chunks) gets 413 and the
        connection is closed before any of the body is read; a method
        other than GET and HEAD gets 405 the same way.  Nothing of the
        body is kept.
        """
        for head, status in [
            (b"POST /metrics HTTP/1.1\r\nContent-Length: 10000000000\r\n\r\n", b"405"),
            (b"GET /metrics HTTP/1.1\r\nContent-Length: 10\r\n\r\n", b"413"),
            (b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"413"),
            (b"PUT /metrics HTTP/1.1\r\n\r\n", b"405"),
            (b"OPTIONS * HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", b"405"),
        ]:
            protocol, transport = self.connect()
            protocol.dataReceived(head + b"a" * 100000)
            reply = transport.value()
            self.assertTrue(reply.startswith(b"HTTP/1.1 " + status + b" "), (head, reply))
            self.assertNotIn(b"100 Continue", reply)
            self.assertTrue(transport.disconnecting, head)
            self.assertEqual([r.content for r in protocol.wrappedProtocol.requests], [None])

    def test_malformedRequestLogged(self) -> None:
        """
        A malformed request, one with too many headers, and a request line
        longer than Twisted reads, each get 400, their connection closed,
        and one line in the listener's log, as its other refusals do;
        nothing the client sent is quoted.
        """
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import formatEvent, globalLogPublisher

        for request in [
            b"G\x1b[31mET\r\n / HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n" + b"X: \x1b[2J\r\n" * 600 + b"\r\n",
            b"GET /" + b"\x1b" * 100000 + b" HTTP/1.1\r\n\r\n",
        ]:
            logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            protocol, transport = self.connect()
            protocol.dataReceived(request)
            self.assertEqual(transport.value(), b"HTTP/1.1 400 Bad Request\r\n\r\n")
            self.assertTrue(transport.disconnecting)
            self.assertEqual(
                [formatEvent(e) for e in logged],
                [
                    "metrics: 400 Bad Request for a malformed or oversized request"
                    " from 127.0.0.1:40000"
                ],
            )

    def test_requestDeadline(self) -> None:
        """
        A request trickled in, one header line every 4 seconds, is closed
        L{REQUEST_DEADLINE} seconds after its first byte, although no
        pause reached the timeout.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(REQUEST_DEADLINE // 4):
            self.clock.advance(4)
            protocol.dataReceived(b"X: y\r\n")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(REQUEST_DEADLINE - 4 * (REQUEST_DEADLINE // 4))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_deadlinePerRequest(self) -> None:
        """
        The deadline starts again with each request of a connection.
        """
        protocol, transport = self.connect()
        for _ in range(3):
            self.clock.advance(REQUEST_DEADLINE - 1)
            protocol.dataReceived(b"GET /healthz HTTP/1.1\r\n")
            self.clock.advance(REQUEST_DEADLINE - 1)
            protocol.dataReceived(b"\r\n")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 3)

    def test_connectionLimit(self) -> None:
        """
        Past L{MAX_CONNECTIONS} open connections one more takes the place
        of the first (none has been answered), which is aborted; once one
        closes, the next is taken without aborting any.
        """
        held = [self.connect(40000 + n) for n in range(MAX_CONNECTIONS)]
        _, taken = self.connect(50000)
        self.assertFalse(taken.disconnecting)
        self.assertEqual([t.disconnecting for _, t in held], [True] + [False] * 7)
        self.assertEqual(held[0][1].value(), b"")
        for protocol, _ in held[:2]:
            protocol.connectionLost(Failure(ConnectionDone()))
        _, taken = self.connect(50001)
        self.assertFalse(taken.disconnecting)
        self.assertEqual([t.disconnecting for _, t in held[2:]], [False] * 6)

    def test_connectionLimitBehindTLS(self) -> None:
        """
        Behind TLS (an C{ssl:} endpoint, whose factory wraps this one) one
        connection past L{MAX_CONNECTIONS} takes the place of the first
        too, which is aborted, with the listener's line and no error, its
        handshake never done.
        """
        from twisted.internet.ssl import CertificateOptions
        from twisted.protocols.tls import TLSMemoryBIOFactory

        class TCPTransport(StringTransport):
            def setTcpNoDelay(self, enabled: bool) -> None:
                pass

        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        tls = TLSMemoryBIOFactory(CertificateOptions(), False, self.factory)
        transports = []
        for n in range(MAX_CONNECTIONS + 1):
            address = IPv4Address("TCP", "127.0.0.1", 40000 + n)
            transport = TCPTransport(peerAddress=address)
            tls.buildProtocol(address).makeConnection(transport)
            transports.append(transport)
        self.assertEqual([t.disconnecting for t in transports], [True] + [False] * MAX_CONNECTIONS)
        self.assertEqual(
            [formatEvent(e) for e in logged],
            [
                "metrics: connection from 127.0.0.1:40000 aborted for a new one from"
                " 127.0.0.1:40008: 8 connections open, this one the longest unanswered"
            ],
        )

    def tlsConnect(self, port: int) -> tuple[Any, StringTransport]:
        """
        A connection to the metrics site behind TLS (an C{ssl:} endpoint)
        serving a certificate of a test CA.
        """
        from twisted.internet.ssl import CertificateOptions
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from tests.certs import CertificateAuthority

        class TCPTransport(StringTransport):
            def setTcpNoDelay(self, enabled: bool) -> None:
                pass

        issued = CertificateAuthority(self.mktemp()).server("metrics.example.com")
        options = CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(issued.key),
            certificate=crypto.X509.from_cryptography(issued.certificate),
        )
        tls = TLSMemoryBIOFactory(options, False, self.factory)
        address = IPv4Address("TCP", "127.0.0.1", port)
        transport = TCPTransport(peerAddress=address)
        protocol = tls.buildProtocol(address)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_tlsHandshakeFailureLogged(self) -> None:
        """
        A TLS handshake that fails on the metrics listener (a scraper
        speaking plain HTTP to an C{ssl:} endpoint) gives one line with the
        peer and OpenSSL's reason.
        """
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        protocol, transport = self.tlsConnect(40000)
        protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            [formatEvent(e) for e in logged],
            ["metrics: TLS handshake with 127.0.0.1:40000 failed: http request"],
        )

    def test_tlsClosedBeforeHandshakeSilent(self) -> None:
        """
        A connection closed before any TLS (a TCP health check) and one whose
        handshake finished are not handshake failures: no line.
        """
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        protocol, transport = self.tlsConnect(40000)
        protocol.connectionLost(Failure(ConnectionDone()))
        protocol, transport = self.tlsConnect(40001)
        client = self.tlsClient(verify=False)
        self.pumpTLS(client, protocol, transport)
        self.assertEqual(client.get_protocol_version_name(), "TLSv1.3")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([formatEvent(e) for e in logged], [])

    def tlsClient(self, verify: bool) -> SSL.Connection:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        if verify:
            context.set_verify(SSL.VERIFY_PEER)
        client = SSL.Connection(context, None)
        client.set_connect_state()
        return client

    def pumpTLS(self, client: SSL.Connection, protocol: Any, transport: StringTransport) -> None:
        """
        Move the bytes of a handshake between C{client} and the server's
        TLS layer until neither has more to say.
        """
        for _ in range(10):
            with contextlib.suppress(SSL.Error):
                client.do_handshake()
            try:
                sent = client.bio_read(65536)
            except SSL.WantReadError:
                sent = b""
            if sent:
                protocol.dataReceived(sent)
            answer = transport.value()
            transport.clear()
            if answer:
                client.bio_write(answer)
            if not sent and not answer:
                return

    def test_tlsCertificateRefusedLogged(self) -> None:
        """
        A scraper that refuses the listener's certificate (it does not know
        its CA) makes one line naming its alert.
        """
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        protocol, transport = self.tlsConnect(40000)
        self.pumpTLS(self.tlsClient(verify=True), protocol, transport)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            [formatEvent(e) for e in logged],
            ["metrics: TLS handshake with 127.0.0.1:40000 failed: tlsv1 alert unknown ca"],
        )


class UnreadResponsesTests(SynchronousTestCase):
    """
    A client that sends requests but leaves the responses unread cannot
    make the metrics listener pile responses up.
    """

    def setUp(self) -> None:
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.factory = metricsSite(ServerMetrics().registry, lambda: True, reactor=self.clock)
        self.factory.doStart()
        self.addCleanup(self.factory.doStop)
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        protocol.makeConnection(self.transport)
        self.protocol = protocol

    def test_pipelinedWhileUnread(self) -> None:
        """
        Once the transport pauses the channel (its send buffer is full: the
        client does not read), requests pipelined behind are not answered:
        the connection is closed once the responses written are sent, with
        one log line, and aborted by the timeout while they are not.
        """
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        self.protocol.dataReceived(request)
        self.assertEqual(self.transport.value().count(b"HTTP/1.1 200 OK"), 1)
        self.assertIsNotNone(self.transport.producer)
        self.transport.producer.pauseProducing()
        self.protocol.dataReceived(request * 200)
        self.assertEqual(self.transport.value().count(b"HTTP/1.1 200 OK"), 1)
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(REQUEST_DEADLINE)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(self.protocol.wrappedProtocol.abortTimeout)
        self.assertTrue(self.transport.disconnected)
        lines = [
            e["log_format"] for e in logged if "responses before it" in e.get("log_format", "")
        ]
        self.assertEqual(len(lines), 1)

    def test_readAgain(self) -> None:
        """
        A client that reads its responses again (the transport resumes the
        channel) is answered as usual.
        """
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        self.protocol.dataReceived(request)
        self.transport.producer.pauseProducing()
        self.transport.producer.resumeProducing()
        self.protocol.dataReceived(request * 3)
        self.assertEqual(self.transport.value().count(b"HTTP/1.1 200 OK"), 4)
        self.assertFalse(self.transport.disconnecting)

    def test_moreRequestsAfterTheClose(self) -> None:
        """
        Behind TLS a connection being closed still reads (for the client's
        close_notify): requests that keep coming after the close, a chunk
        at a time, are not parsed, log nothing more, and do not push the
        timeout back, whatever closed it (requests left unread, a method
        or a body refused).
        """

        class TCPTransport(StringTransport):
            # As a TCP transport: a producer unregistered again is no error.
            def unregisterProducer(self) -> None:
                self.producer = None

        def connect() -> tuple[Any, StringTransport]:
            address = IPv4Address("TCP", "127.0.0.1", 40001)
            protocol = self.factory.buildProtocol(address)
            transport = TCPTransport(peerAddress=address)
            protocol.makeConnection(transport)
            return protocol, transport

        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        protocol, transport = connect()
        protocol.dataReceived(request)
        transport.producer.pauseProducing()
        for _ in range(5):
            protocol.dataReceived(request)
        self.clock.advance(REQUEST_DEADLINE - 1)
        protocol.dataReceived(request)
        self.clock.advance(1)
        self.assertEqual(transport.value().count(b"HTTP/1.1 "), 1)
        self.assertEqual(
            [formatEvent(e).split(": ", 1)[1] for e in logged if "40001" in formatEvent(e)],
            [
                "connection from 127.0.0.1:40001 closed: a request came while the responses"
                " before it were unread",
                "connection from 127.0.0.1:40001 timed out: the responses written before it"
                " was closed were still unread",
            ],
        )
        for refused in (b"POST / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: 9\r\n\r\n"):
            before = len(logged)
            protocol, transport = connect()
            for _ in range(3):
                protocol.dataReceived(refused)
            self.assertEqual(transport.value().count(b"HTTP/1.1 "), 1, transport.value())
            self.assertEqual(len(logged), before + 1, [formatEvent(e) for e in logged])
