"""
Tests for the AUTH command rate of a client address over all its sessions
(C{maxAuthRate}, C{--max-auth-rate}; Postfix's
C{smtpd_client_auth_rate_limit}).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_auth import AUTH_FAILED, AUTH_OK, PasswordHandler, b64
from tests.test_deadlines import LogCatcher
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.limits import ClientLimits
from twisted_smtpd._serving.logging import SessionLogger
from twisted_smtpd._serving.protocol import SMTPProtocol
from twisted_smtpd._serving.server import SMTPServerFactory
from twisted_smtpd._twistd.tap import Options

AUTH_RATE = b"450 4.7.1 Error: too many AUTH commands from your address, try again later\r\n"
GOOD = b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n"
BAD = b"AUTH PLAIN " + b64(b"\0alice\0wrong") + b"\r\n"


class LimitsTests(SynchronousTestCase):
    """
    L{ClientLimits.authCommand}: the AUTH commands of an address counted in
    windows of C{seconds}.
    """

    def test_countedPerAddress(self) -> None:
        """
        The command past C{count} in a window is refused, naming the limit;
        another address has a count of its own; a new window begins when
        the last is over.
        """
        limits = ClientLimits(0, None, (), authRate=(2, 60.0))
        self.assertFalse(limits.active)
        self.assertIsNone(limits.authCommand("192.0.2.7", 0))
        self.assertIsNone(limits.authCommand("192.0.2.7", 10))
        self.assertEqual(limits.authCommand("192.0.2.7", 20), "AUTH rate limit (2 per 60 s)")
        self.assertIsNone(limits.authCommand("192.0.2.8", 20))
        self.assertTrue(limits.tracking)
        self.assertEqual(list(limits.windows), [])
        self.assertIsNone(limits.authCommand("192.0.2.7", 60))
        limits.expire(59)
        self.assertEqual(list(limits.authWindows), ["192.0.2.8", "192.0.2.7"])
        limits.expire(81)
        self.assertEqual(list(limits.authWindows), ["192.0.2.7"])
        limits.expire(120)
        self.assertFalse(limits.tracking)

    def test_notCounted(self) -> None:
        """
        Without C{maxAuthRate}, for an exempt address and for a client with
        no address (a UNIX socket's), nothing is counted or remembered.
        """
        limits = ClientLimits(0, None, ())
        for _ in range(5):
            self.assertIsNone(limits.authCommand("192.0.2.7", 0))
        exempt = ServerOptions(limitExemptions=["192.0.2.0/24"]).limitExemptions
        limits = ClientLimits(0, None, exempt, authRate=(1, 60))
        for host in ("192.0.2.7", "192.0.2.7", "unix", "unix"):
            self.assertIsNone(limits.authCommand(host, 0))
        self.assertFalse(limits.tracking)

    def test_ipv6Prefix(self) -> None:
        """
        IPv6 addresses are counted by their network, as for the connection
        limits.
        """
        limits = ClientLimits(0, None, (), authRate=(1, 60.0))
        self.assertIsNone(limits.authCommand("2001:db8::1", 0))
        self.assertIsNotNone(limits.authCommand("2001:db8::2", 0))
        self.assertEqual(list(limits.authWindows), ["2001:db8::/84"])

    def test_clockSetBack(self) -> None:
        """
        A window whose start is after the clock (set back) is over, and so
        forgotten, rather than refusing the address until the clock catches
        up.
        """
        limits = ClientLimits(0, None, (), authRate=(1, 60.0))
        self.assertIsNone(limits.authCommand("192.0.2.7", 1000))
        self.assertIsNone(limits.authCommand("192.0.2.7", 10))
        self.assertIsNotNone(limits.authCommand("192.0.2.7", 11))

    def test_bounded(self) -> None:
        """
        The table holds at most C{maxTracked} addresses: the oldest window
        is dropped for a new address.
        """
        limits = ClientLimits(0, None, (), maxTracked=3, authRate=(1, 60.0))
        for n in range(5):
            limits.authCommand(f"192.0.2.{n}", n)
        self.assertEqual(
            limits.authWindows,
            OrderedDict((f"192.0.2.{n}", [float(n), 1.0]) for n in (2, 3, 4)),
        )


def _factory(clock: Clock, **options: Any) -> SMTPServerFactory:
    options.setdefault("name", "mx.example.com")
    options.setdefault("disableReverseLookup", True)
    options.setdefault("allowInsecureAuth", True)
    options.setdefault("authMethods", ["PLAIN"])
    return SMTPServerFactory(PasswordHandler(), ServerOptions(**options), reactor=clock)


def _session(
    factory: SMTPServerFactory, host: str = "192.0.2.7"
) -> tuple[SMTPProtocol, StringTransport]:
    proto = factory.buildProtocol(None)  # type: ignore[arg-type]
    family = IPv6Address if ":" in host else IPv4Address
    transport = StringTransport(
        peerAddress=family("TCP", host, 40000),
        hostAddress=family("TCP", "2001:db8::25" if ":" in host else "192.0.2.1", 25),
    )
    proto.makeConnection(transport)
    proto.dataReceived(b"EHLO c\r\n")
    transport.clear()
    return proto, transport


class SessionTests(SynchronousTestCase):
    """
    AUTH in sessions of a server with C{maxAuthRate}.
    """

    def test_acrossSessions(self) -> None:
        """
        The AUTH commands of every session of an address count together:
        past the limit AUTH is answered 450 4.7.1 whatever it carries, the
        session goes on (another client address is not refused), and once
        the window is over AUTH is decided again.
        """
        clock = Clock()
        factory = _factory(clock, maxAuthRate="2/60", socketTimeout=600)
        proto, transport = _session(factory)
        proto.dataReceived(BAD)
        self.assertEqual(transport.value(), AUTH_FAILED)
        proto.connectionLost()
        proto, transport = _session(factory)
        proto.dataReceived(BAD)
        self.assertEqual(transport.value(), AUTH_FAILED)
        transport.clear()
        proto.dataReceived(GOOD)
        self.assertEqual(transport.value(), AUTH_RATE)
        transport.clear()
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(transport.value(), b"250 2.0.0 OK\r\n")
        other, otherTransport = _session(factory, "192.0.2.8")
        other.dataReceived(GOOD)
        self.assertEqual(otherTransport.value(), AUTH_OK)
        clock.advance(60)
        transport.clear()
        proto.dataReceived(GOOD)
        self.assertEqual(transport.value(), AUTH_OK)

    def test_loggedOnce(self) -> None:
        """
        Each refusal is one log line naming the session, the client and the
        limit, also with the sessions' log on (no second line of the
        refused command); the C{reject} event carries the limit.
        """
        log = LogCatcher(self)
        factory = _factory(Clock(), maxAuthRate=(1, 60))
        factory.addObserver(SessionLogger())
        events: list[dict[str, Any]] = []
        factory.addObserver(
            lambda event, session, data: events.append(data) if event == "reject" else None
        )
        proto, transport = _session(factory)
        proto.dataReceived(GOOD)
        proto.connectionLost()
        proto, transport = _session(factory)
        del log.lines[:]
        proto.dataReceived(BAD)
        self.assertEqual(transport.value(), AUTH_RATE)
        self.assertEqual(
            log.matching(proto.session.id),
            [f"{proto.session.id} 192.0.2.7 refused: AUTH rate limit (1 per 60 s) reached"],
        )
        self.assertEqual(events[-1]["limit"], "AUTH rate limit (1 per 60 s)")
        self.assertIsNone(events[-1]["username"])

    def test_countsAsError(self) -> None:
        """
        A refusal counts towards C{maxErrors}, as Postfix counts it: a
        client repeating AUTH past the limit is disconnected.
        """
        factory = _factory(Clock(), maxAuthRate=(1, 60), maxErrors=3)
        proto, transport = _session(factory)
        proto.dataReceived(GOOD)
        self.assertEqual(transport.value(), AUTH_OK)
        proto, transport = _session(factory)
        proto.dataReceived(GOOD * 3)
        self.assertEqual(
            transport.value(),
            AUTH_RATE * 3 + b"421 4.7.0 Too many errors, closing connection\r\n",
        )

    def test_malformedNotCounted(self) -> None:
        """
        Only AUTH commands that start an exchange count: a syntax error or
        an unknown mechanism is refused as such.
        """
        factory = _factory(Clock(), maxAuthRate=(1, 60))
        proto, transport = _session(factory)
        proto.dataReceived(b"AUTH\r\nAUTH NOSUCH\r\n")
        transport.clear()
        proto.dataReceived(GOOD)
        self.assertEqual(transport.value(), AUTH_OK)

    def test_exempt(self) -> None:
        """
        C{limitExemptions} networks are not limited.
        """
        factory = _factory(Clock(), maxAuthRate=(1, 60), limitExemptions=["192.0.2.0/24"])
        for _ in range(3):
            proto, transport = _session(factory)
            proto.dataReceived(BAD)
            self.assertEqual(transport.value(), AUTH_FAILED)
            proto.connectionLost()


class FlagTests(SynchronousTestCase):
    def test_flag(self) -> None:
        """
        C{--max-auth-rate COUNT/SECONDS} sets C{maxAuthRate}; a value in
        another form is refused naming the flag.
        """
        config = Options()
        config.parseOptions(["--sink", "--auth", "memory:alice:secret", "--max-auth-rate", "5/60"])
        self.assertEqual(config["serverOptions"].maxAuthRate, (5, 60.0))
        config = Options()
        config.parseOptions(["--sink"])
        self.assertIsNone(config["serverOptions"].maxAuthRate)
        e = self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--sink", "--max-auth-rate", "5"]
        )
        self.assertIn("--max-auth-rate", str(e))

    def test_unusedWithoutAuth(self) -> None:
        """
        Without AUTH offered, C{--max-auth-rate} has no effect, said at
        start.
        """
        config = Options()
        config.parseOptions(["--sink", "--max-auth-rate", "5/60"])
        self.assertIn(
            "--max-auth-rate has no effect: AUTH is not offered (no --auth, no --handler"
            " whose onAuth decides it)",
            config["unused"],
        )
