"""
Regression tests for defects found by adversarial testing of a running
server.  Each is marked C{todo} until it is fixed, so the suite stays green.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests import replies
from tests.test_protocol import connect, take
from tests.tracing import untraced


class ErrorLimitTests(SynchronousTestCase):
    """
    docs/behaviour.md: "Every 4xx/5xx answer to a command, including a
    handler's refusal, counts towards C{maxErrors}".
    """

    def test_refusedMessagesCountTowardsMaxErrors(self) -> None:
        """
        A message refused after its final dot (here 550 for a bare LF) is a
        5xx answer to DATA and counts like any other: with C{maxErrors=3}
        the third refusal is followed by 421 and a close.  Postfix counts
        rejected DATA towards C{smtpd_hard_error_limit} too.
        """
        proto, transport, clock, _ = connect(maxErrors=3)
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        message = (
            b"MAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\nDATA\r\nbare\nline\r\n.\r\n"
        )
        proto.dataReceived(message * 3)
        out = take(transport)
        self.assertEqual(out.count(replies.BARE_NEWLINE), 3)
        self.assertTrue(out.endswith(replies.TOO_MANY_ERRORS), out)
        self.assertTrue(transport.disconnecting)


class PerRecipientNameTests(SynchronousTestCase):
    """
    docs/operator.md (per-recipient Maildir): a recipient whose local part
    or domain holds "a control, invisible formatting or separator
    character" is refused at RCPT with C{553 5.1.3}.
    """

    def test_spaceSeparatorRefused(self) -> None:
        """
        U+0020 and the other space separators (Unicode category Zs) are
        separator characters, yet C{<" "@example.com>} is accepted and
        delivered into a directory named C{" "} (and C{<" a"@example.com>}
        into one distinct from C{a}'s).
        """
        from twisted_smtpd._core.errors import SMTPError
        from twisted_smtpd.handlers._maildirnames import recipientDirectory

        for address in ['" "@example.com', '" a"@example.com', '"a\u3000"@example.com']:
            with self.subTest(address=address):
                self.assertRaises(SMTPError, recipientDirectory, address, "mx.example.com")

    def test_ipv6LiteralsShareOneDirectory(self) -> None:
        """
        C{a@[IPv6:::1]} and C{a@[IPv6:0:0:0:0:0:0:0:1]} name the same
        mailbox (RFC 5321 section 4.1.3 literals of one address), as
        C{TMP} and C{tmp} do, yet get two directories.
        """
        from twisted_smtpd.handlers._maildirnames import recipientDirectory

        self.assertEqual(
            recipientDirectory("a@[IPv6:::1]", "mx.example.com"),
            recipientDirectory("a@[IPv6:0:0:0:0:0:0:0:1]", "mx.example.com"),
        )
        self.assertEqual(
            recipientDirectory("a@[IPv6:2001:DB8:0:0::7]", "mx.example.com"),
            ("[ipv6:2001:db8::7]", "a"),
        )
        self.assertEqual(
            recipientDirectory("a@[192.0.002.1]", "mx.example.com"), ("[192.0.2.1]", "a")
        )
        # Not an address: left as it is.
        self.assertEqual(
            recipientDirectory("a@[IPv6:nonsense]", "mx.example.com"), ("[ipv6:nonsense]", "a")
        )


class XOAuth2WithoutDeciderTests(SynchronousTestCase):
    """
    docs/tls-auth.md: "AUTH is offered when something can decide it" and
    "XOAUTH2 always goes to C{onAuth}".  With only C{twisted.cred} checkers
    (C{twistd smtpd --auth memory:alice:secret --auth-methods
    PLAIN,XOAUTH2}) nothing can decide XOAUTH2.
    """

    def _session(self) -> tuple[object, object]:
        from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
        from twisted.internet.address import IPv4Address
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from tests.test_protocol import RecordingHandler
        from twisted_smtpd._core.options import ServerOptions
        from twisted_smtpd._serving.server import SMTPServerFactory

        factory = SMTPServerFactory(
            RecordingHandler(),
            ServerOptions(
                name="mx.example.com",
                disableReverseLookup=True,
                allowInsecureAuth=True,
                authMethods=["PLAIN", "XOAUTH2"],
            ),
            reactor=Clock(),
            checkers=[InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")],
        )
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "192.0.2.7", 40000),
            hostAddress=IPv4Address("TCP", "192.0.2.1", 25),
        )
        proto.makeConnection(transport)
        return proto, transport

    def test_xoauth2NotAdvertisedWithoutOnAuth(self) -> None:
        """
        XOAUTH2 is not listed in EHLO when no C{onAuth} can decide it; the
        server does advertise it, then answers a well-formed exchange with
        C{504 5.5.4 Unrecognized authentication type} (RFC 4954 section 4
        keeps 504 for a mechanism the server does not support, which it
        must not have advertised).
        """
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proto, transport = self._session()
        warnings = [formatEvent(e) for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("XOAUTH2", warnings[0])
        self.assertNotIn("PLAIN", warnings[0])
        take(transport)  # type: ignore[arg-type]
        proto.dataReceived(b"EHLO c\r\n")  # type: ignore[attr-defined]
        ehlo = take(transport)  # type: ignore[arg-type]
        self.assertIn(b"250-AUTH PLAIN\r\n", ehlo)
        self.assertNotIn(b"XOAUTH2", ehlo)
        token = b"dXNlcj1hbGljZQFhdXRoPUJlYXJlciB0b2sBAQ=="
        proto.dataReceived(b"AUTH XOAUTH2 " + token + b"\r\n")  # type: ignore[attr-defined]
        self.assertEqual(
            take(transport),  # type: ignore[arg-type]
            b"504 5.5.4 Unrecognized authentication type\r\n",
        )


class MappedAddressTests(SynchronousTestCase):
    """
    On a dual-stack listener (C{--listen tcp6:25:interface=\\:\\:}) an IPv4
    client's address arrives as an IPv4-mapped IPv6 address
    (C{::ffff:192.0.2.7}).  Postfix turns such addresses back into IPv4
    before matching C{mynetworks}, C{smtpd_authorized_xclient_hosts} and
    the anvil limits; here IPv4 networks never match them.
    """

    def _connect(self, **options: object) -> tuple[object, object]:
        from twisted.internet.address import IPv6Address
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from tests.test_protocol import RecordingHandler
        from twisted_smtpd._core.options import ServerOptions
        from twisted_smtpd._serving.server import SMTPServerFactory

        factory = SMTPServerFactory(
            RecordingHandler(),
            ServerOptions(name="mx.example.com", disableReverseLookup=True, **options),
            reactor=Clock(),
        )
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport(
            peerAddress=IPv6Address("TCP", "::ffff:192.0.2.7", 40000),
            hostAddress=IPv6Address("TCP", "::ffff:192.0.2.1", 25),
        )
        proto.makeConnection(transport)
        return proto, transport

    def test_xclientFromMappedAddress(self) -> None:
        """
        C{useXClient=["192.0.2.0/24"]} trusts 192.0.2.7 arriving as
        C{::ffff:192.0.2.7}: XCLIENT is advertised and accepted (a new 220).
        """
        proto, transport = self._connect(useXClient=["192.0.2.0/24"])
        take(transport)  # type: ignore[arg-type]
        proto.dataReceived(b"EHLO c\r\n")  # type: ignore[attr-defined]
        self.assertIn(b"XCLIENT", take(transport))  # type: ignore[arg-type]
        proto.dataReceived(b"XCLIENT ADDR=198.51.100.1\r\n")  # type: ignore[attr-defined]
        self.assertEqual(take(transport), replies.GREETING)  # type: ignore[arg-type]

    def test_limitExemptionForMappedAddress(self) -> None:
        """
        C{limitExemptions=["192.0.2.0/24"]} exempts 192.0.2.7 arriving as
        C{::ffff:192.0.2.7} from C{maxClientsPerIp}: a second connection is
        greeted, not refused with 421.
        """
        from twisted.internet.address import IPv6Address
        from twisted.internet.testing import StringTransport

        proto, transport = self._connect(maxClientsPerIp=1, limitExemptions=["192.0.2.0/24"])
        # Two sessions on the same factory.
        factory = proto.server  # type: ignore[attr-defined]
        second = factory.buildProtocol(None)
        t2 = StringTransport(
            peerAddress=IPv6Address("TCP", "::ffff:192.0.2.7", 40001),
            hostAddress=IPv6Address("TCP", "::ffff:192.0.2.1", 25),
        )
        second.makeConnection(t2)
        self.assertEqual(t2.value(), replies.GREETING)

    def _second(self, proto: object, host: str) -> object:
        from twisted.internet.address import IPv4Address, IPv6Address
        from twisted.internet.testing import StringTransport

        factory = proto.server  # type: ignore[attr-defined]
        second = factory.buildProtocol(None)
        address = IPv6Address if ":" in host else IPv4Address
        t2 = StringTransport(
            peerAddress=address("TCP", host, 40001),
            hostAddress=address("TCP", "192.0.2.1", 25),
        )
        second.makeConnection(t2)
        return t2

    def test_sessionSeesIPv4Form(self) -> None:
        """
        The session's addresses, its name before any lookup, the EHLO reply
        and the C{Received:} header name the client C{192.0.2.7}, never
        C{[IPv6:::ffff:c000:207]}.
        """
        from twisted_smtpd.handlers._tracefields import traceHeaderLines as _traceHeaderLines

        proto, transport = self._connect()
        session = proto.session  # type: ignore[attr-defined]
        self.assertEqual(session.remoteAddress, ("192.0.2.7", 40000))
        self.assertEqual(session.localAddress, ("192.0.2.1", 25))
        self.assertEqual(session.clientHostname, "[192.0.2.7]")
        take(transport)  # type: ignore[arg-type]
        proto.dataReceived(b"EHLO c\r\n")  # type: ignore[attr-defined]
        self.assertEqual(take(transport), replies.EHLO_DEFAULT)  # type: ignore[arg-type]
        header = _traceHeaderLines(session, "mx.example.com").decode()
        self.assertIn("Received: from c (unknown [192.0.2.7]) by mx.example.com", header)

    def test_logLineSeesIPv4Form(self) -> None:
        """
        The connect log line names the client and the local address in
        their IPv4 form.
        """
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import formatEvent, globalLogPublisher

        from twisted_smtpd._serving.logging import SessionLogger

        proto, transport = self._connect()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        SessionLogger()("connect", proto.session, {})  # type: ignore[attr-defined]
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                f"{proto.session.id} connect from 192.0.2.7:40000"  # type: ignore[attr-defined]
                " ([192.0.2.7]) to 192.0.2.1:25"
            ],
        )

    def test_ignoredHostsMatchMappedAddress(self) -> None:
        """
        C{ignoredHosts} written in either form silences the session of
        192.0.2.7 arriving as C{::ffff:192.0.2.7}; another address is
        still logged.
        """
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        from twisted_smtpd._core.options import ServerOptions
        from twisted_smtpd._serving.logging import SessionLogger

        proto, transport = self._connect()
        session = proto.session  # type: ignore[attr-defined]
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for ignored in ("192.0.2.7", "::ffff:192.0.2.7", "::FFFF:c000:207"):
            options = ServerOptions(name="mx.example.com", ignoredHosts=[ignored])
            SessionLogger(options.ignoredHosts)("connect", session, {})
        self.assertEqual(len(events), 0)
        SessionLogger(["192.0.2.8"])("connect", session, {})
        self.assertEqual(len(events), 1)

    def test_ignoredHostsNormalisedByTheLogger(self) -> None:
        """
        A L{SessionLogger} built directly (not from L{ServerOptions})
        normalises its C{ignoredHosts} too: an IPv4-mapped or upper-case
        IPv6 entry silences the session it names.
        """
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        from twisted_smtpd._serving.logging import SessionLogger

        proto, transport = self._connect()
        session = proto.session  # type: ignore[attr-defined]
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for ignored in ("::ffff:192.0.2.7", "::FFFF:c000:207"):
            SessionLogger([ignored])("connect", session, {})
        session.remoteAddress = ("2001:db8::1", 40000)
        SessionLogger(["2001:DB8:0::1"])("connect", session, {})
        self.assertEqual(len(events), 0)

    def test_xforwardFromMappedAddress(self) -> None:
        """
        C{useXForward=["192.0.2.0/24"]} trusts 192.0.2.7 arriving as
        C{::ffff:192.0.2.7}: XFORWARD is advertised and accepted.
        """
        proto, transport = self._connect(useXForward=["192.0.2.0/24"])
        take(transport)  # type: ignore[arg-type]
        proto.dataReceived(b"EHLO c\r\n")  # type: ignore[attr-defined]
        self.assertIn(b"XFORWARD", take(transport))  # type: ignore[arg-type]
        proto.dataReceived(b"XFORWARD ADDR=198.51.100.1\r\n")  # type: ignore[attr-defined]
        self.assertEqual(take(transport), replies.OK)  # type: ignore[arg-type]

    def test_ipv6NetworkDoesNotTrustMappedAddress(self) -> None:
        """
        As in Postfix, a mapped client is an IPv4 client: C{::/0} does not
        trust it, while a network written in mapped form
        (C{::ffff:192.0.2.0/120}) means the IPv4 network it maps.
        """
        proto, transport = self._connect(useXClient=["::/0"])
        take(transport)  # type: ignore[arg-type]
        proto.dataReceived(b"EHLO c\r\n")  # type: ignore[attr-defined]
        self.assertNotIn(b"XCLIENT", take(transport))  # type: ignore[arg-type]
        proto, transport = self._connect(useXClient=["::ffff:192.0.2.0/120"])
        take(transport)  # type: ignore[arg-type]
        proto.dataReceived(b"EHLO c\r\n")  # type: ignore[attr-defined]
        self.assertIn(b"XCLIENT", take(transport))  # type: ignore[arg-type]

    def test_unmapped(self) -> None:
        """
        L{unmapped} gives a mapped address in any spelling as IPv4, and
        anything else as it is.
        """
        from twisted_smtpd._core.session import unmapped

        for mapped in ("::ffff:192.0.2.7", "::FFFF:c000:207", "0:0:0:0:0:ffff:192.0.2.7"):
            self.assertEqual(unmapped(mapped), "192.0.2.7", mapped)
        for other in ("192.0.2.7", "2001:db8::ffff", "::1", "fe80::1%eth0", "/run/a:ffff", ""):
            self.assertEqual(unmapped(other), other)

    def test_trustedUnmaps(self) -> None:
        """
        L{trusted} matches a mapped address (in any spelling) against IPv4
        networks only.
        """
        from twisted_smtpd._core.options import ServerOptions, trusted

        networks = ServerOptions(name="x", useXClient=["192.0.2.0/24", "2001:db8::/32"]).useXClient
        for host in ("192.0.2.7", "::ffff:192.0.2.7", "::FFFF:c000:207", "0:0:0:0:0:ffff:c000:207"):
            self.assertTrue(trusted(networks, host), host)
        for host in ("::ffff:198.51.100.1", "::c000:207", "2001:db9::1", "nonsense"):
            self.assertFalse(trusted(networks, host), host)
        self.assertFalse(
            trusted(ServerOptions(name="x", useXClient=["::/0"]).useXClient, "::ffff:1.2.3.4")
        )

    def test_mappedAndIPv4CountedTogether(self) -> None:
        """
        C{maxClientsPerIp} counts 192.0.2.7 once whether it arrives as
        C{::ffff:192.0.2.7} or C{192.0.2.7}: the second connection is
        refused.
        """
        from tests.test_deadlines import TOO_MANY_FROM_ADDRESS

        proto, transport = self._connect(maxClientsPerIp=1)
        self.assertEqual(
            self._second(proto, "192.0.2.7").value(),  # type: ignore[attr-defined]
            TOO_MANY_FROM_ADDRESS,
        )

    def test_xclientMappedAddress(self) -> None:
        """
        An XCLIENT C{ADDR} and C{DESTADDR} in mapped form are taken in their
        IPv4 form.
        """
        proto, transport = self._connect(useXClient=["192.0.2.0/24"])
        proto.dataReceived(  # type: ignore[attr-defined]
            b"XCLIENT ADDR=IPV6:::ffff:198.51.100.1 DESTADDR=::ffff:203.0.113.9\r\n"
        )
        session = proto.session  # type: ignore[attr-defined]
        self.assertEqual(session.remoteAddress[0], "198.51.100.1")
        self.assertEqual(session.localAddress[0], "203.0.113.9")
        self.assertEqual(session.clientHostname, "[198.51.100.1]")

    def test_proxyFromMappedAddress(self) -> None:
        """
        C{useProxy=["192.0.2.0/24"]} trusts a front end at 192.0.2.7
        arriving as C{::ffff:192.0.2.7}; a mapped source address in the
        header gives the session the IPv4 client.
        """
        import socket

        from twisted.internet.address import IPv6Address
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from tests.test_protocol import RecordingHandler
        from tests.test_proxy import v2
        from twisted_smtpd._core.options import ServerOptions
        from twisted_smtpd._serving.proxy import ProxyWrappingFactory
        from twisted_smtpd._serving.server import SMTPServerFactory

        clock = Clock()
        options = ServerOptions(
            name="mx.example.com", disableReverseLookup=True, useProxy=["192.0.2.0/24"]
        )
        factory = SMTPServerFactory(RecordingHandler(), options, reactor=clock)
        wrapping = ProxyWrappingFactory(factory, options.useProxy, clock)
        peer = IPv6Address("TCP", "::ffff:192.0.2.7", 1000)
        wrapper = wrapping.buildProtocol(peer)
        transport = StringTransport(
            peerAddress=peer, hostAddress=IPv6Address("TCP", "::ffff:192.0.2.1", 25)
        )
        wrapper.makeConnection(transport)
        wrapper.dataReceived(
            v2("::ffff:198.51.100.4", "::ffff:192.0.2.1", 4000, 25, socket.AF_INET6)
        )
        self.assertEqual(transport.value(), replies.GREETING)
        session = wrapper.wrappedProtocol.session
        self.assertEqual(session.remoteAddress, ("198.51.100.4", 4000))
        self.assertEqual(session.clientHostname, "[198.51.100.4]")
        self.assertEqual(
            dict(session.proxy.attributes),
            {
                "PROXY": "192.0.2.7",
                "VERSION": "2",
                "SOURCE": "198.51.100.4",
                "DESTINATION": "192.0.2.1",
            },
        )


class BinaryMimeRelayTests(TestCase):
    """
    A message received with C{BODY=BINARYMIME} over BDAT (RFC 3030) may
    hold any octets.  L{RelayHandler} passes it on with DATA and
    C{BODY=8BITMIME}, whatever the smarthost offers: RFC 3030 section 3
    says a BINARYMIME message must be sent with BDAT, and RFC 6152 forbids
    NUL and bare CR/LF in 8BITMIME text.  The dot-stuffing of periods after
    bare CR or LF (which protects against SMTP smuggling) then changes the
    body: a smarthost that (rightly) unstuffs only after CRLF stores one
    more period than the client sent.
    """

    async def test_binaryBodyRelayedByteForByte(self) -> None:
        """
        The smarthost (another twisted-smtpd, which advertises CHUNKING and
        BINARYMIME) receives the body octet for octet.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Protocol
        from twisted.internet.task import deferLater

        from tests.test_client import Recorder, startServer
        from twisted_smtpd.handlers.relay import RelayHandler

        smarthost = Recorder()
        _, smarthostPort = await startServer(self, smarthost, bareNewline="legacy")
        handler = RelayHandler("127.0.0.1", smarthostPort, heloName="relay.example", tls="none")
        self.addCleanup(handler.close)
        _, frontPort = await startServer(self, handler)

        body = b"Subject: bin\r\n\r\nline1\nNUL\x00here\r.\rend\r\n"

        class Client(Protocol):
            received = b""

            def dataReceived(self, data: bytes) -> None:
                self.received += data

        client = Client()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", frontPort), client)
        self.addCleanup(client.transport.loseConnection)  # type: ignore[union-attr]
        client.transport.write(  # type: ignore[union-attr]
            b"EHLO c\r\nMAIL FROM:<a@example.com> BODY=BINARYMIME\r\n"
            b"RCPT TO:<b@example.org>\r\nBDAT %d LAST\r\n" % (len(body),) + body
        )
        for _ in range(100):
            if client.received.count(b"\r\n") >= 13 and b"\r\n2" in client.received[-80:]:
                break
            await deferLater(reactor, 0.05, lambda: None)
        # The smarthost's own reply to the message comes back.
        self.assertTrue(client.received.endswith(b"\r\n250 2.0.0 queued as Q1\r\n"))
        [message] = smarthost.messages
        self.assertEqual(untraced(self, message.body, helo="c", recipient="b@example.org"), body)


class PipeSignalTests(SynchronousTestCase):
    """
    A delivery command that dies by a signal (the OOM killer's SIGKILL, a
    crash's SIGSEGV) is answered C{554}: the client bounces the message for
    good although nothing was wrong with it.  Postfix's C{pipe(8)}
    (C{pipe_command.c}) defers it: C{4.3.0 Command died with signal N}.
    """

    def test_killedCommandIsTemporary(self) -> None:
        """
        SIGKILL from outside gives a 4xx reply, so the client retries.
        """
        from tests.test_pipe import PipeUnitTests
        from twisted_smtpd._core.errors import SMTPError

        units = PipeUnitTests()
        d, stream, process = units.start()
        process.exit(None, 9)
        error = self.failureResultOf(d, SMTPError).value
        self.assertEqual((error.code, error.enhanced), (451, "4.3.0"))


class MessageIdUniquenessTests(SynchronousTestCase):
    """
    C{handlers._envelope.messageId} promises an id "unique per accepted
    message of one server process", and docs/scaling.md tells webhook and
    AMQP consumers to drop duplicates by C{messageId}/C{sessionId}.  The id
    is 40 random bits (C{newSessionId}) and the transaction number, with no
    process-local counter: by the birthday bound two sessions of one busy
    process share an id after about a million sessions (p = 0.5 near 1.2
    million), and a consumer deduplicating on it drops a different message.
    """

    def test_sessionIdsUniqueEvenWhenRandomRepeats(self) -> None:
        """
        Two sessions get different ids even if the random source repeats
        (a counter or the like makes them unique within the process).
        """
        from twisted_smtpd._core import session as _session

        self.patch(_session.os, "urandom", lambda n: b"\x00" * n)
        self.assertNotEqual(_session.newSessionId(), _session.newSessionId())


class MinDataRateWindowTests(SynchronousTestCase):
    """
    C{minDataRate} (C{--min-data-rate BYTES/SECONDS}) "cuts a DATA or BDAT
    transfer slower than that" (docs/behaviour.md).  Its first window is
    measured from C{_rateSince = 0.0}, the reactor's epoch, not from the
    start of the session or transfer: with a real clock, a transfer that
    starts before the first sweep after connecting is judged at once on
    the few bytes it has sent so far.  Seen live: C{--min-data-rate 1000/2},
    EHLO/MAIL/RCPT/DATA pipelined, then one byte a second: 421 after 0.5 s.
    """

    def test_firstWindowNotMeasuredFromEpoch(self) -> None:
        """
        With a clock at a realistic time, a transfer at twice the minimum
        rate (200 bytes a second against 1000 per 10 s) is not cut during
        its first seconds.
        """
        from twisted.internet.task import Clock

        from tests.test_protocol import RecordingHandler, transaction

        clock = Clock()
        clock.advance(1_800_000_000)
        handler = RecordingHandler()
        proto, transport, clock, factory = connect(
            handler, clock=clock, socketTimeout=60, minDataRate=(1000, 10)
        )
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\n")
        take(transport)
        for _ in range(5):
            proto.dataReceived(b"x" * 198 + b"\r\n")
            clock.advance(1)
        self.assertEqual(take(transport), b"")
        self.assertFalse(transport.disconnecting)

    def test_tinyBdatChunksCut(self) -> None:
        """
        A BDAT message sent as one-octet chunks, one a second, averages 1
        byte a second against a minimum of 1000 per 10 s: it is cut with
        421 like the same trickle over DATA.  The rate is only measured
        while a chunk is being read, and each chunk is read at once, so it
        never is.
        """
        from tests.test_protocol import RecordingHandler, transaction

        handler = RecordingHandler()
        proto, transport, clock, factory = connect(
            handler, socketTimeout=60, minDataRate=(1000, 10)
        )
        transaction(proto, transport)
        take(transport)
        for _ in range(30):
            proto.dataReceived(b"BDAT 1\r\nx")
            clock.advance(1)
        self.assertIn(b"421 4.4.2 Error: data transfer too slow\r\n", take(transport))
        self.assertTrue(transport.disconnecting)


class DSNRelayTests(TestCase):
    """
    The server advertises DSN and accepts C{NOTIFY}, C{ORCPT}, C{RET} and
    C{ENVID}; L{RelayHandler} (and C{--lmtp-to}) then drop them: the
    smarthost, which advertises DSN too, never sees them.  RFC 3461 section
    6.2 requires a relay to pass them on to a DSN-capable next hop (and to
    issue a "relayed" DSN when it is not): a sender asking
    C{NOTIFY=SUCCESS} or C{NOTIFY=NEVER} silently loses its request.
    """

    async def test_dsnParametersPassedOn(self) -> None:
        """
        The smarthost's envelope carries the client's DSN parameters.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Protocol
        from twisted.internet.task import deferLater

        from tests.test_client import startServer
        from twisted_smtpd._core.session import AddressDSN, EnvelopeDSN
        from twisted_smtpd.handlers import BaseHandler
        from twisted_smtpd.handlers.relay import RelayHandler

        seen: list[tuple[EnvelopeDSN, AddressDSN | None]] = []

        class Smarthost(BaseHandler):
            def onData(self, stream: object, session: object) -> object:
                envelope = session.envelope  # type: ignore[attr-defined]
                seen.append((envelope.dsn, envelope.rcptTo[0].dsn))
                return stream.drain()  # type: ignore[attr-defined]

        _, smarthostPort = await startServer(self, Smarthost())
        handler = RelayHandler("127.0.0.1", smarthostPort, heloName="relay.example", tls="none")
        self.addCleanup(handler.close)
        _, frontPort = await startServer(self, handler)

        class Client(Protocol):
            received = b""

            def dataReceived(self, data: bytes) -> None:
                self.received += data

        client = Client()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", frontPort), client)
        self.addCleanup(client.transport.loseConnection)  # type: ignore[union-attr]
        client.transport.write(  # type: ignore[union-attr]
            b"EHLO c\r\nMAIL FROM:<a@example.com> RET=HDRS ENVID=QQ314159\r\n"
            b"RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.org\r\n"
            b"DATA\r\nSubject: x\r\n\r\nx\r\n.\r\n"
        )
        for _ in range(100):
            if b"relayed" in client.received or b"\r\n4" in client.received:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(
            seen,
            [
                (
                    EnvelopeDSN("HDRS", "QQ314159"),
                    AddressDSN(("SUCCESS", "FAILURE"), "rfc822;b@example.org"),
                )
            ],
        )


class PipeManyRecipientsTests(TestCase):
    """
    C{--pipe} puts every recipient into C{RECIPIENT} (one per line).  Linux
    limits one environment string to 128 KiB (C{MAX_ARG_STRLEN}): 600
    recipients of 246 octets (well inside C{maxRecipients} 1000 and the
    256-octet path limit of RFC 5321 section 4.5.3.1.3) make C{execve} fail
    with C{E2BIG}.  Live: the client gets C{451 4.3.0 Error: internal
    error} and the log a 14-line traceback, on every retry, for ever: the
    message can never be delivered, and any client can produce tracebacks
    at will.
    """

    async def test_manyLongRecipients(self) -> None:
        """
        The 600 recipients offered at RCPT are either accepted or refused
        with C{452 4.5.3} (RFC 5321 section 4.5.3.1.10: the client sends
        the rest in another transaction), and the message to those
        accepted is delivered.
        """
        from twisted.internet import reactor

        from tests.test_handlers import feed, makeSession
        from twisted_smtpd._core.errors import SMTPError
        from twisted_smtpd._core.session import Address, Envelope
        from twisted_smtpd._stream import MessageStream
        from twisted_smtpd.handlers.pipe import PipeHandler

        recipients = [Address(f"{'a' * 60}{i:04d}@{'d' * 170}.example") for i in range(600)]
        session = makeSession(envelope=Envelope(mailFrom=Address("alice@example.com")))
        handler = PipeHandler(["/bin/sh", "-c", "cat > /dev/null"], reactor=reactor)
        refused = []
        for address in recipients:
            try:
                handler.onRcptTo(address, session)
            except SMTPError as e:
                refused.append((e.code, e.enhanced))
            else:
                session.envelope.rcptTo.append(address)
        self.assertEqual(set(refused), {(452, "4.5.3")})
        self.assertEqual(len(session.envelope.rcptTo) + len(refused), 600)
        stream = MessageStream()
        d = handler.onData(stream, session)
        feed(stream, b"Subject: x\r\n\r\nx\r\n")
        self.assertEqual(await d, "OK: delivered to sh")


class HeloControlTests(SynchronousTestCase):
    """
    C{parseHelo}: "Control characters anywhere in the argument are
    refused."  MAIL and RCPT refuse the C1 controls (U+0080 to U+009F,
    "which some software takes for line breaks"); HELO/EHLO let them
    through into C{session.hostNameAppearsAs}, the pipe's C{CLIENT_HELO},
    the webhook and AMQP envelopes, and (escaped) C{Received:}.
    """

    def test_c1ControlInEhloRefused(self) -> None:
        """
        C{EHLO a<U+0085>b} (NEL) gets 501 like C{EHLO a<CR>b}.
        """
        proto, transport, clock, _ = connect()
        take(transport)
        proto.dataReceived("EHLO a\u0085b\r\n".encode())
        self.assertEqual(take(transport), b"501 Error: invalid characters in hostname\r\n")
        proto.dataReceived("HELO a\u009bb\r\n".encode())
        self.assertEqual(take(transport), b"501 Error: invalid characters in hostname\r\n")
        self.assertIsNone(proto.session.hostNameAppearsAs)


class ForwardConfirmedNameTests(SynchronousTestCase):
    """
    The client's name (C{session.clientHostname}: the EHLO greeting, the
    C{Received:} header's C{(name [address])}, the logs, the handlers) is
    whatever the PTR record of its address says.  The owner of the address
    block writes that record: it can claim C{mail.bank.example}.  Postfix
    believes a PTR name only once a forward lookup of it returns the
    client's address (C{unknown} otherwise; FCrDNS); so does Exim's
    C{sender_host_name}.
    """

    def test_confirmedPointerNameBelieved(self) -> None:
        """
        PTR says C{mail.example.net}, whose A records hold the client's
        address: that is the client's name, in the EHLO reply too.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.error import ConnectionDone
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport
        from twisted.python.failure import Failure

        from tests.test_protocol import RecordingHandler
        from tests.test_resolve import FakeResolver
        from twisted_smtpd._core.options import ServerOptions
        from twisted_smtpd._serving.server import SMTPServerFactory

        dnsResolver = FakeResolver(
            {"7.2.0.192.in-addr.arpa": b"mail.example.net."},
            {"mail.example.net": ["192.0.2.7"]},
        )
        factory = SMTPServerFactory(
            RecordingHandler(),
            ServerOptions(name="mx.example.com"),
            reactor=Clock(),
            resolver=dnsResolver,
        )
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "192.0.2.7", 40000),
            hostAddress=IPv4Address("TCP", "192.0.2.1", 25),
        )
        proto.makeConnection(transport)
        self.assertEqual(take(transport), replies.GREETING)
        proto.dataReceived(b"EHLO c\r\n")
        self.assertEqual(
            take(transport),
            replies.EHLO_DEFAULT.replace(b"[192.0.2.7]", b"mail.example.net"),
        )
        self.assertEqual(dnsResolver.forward[0][:2], ("A", "mail.example.net"))
        proto.connectionLost(Failure(ConnectionDone()))

    def test_unconfirmedPointerNameNotBelieved(self) -> None:
        """
        PTR says C{mail.bank.example}, whose A record is another address:
        the client's name stays its address literal.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.defer import succeed
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport
        from twisted.names import dns
        from twisted.python.failure import Failure

        from tests.test_protocol import RecordingHandler
        from twisted_smtpd._core.options import ServerOptions
        from twisted_smtpd._serving.server import SMTPServerFactory

        class Resolver:
            def lookupPointer(self, name: str, timeout: object = None) -> object:
                record = dns.RRHeader(name, dns.PTR, payload=dns.Record_PTR(b"mail.bank.example"))
                return succeed(([record], [], []))

            def lookupAddress(self, name: str, timeout: object = None) -> object:
                record = dns.RRHeader(name, dns.A, payload=dns.Record_A("198.51.100.1"))
                return succeed(([record], [], []))

        factory = SMTPServerFactory(
            RecordingHandler(),
            ServerOptions(name="mx.example.com"),
            reactor=Clock(),
            resolver=Resolver(),
        )
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "192.0.2.7", 40000),
            hostAddress=IPv4Address("TCP", "192.0.2.1", 25),
        )
        proto.makeConnection(transport)
        try:
            self.assertEqual(proto.session.clientHostname, "[192.0.2.7]")
        finally:
            from twisted.internet.error import ConnectionDone

            proto.connectionLost(Failure(ConnectionDone()))


class CramChallengeTests(SynchronousTestCase):
    """
    The CRAM-MD5 challenge (C{<random.random@host>}, RFC 2195) is built
    with C{socket.gethostname()}, not the configured C{name}
    (C{--hostname}): any client learns the machine's internal host name
    (live: C{<2936060178.ab6ed690e419f68b@vm>} from a server started with
    C{--hostname mx.test}).  Postfix's Cyrus SASL uses C{myhostname}.
    """

    def test_challengeNamesConfiguredHost(self) -> None:
        """
        The challenge ends with C{@mx.example.com>}.
        """
        import base64

        from tests.test_auth import greeted

        proto, transport, handler = greeted()
        proto.dataReceived(b"AUTH CRAM-MD5\r\n")
        reply = take(transport)
        self.assertTrue(reply.startswith(b"334 "), reply)
        challenge = base64.b64decode(reply[4:].strip())
        self.assertTrue(challenge.endswith(b"@mx.example.com>"), challenge)


class WorkerCertificateTests(SynchronousTestCase):
    """
    docs/tls-auth.md: without a configured certificate "the server makes a
    self-signed certificate for its C{name} when it starts".  With
    C{--workers N} every worker makes its own, so one server presents N
    different certificates at random: a client pinning on first use (or an
    operator publishing the fingerprint) sees it change from one connection
    to the next.  Live with C{--workers 2}: 6 STARTTLS handshakes, two
    fingerprints (5 and 1).
    """

    def test_oneCertificatePerServer(self) -> None:
        """
        Forty STARTTLS handshakes with a two-worker server all see the same
        certificate.
        """
        import hashlib
        import smtplib
        import ssl

        from tests.integration.helpers import CLIENT_TIMEOUT, startWorkers

        server, port = startWorkers(self, ["--sink", "--hostname", "mx.example.com"])
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        seen = set()
        for _ in range(40):
            with smtplib.SMTP("127.0.0.1", port, timeout=CLIENT_TIMEOUT) as smtp:
                smtp.starttls(context=context)
                der = smtp.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
                seen.add(hashlib.sha256(der).hexdigest())
        self.assertEqual(len(seen), 1)
        # The one the parent announced.
        self.assertIn(f"(SHA-256 {seen.pop()}) from every worker", server.output)


class WebhookEnvelopeHeaderTests(TestCase):
    """
    C{--webhook} sends the whole envelope, every recipient included, in one
    HTTP header (C{X-SMTPD-Envelope}).  Common receivers cap header size:
    nginx 8 KiB per line (C{large_client_header_buffers}), Apache 8190
    bytes (C{LimitRequestFieldSize}), C{twisted.web} 16 KiB in all, Python's
    C{http.server} 64 KiB per line.  A 4xx answer becomes a permanent
    C{550 5.7.1}, a dropped request (C{twisted.web}) a 451 after 50 s of
    retries, for ever: a message to a few hundred recipients is bounced or
    never delivered although nothing is wrong with it.  Live, against a
    stock C{http.server}: 400 recipients of 170 octets gave C{550 5.7.1
    Error: refused by the receiver: Line too long}.
    """

    timeout = 60

    async def test_manyRecipientsAccepted(self) -> None:
        """
        500 ordinary recipients, posted to a stock C{twisted.web} receiver,
        are accepted.
        """
        from twisted.internet import reactor
        from twisted.internet.defer import Deferred
        from twisted.internet.endpoints import serverFromString

        from tests.integration.webhookreceiver import TrackingSite, WebhookReceiver, stopReceiver
        from tests.test_handlers import feed, makeSession
        from twisted_smtpd._core.session import Address, Envelope
        from twisted_smtpd._stream import MessageStream
        from twisted_smtpd.handlers.webhook import WebhookHandler

        receiver = WebhookReceiver()
        site = TrackingSite(receiver)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(lambda: Deferred.fromCoroutine(stopReceiver(port, site)))
        handler = WebhookHandler(
            f"http://127.0.0.1:{port.getHost().port}/hook", firstRetry=0.05, timeout=2.0
        )
        self.addCleanup(handler.close)
        recipients = [Address(f"user{i:04d}@department.example.com") for i in range(500)]
        session = makeSession(
            envelope=Envelope(mailFrom=Address("alice@example.com"), rcptTo=recipients)
        )
        stream = MessageStream()
        d = handler.onData(stream, session)
        feed(stream, b"Subject: hook\r\n\r\nhello\r\n")
        self.assertIn("OK: queued as", await d)
        [request] = receiver.requests
        self.assertEqual(request.envelope["recipients"], [r.address for r in recipients])
        # Every header stays small whatever the envelope.
        for name, values in request.headers.items():
            for value in values:
                self.assertLess(len(name) + len(value), 200, name)


class RelayPartialRefusalTests(TestCase):
    """
    L{RelayHandler} (C{--relay}) answers every RCPT with 250 before it has
    asked the smarthost, then, when the smarthost refuses some recipients,
    still answers the message with 250 (their refusal only named in its
    text).  The server keeps no queue and sends no bounce, so the mail to
    those recipients is lost and the sender is told it was taken: RFC 5321
    section 6.1 (a server that accepted a message must deliver it or
    report the failure).  Postfix's before-queue proxy
    (C{smtpd_proxy_filter}) passes each RCPT to the next hop in real time,
    so a refused recipient is refused to the client.
    """

    timeout = 30

    async def test_refusedRecipientNotAcknowledged(self) -> None:
        """
        The smarthost refuses bob: the client never gets a 250 for bob.
        """
        from tests.test_client import Recorder, startServer
        from tests.test_relay import send
        from twisted_smtpd import SMTPError
        from twisted_smtpd.handlers.relay import RelayHandler

        smarthost = Recorder()
        smarthost.refuse["bob@example.org"] = SMTPError(550, "No such user", "5.1.1")
        _, smarthostPort = await startServer(self, smarthost)
        handler = RelayHandler("127.0.0.1", smarthostPort, heloName="relay.example", tls="none")
        self.addCleanup(handler.close)
        _, frontPort = await startServer(self, handler)
        result = await send(frontPort, recipients=["bob@example.org", "carol@example.net"])
        bob = next(r for r in result.recipients if r.address == "bob@example.org")
        self.assertNotEqual(bob.reply.code, 250)
