"""
Tests for L{twisted_smtpd._serving.protocol}: the whole command set over a
L{StringTransport} with a L{task.Clock}.
"""

from __future__ import annotations

import re
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.grammar import PARAMETER_ALLOWANCE
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd._serving import flow
from twisted_smtpd._serving.flow import TurnWriter
from twisted_smtpd._serving.protocol import SMTPProtocol
from twisted_smtpd._serving.server import SMTPServerFactory
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

PEER = ("192.0.2.7", 40000)


class RecordingHandler(BaseHandler):
    """
    Collects every message and remembers the calls it saw.
    """

    def __init__(self) -> None:
        self.messages: list[tuple[str | None, list[str], bytes]] = []
        self.calls: list[str] = []
        self.closed: list[Session] = []
        self.sessions: list[Session] = []

    def onHelo(self, hostname: str, session: Session) -> object:
        self.calls.append(f"helo {hostname}")
        return None

    def onMailFrom(self, address: Address, session: Session) -> object:
        self.calls.append(f"mail {address.address}")
        return None

    def onRcptTo(self, address: Address, session: Session) -> object:
        self.calls.append(f"rcpt {address.address}")
        return None

    def onData(self, stream: IMessageStream, session: Session) -> object:
        env = session.envelope
        sender = env.mailFrom.address if env.mailFrom is not None else None
        rcpts = [a.address for a in env.rcptTo]
        self.sessions.append(session)

        def got(body: bytes) -> str:
            self.messages.append((sender, rcpts, body))
            return "OK: queued as X1"

        d: Deferred[bytes] = stream.collect()  # type: ignore[assignment]
        return d.addCallback(got)

    def onClose(self, session: Session) -> object:
        self.closed.append(session)
        return None


class SlowMail(BaseHandler):
    """
    C{onMailFrom} answers with the L{Deferred} given.
    """

    def __init__(self, pending: Deferred[None]) -> None:
        self.pending = pending

    def onMailFrom(self, address: Address, session: Session) -> object:
        return self.pending


class SlowData(BaseHandler):
    """
    C{onData} drains the body and answers with a new L{Deferred} each
    time, the last one in C{pending}.
    """

    def __init__(self) -> None:
        self.pending: Deferred[str] = Deferred()

    def onData(self, stream: IMessageStream, session: Session) -> object:
        stream.drain()
        self.pending = Deferred()
        return self.pending


def connect(
    handler: Any = None, clock: Clock | None = None, **options: Any
) -> tuple[SMTPProtocol, StringTransport, Clock, SMTPServerFactory]:
    """
    A session over a L{StringTransport}, greeting already read.
    """
    clock = clock if clock is not None else Clock()
    options.setdefault("name", "mx.example.com")
    options.setdefault("disableReverseLookup", True)
    factory = SMTPServerFactory(
        handler if handler is not None else RecordingHandler(),
        ServerOptions(**options),
        reactor=clock,
    )
    proto = factory.buildProtocol(None)  # type: ignore[arg-type]
    transport = StringTransport(peerAddress=_ipv4(*PEER), hostAddress=_ipv4("192.0.2.1", 25))
    proto.makeConnection(transport)
    return proto, transport, clock, factory


def _ipv4(host: str, port: int) -> Any:
    from twisted.internet.address import IPv4Address

    return IPv4Address("TCP", host, port)


def take(transport: StringTransport) -> bytes:
    """
    Read and clear what the server wrote.
    """
    value = transport.value()
    transport.clear()
    return value


SESSION = (
    b"EHLO client.example.com\r\n"
    b"MAIL FROM:<sender@example.com>\r\n"
    b"RCPT TO:<a@example.com>\r\n"
    b"RCPT TO:<b@example.com>\r\n"
    b"DATA\r\n"
    b"Subject: hi\r\n"
    b"\r\n"
    b"..leading dot\r\n"
    b"body\r\n"
    b".\r\n"
    b"QUIT\r\n"
)
SESSION_REPLIES = (
    replies.GREETING
    + replies.EHLO_DEFAULT
    + replies.MAIL_OK
    + replies.RCPT_OK
    + replies.RCPT_OK
    + replies.START_DATA
    + b"250 2.0.0 OK: queued as X1\r\n"
    + replies.CLOSING
)
SESSION_BODY = b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"


class GreetingTests(SynchronousTestCase):
    def test_greeting(self) -> None:
        """
        The server greets with 220, its name and ESMTP.
        """
        proto, transport, clock, _ = connect()
        self.assertEqual(transport.value(), replies.GREETING)

    def test_banner(self) -> None:
        """
        A banner is appended to the greeting.
        """
        proto, transport, clock, _ = connect(banner="hello there")
        self.assertEqual(transport.value(), b"220 mx.example.com ESMTP hello there\r\n")

    def test_sessionAddresses(self) -> None:
        """
        The session knows both ends of the connection.
        """
        proto, transport, clock, _ = connect()
        self.assertEqual(proto.session.remoteAddress, PEER)
        self.assertEqual(proto.session.localAddress, ("192.0.2.1", 25))
        self.assertEqual(proto.session.clientHostname, "[192.0.2.7]")

    def test_onConnectRefuses(self) -> None:
        """
        An L{SMTPError} from onConnect is sent instead of the greeting and the
        connection is closed.
        """

        class Refuse(BaseHandler):
            def onConnect(self, session: Session) -> object:
                raise SMTPError(554, "go away", "5.7.1")

        proto, transport, clock, _ = connect(Refuse())
        self.assertEqual(transport.value(), b"554 5.7.1 go away\r\n")
        self.assertTrue(transport.disconnecting)

    def test_lateOnConnect(self) -> None:
        """
        A client that speaks before a slow onConnect answers is read only after
        the greeting.
        """
        pending: Deferred[None] = Deferred()

        class Slow(BaseHandler):
            def onConnect(self, session: Session) -> object:
                return pending

        proto, transport, clock, _ = connect(Slow())
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(transport.value(), b"")
        pending.callback(None)
        self.assertEqual(transport.value(), replies.GREETING + replies.OK)

    def test_maxClients(self) -> None:
        """
        A client past maxClients gets 421 and is disconnected.
        """
        proto, transport, clock, factory = connect(maxClients=1)
        extra = factory.buildProtocol(None)  # type: ignore[arg-type]
        t2 = StringTransport(peerAddress=_ipv4(*PEER))
        extra.makeConnection(t2)
        self.assertEqual(t2.value(), replies.TOO_MANY_CLIENTS)
        self.assertTrue(t2.disconnecting)
        self.assertEqual(transport.value(), replies.GREETING)

    def test_reverseLookup(self) -> None:
        """
        The client's name from the reverse lookup is in the session before
        onConnect runs, and in the EHLO reply.
        """
        seen: list[str] = []

        class Handler(BaseHandler):
            def onConnect(self, session: Session) -> object:
                seen.append(session.clientHostname)
                return None

        clock = Clock()
        factory = SMTPServerFactory(Handler(), ServerOptions(name="mx.example.com"), reactor=clock)
        lookups: list[str] = []
        answer: Deferred[str | None] = Deferred()

        def reverseLookup(ip: str) -> Deferred[str | None]:
            lookups.append(ip)
            return answer

        factory.reverseLookup = reverseLookup  # type: ignore[method-assign]
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport(peerAddress=_ipv4(*PEER))
        proto.makeConnection(transport)
        self.assertEqual((lookups, transport.value()), (["192.0.2.7"], b""))
        answer.callback("client.example.net")
        self.assertEqual(seen, ["client.example.net"])
        self.assertEqual(transport.value(), replies.GREETING)


class CommandTests(SynchronousTestCase):
    def send(self, line: bytes, **options: Any) -> bytes:
        proto, transport, clock, _ = connect(**options)
        take(transport)
        proto.dataReceived(line)
        return take(transport)

    def test_ehlo(self) -> None:
        """
        EHLO lists the extensions, Postfix order.
        """
        self.assertEqual(self.send(b"EHLO c.example.com\r\n"), replies.EHLO_DEFAULT)

    def test_ehloWithSize(self) -> None:
        """
        A size limit is advertised with SIZE.
        """
        self.assertIn(b"250-SIZE 1000\r\n", self.send(b"EHLO c\r\n", size=1000))

    def test_hideExtensions(self) -> None:
        """
        Every hide option removes its keyword.
        """
        out = self.send(
            b"EHLO c\r\n",
            hidePIPELINING=True,
            hideSize=True,
            hideSTARTTLS=True,
            hideCHUNKING=True,
            hide8BITMIME=True,
            hideSMTPUTF8=True,
            hideDSN=True,
            hideENHANCEDSTATUSCODES=True,
        )
        self.assertEqual(out, b"250 mx.example.com Nice to meet you, [192.0.2.7]\r\n")

    def test_noEnhancedCodes(self) -> None:
        """
        With ENHANCEDSTATUSCODES hidden, replies carry none.
        """
        self.assertEqual(self.send(b"NOOP\r\n", hideENHANCEDSTATUSCODES=True), b"250 OK\r\n")

    def test_helo(self) -> None:
        """
        HELO gets a single-line 250.
        """
        self.assertEqual(self.send(b"HELO c.example.com\r\n"), replies.HELO_OK)

    def test_heloNeedsArgument(self) -> None:
        """
        EHLO without a name is a syntax error.
        """
        self.assertTrue(self.send(b"EHLO\r\n").startswith(b"501 "))

    def test_greetingSyntaxNamesItsVerb(self) -> None:
        """
        The 501 for a greeting without a name names the command the client
        sent, as Postfix's C{Syntax: HELO hostname} does: HELO is not told
        to send EHLO, nor an LMTP client LHLO's syntax as EHLO's.
        """
        self.assertEqual(self.send(b"EHLO\r\n"), b"501 Syntax: EHLO hostname\r\n")
        self.assertEqual(self.send(b"HELO\r\n"), b"501 Syntax: HELO hostname\r\n")
        self.assertEqual(self.send(b"helo \r\n"), b"501 Syntax: HELO hostname\r\n")
        self.assertEqual(self.send(b"LHLO\r\n", lmtp=True), b"501 Syntax: LHLO hostname\r\n")

    def test_mailBeforeHelo(self) -> None:
        """
        MAIL before HELO/EHLO gets 503, as smtp-server and aiosmtpd do.
        """
        self.assertEqual(self.send(b"MAIL FROM:<a@b.c>\r\n"), replies.NEED_HELO)

    def test_unknown(self) -> None:
        """
        An unknown command gets 500.
        """
        self.assertEqual(self.send(b"FROB\r\n"), replies.UNKNOWN_COMMAND)

    def test_disabled(self) -> None:
        """
        A disabled command gets 502.
        """
        self.assertEqual(
            self.send(b"VRFY x\r\n", disabledCommands=["VRFY"]), replies.NOT_IMPLEMENTED
        )

    def test_simpleCommands(self) -> None:
        """
        NOOP, RSET, VRFY and HELP answer at any time.
        """
        out = self.send(b"NOOP\r\nRSET\r\nVRFY postmaster\r\nHELP\r\n")
        self.assertEqual(out, replies.OK + replies.RESET + replies.VRFY + replies.HELP)

    def test_rsetArgument(self) -> None:
        """
        RSET takes no argument.
        """
        self.assertEqual(self.send(b"RSET now\r\n"), replies.SYNTAX_ERROR)

    def test_vrfyNeedsArgument(self) -> None:
        """
        VRFY without an argument is a syntax error.
        """
        self.assertEqual(self.send(b"VRFY\r\n"), replies.SYNTAX_ERROR)

    def test_quit(self) -> None:
        """
        QUIT gets 221 and closes; nothing after it is read.
        """
        proto, transport, clock, _ = connect()
        take(transport)
        proto.dataReceived(b"QUIT\r\nNOOP\r\n")
        self.assertEqual(take(transport), replies.CLOSING)
        self.assertTrue(transport.disconnecting)

    def test_lineTooLong(self) -> None:
        """
        An over-long command line gets 500 and the session goes on.
        """
        out = self.send(b"NOOP " + b"x" * 600 + b"\r\nNOOP\r\n")
        self.assertEqual(out, replies.LINE_TOO_LONG + replies.OK)

    def test_parametersLengthenMailAndRcpt(self) -> None:
        """
        MAIL and RCPT lines may pass the command limit by what their ESMTP
        parameters add (RFC 5321 section 4.5.3.1.4): a 500-character AUTH
        (RFC 4954 section 5) with SIZE, BODY, RET and a 100-character ENVID
        (RFC 3461), a 500-character ORCPT with NOTIFY; as Postfix accepts
        them.  Past L{PARAMETER_ALLOWANCE} more, they get 500.
        """
        path = b"<" + b"l" * 64 + b"@" + b"d" * 63 + b".example>"
        mail = (
            b"MAIL FROM:" + path + b" SIZE=12345678901234567890 BODY=8BITMIME RET=HDRS"
            b" ENVID=" + b"e" * 100 + b" AUTH=" + b"a" * 488 + b"@example.com SMTPUTF8"
        )
        rcpt = b"RCPT TO:" + path + b" NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;"
        rcpt += b"o" * (500 - len(b"rfc822;") - len(b"@example.com")) + b"@example.com"
        self.assertGreater(len(mail), 800)
        self.assertGreater(len(rcpt), 600)
        out = self.send(b"EHLO c\r\n" + mail + b"\r\n" + rcpt + b"\r\n", size=0)
        self.assertTrue(out.endswith(replies.MAIL_OK + replies.RCPT_OK), out)
        tooLong = b"MAIL FROM:<a@b.example> X=" + b"x" * (512 + PARAMETER_ALLOWANCE)
        out = self.send(b"EHLO c\r\n" + tooLong + b"\r\nNOOP " + b"x" * 600 + b"\r\n")
        self.assertTrue(out.endswith(replies.LINE_TOO_LONG * 2), out)

    def test_lineTooLongWithoutEnd(self) -> None:
        """
        A line that never ends is refused once, discarded up to its end, and
        not buffered.
        """
        proto, transport, clock, _ = connect()
        take(transport)
        for _ in range(10):
            proto.dataReceived(b"x" * 4096)
        self.assertEqual(take(transport), replies.LINE_TOO_LONG)
        self.assertLess(len(proto._buffer), 16384)
        proto.dataReceived(b"yyy\r\nNOOP\r\n")
        self.assertEqual(take(transport), replies.OK)

    def test_authLineLimit(self) -> None:
        """
        AUTH lines may be longer than the command limit (RFC 4954).
        """
        out = self.send(b"AUTH XOAUTH2 " + b"A" * 2000 + b"\r\n")
        # Parsed as AUTH (not enabled with BaseHandler), not refused as long.
        self.assertEqual(out, b"503 5.5.1 Error: authentication not enabled\r\n")

    def test_http(self) -> None:
        """
        An HTTP request gets 421 and the connection is closed.
        """
        proto, transport, clock, _ = connect()
        take(transport)
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(take(transport), replies.HTTP_REFUSED)
        self.assertTrue(transport.disconnecting)

    def test_tooManyErrors(self) -> None:
        """
        The maxErrors-th error is followed by 421 and a close.
        """
        proto, transport, clock, _ = connect(maxErrors=3)
        take(transport)
        proto.dataReceived(b"FROB\r\nFROB\r\nFROB\r\nNOOP\r\n")
        self.assertEqual(take(transport), replies.UNKNOWN_COMMAND * 3 + replies.TOO_MANY_ERRORS)
        self.assertTrue(transport.disconnecting)


class JunkCommandTests(SynchronousTestCase):
    """
    Commands that move no message on (Postfix's junk commands) count as
    errors past C{maxJunkCommands}, until a message is accepted.
    """

    JUNK = (b"NOOP", b"RSET", b"HELO c", b"EHLO c", b"VRFY a", b"HELP")

    def test_junkPastTheLimitCounts(self) -> None:
        """
        Each junk command after the first C{maxJunkCommands + 1} is one
        error, counted after its reply (Postfix's C{smtpd_proto}): with
        C{maxErrors=2}, the second that counts gets its reply, then 421,
        and one refusal line names it; what was pipelined behind it is
        not answered.
        """
        for junk in self.JUNK:
            events: list[tuple[str, dict[str, Any]]] = []
            proto, transport, clock, factory = connect(maxJunkCommands=3, maxErrors=2)
            factory.addObserver(
                lambda event, session, data, events=events: events.append((event, data))
            )
            take(transport)
            proto.dataReceived((junk + b"\r\n") * 4)
            self.assertFalse(transport.disconnecting, junk)
            self.assertEqual(len(re.findall(rb"^2\d\d ", take(transport), re.M)), 4, junk)
            proto.dataReceived((junk + b"\r\n") * 3)
            out = take(transport)
            self.assertEqual(len(re.findall(rb"^2\d\d ", out, re.M)), 2, junk)
            self.assertTrue(out.endswith(replies.TOO_MANY_ERRORS), junk)
            self.assertTrue(transport.disconnecting, junk)
            rejects = [data for event, data in events if event == "reject"]
            self.assertEqual(len(rejects), 1, junk)
            self.assertEqual(rejects[0]["command"], junk.split()[0].decode(), junk)

    def test_acceptedMessageResetsCount(self) -> None:
        """
        A message accepted starts the count again.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler, maxJunkCommands=3, maxErrors=1)
        message = b"MAIL FROM:<s@e.com>\r\nRCPT TO:<r@e.com>\r\nDATA\r\nhi\r\n.\r\n"
        proto.dataReceived(b"EHLO c\r\n" + message)
        for _ in range(5):
            proto.dataReceived(b"NOOP\r\n" * 2 + b"RSET\r\n" + message)
        self.assertEqual(len(handler.messages), 6)
        self.assertFalse(transport.disconnecting)

    def test_transactionCommandsAreNotJunk(self) -> None:
        """
        MAIL, RCPT, DATA and QUIT never count.
        """
        proto, transport, clock, _ = connect(maxJunkCommands=1, maxErrors=1)
        take(transport)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@e.com>\r\n" + b"RCPT TO:<r@e.com>\r\n" * 5)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(take(transport).count(b"250 2.1.5"), 5)

    def test_emptyChunksAreJunk(self) -> None:
        """
        An empty BDAT chunk that is not the last moves nothing on: repeated
        in one transaction, it counts like NOOP, and the session ends with
        one refusal line naming BDAT.  Chunks with octets, and C{BDAT 0
        LAST}, never count.
        """
        events: list[tuple[str, dict[str, Any]]] = []
        handler = RecordingHandler()
        proto, transport, clock, factory = connect(handler, maxJunkCommands=3, maxErrors=2)
        factory.addObserver(lambda event, session, data: events.append((event, data)))
        proto.dataReceived(b"EHLO c\r\n")
        transaction(proto, transport)
        proto.dataReceived(b"BDAT 1\r\na" * 10 + b"BDAT 0\r\n" * 2)
        proto.dataReceived(b"BDAT 0 LAST\r\n")
        self.assertEqual(len(handler.messages), 1)
        self.assertFalse(transport.disconnecting)
        transaction(proto, transport)
        # The message accepted forgave the count; EHLO is the first again,
        # the fourth chunk the first that counts, the fifth the second:
        # answered, then the 421.
        proto.dataReceived(b"BDAT 0\r\n" * 10)
        out = take(transport)
        self.assertEqual(out.count(b"250 2.0.0 OK: 0 octets received\r\n"), 5)
        self.assertTrue(out.endswith(replies.TOO_MANY_ERRORS), out)
        self.assertTrue(transport.disconnecting)
        rejects = [data for event, data in events if event == "reject"]
        self.assertEqual([r["command"] for r in rejects], ["BDAT"])

    def test_postfixCount(self) -> None:
        """
        The count is Postfix's, C{junk_cmds++ > smtpd_junk_command_limit}
        after each junk command's reply: with C{maxJunkCommands=2} and
        C{maxErrors=3}, EHLO and two NOOPs are free, the next three NOOPs
        are each answered and counted as an error, and the 421 follows the
        reply of the third, as Postfix 3.7 answers with
        C{smtpd_junk_command_limit=2} and C{smtpd_hard_error_limit=3}.
        """
        proto, transport, clock, _ = connect(maxJunkCommands=2, maxErrors=3, errorSleep=0)
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"NOOP\r\n" * 4)
        self.assertEqual(take(transport), replies.OK * 4)
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(b"NOOP\r\n" * 3)
        self.assertEqual(take(transport), replies.OK + replies.TOO_MANY_ERRORS)
        self.assertTrue(transport.disconnecting)

    def test_noLimit(self) -> None:
        """
        C{maxJunkCommands=0} counts none.
        """
        proto, transport, clock, _ = connect(maxJunkCommands=0, maxErrors=1)
        take(transport)
        proto.dataReceived(b"EHLO c\r\n" + b"NOOP\r\n" * 500)
        self.assertEqual(take(transport).count(b"250 2.0.0 OK\r\n"), 500)
        self.assertFalse(transport.disconnecting)


def transaction(proto: SMTPProtocol, transport: StringTransport, *rcpts: bytes) -> None:
    take(transport)
    proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@example.com>\r\n")
    for rcpt in rcpts or (b"r@example.com",):
        proto.dataReceived(b"RCPT TO:<" + rcpt + b">\r\n")
    take(transport)


class TransactionTests(SynchronousTestCase):
    def test_wholeSession(self) -> None:
        """
        A whole session in one write gets every reply, in order, and the
        message text arrives dot-unstuffed.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler)
        proto.dataReceived(SESSION)
        self.assertEqual(transport.value(), SESSION_REPLIES)
        self.assertEqual(
            handler.messages,
            [("sender@example.com", ["a@example.com", "b@example.com"], SESSION_BODY)],
        )

    def test_everySplit(self) -> None:
        """
        The same session split at every byte boundary gives the same replies
        and message.
        """
        for cut in range(1, len(SESSION)):
            handler = RecordingHandler()
            proto, transport, clock, _ = connect(handler)
            proto.dataReceived(SESSION[:cut])
            proto.dataReceived(SESSION[cut:])
            self.assertEqual(transport.value(), SESSION_REPLIES, cut)
            self.assertEqual(handler.messages[0][2], SESSION_BODY, cut)

    def test_byteByByte(self) -> None:
        """
        The session fed one byte at a time works too.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler)
        for byte in SESSION:
            proto.dataReceived(bytes([byte]))
        self.assertEqual(transport.value(), SESSION_REPLIES)
        self.assertEqual(handler.messages[0][2], SESSION_BODY)

    def test_sequence(self) -> None:
        """
        RCPT needs MAIL, DATA needs RCPT, MAIL cannot nest.
        """
        proto, transport, clock, _ = connect()
        take(transport)
        proto.dataReceived(b"EHLO c\r\nRCPT TO:<a@b.c>\r\nDATA\r\n")
        proto.dataReceived(b"MAIL FROM:<a@b.c>\r\nMAIL FROM:<a@b.c>\r\nDATA\r\n")
        self.assertEqual(
            take(transport),
            replies.EHLO_DEFAULT
            + replies.NEED_MAIL
            + replies.NEED_MAIL
            + replies.MAIL_OK
            + replies.NESTED_MAIL
            + replies.NEED_RCPT,
        )

    def test_rsetClearsEnvelope(self) -> None:
        """
        RSET drops the transaction; the transaction number moves on.
        """
        proto, transport, clock, _ = connect()
        transaction(proto, transport)
        proto.dataReceived(b"RSET\r\nDATA\r\n")
        self.assertEqual(take(transport), replies.RESET + replies.NEED_MAIL)
        self.assertEqual(proto.session.envelope.rcptTo, [])
        self.assertEqual(proto.session.transaction, 2)

    def test_manyMessages(self) -> None:
        """
        Several messages on one connection each arrive whole.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler)
        proto.dataReceived(b"EHLO c\r\n")
        for i in range(5):
            proto.dataReceived(
                b"MAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\nDATA\r\n"
                + b"msg %d\r\n.\r\n" % i
            )
        self.assertEqual([m[2] for m in handler.messages], [b"msg %d\r\n" % i for i in range(5)])
        self.assertEqual(proto.session.transaction, 6)

    def test_tooManyRecipients(self) -> None:
        """
        Past maxRecipients, RCPT gets 452.
        """
        proto, transport, clock, _ = connect(maxRecipients=2)
        transaction(proto, transport, b"a@example.com", b"b@example.com")
        proto.dataReceived(b"RCPT TO:<c@example.com>\r\n")
        self.assertEqual(take(transport), replies.TOO_MANY_RECIPIENTS)
        self.assertEqual(len(proto.session.envelope.rcptTo), 2)

    def test_utf8NeedsSmtputf8(self) -> None:
        """
        A UTF-8 address without SMTPUTF8 gets 553 5.6.7; with it, it works.
        """
        proto, transport, clock, _ = connect()
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived("MAIL FROM:<j\u00f6rg@example.com>\r\n".encode())
        self.assertEqual(take(transport), replies.UTF8_NOT_ALLOWED)
        proto.dataReceived("MAIL FROM:<j\u00f6rg@example.com> SMTPUTF8\r\n".encode())
        proto.dataReceived("RCPT TO:<m\u00fcller@example.com>\r\n".encode())
        self.assertEqual(take(transport), replies.MAIL_OK + replies.RCPT_OK)
        self.assertTrue(proto.session.envelope.smtpUtf8)

    def test_dsnExposed(self) -> None:
        """
        DSN parameters land in envelope.dsn and address.dsn.
        """
        proto, transport, clock, _ = connect()
        take(transport)
        proto.dataReceived(
            b"EHLO c\r\nMAIL FROM:<s@example.com> RET=HDRS ENVID=QQ+2B1\r\n"
            b"RCPT TO:<r@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r@example.com\r\n"
        )
        env = proto.session.envelope
        self.assertEqual((env.dsn.ret, env.dsn.envid), ("HDRS", "QQ+1"))
        dsn = env.rcptTo[0].dsn
        assert dsn is not None
        self.assertEqual(dsn.notify, ("SUCCESS", "FAILURE"))
        self.assertEqual(dsn.orcpt, "rfc822;r@example.com")

    def test_unknownParameter(self) -> None:
        """
        An unknown MAIL parameter gets 555.
        """
        proto, transport, clock, _ = connect()
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"MAIL FROM:<s@example.com> FOO=BAR\r\n")
        self.assertEqual(take(transport), replies.UNKNOWN_PARAMETER)

    def test_requireTlsNeedsTls(self) -> None:
        """
        REQUIRETLS on a session without TLS gets 530 5.7.10.
        """
        proto, transport, clock, _ = connect()
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"MAIL FROM:<s@example.com> REQUIRETLS\r\n")
        self.assertEqual(take(transport), replies.REQUIRETLS_NEEDS_TLS)

    def test_binarymimeNeedsBdat(self) -> None:
        """
        BODY=BINARYMIME cannot be sent with DATA (RFC 3030 section 3).
        """
        proto, transport, clock, _ = connect()
        take(transport)
        proto.dataReceived(
            b"EHLO c\r\nMAIL FROM:<s@example.com> BODY=BINARYMIME\r\nRCPT TO:<r@e.com>\r\n"
        )
        take(transport)
        proto.dataReceived(b"DATA\r\n")
        self.assertEqual(take(transport), replies.BINARYMIME_NEEDS_BDAT)

    def test_binarymimeRefusedWithBdatDisabled(self) -> None:
        """
        With BDAT in disabledCommands, BINARYMIME is not offered and its
        body could be sent neither with DATA nor with BDAT: MAIL's
        BODY=BINARYMIME gets 555, as a parameter the server does not
        support (RFC 5321 section 4.1.1.11, Postfix's answer), in SMTP and
        LMTP; the other body types are still accepted.
        """
        for lmtp in (False, True):
            proto, transport, clock, _ = connect(lmtp=lmtp, disabledCommands=["BDAT"])
            proto.dataReceived(b"LHLO c\r\n" if lmtp else b"EHLO c\r\n")
            take(transport)
            proto.dataReceived(b"MAIL FROM:<s@example.com> BODY=BINARYMIME\r\n")
            self.assertEqual(take(transport), replies.UNKNOWN_PARAMETER)
            proto.dataReceived(b"MAIL FROM:<s@example.com> BODY=8BITMIME\r\n")
            self.assertEqual(take(transport), replies.MAIL_OK)

    def test_dataArgument(self) -> None:
        """
        DATA takes no argument.
        """
        proto, transport, clock, _ = connect()
        transaction(proto, transport)
        proto.dataReceived(b"DATA now\r\n")
        self.assertEqual(take(transport), replies.SYNTAX_ERROR)

    def test_transmissionType(self) -> None:
        """
        EHLO makes the session ESMTP, HELO SMTP.
        """
        proto, transport, clock, _ = connect()
        proto.dataReceived(b"EHLO c\r\n")
        self.assertEqual(proto.session.transmissionType, "ESMTP")
        self.assertEqual(proto.session.hostNameAppearsAs, "c")
        proto.dataReceived(b"HELO d\r\n")
        self.assertEqual(proto.session.transmissionType, "SMTP")
        self.assertEqual(proto.session.openingCommand, "HELO")


class DataTests(SynchronousTestCase):
    def test_sizeAtMail(self) -> None:
        """
        A declared SIZE over the limit gets 552 at MAIL.
        """
        proto, transport, clock, _ = connect(size=100)
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"MAIL FROM:<s@example.com> SIZE=101\r\n")
        self.assertEqual(take(transport), replies.SIZE_EXCEEDED_MAIL)

    def test_sizeDuringData(self) -> None:
        """
        A body over the limit is drained to the final dot, refused with 552,
        not delivered, and the connection stays usable.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler, size=100)
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\n")
        proto.dataReceived(b"x" * 80 + b"\r\n")
        proto.dataReceived(b"y" * 80 + b"\r\n" + b"z" * 100000 + b"\r\n")
        self.assertEqual(take(transport), replies.START_DATA)
        proto.dataReceived(b".\r\nNOOP\r\n")
        self.assertEqual(take(transport), replies.SIZE_EXCEEDED + replies.OK)
        self.assertEqual(handler.messages, [])
        self.assertIsNone(proto.session.envelope.mailFrom)

    def test_largerReadsWhileBodyOutpacesThem(self) -> None:
        """
        Once a read of message body fills Twisted's read buffer, the session
        reads L{flow.BODY_READ_SIZE} at a time until the body ends, then
        Twisted's size again; a body read in smaller pieces leaves the size
        alone.  The message arrives whole either way.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler)
        connection = _Connection(take=1 << 20)
        proto._socket = connection
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\n")
        small = b"s" * 1000 + b"\r\n"
        proto.dataReceived(small)
        self.assertEqual(connection.bufferSize, flow.READ_SIZE)
        full = (b"f" * 78 + b"\r\n") * (flow.READ_SIZE // 80) + b"f" * 14 + b"\r\n"
        self.assertEqual(len(full), flow.READ_SIZE)
        proto.dataReceived(full)
        self.assertEqual(connection.bufferSize, flow.BODY_READ_SIZE)
        proto.dataReceived(b"end\r\n")
        self.assertEqual(connection.bufferSize, flow.BODY_READ_SIZE)
        proto.dataReceived(b".\r\n")
        self.assertEqual(connection.bufferSize, flow.READ_SIZE)
        self.assertEqual([m[2] for m in handler.messages], [small + full + b"end\r\n"])
        self.assertTrue(take(transport).endswith(b"250 2.0.0 OK: queued as X1\r\n"))
        # A second message read in smaller pieces: Twisted's size throughout.
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\n")
        proto.dataReceived(full[:-100])
        proto.dataReceived(full[-100:] + b".\r\n")
        self.assertEqual(connection.bufferSize, flow.READ_SIZE)
        self.assertEqual(len(handler.messages), 2)

    def test_bareLineFeedRejected(self) -> None:
        """
        With the default policy a bare LF in the body refuses the message
        with 550; the bare LF never ends it.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler)
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\nline\n.\nMAIL FROM:<evil@example.com>\r\n.\r\n")
        self.assertEqual(take(transport), replies.START_DATA + replies.BARE_NEWLINE)
        self.assertEqual(handler.messages, [])

    def test_smugglingNormalize(self) -> None:
        """
        With C{normalize}, bare LFs become CRLF inside the message and the
        smuggled commands stay message text.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler, bareNewline="normalize")
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\nline\n.\nMAIL FROM:<evil@example.com>\r\n.\r\n")
        self.assertEqual(take(transport), replies.START_DATA + b"250 2.0.0 OK: queued as X1\r\n")
        self.assertEqual(handler.messages[0][2], b"line\r\n.\r\nMAIL FROM:<evil@example.com>\r\n")

    def test_legacyKeepsBytes(self) -> None:
        """
        With C{legacy}, bare CR and LF are kept as they came.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler, bareNewline="legacy")
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\na\rb\nc\r\n.\r\n")
        self.assertEqual(handler.messages[0][2], b"a\rb\nc\r\n")

    def test_hookTextSanitised(self) -> None:
        """
        A handler's reply text cannot inject a reply line.
        """

        class Inject(BaseHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                stream.drain()
                return "queued\r\n250 2.0.0 fake"

        proto, transport, clock, _ = connect(Inject())
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\nx\r\n.\r\n")
        self.assertEqual(
            take(transport),
            replies.START_DATA + b"250-2.0.0 queued\r\n250 2.0.0 250 2.0.0 fake\r\n",
        )

    def test_earlyRejection(self) -> None:
        """
        onData may refuse before the body ended; the body is drained and the
        refusal sent after the final dot.
        """

        class Refuse(BaseHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                raise SMTPError(554, "no thanks", "5.7.1")

        proto, transport, clock, _ = connect(Refuse())
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\n" + b"x" * 1000000 + b"\r\n")
        self.assertEqual(take(transport), replies.START_DATA)
        proto.dataReceived(b".\r\nNOOP\r\n")
        self.assertEqual(take(transport), b"554 5.7.1 no thanks\r\n" + replies.OK)

    def test_slowConsumerPausesSocket(self) -> None:
        """
        A consumer that pauses the stream pauses reading from the client.
        """
        from twisted.internet.testing import StringTransport as Consumer

        sink = Consumer()

        class Piping(BaseHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                return stream.pipe(sink)

        proto, transport, clock, _ = connect(Piping())
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\n")
        sink.producer.pauseProducing()
        proto.dataReceived(b"x" * 300000 + b"\r\n")
        self.assertEqual(transport.producerState, "paused")
        sink.producer.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        proto.dataReceived(b".\r\n")
        self.assertEqual(len(sink.value()), 300002)

    def test_finishedStreamCannotResumeTheNext(self) -> None:
        """
        A message accepted at once while its slow consumer still holds part
        of its body: when that consumer catches up, it cannot resume the
        reading that the next message's own slow consumer paused.
        """
        from twisted.internet.testing import StringTransport as Consumer

        sinks: list[Consumer] = []

        class Piping(BaseHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                sink = Consumer()
                sinks.append(sink)
                stream.pipe(sink)
                return "accepted"

        proto, transport, clock, _ = connect(Piping())
        big = b"x" * 300000 + b"\r\n"
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\n")
        sinks[0].producer.pauseProducing()
        proto.dataReceived(big + b".\r\n")
        self.assertEqual(transport.producerState, "producing")
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\n")
        sinks[1].producer.pauseProducing()
        proto.dataReceived(big)
        self.assertEqual(transport.producerState, "paused")
        sinks[0].producer.resumeProducing()
        self.assertEqual(transport.producerState, "paused")
        sinks[1].producer.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_connectionLostDuringData(self) -> None:
        """
        A connection lost in the body fails the stream; onClose runs.
        """
        failures: list[Failure] = []

        class Handler(RecordingHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                d = stream.collect()
                d.addErrback(failures.append)  # type: ignore[attr-defined]
                return d

        handler = Handler()
        proto, transport, clock, _ = connect(handler)
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\npartial")
        proto.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(len(failures), 1)
        self.assertTrue(failures[0].check(ConnectionLost))
        self.assertEqual(len(handler.closed), 1)


class HookTests(SynchronousTestCase):
    def test_lateHookKeepsOrder(self) -> None:
        """
        A reply held back by a slow hook is still written before the replies
        to commands pipelined behind it, and reading stops meanwhile.
        """
        pending: Deferred[None] = Deferred()
        proto, transport, clock, _ = connect(SlowMail(pending))
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        for byte in b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nNOOP\r\n":
            proto.dataReceived(bytes([byte]))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(transport.producerState, "paused")
        pending.callback(None)
        self.assertEqual(transport.value(), replies.MAIL_OK + replies.RCPT_OK + replies.OK)
        self.assertEqual(transport.producerState, "producing")

    def test_waitingHookKeepsReading(self) -> None:
        """
        A hook that answers later does not stop the transport by itself (a
        client waiting for its reply costs no pause and resume of the
        socket); bytes that arrive meanwhile do, and the answer starts it
        again.
        """
        pending: Deferred[None] = Deferred()
        proto, transport, clock, _ = connect(SlowMail(pending))
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\n")
        self.assertEqual(transport.producerState, "producing")
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(transport.value(), b"")
        pending.callback(None)
        self.assertEqual(take(transport), replies.MAIL_OK + replies.OK)
        self.assertEqual(transport.producerState, "producing")

    def test_bodyEndPauses(self) -> None:
        """
        The end of a body whose onData answers later stops a transport other
        than plain TCP (which alone tells of a half-close) at once, with or
        without commands read behind it: a client that shuts its side down
        after the dot must not be taken for gone before its reply.
        """
        handler = SlowData()
        proto, transport, clock, _ = connect(handler)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@e.com>\r\nRCPT TO:<b@e.com>\r\n")
        take(transport)
        proto.dataReceived(b"DATA\r\nx\r\n.\r\n")
        self.assertEqual(transport.producerState, "paused")
        handler.pending.callback("OK: id 1")
        self.assertEqual(transport.producerState, "producing")
        proto.dataReceived(b"MAIL FROM:<a@e.com>\r\nRCPT TO:<b@e.com>\r\n")
        proto.dataReceived(b"DATA\r\nx\r\n.\r\nNOOP\r\n")
        self.assertEqual(transport.producerState, "paused")
        take(transport)
        handler.pending.callback("OK: id 2")
        self.assertEqual(take(transport), b"250 2.0.0 OK: id 2\r\n" + replies.OK)
        self.assertEqual(transport.producerState, "producing")

    def test_answerAfterClientLeft(self) -> None:
        """
        When the client goes after the end of its message but before onData
        answers, the answer still reaches the observers (the handler may have
        kept the message), marked C{unanswered}, after the close; nothing is
        written.
        """
        handler = SlowData()
        proto, transport, clock, factory = connect(handler)
        seen: list[tuple[str, dict[str, Any]]] = []
        factory.addObserver(lambda event, session, data: seen.append((event, data)))
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@e.com>\r\nRCPT TO:<b@e.com>\r\n")
        proto.dataReceived(b"DATA\r\nx\r\n.\r\n")
        take(transport)
        proto.connectionLost(Failure(ConnectionLost()))
        handler.pending.callback("OK: id 9")
        self.assertEqual(transport.value(), b"")
        self.assertEqual([event for event, _ in seen][-2:], ["close", "message"])
        data = seen[-1][1]
        self.assertTrue(data["unanswered"])
        self.assertEqual([reply.code for reply in data["replies"]], [250])

    def test_lateRejectionKeepsOrder(self) -> None:
        """
        A slow hook's refusal comes first; the pipelined RCPT then gets 503.
        """
        pending: Deferred[None] = Deferred()
        proto, transport, clock, _ = connect(SlowMail(pending))
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        pending.errback(SMTPError(550, "sender refused", "5.7.1"))
        self.assertEqual(transport.value(), b"550 5.7.1 sender refused\r\n" + replies.NEED_MAIL)

    def test_coroutineHooks(self) -> None:
        """
        async def hooks work: values, and SMTPError raised inside.
        """
        gate: Deferred[None] = Deferred()

        class Async(BaseHandler):
            async def onMailFrom(self, address: Address, session: Session) -> object:
                await gate
                return None

            async def onRcptTo(self, address: Address, session: Session) -> object:
                if address.address.startswith("bad"):
                    raise SMTPError(550, "no such user", "5.1.1")
                return None

        proto, transport, clock, _ = connect(Async())
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"MAIL FROM:<a@e.com>\r\nRCPT TO:<bad@e.com>\r\nRCPT TO:<ok@e.com>\r\n")
        self.assertEqual(transport.value(), b"")
        gate.callback(None)
        self.assertEqual(
            transport.value(),
            replies.MAIL_OK + b"550 5.1.1 no such user\r\n" + replies.RCPT_OK,
        )
        self.assertEqual([a.address for a in proto.session.envelope.rcptTo], ["ok@e.com"])

    def test_unexpectedException(self) -> None:
        """
        An unexpected exception in a hook becomes 451, is logged with its
        traceback, and the session goes on.
        """

        class Broken(BaseHandler):
            def onRcptTo(self, address: Address, session: Session) -> object:
                raise ZeroDivisionError("boom")

        proto, transport, clock, _ = connect(Broken())
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@e.com>\r\n")
        take(transport)
        proto.dataReceived(b"RCPT TO:<b@e.com>\r\nNOOP\r\n")
        self.assertEqual(take(transport), replies.LOCAL_ERROR + replies.OK)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_asyncFailure(self) -> None:
        """
        A Deferred failing with an unexpected error also becomes 451.
        """

        class Broken(BaseHandler):
            def onHelo(self, hostname: str, session: Session) -> object:
                d: Deferred[None] = Deferred()
                d.errback(KeyError("x"))
                return d

        proto, transport, clock, _ = connect(Broken())
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        self.assertEqual(take(transport), replies.LOCAL_ERROR)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_alreadyFiredDeferred(self) -> None:
        """
        A hook returning an already-fired Deferred behaves like a plain value.
        """

        class Fired(BaseHandler):
            def onMailFrom(self, address: Address, session: Session) -> object:
                return succeed(None)

        proto, transport, clock, _ = connect(Fired())
        take(transport)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@e.com>\r\nNOOP\r\n")
        self.assertEqual(take(transport), replies.EHLO_DEFAULT + replies.MAIL_OK + replies.OK)

    def test_slowOnData(self) -> None:
        """
        The reply after the final dot waits for onData; pipelined commands wait
        behind it.
        """
        handler = SlowData()
        proto, transport, clock, _ = connect(handler)
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\nhi\r\n.\r\nNOOP\r\n")
        self.assertEqual(take(transport), replies.START_DATA)
        handler.pending.callback("OK: id 7")
        self.assertEqual(take(transport), b"250 2.0.0 OK: id 7\r\n" + replies.OK)

    def test_observers(self) -> None:
        """
        Observers see the session events in order, a C{hook} event as each
        handler hook answers.
        """
        proto, transport, clock, factory = connect()
        seen: list[str] = []
        factory.addObserver(lambda event, session, data: seen.append(event))
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@e.com>\r\nRCPT TO:<b@e.com>\r\n")
        proto.dataReceived(b"DATA\r\nx\r\n.\r\nFROB\r\n")
        proto.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(
            seen, ["hook", "helo", "hook", "mail", "hook", "rcpt", "message", "reject", "close"]
        )

    def test_observerEventsChecked(self) -> None:
        """
        An observer's C{events} must be a set, list or tuple of names: a
        string (a set of letters) or anything else is refused at once, and
        the observers can only be added with C{addObserver}.
        """
        proto, transport, clock, factory = connect()

        class Named:
            def __init__(self, events: object) -> None:
                self.events = events

            def __call__(self, event: str, session: Session, data: dict[str, Any]) -> None:
                pass

        for events in ("close", object(), [b"close"], {"close": 1}):
            self.assertRaises(TypeError, factory.addObserver, Named(events))
        self.assertEqual(factory.observers, ())
        good = Named(["close"])
        factory.addObserver(good)
        self.assertEqual(factory.observers, (good,))

    def test_observerEvents(self) -> None:
        """
        An observer with an C{events} attribute is told of those events
        only; one without is told of all; the factory's C{wanted} is what
        they ask for together, and hooks are timed only when someone wants
        C{hook} events.
        """

        class Picky:
            events = frozenset({"mail", "close"})

            def __init__(self) -> None:
                self.seen: list[str] = []

            def __call__(self, event: str, session: Session, data: dict[str, Any]) -> None:
                self.seen.append(event)

        class Slow(BaseHandler):
            def onRcptTo(self, address: Address, session: Session) -> object:
                return succeed(None)

        proto, transport, clock, factory = connect(Slow())
        picky = Picky()
        factory.addObserver(picky)
        self.assertEqual(factory.wanted, frozenset({"mail", "close"}))
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@e.com>\r\nRCPT TO:<b@e.com>\r\n")
        self.assertEqual(picky.seen, ["mail"])
        everything: list[str] = []
        factory.addObserver(lambda event, session, data: everything.append(event))
        self.assertIn("hook", factory.wanted)
        proto.dataReceived(b"RCPT TO:<c@e.com>\r\n")
        proto.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(picky.seen, ["mail", "close"])
        self.assertEqual(everything, ["hook", "rcpt", "close"])

    def test_closingRefusalCloses(self) -> None:
        """
        A hook refusing with 421 or 521, raised or later, closes the
        session after the reply (RFC 5321 section 3.8, RFC 7504): the
        commands pipelined behind it are never answered, and its one
        refusal event says the session is closing.
        """
        for code, enhanced in ((421, "4.3.0"), (521, "5.3.2")):

            class Closing(RecordingHandler):
                refusal = SMTPError(code, "go away", enhanced)

                def onRcptTo(self, address: Address, session: Session) -> object:
                    raise self.refusal

            events: list[tuple[str, dict[str, Any]]] = []
            proto, transport, clock, factory = connect(Closing())
            factory.addObserver(
                lambda event, session, data, events=events: events.append((event, data))
            )
            proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@e.com>\r\n")
            take(transport)
            proto.dataReceived(b"RCPT TO:<a@e.com>\r\nNOOP\r\n")
            self.assertEqual(take(transport), b"%d %s go away\r\n" % (code, enhanced.encode()))
            self.assertTrue(transport.disconnecting, code)
            rejects = [data for event, data in events if event == "reject"]
            self.assertEqual([(r["reply"].code, r["closing"]) for r in rejects], [(code, True)])

    def test_closingRefusalOfMessageCloses(self) -> None:
        """
        C{onData} refusing with 421 closes the session after the reply, in
        SMTP and, after every recipient's reply, in LMTP.
        """
        closing = SMTPError(421, "shutting down", "4.3.2")

        class Closing(RecordingHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                stream.drain()
                raise closing

        proto, transport, clock, _ = connect(Closing())
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@e.com>\r\nRCPT TO:<a@e.com>\r\n")
        take(transport)
        proto.dataReceived(b"DATA\r\nhi\r\n.\r\nNOOP\r\n")
        self.assertEqual(
            take(transport), b"354 End data with <CR><LF>.<CR><LF>\r\n421 4.3.2 shutting down\r\n"
        )
        self.assertTrue(transport.disconnecting)

        handler = RefusingDataHandler(["delivered", closing])
        proto, transport, clock, _ = connect(handler, lmtp=True)
        proto.dataReceived(
            b"LHLO c\r\nMAIL FROM:<s@e.com>\r\nRCPT TO:<a@e.com>\r\nRCPT TO:<b@e.com>\r\n"
        )
        take(transport)
        proto.dataReceived(b"DATA\r\nhi\r\n.\r\nNOOP\r\n")
        out = take(transport)
        self.assertTrue(
            out.endswith(b"\r\n250 2.0.0 delivered\r\n421 4.3.2 shutting down\r\n"), out
        )
        self.assertTrue(transport.disconnecting)

    def test_closingRefusalOfMessageBoundsUnreadReplies(self) -> None:
        """
        A close after C{onData}'s 421 is a close after a refusal, as one
        after any other hook's: the kernel is told to give up replies left
        unread (L{flow.giveUpUnreadAfter}), before the close.
        """
        from twisted_smtpd._serving import output

        calls: list[tuple[object, float, bool]] = []

        class Closing(RecordingHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                stream.drain()
                raise SMTPError(421, "shutting down", "4.3.2")

        proto, transport, clock, _ = connect(Closing())
        self.patch(
            output,
            "giveUpUnreadAfter",
            lambda socket, seconds: calls.append((socket, seconds, proto.closing)),
        )
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@e.com>\r\nRCPT TO:<a@e.com>\r\n")
        self.assertEqual(calls, [])
        proto.dataReceived(b"DATA\r\nhi\r\n.\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(calls, [(proto._socket, 10.0, False)])

    def test_positiveRefusalIsHandlerError(self) -> None:
        """
        A hook refusing with a positive L{SMTPError} (250), raised or as a
        failed L{Deferred}, is a handler error answered 451 with one
        logged failure: the client is never told 250 for a recipient that
        is not kept.
        """

        class Positive(RecordingHandler):
            def onRcptTo(self, address: Address, session: Session) -> object:
                if address.address.startswith("raised"):
                    raise SMTPError(250, "2.1.5 fine")
                if address.address.startswith("failed"):
                    return Deferred.fromCoroutine(self.later())
                return None

            async def later(self) -> None:
                raise SMTPError(250, "fine")

        handler = Positive()
        proto, transport, clock, _ = connect(handler)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@e.com>\r\n")
        take(transport)
        proto.dataReceived(
            b"RCPT TO:<raised@e.com>\r\nRCPT TO:<failed@e.com>\r\nRCPT TO:<kept@e.com>\r\n"
        )
        self.assertEqual(
            take(transport), replies.LOCAL_ERROR + replies.LOCAL_ERROR + replies.RCPT_OK
        )
        self.assertEqual([a.address for a in proto.session.envelope.rcptTo], ["kept@e.com"])
        errors = self.flushLoggedErrors(TypeError)
        self.assertEqual(len(errors), 2)
        self.assertIn("onRcptTo refused with a 250 reply", str(errors[0].value))

    def test_intermediateCodeFromOnDataIsHandlerError(self) -> None:
        """
        C{onData} failing with a 3xx L{SMTPError} (354) after a DATA or BDAT
        body is a handler error answered 451 with one logged failure: the
        client is never told to go on sending once its message has ended.
        """

        class GoOn(BaseHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                stream.drain()
                raise SMTPError(354, "go on")

        proto, transport, clock, _ = connect(GoOn())
        transaction(proto, transport)
        proto.dataReceived(b"DATA\r\nhi\r\n.\r\nNOOP\r\n")
        self.assertEqual(take(transport), replies.START_DATA + replies.LOCAL_ERROR + replies.OK)
        transaction(proto, transport)
        proto.dataReceived(b"BDAT 2 LAST\r\nhiNOOP\r\n")
        self.assertEqual(take(transport), replies.LOCAL_ERROR + replies.OK)
        errors = self.flushLoggedErrors(TypeError)
        self.assertEqual(len(errors), 2)
        self.assertIn("onData answered with a 354 reply", str(errors[0].value))

    def test_asyncOnClose(self) -> None:
        """
        An C{async def} C{onClose} runs when the connection is gone, and
        what it raises is logged once.
        """
        ran: list[str] = []

        class AsyncClose(BaseHandler):
            async def onClose(self, session: Session) -> None:
                ran.append(session.id)
                raise ValueError("close failed")

        proto, transport, clock, _ = connect(AsyncClose())
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(ran, [proto.session.id])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class LMTPTests(SynchronousTestCase):
    def test_lhlo(self) -> None:
        """
        LMTP greets as LMTP, takes LHLO and refuses HELO and EHLO.
        """
        proto, transport, clock, _ = connect(lmtp=True)
        self.assertEqual(take(transport), replies.LMTP_GREETING)
        proto.dataReceived(b"HELO c\r\nEHLO c\r\nLHLO c\r\n")
        out = take(transport)
        self.assertTrue(out.startswith(replies.UNKNOWN_COMMAND * 2 + b"250-mx.example.com"), out)
        self.assertEqual(proto.session.transmissionType, "LMTP")

    def test_replyPerRecipient(self) -> None:
        """
        After the body, one reply per accepted recipient, in order, duplicates
        included (RFC 2033 section 4.2).
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler, lmtp=True)
        proto.dataReceived(b"LHLO c\r\nMAIL FROM:<s@e.com>\r\n")
        proto.dataReceived(b"RCPT TO:<a@e.com>\r\nRCPT TO:<b@e.com>\r\nRCPT TO:<a@e.com>\r\n")
        take(transport)
        proto.dataReceived(b"DATA\r\nhi\r\n.\r\n")
        self.assertEqual(
            take(transport), replies.START_DATA + b"250 2.0.0 OK: queued as X1\r\n" * 3
        )

    def test_perRecipientResults(self) -> None:
        """
        A list from onData gives each recipient its own reply.
        """

        class Mixed(BaseHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                stream.drain()
                return ["delivered", SMTPError(552, "mailbox full", "5.2.2")]

        proto, transport, clock, _ = connect(Mixed(), lmtp=True)
        proto.dataReceived(b"LHLO c\r\nMAIL FROM:<s@e.com>\r\nRCPT TO:<a@e.com>\r\n")
        proto.dataReceived(b"RCPT TO:<b@e.com>\r\n")
        take(transport)
        proto.dataReceived(b"DATA\r\nhi\r\n.\r\n")
        self.assertEqual(
            take(transport),
            replies.START_DATA + b"250 2.0.0 delivered\r\n552 5.2.2 mailbox full\r\n",
        )

    def test_perRecipientExceptionLogged(self) -> None:
        """
        An exception other than L{SMTPError} in onData's list is answered
        451 for its recipient and logged once, as when onData raises it.
        """
        broken = ValueError("no mailbox store")

        class Broken(BaseHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                stream.drain()
                return [broken, "delivered", broken]

        proto, transport, clock, _ = connect(Broken(), lmtp=True)
        proto.dataReceived(b"LHLO c\r\nMAIL FROM:<s@e.com>\r\nRCPT TO:<a@e.com>\r\n")
        proto.dataReceived(b"RCPT TO:<b@e.com>\r\nRCPT TO:<c@e.com>\r\n")
        take(transport)
        proto.dataReceived(b"DATA\r\nhi\r\n.\r\n")
        self.assertEqual(
            take(transport),
            replies.START_DATA
            + replies.LOCAL_ERROR
            + b"250 2.0.0 delivered\r\n"
            + replies.LOCAL_ERROR,
        )
        self.assertEqual([e.value for e in self.flushLoggedErrors(ValueError)], [broken])

    def test_perRecipientIntermediateCode(self) -> None:
        """
        A 3xx L{SMTPError} in onData's list is answered 451 for its
        recipient, one recipient's 250 left as it is, and logged once
        however many recipients share it.
        """
        goOn = SMTPError(354, "go on")

        class GoOn(BaseHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                stream.drain()
                return [goOn, "delivered", goOn]

        proto, transport, clock, _ = connect(GoOn(), lmtp=True)
        proto.dataReceived(b"LHLO c\r\nMAIL FROM:<s@e.com>\r\nRCPT TO:<a@e.com>\r\n")
        proto.dataReceived(b"RCPT TO:<b@e.com>\r\nRCPT TO:<c@e.com>\r\n")
        take(transport)
        proto.dataReceived(b"BDAT 2 LAST\r\nhi")
        self.assertEqual(
            take(transport),
            replies.LOCAL_ERROR + b"250 2.0.0 delivered\r\n" + replies.LOCAL_ERROR,
        )
        errors = self.flushLoggedErrors(TypeError)
        self.assertEqual(len(errors), 1)
        self.assertIs(errors[0].value.__cause__, goOn)

    def test_enhancedAlwaysOn(self) -> None:
        """
        LMTP sends enhanced status codes even when they are hidden.
        """
        proto, transport, clock, _ = connect(lmtp=True, hideENHANCEDSTATUSCODES=True)
        take(transport)
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(take(transport), replies.OK)

    def test_pipeliningAlwaysAdvertised(self) -> None:
        """
        LHLO lists PIPELINING even when it is hidden: an LMTP server must
        implement it (RFC 2033 section 5), as it must enhanced status codes.
        """
        proto, transport, clock, _ = connect(lmtp=True, hidePIPELINING=True)
        take(transport)
        proto.dataReceived(b"LHLO c\r\n")
        self.assertIn(b"250-PIPELINING\r\n", take(transport))


class TimeoutTests(SynchronousTestCase):
    def test_idleTimeout(self) -> None:
        """
        An idle client gets 421 and is disconnected after socketTimeout.
        """
        proto, transport, clock, _ = connect(socketTimeout=60)
        clock.advance(59)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.value().endswith(replies.TIMEOUT))
        self.assertTrue(transport.disconnecting)

    def test_activityPostpones(self) -> None:
        """
        Each command starts the idle time again.
        """
        proto, transport, clock, _ = connect(socketTimeout=60)
        clock.advance(50)
        proto.dataReceived(b"NOOP\r\n")
        clock.advance(50)
        self.assertFalse(transport.disconnecting)
        clock.advance(10)
        self.assertTrue(transport.disconnecting)

    def test_slowHookIsNotIdle(self) -> None:
        """
        Waiting for a hook is not the client's silence.
        """
        pending: Deferred[None] = Deferred()

        class Slow(BaseHandler):
            def onHelo(self, hostname: str, session: Session) -> object:
                return pending

        proto, transport, clock, _ = connect(Slow(), socketTimeout=60)
        proto.dataReceived(b"EHLO c\r\n")
        clock.advance(200)
        self.assertFalse(transport.disconnecting)
        pending.callback(None)
        clock.advance(60)
        self.assertTrue(transport.disconnecting)


class CloseTests(SynchronousTestCase):
    def test_idleSessionClosed(self) -> None:
        """
        close() sends 421 to an idle session at once and fires when it is gone.
        """
        proto, transport, clock, factory = connect()
        take(transport)
        d = factory.close()
        self.assertEqual(take(transport), replies.SHUTDOWN)
        self.assertNoResult(d)
        proto.connectionLost(Failure(ConnectionLost()))
        self.successResultOf(d)

    def test_closeDuringReverseLookup(self) -> None:
        """
        A server closing while a client's reverse lookup is in flight sends
        it 421 and nothing after: no greeting, no C{onConnect}, once the
        lookup answers.
        """
        lookup: Deferred[str | None] = Deferred()
        handler = RecordingHandler()
        connected: list[Session] = []
        handler.onConnect = connected.append  # type: ignore[method-assign]
        clock = Clock()
        factory = SMTPServerFactory(handler, ServerOptions(name="mx.example.com"), reactor=clock)
        factory.knownName = lambda ip: None  # type: ignore[method-assign]
        factory.reverseLookup = lambda ip: lookup  # type: ignore[method-assign]
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport(peerAddress=_ipv4(*PEER), hostAddress=_ipv4("192.0.2.1", 25))
        proto.makeConnection(transport)
        factory.close()
        self.assertEqual(take(transport), replies.SHUTDOWN)
        lookup.callback("client.example.com")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(connected, [])

    def goneDuringReverseLookup(self, closing: bool) -> None:
        """
        A session ending during its reverse lookup, the server C{closing}
        or not, never began: no C{connect}, no C{close} event (so no log
        line), no C{onConnect}, no C{onClose}.
        """
        lookup: Deferred[str | None] = Deferred()
        handler = RecordingHandler()
        hooks: list[str] = []
        handler.onConnect = lambda session: hooks.append("onConnect")  # type: ignore[method-assign]
        handler.onClose = lambda session: hooks.append("onClose")  # type: ignore[method-assign]
        factory = SMTPServerFactory(handler, ServerOptions(name="mx.example.com"), reactor=Clock())
        events: list[str] = []
        factory.addObserver(lambda event, session, data: events.append(event))
        factory.knownName = lambda ip: None  # type: ignore[method-assign]
        factory.reverseLookup = lambda ip: lookup  # type: ignore[method-assign]
        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport(peerAddress=_ipv4(*PEER), hostAddress=_ipv4("192.0.2.1", 25))
        proto.makeConnection(transport)
        if closing:
            factory.close()
        proto.connectionLost(Failure(ConnectionDone()))
        lookup.callback(None)
        self.assertEqual((events, hooks), ([], []))

    def test_goneDuringReverseLookup(self) -> None:
        """
        A client gone during its reverse lookup (a TCP health check) never
        began a session.
        """
        self.goneDuringReverseLookup(closing=False)

    def test_closedDuringReverseLookup(self) -> None:
        """
        A session a stopping server closes during its reverse lookup never
        began.
        """
        self.goneDuringReverseLookup(closing=True)

    def test_transactionFinishes(self) -> None:
        """
        A session inside a transaction may finish it; then it gets 421.
        """
        handler = RecordingHandler()
        proto, transport, clock, factory = connect(handler)
        transaction(proto, transport)
        d = factory.close()
        self.assertEqual(take(transport), b"")
        proto.dataReceived(b"DATA\r\nx\r\n.\r\n")
        self.assertEqual(
            take(transport),
            replies.START_DATA + b"250 2.0.0 OK: queued as X1\r\n" + replies.SHUTDOWN,
        )
        self.assertEqual(len(handler.messages), 1)
        proto.connectionLost(Failure(ConnectionLost()))
        self.successResultOf(d)

    def test_closeTimeout(self) -> None:
        """
        After closeTimeout the sessions still open get 421 and are closed.
        """
        proto, transport, clock, factory = connect(closeTimeout=30)
        transaction(proto, transport)
        factory.close()
        clock.advance(30)
        self.assertEqual(take(transport), replies.SHUTDOWN)
        self.assertTrue(transport.disconnecting)


CHUNK_OK = b"250 2.0.0 OK: %d octets received\r\n"
BDAT_DISCARDED = b"552 5.3.4 Error: chunk discarded, message exceeds fixed maximum message size\r\n"
BDAT_IN_PROGRESS = b"503 5.5.1 Error: BDAT transfer in progress\r\n"
QUEUED = b"250 2.0.0 OK: queued as X1\r\n"


class BdatTests(SynchronousTestCase):
    def test_advertised(self) -> None:
        """
        EHLO lists CHUNKING and BINARYMIME unless CHUNKING is hidden.
        """
        proto, transport, clock, _ = connect(hideCHUNKING=True)
        proto.dataReceived(b"EHLO c\r\n")
        self.assertNotIn(b"CHUNKING", transport.value())

    def test_oneChunk(self) -> None:
        """
        A single LAST chunk is the message, taken as it is: no dot-unstuffing,
        bare LF and binary octets kept.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler)
        transaction(proto, transport)
        body = b"..x\nbinary\x00\xff\r\n.\r\n"
        proto.dataReceived(b"BDAT %d LAST\r\n" % len(body) + body + b"NOOP\r\n")
        self.assertEqual(take(transport), QUEUED + replies.OK)
        self.assertEqual(handler.messages[0][2], body)

    def test_largerReadsWithinAChunk(self) -> None:
        """
        A read of a BDAT chunk that fills Twisted's read buffer makes the
        session read L{flow.BODY_READ_SIZE} at a time until the chunk ends;
        the next command is read at Twisted's size.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler)
        connection = _Connection(take=1 << 20)
        proto._socket = connection
        transaction(proto, transport)
        size = flow.READ_SIZE + 10
        proto.dataReceived(b"BDAT %d\r\n" % size)
        proto.dataReceived(b"x" * flow.READ_SIZE)
        self.assertEqual(connection.bufferSize, flow.BODY_READ_SIZE)
        proto.dataReceived(b"y" * 10 + b"BDAT 0 LAST\r\n")
        self.assertEqual(connection.bufferSize, flow.READ_SIZE)
        self.assertEqual(take(transport), CHUNK_OK % size + QUEUED)
        self.assertEqual(handler.messages[0][2], b"x" * flow.READ_SIZE + b"y" * 10)

    def test_chunksPipelinedEverySplit(self) -> None:
        """
        Several chunks pipelined with their commands, split at every byte,
        give one reply per chunk and the message whole.
        """
        session = b"BDAT 5\r\nhello" + b"BDAT 7\r\n world\n" + b"BDAT 0 LAST\r\n"
        expected = CHUNK_OK % 5 + CHUNK_OK % 12 + QUEUED
        for cut in range(len(session) + 1):
            handler = RecordingHandler()
            proto, transport, clock, _ = connect(handler)
            transaction(proto, transport)
            proto.dataReceived(session[:cut])
            proto.dataReceived(session[cut:])
            self.assertEqual(take(transport), expected, cut)
            self.assertEqual(handler.messages[0][2], b"hello world\n", cut)

    def test_tinyChunksPauseTheClient(self) -> None:
        """
        A handler that stops reading while the client sends the body in
        BDAT chunks of two octets pauses the reading once C{maxBuffer}
        octets are kept: the short chunks reach the stream joined, so that
        none costs memory of its own; the body arrives whole once the
        handler reads again.
        """
        from twisted.internet.testing import StringTransport as Consumer

        sink = Consumer()

        class Piping(BaseHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                return stream.pipe(sink)

        proto, transport, clock, _ = connect(Piping())
        transaction(proto, transport)
        proto.dataReceived(b"BDAT 2\r\nab")
        sink.producer.pauseProducing()
        sent = 1
        batch = b"BDAT 2\r\nab" * 1000
        while transport.producerState == "producing" and sent < 200000:
            proto.dataReceived(batch)
            sent += 1000
        self.assertEqual(transport.producerState, "paused")
        # maxBuffer (262,144 octets), what the decoder joins (4,096) and
        # the last batches.
        self.assertLess(sent, (262144 + 4096) // 2 + 3000)
        self.assertLess(len(sink.producer._buffer), 100)
        sink.producer.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        take(transport)
        proto.dataReceived(b"BDAT 0 LAST\r\n")
        self.assertEqual(take(transport), replies.DATA_OK)
        self.assertEqual(sink.value(), b"ab" * sent)

    def test_sequence(self) -> None:
        """
        BDAT needs recipients (its chunk is still read); RCPT and DATA cannot
        interrupt a BDAT transfer.
        """
        proto, transport, clock, _ = connect()
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n")
        take(transport)
        proto.dataReceived(b"BDAT 1 LAST\r\nx")
        self.assertEqual(take(transport), replies.NEED_RCPT)
        proto.dataReceived(b"RCPT TO:<d@e.f>\r\nBDAT 2\r\nab")
        self.assertEqual(take(transport), replies.RCPT_OK + CHUNK_OK % 2)
        proto.dataReceived(b"RCPT TO:<g@e.f>\r\nDATA\r\n")
        self.assertEqual(take(transport), BDAT_IN_PROGRESS * 2)

    def test_sizeLimit(self) -> None:
        """
        Chunks past the size limit are read and dropped; the LAST one gets
        552, nothing is delivered and the session goes on.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler, size=12)
        transaction(proto, transport)
        proto.dataReceived(b"BDAT 8\r\n12345678BDAT 8 LAST\r\n12345678NOOP\r\n")
        self.assertEqual(take(transport), CHUNK_OK % 8 + replies.SIZE_EXCEEDED + replies.OK)
        self.assertEqual(handler.messages, [])

    def test_chunkPastSizeLimitRefused(self) -> None:
        """
        The chunk that takes a message past the size limit gets 552 5.3.4
        once its octets are read (RFC 3030 section 4.2), never a 250; the
        handler's stream fails then.  The chunks after it are read and
        dropped with their own 552 until LAST; the message leaves one log
        event; it and each chunk dropped after it count as one error; the
        session goes on in sync.
        """
        from twisted_smtpd._core import replies as catalogue

        failures: list[Failure] = []

        class Handler(RecordingHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                d = stream.collect()
                d.addErrback(failures.append)  # type: ignore[attr-defined]
                return d

        proto, transport, clock, factory = connect(Handler(), size=12, maxErrors=5)
        events: list[tuple[str, dict[str, Any]]] = []
        factory.addObserver(lambda event, session, data: events.append((event, data)))
        transaction(proto, transport)
        proto.dataReceived(b"BDAT 8\r\n12345678")
        self.assertEqual(take(transport), CHUNK_OK % 8)
        self.assertEqual(failures, [])
        proto.dataReceived(b"BDAT 8\r\n1234")
        self.assertEqual(take(transport), b"")
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0].value.code, 552)
        proto.dataReceived(b"5678BDAT 4\r\nRS")
        self.assertEqual(take(transport), replies.SIZE_EXCEEDED)
        proto.dataReceived(b"ET")
        self.assertEqual(take(transport), BDAT_DISCARDED)
        proto.dataReceived(b"BDAT 0\r\nBDAT 4 LAST\r\nQUITNOOP\r\n")
        self.assertEqual(take(transport), BDAT_DISCARDED * 2 + replies.OK)
        self.assertEqual([e for e, _ in events if e in ("message", "reject")], ["message"])
        [data] = [d for e, d in events if e == "message"]
        self.assertEqual((data["size"], data["replies"]), (16, (catalogue.SIZE_EXCEEDED,)))
        self.assertEqual(proto.receiver, None)
        self.assertEqual(proto.discard, None)
        self.assertEqual(proto._errors, 4)
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(b"MAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n")
        proto.dataReceived(b"BDAT 2 LAST\r\nhi")
        self.assertEqual(
            take(transport), replies.MAIL_OK + replies.RCPT_OK + b"250 2.0.0 OK: message queued\r\n"
        )
        self.assertEqual(len(failures), 1)

    def test_firstChunkPastSizeLimitLMTP(self) -> None:
        """
        In LMTP, a LAST chunk past the size limit gets one 552 per
        recipient, and the transaction ends.
        """
        proto, transport, clock, _ = connect(size=10, lmtp=True)
        take(transport)
        proto.dataReceived(b"LHLO c\r\nMAIL FROM:<s@example.com>\r\n")
        proto.dataReceived(b"RCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        take(transport)
        proto.dataReceived(b"BDAT 11 LAST\r\n12345678901RSET\r\n")
        self.assertEqual(take(transport), replies.SIZE_EXCEEDED * 2 + replies.RESET)

    def test_rsetDropsTransfer(self) -> None:
        """
        RSET in the middle of a BDAT transfer fails the handler's stream and
        starts afresh.
        """
        failures: list[Failure] = []

        class Handler(RecordingHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                d = stream.collect()
                d.addErrback(failures.append)  # type: ignore[attr-defined]
                return d

        proto, transport, clock, _ = connect(Handler())
        transaction(proto, transport)
        proto.dataReceived(b"BDAT 3\r\nabcRSET\r\nDATA\r\n")
        self.assertEqual(take(transport), CHUNK_OK % 3 + replies.RESET + replies.NEED_MAIL)
        self.assertEqual(len(failures), 1)

    def test_binarymime(self) -> None:
        """
        BODY=BINARYMIME is accepted with BDAT.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler)
        proto.dataReceived(
            b"EHLO c\r\nMAIL FROM:<s@example.com> BODY=BINARYMIME\r\nRCPT TO:<r@e.com>\r\n"
        )
        take(transport)
        proto.dataReceived(b"BDAT 3 LAST\r\n\x00\x01\x02")
        self.assertEqual(take(transport), QUEUED)
        self.assertEqual(handler.messages[0][2], b"\x00\x01\x02")

    def test_lmtp(self) -> None:
        """
        In LMTP, the LAST chunk gets one reply per recipient.
        """
        proto, transport, clock, _ = connect(RecordingHandler(), lmtp=True)
        proto.dataReceived(b"LHLO c\r\nMAIL FROM:<s@e.com>\r\nRCPT TO:<a@e.com>\r\n")
        proto.dataReceived(b"RCPT TO:<b@e.com>\r\n")
        take(transport)
        proto.dataReceived(b"BDAT 2 LAST\r\nhi")
        self.assertEqual(take(transport), QUEUED * 2)


class _Socket:
    def __init__(self, take: int = 3) -> None:
        self.sent: list[bytes] = []
        self.take = take

    def send(self, data: bytes) -> int:
        self.sent.append(data[: self.take])
        return min(len(data), self.take)


class _Connection:
    """
    The parts of Twisted's C{tcp.Server} that L{writeThrough} and a
    session's close and STARTTLS use.
    """

    TLS = False
    connected = True
    disconnecting = False
    producerPaused = False
    producer = None
    _aborting = False
    bufferSize = 65536

    def __init__(self, reactor: Clock | None = None, take: int = 3) -> None:
        self.reactor = reactor if reactor is not None else Clock()
        self.socket = _Socket(take)
        self.dataBuffer = b""
        self._tempDataBuffer: list[bytes] = []
        self.doWrites = 0
        #: What the socket had been sent when the close, the abort or the
        #: switch to TLS began.
        self.sentAt: dict[str, list[bytes]] = {}

    def write(self, data: bytes) -> None:
        self._tempDataBuffer.append(data)

    def doWrite(self) -> None:
        self.doWrites += 1
        self.socket.sent.extend(self._tempDataBuffer)
        self._tempDataBuffer = []

    def unregisterProducer(self) -> None:
        pass

    def loseConnection(self) -> None:
        self.sentAt["close"] = list(self.socket.sent)
        self.disconnecting = True

    def abortConnection(self) -> None:
        self.sentAt["abort"] = list(self.socket.sent)
        self.connected = False

    def connectionLost(self, reason: Failure) -> None:
        # What the reactor calls once a closing connection's buffer is empty.
        self.sentAt["lost"] = list(self.socket.sent)
        self.lostReason = reason
        self.connected = False

    def startTLS(self, contextFactory: object) -> None:
        self.sentAt["tls"] = list(self.socket.sent)
        self.TLS = True


class _Aggregator:
    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.held: list[bytes] = []

    def flush(self) -> None:
        # Encoded (here: bracketed) into the connection's buffer.
        self.connection._tempDataBuffer.extend(b"<" + data + b">" for data in self.held)
        self.held = []


class _Layer:
    """
    A transport above the connection (TLS, PROXY) holding what it is given
    in an aggregator, as Twisted's TLS layer does.
    """

    def __init__(self, connection: _Connection) -> None:
        self.transport = connection
        self._aggregator = _Aggregator(connection)

    def write(self, data: bytes) -> None:
        self._aggregator.held.append(data)


def _overTLS(proto: SMTPProtocol) -> tuple[_Connection, _Layer]:
    """
    Put C{proto} over a TLS layer started on a connection (STARTTLS), both
    fakes.
    """
    connection = _Connection()
    connection.TLS = True
    tls = _Layer(connection)
    connection.protocol = tls  # type: ignore[attr-defined]
    proto.transport = tls  # type: ignore[assignment]
    proto._socket = connection
    return connection, tls


class WriteThroughTests(SynchronousTestCase):
    def test_partialSend(self) -> None:
        """
        A reply on plain TCP leaves at the end of the reactor's turn; what
        the socket does not take at once is queued on the transport, in
        order; a busy transport gets everything queued behind what it holds.
        """
        from twisted_smtpd._serving.flow import writeThrough

        transport, writer = _Connection(), TurnWriter()
        writeThrough(transport, b"250 OK\r\n", transport, writer=writer)
        self.assertEqual((transport.socket.sent, transport._tempDataBuffer), ([], []))
        transport.reactor.advance(0)
        self.assertEqual(
            (transport.socket.sent, transport._tempDataBuffer), ([b"250"], [b" OK\r\n"])
        )
        writeThrough(transport, b"221 Bye\r\n", transport, writer=writer)
        self.assertEqual(transport.socket.sent, [b"250"])
        self.assertEqual(transport._tempDataBuffer, [b" OK\r\n", b"221 Bye\r\n"])
        self.assertEqual(transport.doWrites, 0)
        self.assertEqual(transport.reactor.getDelayedCalls(), [])

    def test_turnShared(self) -> None:
        """
        The replies written on plain TCP connections during one turn of the
        reactor leave together at its end, after one delayed call: one send
        per connection, its replies in order.
        """
        from twisted_smtpd._serving.flow import writeThrough

        clock, writer = Clock(), TurnWriter()
        first, second = _Connection(clock, take=1024), _Connection(clock, take=1024)
        writeThrough(first, b"250 A\r\n", first, writer=writer)
        writeThrough(second, b"250 B\r\n", second, writer=writer)
        writeThrough(first, b"250 C\r\n", first, writer=writer)
        self.assertEqual((first.socket.sent, second.socket.sent), ([], []))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0)
        self.assertEqual(first.socket.sent, [b"250 A\r\n250 C\r\n"])
        self.assertEqual(second.socket.sent, [b"250 B\r\n"])
        writeThrough(second, b"250 D\r\n", second, writer=writer)
        clock.advance(0)
        self.assertEqual(second.socket.sent, [b"250 B\r\n", b"250 D\r\n"])

    def test_oneFailureLeavesOthers(self) -> None:
        """
        A connection whose write fails at the end of the turn is logged and
        leaves the other connections' replies to go.
        """
        from twisted_smtpd._serving.flow import writeThrough

        clock, writer = Clock(), TurnWriter()
        broken, fine = _Connection(clock, take=1024), _Connection(clock, take=1024)

        def fail(data: bytes) -> int:
            raise RuntimeError("broken")

        broken.socket.send = fail  # type: ignore[method-assign]
        writeThrough(broken, b"250 A\r\n", broken, writer=writer)
        writeThrough(fine, b"250 B\r\n", fine, writer=writer)
        clock.advance(0)
        self.assertEqual(fine.socket.sent, [b"250 B\r\n"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_alone(self) -> None:
        """
        The reply of the server's only session leaves at once, and after
        what its connection held for the end of the turn.
        """
        from twisted_smtpd._serving.flow import writeThrough

        connection, writer = _Connection(take=1024), TurnWriter()
        writeThrough(connection, b"250 A\r\n", connection, writer=writer)
        writeThrough(connection, b"250 B\r\n", connection, writer=writer, alone=True)
        self.assertEqual(connection.socket.sent, [b"250 A\r\n", b"250 B\r\n"])
        connection.reactor.advance(0)
        self.assertEqual(len(connection.socket.sent), 2)

    def test_queuedAtTurnEnd(self) -> None:
        """
        A connection that queues bytes of its own when the turn ends gets
        the held replies queued behind them, never sent ahead; a lost one
        gets nothing.
        """
        from twisted_smtpd._serving.flow import writeThrough

        clock, writer = Clock(), TurnWriter()
        busy, lost = _Connection(clock, take=1024), _Connection(clock, take=1024)
        writeThrough(busy, b"250 A\r\n", busy, writer=writer)
        writeThrough(lost, b"250 B\r\n", lost, writer=writer)
        busy.write(b"queued")
        writeThrough(busy, b"250 C\r\n", busy, writer=writer)
        lost.connected = False
        clock.advance(0)
        self.assertEqual(busy.socket.sent, [])
        self.assertEqual(busy._tempDataBuffer, [b"queued", b"250 A\r\n250 C\r\n"])
        self.assertEqual((lost.socket.sent, lost._tempDataBuffer), ([], []))

    def test_noConnection(self) -> None:
        """
        Without a TCP connection underneath, everything goes through the
        transport's C{write}.
        """
        from twisted_smtpd._serving.flow import writeThrough

        transport = _Connection()
        writeThrough(transport, b"250 OK\r\n", None)
        self.assertEqual((transport.socket.sent, transport._tempDataBuffer), ([], [b"250 OK\r\n"]))

    def test_throughLayer(self) -> None:
        """
        Through a layer (TLS, PROXY), the layer's held writes go down to the
        connection, which is written at once, behind what it already holds;
        not while it has paused its producer.
        """
        from twisted_smtpd._serving.flow import writeThrough

        connection = _Connection()
        layer = _Layer(connection)
        writeThrough(layer, b"250 OK\r\n", connection)
        self.assertEqual((connection.socket.sent, connection.doWrites), ([b"<250 OK\r\n>"], 1))
        connection.producerPaused = True
        writeThrough(layer, b"250 A\r\n", connection)
        self.assertEqual(connection._tempDataBuffer, [b"<250 A\r\n>"])
        connection.producerPaused = False
        writeThrough(layer, b"250 B\r\n", connection)
        self.assertEqual(layer._aggregator.held, [])
        self.assertEqual(
            (connection.socket.sent, connection.doWrites),
            ([b"<250 OK\r\n>", b"<250 A\r\n>", b"<250 B\r\n>"], 2),
        )

    def test_throughTLS(self) -> None:
        """
        On a connection that started TLS itself (STARTTLS, C{ssl:}), the
        TLS layer is the connection's protocol.
        """
        from twisted_smtpd._serving.flow import writeThrough

        connection = _Connection()
        connection.TLS = True
        tls = _Layer(connection)
        connection.protocol = tls  # type: ignore[attr-defined]
        connection.write = tls.write  # type: ignore[method-assign]
        writeThrough(connection, b"250 OK\r\n", connection)
        self.assertEqual(connection.socket.sent, [b"<250 OK\r\n>"])

    def test_pipelinedRunOverTLS(self) -> None:
        """
        The replies to a run of pipelined commands longer than a batch go
        through the TLS layer together: the layer's held writes go down to
        the connection, and the connection is written, once, after the run.
        """
        proto, _, _, _ = connect(maxJunkCommands=0)
        connection, tls = _overTLS(proto)
        proto.dataReceived(b"EHLO c\r\n" + b"NOOP\r\n" * 199)
        self.assertEqual(connection.doWrites, 1)
        sent = b"".join(connection.socket.sent).replace(b"<", b"").replace(b">", b"")
        self.assertTrue(sent.startswith(b"250-mx.example.com"), sent[:40])
        self.assertEqual(sent.count(b"250 2.0.0 OK\r\n"), 199)

    def test_pipelinedRunOverPlainTCP(self) -> None:
        """
        Without TLS, a full batch of replies goes to the socket at once,
        during the run: a client that does not read fills the kernel's
        buffer before the server's, so that a close after the 421 of a
        shutdown resets the connection rather than leaving a FIN behind
        data it never reads.
        """
        proto, _, _, _ = connect(maxJunkCommands=0)
        connection = _Connection()
        proto.transport = connection  # type: ignore[assignment]
        proto._socket = connection
        proto.dataReceived(b"EHLO c\r\n" + b"NOOP\r\n" * 199)
        # The fake socket takes 3 bytes a send: the first batch's.
        self.assertEqual(connection.socket.sent, [b"250"])
        queued = b"".join(connection._tempDataBuffer)
        self.assertEqual(queued.count(b"250 2.0.0 OK\r\n"), 199)

    def test_runEndingOnFullBatchOverTLS(self) -> None:
        """
        A run whose replies fill batches exactly (64, 128) still sends them
        before the run ends: nothing is left held in the TLS layer, where a
        FIN read next would end the session before they left.
        """
        for commands in (63, 127):
            proto, _, _, _ = connect(maxJunkCommands=0)
            connection, tls = _overTLS(proto)
            proto.dataReceived(b"EHLO c\r\n" + b"NOOP\r\n" * commands)
            self.assertEqual(tls._aggregator.held, [])
            self.assertEqual(connection.doWrites, 1)
            sent = b"".join(connection.socket.sent)
            self.assertEqual(sent.count(b"250 2.0.0 OK\r\n"), commands)

    def test_replyBehindQueuedBytesOverTLS(self) -> None:
        """
        Over TLS, a reply made while the connection still holds bytes to
        send (the session tickets of a TLS 1.3 handshake that just ended)
        leaves at once behind them, not held in the TLS layer until the end
        of the turn: a FIN read next would end the session first.
        """
        proto, _, _, _ = connect()
        connection, tls = _overTLS(proto)
        connection._tempDataBuffer = [b"TICKETS"]
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(tls._aggregator.held, [])
        self.assertEqual(connection.doWrites, 1)
        self.assertEqual(b"".join(connection.socket.sent), b"TICKETS<250 2.0.0 OK\r\n>")

    def test_replyBehindQueuedBytesOverPausedTLS(self) -> None:
        """
        The same with the connection's producer paused (the client reads
        nothing): the reply is queued behind the bytes, and nothing is
        written to the full socket.
        """
        proto, _, _, _ = connect()
        connection, tls = _overTLS(proto)
        connection._tempDataBuffer = [b"TICKETS"]
        connection.producerPaused = True
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(tls._aggregator.held, [])
        self.assertEqual(connection.doWrites, 0)
        self.assertEqual(connection._tempDataBuffer, [b"TICKETS", b"<250 2.0.0 OK\r\n>"])

    def test_quitEndingFullBatchOverTLS(self) -> None:
        """
        The same when the reply that fills the batch closes the session
        (QUIT's 221).
        """
        proto, _, _, _ = connect()
        connection, tls = _overTLS(proto)
        tls.unregisterProducer = tls.loseConnection = lambda: None  # type: ignore[attr-defined]
        proto.dataReceived(b"EHLO c\r\n" + b"NOOP\r\n" * 62 + b"QUIT\r\n")
        self.assertEqual(tls._aggregator.held, [])
        sent = b"".join(connection.socket.sent).replace(b"<", b"").replace(b">", b"")
        self.assertTrue(
            sent.endswith(b"221 2.0.0 mx.example.com Closing connection\r\n"), sent[-80:]
        )

    def _sessionAmongOthers(self) -> tuple[SMTPProtocol, _Connection, Clock]:
        """
        A session over a fake plain TCP connection, in a server with
        another session open.
        """
        proto, _, clock, factory = connect()
        other = factory.buildProtocol(None)  # type: ignore[arg-type]
        other.makeConnection(StringTransport())
        connection = _Connection(clock, take=1 << 16)
        proto.transport = connection  # type: ignore[assignment]
        proto._socket = connection
        return proto, connection, clock

    def test_sessionsShareTheTurn(self) -> None:
        """
        With other sessions open, a session's replies leave at the end of
        the reactor's turn; its server's only session replies at once.
        """
        proto, connection, clock = self._sessionAmongOthers()
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(connection.socket.sent, [])
        clock.advance(0)
        self.assertEqual(connection.socket.sent, [b"250 2.0.0 OK\r\n"])
        proto, _, _, _ = connect()
        alone = _Connection(take=1 << 16)
        proto.transport = alone  # type: ignore[assignment]
        proto._socket = alone
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(alone.socket.sent, [b"250 2.0.0 OK\r\n"])

    def test_closeSendsNow(self) -> None:
        """
        The reply that ends a session (QUIT's 221) and those held before it
        are sent before the close begins, not left for the end of the turn.
        """
        proto, connection, clock = self._sessionAmongOthers()
        proto.dataReceived(b"NOOP\r\n")
        proto.dataReceived(b"QUIT\r\n")
        replies = b"250 2.0.0 OK\r\n221 2.0.0 mx.example.com Closing connection\r\n"
        self.assertEqual(b"".join(connection.socket.sent), replies)
        clock.advance(0)
        self.assertEqual(b"".join(connection.sentAt["lost"]), replies)

    def test_closeAtTurnEnd(self) -> None:
        """
        A plain TCP connection whose session ended, with nothing left to
        send, is closed at the end of the reactor's turn the way the reactor
        closes one whose buffer emptied (C{connectionLost} with
        C{ConnectionDone}), without C{loseConnection} and the turn it waits
        for the connection to be writable.
        """
        proto, connection, clock = self._sessionAmongOthers()
        proto.dataReceived(b"QUIT\r\n")
        self.assertTrue(connection.connected)
        self.assertEqual(connection.sentAt, {})
        clock.advance(0)
        self.assertNotIn("close", connection.sentAt)
        self.assertFalse(connection.connected)
        connection.lostReason.trap(ConnectionDone)

    def test_closeBusyLeftToLoseConnection(self) -> None:
        """
        A connection still holding bytes for a client that does not read is
        closed by C{loseConnection}, which sends them first; so is one with
        a producer still registered.
        """
        from twisted_smtpd._serving.flow import closeNow

        connection = _Connection()
        connection.write(b"queued")
        closeNow(connection)
        self.assertEqual(list(connection.sentAt), ["close"])
        registered = _Connection()
        registered.producer = object()  # type: ignore[assignment]
        closeNow(registered)
        self.assertEqual(list(registered.sentAt), ["close"])

    def test_closeNowLeavesEndedAlone(self) -> None:
        """
        A connection already lost, closing or aborted by the time the turn
        ends is not closed again.
        """
        from twisted_smtpd._serving.flow import closeNow

        lost, closing, aborted = _Connection(), _Connection(), _Connection()
        lost.connected = False
        closing.disconnecting = True
        aborted._aborting = True
        for connection in (lost, closing, aborted):
            closeNow(connection)
            self.assertEqual(connection.sentAt, {})

    def test_closeFailureLeavesOthers(self) -> None:
        """
        A connection whose close fails at the end of the turn is logged and
        the others still close.
        """
        clock, writer = Clock(), TurnWriter()
        broken, fine = _Connection(clock), _Connection(clock)

        def fail(reason: Failure) -> None:
            raise RuntimeError("broken")

        broken.connectionLost = fail  # type: ignore[method-assign]
        writer.closeAtEnd(broken)
        writer.closeAtEnd(fine)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0)
        self.assertFalse(fine.connected)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_startTLSSendsNow(self) -> None:
        """
        Replies held for the end of the turn leave in plaintext before the
        switch to TLS.
        """
        proto, connection, _ = self._sessionAmongOthers()
        proto.dataReceived(b"NOOP\r\n")
        proto.beginTLS(object())
        self.assertEqual(connection.sentAt["tls"], [b"250 2.0.0 OK\r\n"])

    def test_abortDrops(self) -> None:
        """
        A dropped session's held replies are not sent.
        """
        proto, connection, clock = self._sessionAmongOthers()
        proto.dataReceived(b"NOOP\r\n")
        proto.abort()
        connection.connected = True
        clock.advance(0)
        self.assertEqual(connection.socket.sent, [])
        self.assertIn("abort", connection.sentAt)

    def test_socketUnder(self) -> None:
        """
        The TCP connection is found under up to three layers.
        """
        from twisted.internet import tcp

        from twisted_smtpd._serving.flow import socketUnder

        connection = object.__new__(tcp.Server)
        layer = _Layer(cast(_Connection, connection))
        self.assertIs(socketUnder(connection), connection)
        self.assertIs(socketUnder(_Layer(cast(_Connection, layer))), connection)
        self.assertIsNone(socketUnder(StringTransport()))


SMUGGLED = (
    b"MAIL FROM:<evil@example.com>\r\n"
    b"RCPT TO:<victim@example.com>\r\n"
    b"DATA\r\n"
    b"Subject: smuggled\r\n\r\nx\r\n.\r\n"
)
BDAT_SYNTAX_CLOSE = b"521 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n"


class RcptRefusingHandler(RecordingHandler):
    """
    Refuses every recipient.
    """

    def onRcptTo(self, address: Address, session: Session) -> object:
        super().onRcptTo(address, session)
        raise SMTPError(550, "No such user", "5.1.1")


def _refusalPaths(lmtp: bool) -> list[tuple[str, bytes, dict[str, Any], Any, bytes]]:
    """
    Every way a BDAT command is refused: (name, commands before it, server
    options, handler class, the refusal).
    """
    hello = b"LHLO c\r\n" if lmtp else b"EHLO c\r\n"
    mail = hello + b"MAIL FROM:<s@example.com>\r\n"
    rcpt = mail + b"RCPT TO:<r@example.com>\r\n"
    return [
        (
            "no greeting",
            b"",
            {},
            RecordingHandler,
            replies.NEED_LHLO if lmtp else replies.NEED_HELO,
        ),
        ("no MAIL", hello, {}, RecordingHandler, replies.NEED_MAIL),
        ("no RCPT", mail, {}, RecordingHandler, replies.NEED_RCPT),
        ("every RCPT refused", rcpt, {}, RcptRefusingHandler, replies.NEED_RCPT),
        (
            "SIZE exceeded at MAIL",
            hello + b"MAIL FROM:<s@example.com> SIZE=1000\r\n",
            {"size": 100},
            RecordingHandler,
            replies.NEED_MAIL,
        ),
        ("after LAST", rcpt + b"BDAT 2 LAST\r\nhi", {}, RecordingHandler, replies.NEED_MAIL),
        (
            "disabled",
            rcpt,
            {"disabledCommands": ["BDAT"]},
            RecordingHandler,
            replies.NOT_IMPLEMENTED,
        ),
    ]


class RefusedBdatTests(SynchronousTestCase):
    """
    RFC 3030 section 2: the octets announced by a BDAT command follow it
    whatever the reply, so a refused BDAT's chunk is read and dropped, never
    run as commands.
    """

    def _check(self, lmtp: bool, cuts: Any) -> None:
        chunk = b"BDAT %d LAST\r\n" % len(SMUGGLED) + SMUGGLED
        for name, before, options, handlerClass, refusal in _refusalPaths(lmtp):
            for cut in cuts(len(chunk) + len(b"NOOP\r\n")):
                handler = handlerClass()
                proto, transport, clock, _ = connect(handler, lmtp=lmtp, **options)
                proto.dataReceived(before)
                take(transport)
                for piece in cut(chunk + b"NOOP\r\n"):
                    proto.dataReceived(piece)
                case = (name, lmtp, cut)
                self.assertEqual(take(transport), refusal + replies.OK, case)
                self.assertNotIn("mail evil@example.com", handler.calls, case)
                self.assertNotIn("rcpt victim@example.com", handler.calls, case)
                delivered = 1 if name == "after LAST" else 0
                self.assertEqual(len(handler.messages), delivered, case)
                self.assertFalse(transport.disconnecting, case)

    def test_refusedBdatChunkIsDiscardedEverySplit(self) -> None:
        """
        In SMTP, on every refusal path, a refused BDAT chunk split in two
        reads at every byte, with a NOOP pipelined behind it, is dropped: the
        refusal and the NOOP's reply are the only replies, nothing in the
        chunk reaches a hook.
        """

        def cuts(length: int) -> Any:
            for index in range(length + 1):

                def cut(data: bytes, index: int = index) -> list[bytes]:
                    return [data[:index], data[index:]]

                yield cut

        self._check(False, cuts)

    def test_refusedBdatChunkIsDiscardedLMTPEverySplit(self) -> None:
        """
        The same in LMTP.
        """

        def cuts(length: int) -> Any:
            for index in range(length + 1):

                def cut(data: bytes, index: int = index) -> list[bytes]:
                    return [data[:index], data[index:]]

                yield cut

        self._check(True, cuts)

    def test_refusedBdatChunkIsDiscardedByteByByte(self) -> None:
        """
        A refused chunk arriving one byte at a time is dropped too, in SMTP
        and LMTP.
        """

        def cuts(length: int) -> Any:
            def cut(data: bytes) -> list[bytes]:
                return [data[i : i + 1] for i in range(len(data))]

            yield cut

        self._check(False, cuts)
        self._check(True, cuts)

    def test_refusedBdatReplyAfterChunk(self) -> None:
        """
        The refusal is sent once the last octet of the chunk is in, not
        before; octets are dropped as they come, never buffered.
        """
        proto, transport, clock, _ = connect()
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"BDAT 12\r\nNOOP\r\n")
        self.assertEqual(take(transport), b"")
        self.assertEqual(proto._buffer, b"")
        proto.dataReceived(b"NOOP\r\nNOOP\r\n")
        self.assertEqual(take(transport), replies.NEED_MAIL + replies.OK)

    def test_refusedBdatZeroSize(self) -> None:
        """
        A refused C{BDAT 0} is answered at once: no octet follows it.
        """
        proto, transport, clock, _ = connect()
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        proto.dataReceived(b"BDAT 0 LAST\r\nNOOP\r\n")
        self.assertEqual(take(transport), replies.NEED_MAIL + replies.OK)

    def test_malformedBdatSizeCloses(self) -> None:
        """
        A BDAT line whose size cannot be read (a word, too many digits, a
        tab, no size, a line too long) gets 521 and the connection closes:
        where its octets end is unknown, so none is taken as a command.
        """
        lines = [
            b"BDAT x",
            b"BDAT 1234567890123456789",
            b"BDAT\t5",
            b"BDAT",
            b"BDAT 5 LAST extra",
            b"bdat -5",
            b"BDAT 5" + b" " * 600 + b"LAST",
            b"BDAT 5" + b" " * 20000 + b"LAST",
        ]
        for lmtp in (False, True):
            for line in lines:
                for before in (b"", b"MAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n"):
                    handler = RecordingHandler()
                    proto, transport, clock, _ = connect(handler, lmtp=lmtp)
                    proto.dataReceived((b"LHLO c\r\n" if lmtp else b"EHLO c\r\n") + before)
                    take(transport)
                    proto.dataReceived(line + b"\r\n" + SMUGGLED)
                    case = (lmtp, line[:30], before)
                    self.assertEqual(take(transport), BDAT_SYNTAX_CLOSE, case)
                    self.assertTrue(transport.disconnecting, case)
                    self.assertNotIn("mail evil@example.com", handler.calls, case)

    def test_malformedBdatDuringTransferCloses(self) -> None:
        """
        A malformed BDAT in the middle of a transfer closes the connection
        too, and the handler's stream fails.
        """
        failures: list[Failure] = []

        class Handler(RecordingHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                d = stream.collect()
                d.addErrback(failures.append)  # type: ignore[attr-defined]
                return d

        proto, transport, clock, _ = connect(Handler())
        transaction(proto, transport)
        proto.dataReceived(b"BDAT 2\r\nabBDAT x\r\n" + SMUGGLED)
        self.assertEqual(take(transport), CHUNK_OK % 2 + BDAT_SYNTAX_CLOSE)
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(len(failures), 1)

    def test_disabledBdatNotAdvertised(self) -> None:
        """
        With BDAT in disabledCommands, EHLO and LHLO advertise neither
        CHUNKING nor BINARYMIME.
        """
        for lmtp in (False, True):
            proto, transport, clock, _ = connect(lmtp=lmtp, disabledCommands=["BDAT"])
            proto.dataReceived(b"LHLO c\r\n" if lmtp else b"EHLO c\r\n")
            reply = take(transport)
            self.assertIn(b"250-8BITMIME\r\n", reply)
            self.assertNotIn(b"CHUNKING", reply)
            self.assertNotIn(b"BINARYMIME", reply)


class FailureRecordingHandler(RecordingHandler):
    """
    Records the failures of the streams it is given.
    """

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[Failure] = []

    def onData(self, stream: IMessageStream, session: Session) -> object:
        d = super().onData(stream, session)
        d.addErrback(self.failures.append)  # type: ignore[attr-defined]
        return d


class GreetingResetsBdatTests(SynchronousTestCase):
    """
    RFC 5321 section 4.1.4: HELO, EHLO (and LHLO) reset the transaction
    completely, a BDAT transfer in progress included.
    """

    def _check(self, greeting: bytes, lmtp: bool = False) -> None:
        handler = FailureRecordingHandler()
        proto, transport, clock, _ = connect(handler, lmtp=lmtp)
        proto.dataReceived(b"LHLO c\r\n" if lmtp else b"EHLO c\r\n")
        proto.dataReceived(b"MAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n")
        take(transport)
        proto.dataReceived(b"BDAT 3\r\nabc" + greeting)
        self.assertEqual(len(handler.failures), 1)
        self.assertFalse(proto.inTransaction())
        take(transport)
        proto.dataReceived(
            b"MAIL FROM:<t@example.com>\r\nRCPT TO:<u@example.com>\r\nBDAT 2 LAST\r\nhi"
        )
        self.assertEqual(take(transport), replies.MAIL_OK + replies.RCPT_OK + QUEUED)
        self.assertEqual(handler.messages, [("t@example.com", ["u@example.com"], b"hi")])

    def test_ehloInBdatTransferResetsIt(self) -> None:
        """
        EHLO in the middle of a BDAT transfer drops it (the handler's stream
        fails): the next transaction's RCPT and BDAT are accepted.
        """
        self._check(b"EHLO c\r\n")

    def test_heloInBdatTransferResetsIt(self) -> None:
        """
        HELO does the same.
        """
        self._check(b"HELO c\r\n")

    def test_lhloInBdatTransferResetsIt(self) -> None:
        """
        LHLO does the same in LMTP.
        """
        self._check(b"LHLO c\r\n", lmtp=True)


class RefusingDataHandler(RecordingHandler):
    """
    Refuses every message after its body with 451, or with one reply per
    LMTP recipient from C{results}.
    """

    def __init__(self, results: list[object] | None = None) -> None:
        super().__init__()
        self.results = results

    def onData(self, stream: IMessageStream, session: Session) -> object:
        stream.drain()
        if self.results is not None:
            return self.results
        raise SMTPError(451, "Error: try again later", "4.3.0")


class RecipientOvershootTests(SynchronousTestCase):
    """
    Recipients refused for being too many (452 4.5.3) are not errors: the
    client sends them again in a later transaction.  Past Postfix's
    C{smtpd_recipient_overshoot_limit} (1000) each one counts again.
    """

    def test_tooManyRecipientsAreNotErrors(self) -> None:
        """
        With C{maxRecipients=2}, 25 recipients get 2 x 250 then 23 x 452 and
        the transaction goes on (before, the 20th error closed the session).
        """
        proto, transport, clock, handler = connect(maxRecipients=2)
        take(transport)
        proto.dataReceived(
            b"EHLO c\r\nMAIL FROM:<s@example.com>\r\n"
            + b"".join(b"RCPT TO:<r%d@example.com>\r\n" % i for i in range(25))
            + b"DATA\r\nhi\r\n.\r\n"
        )
        out = take(transport)
        self.assertEqual(out.count(b"452 4.5.3 "), 23)
        self.assertNotIn(b"421", out)
        # The message itself is accepted, for the two recipients.
        self.assertTrue(out.splitlines()[-1].startswith(b"250 "), out[-200:])
        self.assertFalse(transport.disconnecting)

    def test_overshootLimit(self) -> None:
        """
        Past 1000 such refusals, each one counts towards C{maxErrors}.
        """
        proto, transport, clock, handler = connect(maxRecipients=1, maxErrors=3)
        take(transport)
        proto.dataReceived(
            b"EHLO c\r\nMAIL FROM:<s@example.com>\r\n"
            + b"".join(b"RCPT TO:<r%d@example.com>\r\n" % i for i in range(1004))
        )
        out = take(transport)
        self.assertEqual(out.count(b"452 4.5.3 "), 1003)
        self.assertTrue(out.endswith(replies.TOO_MANY_ERRORS), out[-200:])


class RefusedMessageErrorTests(SynchronousTestCase):
    """
    A message refused after its end (by the handler, for its size or for a
    bare newline) is a 4xx/5xx answer and counts towards C{maxErrors},
    together with refused commands.
    """

    MESSAGE = b"MAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n"
    TEMPORARY = b"451 4.3.0 Error: try again later\r\n"

    def test_handlerRefusalsCount(self) -> None:
        """
        Two refused commands and one message refused by C{onData} with 451
        reach C{maxErrors=3}: 421 and a close follow the message's reply.
        """
        proto, transport, clock, _ = connect(RefusingDataHandler(), maxErrors=3)
        take(transport)
        proto.dataReceived(b"EHLO c\r\nFROB\r\nFROB\r\n" + self.MESSAGE + b"DATA\r\nhi\r\n.\r\n")
        out = take(transport)
        self.assertTrue(out.endswith(self.TEMPORARY + replies.TOO_MANY_ERRORS), out)
        self.assertTrue(transport.disconnecting)

    def test_refusedBdatMessageCounts(self) -> None:
        """
        A message sent with BDAT and refused after its last chunk counts too.
        """
        proto, transport, clock, _ = connect(RefusingDataHandler(), maxErrors=2)
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        for _ in range(2):
            proto.dataReceived(self.MESSAGE + b"BDAT 2 LAST\r\nhi")
        out = take(transport)
        self.assertEqual(out.count(self.TEMPORARY), 2)
        self.assertTrue(out.endswith(self.TEMPORARY + replies.TOO_MANY_ERRORS), out)
        self.assertTrue(transport.disconnecting)

    def test_acceptedMessagesDoNotCount(self) -> None:
        """
        Accepted messages are no errors: many of them never reach
        C{maxErrors}.
        """
        proto, transport, clock, _ = connect(maxErrors=2)
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        for _ in range(5):
            proto.dataReceived(self.MESSAGE + b"DATA\r\nhi\r\n.\r\n")
        self.assertEqual(take(transport).count(b"250 2.0.0 OK: queued as X1\r\n"), 5)
        self.assertFalse(transport.disconnecting)

    def test_acceptedMessageForgivesErrors(self) -> None:
        """
        A message accepted forgives the errors before it, as Postfix does:
        a connection kept for many messages, each with one recipient
        refused, is never cut for refusals spread over all of them.
        """

        class OneUnknown(RecordingHandler):
            def onRcptTo(self, address: Address, session: Session) -> object:
                if address.address.startswith("unknown"):
                    raise SMTPError(550, "User unknown", "5.1.1")
                return super().onRcptTo(address, session)

        handler = OneUnknown()
        proto, transport, clock, _ = connect(handler, maxErrors=3)
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        for _ in range(10):
            proto.dataReceived(
                self.MESSAGE + b"RCPT TO:<unknown@example.com>\r\nFROB\r\nDATA\r\nhi\r\n.\r\n"
            )
        out = take(transport)
        self.assertEqual(len(handler.messages), 10)
        self.assertEqual(out.count(b"550 5.1.1 User unknown\r\n"), 10)
        self.assertNotIn(replies.TOO_MANY_ERRORS, out)
        self.assertFalse(transport.disconnecting)
        # Without an accepted message between them, the errors add up.
        proto.dataReceived(b"FROB\r\nFROB\r\nFROB\r\n")
        self.assertTrue(take(transport).endswith(replies.TOO_MANY_ERRORS))
        self.assertTrue(transport.disconnecting)

    def test_refusedMessageForgivesNothing(self) -> None:
        """
        A message refused after its end (here by C{onData}) forgives
        nothing: it is one more error.
        """
        proto, transport, clock, _ = connect(RefusingDataHandler(), maxErrors=3)
        take(transport)
        proto.dataReceived(b"EHLO c\r\nFROB\r\n" + self.MESSAGE + b"DATA\r\nhi\r\n.\r\n")
        proto.dataReceived(b"FROB\r\n")
        self.assertTrue(take(transport).endswith(replies.TOO_MANY_ERRORS))

    def test_lmtpMessageCountsOnce(self) -> None:
        """
        In LMTP a message refused for several recipients is one error, not
        one per recipient.
        """
        refused = SMTPError(552, "mailbox full", "5.2.2")
        handler = RefusingDataHandler(["delivered", refused, refused])
        proto, transport, clock, _ = connect(handler, lmtp=True, maxErrors=2)
        take(transport)
        proto.dataReceived(b"LHLO c\r\n" + self.MESSAGE + b"RCPT TO:<a@e.com>\r\n")
        proto.dataReceived(b"RCPT TO:<b@e.com>\r\nDATA\r\nhi\r\n.\r\n")
        out = take(transport)
        self.assertTrue(out.endswith(b"552 5.2.2 mailbox full\r\n" * 2), out)
        self.assertFalse(transport.disconnecting)
        handler.results = [refused]
        proto.dataReceived(self.MESSAGE + b"DATA\r\nhi\r\n.\r\n")
        out = take(transport)
        self.assertTrue(out.endswith(replies.TOO_MANY_ERRORS), out)
        self.assertTrue(transport.disconnecting)


class ReplyCacheTests(SynchronousTestCase):
    """
    The factory's cache of encoded replies holds the fixed replies only:
    replies naming a client never fill it.
    """

    def test_clientNamesNeverFillCache(self) -> None:
        """
        After more sessions than the cache ever held, each from another
        client (so each reply to HELO and EHLO names another one), a fixed
        reply sent for the first time is still served from the cache,
        never formatted again, and the cache holds no client's name.
        """
        from twisted_smtpd._core import replies as catalogue
        from twisted_smtpd._serving import output

        factory = SMTPServerFactory(
            RecordingHandler(),
            ServerOptions(name="mx.example.com", disableReverseLookup=True),
            reactor=Clock(),
        )
        for n in range(700):
            proto = factory.buildProtocol(None)  # type: ignore[arg-type]
            peer = _ipv4(f"10.0.{n // 250}.{n % 250 + 1}", 40000)
            transport = StringTransport(peerAddress=peer, hostAddress=_ipv4("192.0.2.1", 25))
            proto.makeConnection(transport)
            proto.dataReceived(b"HELO a.example\r\nEHLO b.example\r\nQUIT\r\n")
            self.assertIn(f"[10.0.{n // 250}.{n % 250 + 1}]".encode(), transport.value())
        naming = [r for r in factory.wireCache if "[10.0." in " ".join(r.lines)]
        self.assertEqual(len(naming), 0)
        formatted: list[object] = []
        original = output.formatReply

        def counting(reply: Any, enhanced: bool) -> bytes:
            formatted.append(reply)
            return original(reply, enhanced)

        proto = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport(peerAddress=_ipv4(*PEER), hostAddress=_ipv4("192.0.2.1", 25))
        proto.makeConnection(transport)
        transport.clear()
        self.patch(output, "formatReply", counting)
        proto.dataReceived(b"HELP\r\n")
        self.assertEqual(
            transport.value(), b"214 2.0.0 See https://www.rfc-editor.org/rfc/rfc5321\r\n"
        )
        self.assertEqual(len(formatted), 0)
        self.assertIn(catalogue.HELP, factory.wireCache)
