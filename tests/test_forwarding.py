"""
Tests for L{twisted_smtpd._serving.forwarding}: XCLIENT and XFORWARD,
each believed only from its configured networks.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_protocol import RecordingHandler, connect, take
from twisted_smtpd._core.address import encodeXtext
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.grammar import XCLIENT_ATTRIBUTES, parseAttributes
from twisted_smtpd._core.replies import CommandError
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd._core.xclient import parseXClient, parseXForward
from twisted_smtpd._serving.logging import NAMESPACE, SessionLogger
from twisted_smtpd.handlers._tracefields import traceHeaderLines

NOT_AUTHORIZED = b"550 5.7.0 Error: insufficient authorization\r\n"
BAD_ATTRIBUTE = b"501 5.5.4 Error: bad attribute syntax\r\n"


class AttributeTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """
        Names are case-insensitive, values xtext-decoded.
        """
        self.assertEqual(
            parseAttributes(b"addr=192.0.2.9 NAME=host+2Eexample", XCLIENT_ATTRIBUTES),
            {"ADDR": "192.0.2.9", "NAME": "host.example"},
        )

    def test_refused(self) -> None:
        """
        Unknown names, missing values and bad xtext are syntax errors.
        """
        for bad in (b"", b"FOO=1", b"ADDR", b"ADDR=+ZZ"):
            self.assertRaises(CommandError, parseAttributes, bad, XCLIENT_ATTRIBUTES)


class XClientTests(SynchronousTestCase):
    def test_untrusted(self) -> None:
        """
        XCLIENT from outside useXClient gets 550 and changes nothing; it is
        not advertised.
        """
        proto, transport, clock, _ = connect(useXClient=["10.0.0.0/8"])
        proto.dataReceived(b"EHLO c\r\n")
        self.assertNotIn(b"XCLIENT", take(transport))
        proto.dataReceived(b"XCLIENT ADDR=203.0.113.5\r\n")
        self.assertEqual(take(transport), NOT_AUTHORIZED)
        self.assertEqual(proto.session.remoteAddress[0], "192.0.2.7")

    def test_trusted(self) -> None:
        """
        A trusted XCLIENT replaces the client's attributes and starts the
        session again with a new greeting.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler, useXClient=["192.0.2.0/24"])
        proto.dataReceived(b"EHLO c\r\n")
        self.assertIn(
            b"250 XCLIENT ADDR DESTADDR DESTPORT HELO LOGIN NAME PORT PROTO\r\n", take(transport)
        )
        proto.dataReceived(
            b"XCLIENT ADDR=IPV6:2001:db8::5 PORT=4242 NAME=real.example HELO=real LOGIN=bob\r\n"
        )
        self.assertEqual(take(transport), replies.GREETING)
        session = proto.session
        self.assertEqual(session.remoteAddress, ("2001:db8::5", 4242))
        self.assertEqual(session.clientHostname, "real.example")
        self.assertEqual(session.user, "bob")
        self.assertEqual(session.xClient["HELO"], "real")
        proto.dataReceived(b"MAIL FROM:<a@b.c>\r\n")
        self.assertEqual(take(transport), replies.NEED_HELO)

    def test_keepsErrorAndJunkCounts(self) -> None:
        """
        XCLIENT starts the session over as another client's but keeps its
        error and junk counts, as Postfix's C{xclient_cmd} does (only a
        message accepted forgives them): refusals before and after it
        together reach C{maxErrors}, and junk commands before and after it
        together pass C{maxJunkCommands}.
        """
        trusted = ["192.0.2.0/24"]
        proto, transport, clock, _ = connect(useXClient=trusted, maxErrors=3)
        proto.dataReceived(b"EHLO c\r\nFROB\r\nXCLIENT ADDR=203.0.113.5\r\nEHLO d\r\nFROB\r\n")
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(b"FROB\r\n")
        self.assertTrue(take(transport).endswith(replies.TOO_MANY_ERRORS))
        self.assertTrue(transport.disconnecting)

        proto, transport, clock, _ = connect(useXClient=trusted, maxErrors=1, maxJunkCommands=3)
        # EHLO, then XCLIENT (not junk, as in Postfix), then EHLO and two
        # NOOPs: four junk commands, all free (Postfix's junk_cmds++ > 3);
        # the fifth counts.
        proto.dataReceived(b"EHLO c\r\nXCLIENT ADDR=203.0.113.5\r\nEHLO d\r\nNOOP\r\nNOOP\r\n")
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(b"NOOP\r\n")
        self.assertTrue(take(transport).endswith(replies.TOO_MANY_ERRORS))
        self.assertTrue(transport.disconnecting)

    def test_notJunk(self) -> None:
        """
        XCLIENT and XFORWARD, which only trusted front ends may send, are
        not junk commands, as in Postfix's command table: a front end
        passing on many clients' sessions over one connection is not cut
        for them.
        """
        trusted = ["192.0.2.0/24"]
        proto, transport, clock, _ = connect(
            useXClient=trusted, useXForward=trusted, maxErrors=1, maxJunkCommands=2
        )
        proto.dataReceived(b"EHLO c\r\n")
        for n in range(10):
            # Clients inside the trusted network: XCLIENT naming any other
            # ends the front end's trust (XClientTrustTests).
            proto.dataReceived(f"XCLIENT ADDR=192.0.2.{n + 10}\r\n".encode())
            proto.dataReceived(f"XFORWARD NAME=h{n}.example\r\n".encode())
        self.assertFalse(transport.disconnecting)
        self.assertNotIn(replies.TOO_MANY_ERRORS, take(transport))

    def test_forgetsEarlierAuth(self) -> None:
        """
        A session logged in with AUTH (the front end's own login) starts
        over at XCLIENT without LOGIN as a client that has not
        authenticated: MAIL needs AUTH again.  With LOGIN, that name is
        the user.
        """
        from tests.test_auth import AUTH_OK, AUTH_REQUIRED, PasswordHandler, b64

        proto, transport, clock, _ = connect(
            PasswordHandler(), useXClient=True, allowInsecureAuth=True
        )
        proto.dataReceived(b"EHLO front\r\nAUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        self.assertTrue(take(transport).endswith(AUTH_OK))
        proto.dataReceived(b"XCLIENT ADDR=203.0.113.5\r\n")
        self.assertEqual(take(transport), replies.GREETING)
        self.assertIsNone(proto.session.user)
        proto.dataReceived(b"EHLO other\r\nMAIL FROM:<a@b.c>\r\n")
        self.assertTrue(take(transport).endswith(AUTH_REQUIRED))
        proto.dataReceived(b"XCLIENT LOGIN=bob\r\n")
        self.assertEqual(take(transport), replies.GREETING)
        self.assertEqual(proto.session.user, "bob")

    def test_forgetsEarlierGreeting(self) -> None:
        """
        XCLIENT without C{HELO} starts the session over with no greeting
        name, as Postfix's C{xclient_cmd} resets it: the name the front end
        (or the client before) gave in its EHLO is not the new client's,
        not even for C{onConnect}.  A C{HELO} an XCLIENT sent stays.
        """
        seen: list[str | None] = []

        class Connecting(RecordingHandler):
            def onConnect(self, session: Session) -> object:
                seen.append(session.hostNameAppearsAs)
                return None

        proto, transport, clock, _ = connect(Connecting(), useXClient=True)
        proto.dataReceived(b"EHLO front.example\r\nXCLIENT ADDR=203.0.113.5\r\n")
        self.assertTrue(take(transport).endswith(replies.GREETING))
        self.assertIsNone(proto.session.hostNameAppearsAs)
        self.assertEqual(seen, [None, None])
        proto.dataReceived(b"XCLIENT HELO=real.example\r\nEHLO other\r\nXCLIENT PORT=2525\r\n")
        self.assertEqual(proto.session.hostNameAppearsAs, "real.example")
        self.assertEqual(seen[-2:], ["real.example", "real.example"])

    def test_refusedByOnConnectStillCloses(self) -> None:
        """
        When C{onConnect} refuses the client an XCLIENT names, the session
        that began before it still ends as sessions do: the handler's
        C{onClose} is called and the observers hear of the close.
        """

        class Refusing(RecordingHandler):
            def onConnect(self, session: Session) -> object:
                if session.remoteAddress[0] == "203.0.113.5":
                    raise SMTPError(554, "go away", "5.7.1")
                return None

        handler = Refusing()
        proto, transport, clock, factory = connect(handler, useXClient=True)
        seen: list[str] = []
        factory.addObserver(lambda event, session, data: seen.append(event))
        proto.dataReceived(b"EHLO c\r\nXCLIENT ADDR=203.0.113.5\r\n")
        self.assertTrue(transport.value().endswith(b"554 5.7.1 go away\r\n"))
        self.assertTrue(transport.disconnecting)
        proto.connectionLost()
        self.assertEqual(handler.closed, [proto.session])
        self.assertEqual(seen[-1], "close")

    def test_inTransaction(self) -> None:
        """
        XCLIENT inside a transaction gets 503.
        """
        proto, transport, clock, _ = connect(useXClient=True)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n")
        take(transport)
        proto.dataReceived(b"XCLIENT ADDR=203.0.113.5\r\n")
        self.assertTrue(take(transport).startswith(b"503 5.5.1"))

    def test_inBdatTransfer(self) -> None:
        """
        XCLIENT between two BDAT chunks gets 503 as in any transaction (as
        Postfix's C{xclient_cmd} answers it) and leaves the transfer alone:
        the next chunks are the same message's.
        """
        handler = RecordingHandler()
        proto, transport, clock, _ = connect(handler, useXClient=True)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 3\r\nabc")
        take(transport)
        proto.dataReceived(b"XCLIENT ADDR=203.0.113.5\r\n")
        self.assertEqual(take(transport), b"503 5.5.1 Error: MAIL transaction in progress\r\n")
        proto.dataReceived(b"BDAT 3 LAST\r\nxyz")
        self.assertTrue(take(transport).startswith(b"250 "))
        self.assertEqual(handler.messages[-1][2], b"abcxyz")
        self.assertEqual(proto.session.remoteAddress[0], "192.0.2.7")

    def test_badSyntax(self) -> None:
        """
        A bad attribute gets 501.
        """
        proto, transport, clock, _ = connect(useXClient=True)
        take(transport)
        proto.dataReceived(b"XCLIENT FOO=bar\r\n")
        self.assertEqual(take(transport), BAD_ATTRIBUTE)


class XClientTrustTests(SynchronousTestCase):
    """
    XCLIENT and XFORWARD are trusted by the address the last XCLIENT named,
    as Postfix's C{xclient_cmd} matches C{smtpd_authorized_xclient_hosts}
    again (XCLIENT_README: "Once ADDR is sent, the client is usually no
    longer authorized to send XCLIENT commands"): a front end that passes
    its client's commands on after XCLIENT (nginx's mail proxy) does not
    lend that client its trust.
    """

    def test_namedClientCannotSendXClient(self) -> None:
        """
        After XCLIENT names a client outside C{useXClient}, an XCLIENT from
        that client gets 550, is not advertised, and changes neither the
        address (logs, C{Received:}, fail2ban) nor the login.
        """
        proto, transport, clock, _ = connect(useXClient=["192.0.2.0/24"])
        proto.dataReceived(b"EHLO front\r\nXCLIENT ADDR=203.0.113.5 PORT=1234\r\n")
        take(transport)
        proto.dataReceived(b"EHLO client\r\n")
        self.assertNotIn(b"XCLIENT", take(transport))
        proto.dataReceived(b"XCLIENT ADDR=198.51.100.66 LOGIN=postmaster\r\n")
        self.assertEqual(take(transport), NOT_AUTHORIZED)
        self.assertEqual(proto.session.remoteAddress, ("203.0.113.5", 1234))
        self.assertIsNone(proto.session.user)

    def test_namedClientCannotSendXForward(self) -> None:
        """
        After XCLIENT names a client outside C{useXForward}, XFORWARD from
        that client gets 550 and records nothing.
        """
        trusted = ["192.0.2.0/24"]
        proto, transport, clock, _ = connect(useXClient=trusted, useXForward=trusted)
        proto.dataReceived(b"EHLO front\r\nXCLIENT ADDR=IPV6:2001:db8::5\r\n")
        take(transport)
        proto.dataReceived(b"EHLO client\r\n")
        self.assertNotIn(b"XFORWARD", take(transport))
        proto.dataReceived(b"XFORWARD ADDR=198.51.100.66 NAME=victim.example\r\n")
        self.assertEqual(take(transport), NOT_AUTHORIZED)
        self.assertEqual(proto.session.xForward, {})

    def test_unavailableAddressNotTrusted(self) -> None:
        """
        An address XCLIENT says is unavailable is trusted by no network.
        """
        proto, transport, clock, _ = connect(useXClient=True)
        proto.dataReceived(b"EHLO front\r\nXCLIENT ADDR=[UNAVAILABLE]\r\n")
        take(transport)
        proto.dataReceived(b"XCLIENT ADDR=198.51.100.66\r\n")
        self.assertEqual(take(transport), NOT_AUTHORIZED)
        self.assertEqual(proto.session.remoteAddress[0], "unknown")

    def test_trustedClientStaysTrusted(self) -> None:
        """
        XCLIENT naming a client inside the trusted networks, or naming no
        address (only C{NAME}, C{HELO}, C{LOGIN}), keeps the trust: the
        front end may send its attributes over several commands, C{ADDR}
        last, as XCLIENT_README advises.
        """
        proto, transport, clock, _ = connect(useXClient=["192.0.2.0/24"])
        proto.dataReceived(b"EHLO front\r\nXCLIENT NAME=real.example HELO=real\r\n")
        self.assertEqual(take(transport)[-len(replies.GREETING) :], replies.GREETING)
        proto.dataReceived(b"XCLIENT ADDR=192.0.2.99\r\n")
        self.assertEqual(take(transport), replies.GREETING)
        proto.dataReceived(b"XCLIENT LOGIN=bob ADDR=203.0.113.5\r\n")
        self.assertEqual(take(transport), replies.GREETING)
        self.assertEqual(proto.session.remoteAddress[0], "203.0.113.5")
        # The NAME of the first command, not dropped by the others.
        self.assertEqual(proto.session.clientHostname, "real.example")
        self.assertEqual(proto.session.user, "bob")
        proto.dataReceived(b"XCLIENT ADDR=192.0.2.99\r\n")
        self.assertEqual(take(transport), NOT_AUTHORIZED)


class XForwardTests(SynchronousTestCase):
    def test_trusted(self) -> None:
        """
        XFORWARD attributes are kept for one transaction.
        """
        proto, transport, clock, _ = connect(useXForward=["192.0.2.7/32"])
        proto.dataReceived(b"EHLO c\r\n")
        self.assertIn(b"XFORWARD", take(transport))
        proto.dataReceived(b"XFORWARD NAME=orig.example ADDR=198.51.100.2\r\n")
        self.assertEqual(take(transport), replies.OK)
        self.assertEqual(proto.session.xForward, {"NAME": "orig.example", "ADDR": "198.51.100.2"})
        proto.dataReceived(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nx\r\n.\r\n")
        self.assertEqual(proto.session.xForward, {})

    def test_resetAsPostfix(self) -> None:
        """
        XFORWARD attributes apply to the next transaction only: RSET, HELO,
        EHLO and a sender the handler refuses drop them even before any
        MAIL was accepted, as Postfix's C{mail_reset} does; an accepted
        MAIL keeps them for its message.
        """

        class Refusing(RecordingHandler):
            def onMailFrom(self, address: Address, session: Session) -> object:
                if address.address == "refused@example.com":
                    raise SMTPError(550, "no", "5.7.1")
                return None

        proto, transport, clock, _ = connect(Refusing(), useXForward=["192.0.2.7/32"])
        proto.dataReceived(b"EHLO c\r\n")
        take(transport)
        for after in (b"RSET", b"EHLO c", b"HELO c", b"MAIL FROM:<refused@example.com>"):
            proto.dataReceived(b"XFORWARD NAME=orig.example ADDR=198.51.100.2\r\n")
            self.assertEqual(take(transport), replies.OK)
            proto.dataReceived(after + b"\r\n")
            take(transport)
            self.assertEqual(proto.session.xForward, {}, after)
        proto.dataReceived(b"XFORWARD NAME=orig.example\r\nMAIL FROM:<a@b.c>\r\n")
        self.assertEqual(take(transport), replies.OK + replies.MAIL_OK)
        self.assertEqual(proto.session.xForward, {"NAME": "orig.example"})

    def test_untrusted(self) -> None:
        """
        XFORWARD from an untrusted client gets 550.
        """
        proto, transport, clock, _ = connect()
        take(transport)
        proto.dataReceived(b"XFORWARD NAME=x\r\n")
        self.assertEqual(take(transport), NOT_AUTHORIZED)
        self.assertEqual(proto.session.xForward, {})


def badValue(name: str, value: str) -> bytes:
    return f"501 5.5.4 Bad {name} syntax: {value}\r\n".encode()


class XClientValueTests(SynchronousTestCase):
    def xclient(self, argument: bytes) -> tuple[Any, bytes]:
        proto, transport, clock, _ = connect(useXClient=True)
        take(transport)
        proto.dataReceived(b"XCLIENT " + argument + b"\r\n")
        return proto, take(transport)

    def test_addrNotAnIP(self) -> None:
        """
        C{ADDR} that is no IP address gets 501 5.5.4 and changes nothing.
        """
        for bad in (b"not-an-ip", b"192.0.2.300", b"IPV6:192.0.2.1", b"fe80::1+25eth0", b""):
            proto, written = self.xclient(b"ADDR=" + bad)
            self.assertTrue(written.startswith(b"501 5.5.4 Bad ADDR syntax"), (bad, written))
            self.assertEqual(proto.session.remoteAddress, ("192.0.2.7", 40000))

    def test_addrForms(self) -> None:
        """
        IPv4, IPv6 with and without Postfix's C{IPV6:} prefix and
        C{[UNAVAILABLE]} (the address unknown) are accepted.
        """
        for good, host in (
            (b"192.0.2.9", "192.0.2.9"),
            (b"IPV6:2001:db8::9", "2001:db8::9"),
            (b"ipv6:2001:db8::9", "2001:db8::9"),
            (b"2001:db8::9", "2001:db8::9"),
            (b"[UNAVAILABLE]", "unknown"),
        ):
            proto, written = self.xclient(b"ADDR=" + good)
            self.assertEqual(written, replies.GREETING, good)
            self.assertEqual(proto.session.remoteAddress[0], host)

    def test_portNonASCIIDigits(self) -> None:
        """
        C{PORT} written in digits other than ASCII ones (Arabic-Indic,
        superscript: C{str.isdigit} accepts both, C{int} fails on the
        latter) gets 501 and the session goes on.
        """
        for bad in (b"+D9+A1+D9+A2", b"+C2+B2+C2+B3", b"+EF+BC+91"):
            proto, written = self.xclient(b"PORT=" + bad)
            self.assertTrue(written.startswith(b"501 5.5.4 Bad PORT syntax"), (bad, written))
            self.assertEqual(proto.session.remoteAddress, ("192.0.2.7", 40000))
            proto.dataReceived(b"NOOP\r\n")
            self.assertEqual(take(proto.transport), replies.OK)

    def test_portOutOfRange(self) -> None:
        """
        C{PORT=99999} gets 501 instead of being ignored; 0 and 65535 are
        ports.
        """
        for bad in (b"99999", b"65536", b"-1", b"123456", b"+2B1"):
            proto, written = self.xclient(b"PORT=" + bad)
            self.assertTrue(written.startswith(b"501 5.5.4 Bad PORT syntax"), (bad, written))
        for good in (b"0", b"65535"):
            proto, written = self.xclient(b"PORT=" + good)
            self.assertEqual(written, replies.GREETING)
            self.assertEqual(proto.session.remoteAddress[1], int(good))

    def test_nameNotHostname(self) -> None:
        """
        C{NAME} that is no host name (a line break forging a reply, spaces,
        non-ASCII) gets 501 with the value escaped; C{[TEMPUNAVAIL]} and
        C{[UNAVAILABLE]} are accepted.
        """
        proto, written = self.xclient(b"NAME=a+0D+0A250+20forged")
        self.assertEqual(written, badValue("NAME", "a\\x0d\\x0a250 forged"))
        self.assertEqual(proto.session.clientHostname, "[192.0.2.7]")
        for bad in (b"a+20b", b"+C3+A9.example", b"-x.example"):
            proto, written = self.xclient(b"NAME=" + bad)
            self.assertTrue(written.startswith(b"501 5.5.4 Bad NAME syntax"), bad)
        for good in (b"[TEMPUNAVAIL]", b"[UNAVAILABLE]", b"win_host.example"):
            proto, written = self.xclient(b"NAME=" + good)
            self.assertEqual(written, replies.GREETING, good)

    def test_badValueReplyASCII(self) -> None:
        """
        The 501 naming a bad value that is not ASCII (a U-label in C{NAME},
        a no-break space in C{HELO}, an emoji in C{PORT}) writes each
        non-ASCII character as its escape: a reply line is printable
        US-ASCII (RFC 5321 section 4.2), whatever the front end sent.
        """
        for bad, name, shown in (
            (b"NAME=b+C3+BCcher.example", "NAME", "b\\xfccher.example"),
            (b"HELO=a+C2+A0b", "HELO", "a\\xa0b"),
            (b"PORT=+F0+9F+98+80", "PORT", "\\U0001f600"),
        ):
            proto, written = self.xclient(bad)
            self.assertEqual(written, badValue(name, shown))
        proto, transport, clock, _ = connect(useXForward=True)
        take(transport)
        proto.dataReceived(b"XFORWARD NAME=+E2+80+AEx.example\r\n")
        self.assertEqual(take(transport), badValue("NAME", "\\u202ex.example"))

    def test_badValueReplyBounded(self) -> None:
        """
        The 501 naming a bad value fits one reply line of RFC 5321 section
        4.5.3.1.5 (512 octets with the code and CRLF) however long the
        value and however many of its characters are escaped: its text is
        cut, marked with C{...}.
        """
        room = 512 - len(b"XCLIENT ")
        for bad in (
            b"NAME=" + b"a" * (room - len(b"NAME=")),
            b"LOGIN=" + b"+01" * ((room - len(b"LOGIN=")) // 3),
        ):
            proto, written = self.xclient(bad)
            name = bad.split(b"=")[0]
            self.assertTrue(written.startswith(b"501 5.5.4 Bad " + name + b" syntax: "), written)
            self.assertEqual(written.count(b"\r\n"), 1, written)
            self.assertLessEqual(len(written), 512, written)
            self.assertTrue(written.endswith(b"...\r\n"), written)
        proto, transport, clock, _ = connect(useXForward=True)
        take(transport)
        proto.dataReceived(b"XFORWARD IDENT=" + b"+01" * 165 + b"\r\n")
        written = take(transport)
        self.assertTrue(written.startswith(b"501 5.5.4 Bad IDENT syntax: \\x01"), written)
        self.assertLessEqual(len(written), 512, written)

    def test_otherValues(self) -> None:
        """
        C{PROTO} is SMTP or ESMTP; C{HELO} and C{LOGIN} are printable text.
        """
        for bad in (b"PROTO=LMTP", b"HELO=a+0Ab", b"LOGIN=+00", b"DESTPORT=70000", b"DESTADDR=x"):
            proto, written = self.xclient(bad)
            self.assertTrue(written.startswith(b"501 5.5.4 Bad "), bad)
        proto, written = self.xclient(b"PROTO=esmtp HELO=[UNAVAILABLE] LOGIN=bob DESTPORT=587")
        self.assertEqual(written, replies.GREETING)
        self.assertEqual(proto.session.localAddress, ("192.0.2.1", 587))

    def test_unavailableIsUnknown(self) -> None:
        """
        C{[UNAVAILABLE]} (or C{[TEMPUNAVAIL]} for C{NAME}) makes the
        attribute unknown, as Postfix does, never leaves the front end's
        own: C{ADDR} gives the address C{"unknown"} (Postfix's
        C{client_address}) and the name unknown, C{PORT} the port 0,
        C{NAME} the name unknown (the address literal).
        """
        for argument, address, name in [
            (b"ADDR=[UNAVAILABLE]", ("unknown", 40000), "[unknown]"),
            (b"ADDR=[UNAVAILABLE] PORT=[UNAVAILABLE]", ("unknown", 0), "[unknown]"),
            (b"ADDR=[UNAVAILABLE] NAME=real.example", ("unknown", 40000), "real.example"),
            (b"NAME=[UNAVAILABLE]", ("192.0.2.7", 40000), "[192.0.2.7]"),
            (b"NAME=[TEMPUNAVAIL] ADDR=198.51.100.9", ("198.51.100.9", 40000), "[198.51.100.9]"),
            (b"PORT=[UNAVAILABLE]", ("192.0.2.7", 0), "frontend.example"),
        ]:
            proto, transport, clock, _ = connect(useXClient=["192.0.2.0/24"])
            # The front end's own name, from the reverse lookup at connect.
            proto.session.clientHostname = "frontend.example"
            take(transport)
            proto.dataReceived(b"XCLIENT " + argument + b"\r\n")
            self.assertEqual(take(transport), replies.GREETING, argument)
            self.assertEqual(proto.session.remoteAddress, address, argument)
            self.assertEqual(proto.session.clientHostname, name, argument)

    def test_nameKeptWhenOnlyAddressChanges(self) -> None:
        """
        A C{NAME} sent with an earlier XCLIENT stays the client's name when
        a later one sends C{ADDR} without C{NAME}, as in Postfix (whose
        C{xclient_cmd} changes the name only for C{NAME}; XCLIENT_README:
        "XCLIENT attributes persist until the end of an SMTP session"), so
        that C{session.clientHostname} agrees with C{session.xClient}.  An
        earlier C{NAME=[UNAVAILABLE]} still leaves the new address's literal.
        """
        for first, name in [
            (b"NAME=real.example", "real.example"),
            (b"NAME=[UNAVAILABLE]", "[198.51.100.9]"),
            (b"HELO=real", "[198.51.100.9]"),
        ]:
            proto, transport, clock, _ = connect(useXClient=["192.0.2.0/24"])
            take(transport)
            proto.dataReceived(b"XCLIENT " + first + b"\r\nXCLIENT ADDR=198.51.100.9\r\n")
            self.assertEqual(take(transport), replies.GREETING * 2, first)
            self.assertEqual(proto.session.remoteAddress[0], "198.51.100.9", first)
            self.assertEqual(proto.session.clientHostname, name, first)

    def test_unavailableDestinationIsUnknown(self) -> None:
        """
        C{DESTADDR=[UNAVAILABLE]} and C{DESTPORT=[UNAVAILABLE]} make the
        address the client connected to unknown, as Postfix makes them
        (C{unknown}), never the address the front end connected to: the
        address C{"unknown"}, the port 0.
        """
        for argument, local in [
            (b"DESTADDR=[UNAVAILABLE]", ("unknown", 25)),
            (b"DESTPORT=[unavailable]", ("192.0.2.1", 0)),
            (b"DESTADDR=[UNAVAILABLE] DESTPORT=[UNAVAILABLE]", ("unknown", 0)),
            (b"DESTADDR=198.51.100.25 DESTPORT=587", ("198.51.100.25", 587)),
        ]:
            proto, transport, clock, _ = connect(useXClient=["192.0.2.0/24"])
            take(transport)
            proto.dataReceived(b"XCLIENT " + argument + b"\r\n")
            self.assertEqual(take(transport), replies.GREETING, argument)
            self.assertEqual(proto.session.localAddress, local, argument)

    def test_unavailableInAnyCase(self) -> None:
        """
        C{[UNAVAILABLE]} and C{[TEMPUNAVAIL]} may be written in any case
        (XCLIENT_README, note 2), in XCLIENT and XFORWARD alike: they are
        taken as the upper-case forms, not refused as bad values.
        """
        proto, reply = self.xclient(
            b"ADDR=[unavailable] PORT=[Unavailable] NAME=[tempunavail] HELO=[uNaVaIlAbLe]"
        )
        self.assertEqual(reply, replies.GREETING)
        self.assertEqual(proto.session.remoteAddress, ("unknown", 0))
        self.assertEqual(proto.session.clientHostname, "[unknown]")
        self.assertIsNone(proto.session.hostNameAppearsAs)
        self.assertEqual(proto.session.xClient["NAME"], "[TEMPUNAVAIL]")
        self.assertEqual(
            parseXForward(b"NAME=[unavailable] ADDR=[Unavailable] SOURCE=[unavailable]"),
            {"NAME": "[UNAVAILABLE]", "ADDR": "[UNAVAILABLE]", "SOURCE": "[UNAVAILABLE]"},
        )

    def test_unavailableAddressLogged(self) -> None:
        """
        After C{XCLIENT ADDR=[UNAVAILABLE]}, the session's log lines and
        its C{Received:} header name the client C{unknown[unknown]}, not
        the front end that sent XCLIENT.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proto, transport, clock, factory = connect(useXClient=["192.0.2.0/24"])
        factory.addObserver(SessionLogger())
        proto.session.clientHostname = "frontend.example"
        proto.dataReceived(b"XCLIENT ADDR=[UNAVAILABLE] PORT=[UNAVAILABLE]\r\n")
        proto.dataReceived(b"EHLO client.example\r\nRCPT TO:<b@example.com>\r\n")
        sid = proto.session.id
        lines = [formatEvent(e) for e in events if e["log_namespace"] == NAMESPACE]
        self.assertEqual(
            lines,
            [
                f"{sid} connect from unknown:0 ([unknown]) to 192.0.2.1:25",
                f"{sid} reject: RCPT from unknown[unknown]: 503 5.5.1 <b@example.com>:"
                " Error: need MAIL command",
            ],
        )
        proto.session.envelope.mailFrom = Address("a@example.org")
        received = traceHeaderLines(proto.session, "mx.example.com").decode()
        self.assertIn("from client.example (unknown [unknown]) by mx.example.com", received)
        self.assertNotIn("192.0.2.7", received)
        self.assertNotIn("frontend", received)

    def test_loginLogged(self) -> None:
        """
        A session XCLIENT starts over as a client its front end logged in
        (C{LOGIN}) says so on its C{connect from} line, as Postfix logs
        C{sasl_method=XCLIENT, sasl_username=}; a later XCLIENT without
        C{LOGIN} logs the session out, and its line names no user.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proto, transport, clock, factory = connect(useXClient=["192.0.2.0/24"])
        factory.addObserver(SessionLogger())
        proto.dataReceived(b"XCLIENT ADDR=192.0.2.50 NAME=c.example LOGIN=alice\r\n")
        proto.dataReceived(b"XCLIENT ADDR=192.0.2.51\r\n")
        self.assertIsNone(proto.session.user)
        self.assertNotIn("LOGIN", proto.session.xClient)
        sid = proto.session.id
        lines = [formatEvent(e) for e in events if e["log_namespace"] == NAMESPACE]
        self.assertEqual(
            lines,
            [
                f"{sid} connect from 192.0.2.50:40000 (c.example) to 192.0.2.1:25"
                " as 'alice' (XCLIENT LOGIN)",
                f"{sid} connect from 192.0.2.51:40000 (c.example) to 192.0.2.1:25",
            ],
        )

    def test_addressesCanonical(self) -> None:
        """
        An IPv6 C{ADDR} or C{DESTADDR} however written (upper case, zeros
        spelt out) is the session's address in the canonical form of RFC
        5952 section 4, as a connection's and a PROXY header's are: one
        client is one address in C{session.remoteAddress}, the log lines
        and the handlers.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proto, transport, clock, factory = connect(useXClient=["192.0.2.0/24"])
        factory.addObserver(SessionLogger())
        proto.dataReceived(
            b"XCLIENT ADDR=IPV6:2001:DB8:0:0:0:0:0:5 DESTADDR=IPv6:0:0:0:0:0:0:0:1"
            b" NAME=c.example\r\n"
        )
        self.assertEqual(proto.session.remoteAddress, ("2001:db8::5", 40000))
        self.assertEqual(proto.session.localAddress, ("::1", 25))
        self.assertEqual(proto.connectedFrom, "2001:db8::5")
        sid = proto.session.id
        lines = [formatEvent(e) for e in events if e["log_namespace"] == NAMESPACE]
        self.assertEqual(lines, [f"{sid} connect from [2001:db8::5]:40000 (c.example) to [::1]:25"])

    def test_ipv6ClientHostname(self) -> None:
        """
        An IPv6 ADDR without NAME makes the client's name the RFC 5321
        address literal C{[IPv6:...]}.
        """
        proto, written = self.xclient(b"ADDR=IPV6:2001:db8::7")
        self.assertEqual(proto.session.clientHostname, "[IPv6:2001:db8::7]")


class XForwardValueTests(SynchronousTestCase):
    def test_values(self) -> None:
        """
        XFORWARD values are checked as XCLIENT's: bad ones get 501 5.5.4
        and are not kept.
        """
        proto, transport, clock, _ = connect(useXForward=True)
        take(transport)
        for bad in (
            b"ADDR=not-an-ip",
            b"PORT=99999",
            b"NAME=a+0D+0Ab",
            b"SOURCE=ELSEWHERE",
            b"IDENT=+07",
        ):
            proto.dataReceived(b"XFORWARD " + bad + b"\r\n")
            self.assertTrue(take(transport).startswith(b"501 5.5.4 Bad "), bad)
        self.assertEqual(proto.session.xForward, {})
        proto.dataReceived(b"XFORWARD SOURCE=remote PROTO=UUCP IDENT=q1 ADDR=[UNAVAILABLE]\r\n")
        self.assertEqual(take(transport), replies.OK)


_HOSTNAME = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{1,10}){1,3}\Z")
_XCLIENT_VALUES = st.fixed_dictionaries(
    {},
    optional={
        "NAME": st.one_of(_HOSTNAME, st.sampled_from(["[UNAVAILABLE]", "[TEMPUNAVAIL]"])),
        "ADDR": st.one_of(
            st.ip_addresses(v=4).map(str),
            st.ip_addresses(v=6).map(lambda a: f"IPV6:{a}"),
            st.just("[UNAVAILABLE]"),
        ),
        "PORT": st.integers(0, 65535).map(str),
        "PROTO": st.sampled_from(["SMTP", "ESMTP"]),
        "HELO": st.text(
            st.characters(blacklist_categories=("Cc", "Cs", "Cf", "Zl", "Zp", "Zs", "Co", "Cn")),
            min_size=1,
            max_size=40,
        ),
        "LOGIN": st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1),
        "DESTADDR": st.ip_addresses().map(str),
        "DESTPORT": st.integers(0, 65535).map(str),
    },
).filter(bool)


class XClientParserTests(SynchronousTestCase):
    @given(st.binary(max_size=300))
    def test_arbitraryBytes(self, data: bytes) -> None:
        """
        Arbitrary bytes give attributes or L{CommandError}; nothing else.
        """
        for parse in (parseXClient, parseXForward):
            try:
                attributes = parse(data)
            except CommandError as e:
                self.assertEqual(e.reply.code, 501)
            else:
                self.assertTrue(attributes)

    @given(
        st.lists(
            st.sampled_from(sorted(XCLIENT_ATTRIBUTES)).flatmap(
                lambda name: st.tuples(st.just(name), st.text(max_size=20))
            ),
            max_size=5,
        )
    )
    def test_arbitraryValues(self, pairs: list[tuple[str, str]]) -> None:
        """
        Known names with arbitrary values (any text, xtext-encoded) give
        attributes or L{CommandError}; nothing else.
        """
        argument = " ".join(f"{n}={encodeXtext(v)}" for n, v in pairs).encode()
        try:
            parseXClient(argument)
        except CommandError as e:
            self.assertEqual(e.reply.code, 501)

    @given(_XCLIENT_VALUES)
    def test_roundTrip(self, attributes: dict[str, str]) -> None:
        """
        Valid attributes, xtext-encoded, parse back to themselves.
        """
        argument = " ".join(f"{n}={encodeXtext(v)}" for n, v in attributes.items())
        self.assertEqual(parseXClient(argument.encode("ascii")), attributes)
