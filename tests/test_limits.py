"""
Tests for L{twisted_smtpd._serving.limits}: IPv6 clients counted by their network
(C{clientIpv6PrefixLength}, Postfix's C{smtpd_client_ipv6_prefix_length}).
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_deadlines import CONNECTION_RATE, TOO_MANY_FROM_ADDRESS, factoryFor
from tests.test_protocol import RecordingHandler, connect
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.session import Session
from twisted_smtpd._serving.limits import MAX_TRACKED, ClientLimits
from twisted_smtpd._serving.server import SMTPServerFactory
from twisted_smtpd.interfaces import IMessageStream


def connectFrom(
    factory: SMTPServerFactory,
    host: str,
    family: type[IPv4Address] | type[IPv6Address] = IPv6Address,
) -> StringTransport:
    proto = factory.buildProtocol(None)  # type: ignore[arg-type]
    transport = StringTransport(
        peerAddress=family("TCP", host, 40000),
        hostAddress=family("TCP", "2001:db8::25" if family is IPv6Address else "192.0.2.1", 25),
    )
    proto.makeConnection(transport)
    return transport


class IPv6PrefixTests(SynchronousTestCase):
    def test_samePrefixCountedTogether(self) -> None:
        """
        Addresses in one /84 are one client for the limits; an address in
        the next /84 is another.  IPv4 addresses are counted alone.
        """
        limits = ClientLimits(1, None, ())
        self.assertEqual(limits.connected("2001:db8::1", 0), (True, None))
        counted, limit = limits.connected("2001:db8::fff:ffff:ffff", 0)
        self.assertEqual(limit, "connection limit per client address (1)")
        self.assertEqual(limits.connected("2001:db8::1000:0:0", 0), (True, None))
        self.assertEqual(limits.connected("192.0.2.7", 0), (True, None))
        self.assertEqual(limits.connected("192.0.2.8", 0), (True, None))
        self.assertEqual(
            limits.open,
            {"2001:db8::/84": 2, "2001:db8::1000:0:0/84": 1, "192.0.2.7": 1, "192.0.2.8": 1},
        )
        for host in ("2001:db8::1", "2001:db8::fff:ffff:ffff", "2001:db8::1000:0:0"):
            limits.disconnected(host)
        self.assertEqual(limits.open, {"192.0.2.7": 1, "192.0.2.8": 1})

    def test_rateCountedByPrefix(self) -> None:
        """
        The connection rate of a /84 is counted as one client's.
        """
        limits = ClientLimits(0, (1, 60), ())
        self.assertEqual(limits.connected("2001:db8::1", 0), (True, None))
        limits.disconnected("2001:db8::1")
        counted, limit = limits.connected("2001:db8::2", 1)
        self.assertEqual(limit, "connection rate limit (1 per 60 s)")
        self.assertEqual(list(limits.windows), ["2001:db8::/84"])

    def test_sessionsOfOnePrefix(self) -> None:
        """
        With C{maxClientsPerIp=1} a second client of the same /84 gets
        421; with C{clientIpv6PrefixLength=128} it is served.
        """
        factory = factoryFor(Clock(), maxClientsPerIp=1)
        self.assertEqual(connectFrom(factory, "2001:db8::1").value(), replies.GREETING)
        self.assertEqual(connectFrom(factory, "2001:db8::2").value(), TOO_MANY_FROM_ADDRESS)
        factory = factoryFor(Clock(), maxClientsPerIp=1, clientIpv6PrefixLength=128)
        self.assertEqual(connectFrom(factory, "2001:db8::1").value(), replies.GREETING)
        self.assertEqual(connectFrom(factory, "2001:db8::2").value(), replies.GREETING)
        self.assertEqual(connectFrom(factory, "2001:db8::2").value(), TOO_MANY_FROM_ADDRESS)

    def test_prefixLengthValidated(self) -> None:
        """
        C{clientIpv6PrefixLength} is 0 to 128, 84 by default.
        """
        self.assertEqual(ServerOptions(name="x").clientIpv6PrefixLength, 84)
        for bad in (-1, 129):
            self.assertRaises(ValueError, ServerOptions, name="x", clientIpv6PrefixLength=bad)


class XClientFrontEndTests(SynchronousTestCase):
    """
    A front end allowed XCLIENT (C{useXClient}) passes many clients over its
    connections, all from its own address: as Postfix leaves the hosts of
    C{smtpd_authorized_xclient_hosts} out of its connection count and rate
    limits, the per-address limits leave it out.
    """

    def test_frontEndNotLimited(self) -> None:
        """
        The front end's connections past C{maxClientsPerIp} and
        C{maxConnectionRate} are greeted, and the limit tables hold nothing
        for them; C{maxClients} still counts them, and a client outside
        C{useXClient} is still limited.
        """
        factory = factoryFor(
            Clock(),
            maxClientsPerIp=1,
            maxConnectionRate=(2, 60.0),
            maxClients=5,
            useXClient=["192.0.2.0/24"],
        )
        self.assertEqual(
            connectFrom(factory, "198.51.100.7", IPv4Address).value(), replies.GREETING
        )
        self.assertEqual(
            connectFrom(factory, "198.51.100.7", IPv4Address).value(), TOO_MANY_FROM_ADDRESS
        )
        for _ in range(4):
            transport = connectFrom(factory, "192.0.2.7", IPv4Address)
            self.assertEqual(transport.value(), replies.GREETING)
        self.assertEqual(list(factory.limits.open), ["198.51.100.7"])
        self.assertEqual(list(factory.limits.windows), ["198.51.100.7"])
        self.assertEqual(
            connectFrom(factory, "192.0.2.7", IPv4Address).value(), replies.TOO_MANY_CLIENTS
        )


class ClockStepTests(SynchronousTestCase):
    """
    The reactor's time is the wall clock, which an operator or NTP may set
    back: a rate window that would begin after now is over, not one that
    lasts for as long as the clock went back.
    """

    def test_clockSetBack(self) -> None:
        """
        An address refused by C{maxConnectionRate} is served again once
        the clock was set back, in a new window; the windows begun after
        the new time are forgotten by the sweep.
        """
        clock = Clock()
        clock.advance(1000)
        factory = factoryFor(clock, maxConnectionRate=(2, 60.0))
        for _ in range(2):
            self.assertEqual(
                connectFrom(factory, "192.0.2.7", IPv4Address).value(), replies.GREETING
            )
        connectFrom(factory, "192.0.2.8", IPv4Address)
        self.assertEqual(connectFrom(factory, "192.0.2.7", IPv4Address).value(), CONNECTION_RATE)
        clock.rightNow -= 900
        self.assertEqual(connectFrom(factory, "192.0.2.7", IPv4Address).value(), replies.GREETING)
        self.assertEqual(
            factory.limits.windows, {"192.0.2.8": [1000.0, 1.0], "192.0.2.7": [100.0, 1.0]}
        )
        factory.limits.expire(clock.seconds())
        self.assertEqual(factory.limits.windows, {"192.0.2.7": [100.0, 1.0]})

    def test_windowEdges(self) -> None:
        """
        A window of C{seconds} takes C{count} connections from its first
        one up to just before C{seconds} later; at C{seconds} a new one
        begins.
        """
        limits = ClientLimits(0, (2, 60.0), ())
        self.assertEqual(limits.connected("192.0.2.7", 10.0), (True, None))
        self.assertEqual(limits.connected("192.0.2.7", 69.999), (True, None))
        self.assertEqual(
            limits.connected("192.0.2.7", 69.999)[1], "connection rate limit (2 per 60 s)"
        )
        self.assertEqual(limits.connected("192.0.2.7", 70.0), (True, None))
        self.assertEqual(limits.windows, {"192.0.2.7": [70.0, 1.0]})


class FullTableTests(SynchronousTestCase):
    """
    A flood from ever new addresses (from one IPv6 /64: a million /84
    networks) fills the rate table to L{MAX_TRACKED}; each further address
    then drops the oldest window.
    """

    def test_fullTableDropsOldestAtOnce(self) -> None:
        """
        Once the table is full, each new address drops the oldest window;
        the table is an C{OrderedDict}, whose first entry is found at once
        (a C{dict} scans the entries deleted before it from its start, up
        to a hundred thousand for each new address of such a flood: about
        20 times the cost of counting a connection, measured apart, as the
        unit tests time nothing).
        """
        limits = ClientLimits(0, (5, 3600.0), ())
        self.assertIsInstance(limits.windows, OrderedDict)
        hosts = [f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" for i in range(2 * MAX_TRACKED + 3)]
        for i, host in enumerate(hosts):
            limits.connected(host, i / 1000)
            limits.disconnected(host)
        self.assertEqual(len(limits.windows), MAX_TRACKED)
        self.assertEqual(next(iter(limits.windows)), hosts[MAX_TRACKED + 3])
        self.assertEqual(next(reversed(limits.windows)), hosts[-1])


class _UnregisterFails:
    """
    A consumer that raises when told the producer is gone: a handler's bug.
    """

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        raise RuntimeError("consumer bug")

    def write(self, data: bytes) -> None:
        pass


class _PipingHandler(RecordingHandler):
    def onData(self, stream: IMessageStream, session: Session) -> object:
        return stream.pipe(_UnregisterFails())  # type: ignore[arg-type]


class ConnectionLostTests(SynchronousTestCase):
    """
    However a session ends, its connection is counted off once.
    """

    def test_consumerRaisesAtLoss(self) -> None:
        """
        A handler's consumer raising when the body it was piped fails at the
        connection's loss is logged as the handler's failure; the connection
        is still forgotten by the limits and the factory, and C{onClose} is
        told, so that the client is not refused for good and a graceful
        close completes.
        """
        handler = _PipingHandler()
        proto, transport, clock, factory = connect(handler, maxClientsPerIp=1)
        proto.dataReceived(b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        proto.dataReceived(b"DATA\r\nbody\r\n")
        proto.connectionLost()
        (error,) = self.flushLoggedErrors(RuntimeError)
        self.assertEqual(str(error.value), "consumer bug")
        self.assertEqual((factory.limits.open, factory.connections), ({}, set()))
        self.assertEqual(handler.closed, [proto.session])
        self.successResultOf(factory.close())


class PrefixLengthFlagTests(SynchronousTestCase):
    """
    C{twistd smtpd --client-ipv6-prefix-length BITS} sets
    C{clientIpv6PrefixLength}, refusing what it refuses in one line.
    """

    def test_flag(self) -> None:
        from twisted.python import usage

        from tests.test_tap import parse

        options = parse("--sink", "--max-clients-per-ip", "2", "--client-ipv6-prefix-length", "64")
        self.assertEqual(options["serverOptions"].clientIpv6PrefixLength, 64)
        self.assertEqual(parse("--sink")["serverOptions"].clientIpv6PrefixLength, 84)
        for bad in ("129", "-1", "x"):
            e = self.assertRaises(
                usage.UsageError, parse, "--sink", "--client-ipv6-prefix-length", bad
            )
            self.assertIn("--client-ipv6-prefix-length", str(e))
