"""
Tests for L{twisted_smtpd._forwarding}: XCLIENT and XFORWARD,
each believed only from its configured networks.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_protocol import RecordingHandler, connect, take
from twisted_smtpd._grammar import XCLIENT_ATTRIBUTES, parseAttributes
from twisted_smtpd._replies import CommandError

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

    def test_inTransaction(self) -> None:
        """
        XCLIENT inside a transaction gets 503.
        """
        proto, transport, clock, _ = connect(useXClient=True)
        proto.dataReceived(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n")
        take(transport)
        proto.dataReceived(b"XCLIENT ADDR=203.0.113.5\r\n")
        self.assertTrue(take(transport).startswith(b"503 5.5.1"))

    def test_badSyntax(self) -> None:
        """
        A bad attribute gets 501.
        """
        proto, transport, clock, _ = connect(useXClient=True)
        take(transport)
        proto.dataReceived(b"XCLIENT FOO=bar\r\n")
        self.assertEqual(take(transport), BAD_ATTRIBUTE)


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

    def test_untrusted(self) -> None:
        """
        XFORWARD from an untrusted client gets 550.
        """
        proto, transport, clock, _ = connect()
        take(transport)
        proto.dataReceived(b"XFORWARD NAME=x\r\n")
        self.assertEqual(take(transport), NOT_AUTHORIZED)
        self.assertEqual(proto.session.xForward, {})
