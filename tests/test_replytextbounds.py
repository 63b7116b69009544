# -*- test-case-name: tests.test_replytextbounds -*-
"""
The library's reply text settings (C{heloResponse}, C{authRequiredMessage},
C{name}) are bounded when L{ServerOptions} is built, so that no reply line
made from them is longer than RFC 5321 section 4.5.3.1.5 allows (512 octets
with the code and CRLF), nor cut at run time.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.test_auth import greeted
from tests.test_protocol import connect, take
from twisted_smtpd._core.options import ServerOptions

#: The room kept for the client's name: the longest address literal.
CLIENT_NAME_ROOM = len("[IPv6:ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]")

#: A 253-octet host name, the longest there is.
LONGEST_HOST = ".".join(["a" * 63] * 3 + ["b" * 61])


def longestHeloResponse(name: str) -> str:
    """
    The longest C{heloResponse} that L{ServerOptions} takes with C{name}.
    """
    room = 512 - len("250 \r\n") - len(name) - CLIENT_NAME_ROOM - len("  ")
    return "%s " + "x" * room + " %s"


class ConstructionTests(SynchronousTestCase):
    """
    Each setting is refused, naming it, when it is too long.
    """

    def test_authRequiredMessage(self) -> None:
        """
        An C{authRequiredMessage} longer than 480 octets (the longest reply
        text, which would otherwise be cut with C{...}) is a C{ValueError}
        naming the setting; 480 octets are kept.
        """
        ServerOptions(name="mx.example.com", authRequiredMessage="x" * 480)
        e = self.assertRaises(
            ValueError, ServerOptions, name="mx.example.com", authRequiredMessage="x" * 481
        )
        self.assertTrue(str(e).startswith("authRequiredMessage is 481 octets, more than"), str(e))
        e = self.assertRaises(
            ValueError, ServerOptions, name="mx.example.com", authRequiredMessage="x" * 100_000
        )
        self.assertIn("authRequiredMessage", str(e))

    def test_heloResponse(self) -> None:
        """
        A C{heloResponse} that, with the server's name and the longest
        client name, makes a 250 line longer than 512 octets is a
        C{ValueError} naming the setting; the longest that fits is kept.
        """
        fits = longestHeloResponse("mx.example.com")
        ServerOptions(name="mx.example.com", heloResponse=fits)
        tooLong = fits.replace("x", "xx", 1)
        e = self.assertRaises(
            ValueError, ServerOptions, name="mx.example.com", heloResponse=tooLong
        )
        self.assertTrue(str(e).startswith("heloResponse makes a 250 reply"), str(e))
        self.assertIn("513 octets", str(e))

    def test_nameWithDefaultHelo(self) -> None:
        """
        The longest host name is taken with the default C{heloResponse}; a
        name so long that the default reply cannot fit with an address
        literal is refused naming C{name}.
        """
        ServerOptions(name=LONGEST_HOST)
        e = self.assertRaises(ValueError, ServerOptions, name="a" * 450)
        self.assertTrue(str(e).startswith("name makes a 250 reply"), str(e))

    def test_closingReply(self) -> None:
        """
        A name whose 220 greeting fits but whose 221 reply to QUIT would
        not is refused naming C{name}.
        """
        name = "a" * (512 - len("221 2.0.0  Closing connection\r\n") + 1)
        self.assertLessEqual(len(f"220 {name} ESMTP\r\n"), 512)
        e = self.assertRaises(ValueError, ServerOptions, name=name, heloResponse="%s%s")
        self.assertEqual(
            str(e),
            "name makes a 221 reply of 513 octets, more than the 512 of a reply line"
            " (RFC 5321 section 4.5.3.1.5)",
        )


class ReplyLineTests(SynchronousTestCase):
    """
    The replies made from the longest settings taken fit in a reply line.
    """

    def assertLinesFit(self, output: bytes) -> None:
        lines = output.split(b"\r\n")
        self.assertEqual(lines[-1], b"")
        for line in lines[:-1]:
            self.assertLessEqual(len(line) + 2, 512, line[:40])

    def test_longestHelo(self) -> None:
        """
        With the longest C{heloResponse} taken, the HELO and EHLO replies
        to a client with an address literal are whole, and to a client
        with the longest host name or a longer name (the escaped path of a
        UNIX socket) fit in a reply line, the name cut.
        """
        name = "mx.example.com"
        literal = "[IPv6:ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]"
        for client in [literal, LONGEST_HOST, "[" + "\\x01" * 200 + "]", "[" + "\xe9" * 300 + "]"]:
            proto, transport, clock, factory = connect(
                name=name, heloResponse=longestHeloResponse(name)
            )
            proto.session.clientHostname = client
            take(transport)
            proto.dataReceived(b"HELO client.example\r\n")
            helo = take(transport)
            self.assertTrue(helo.startswith(b"250 mx.example.com x"), helo[:40])
            self.assertLinesFit(helo)
            if client == literal:
                self.assertTrue(helo.endswith(b" " + literal.encode() + b"\r\n"), helo[-60:])
            else:
                self.assertTrue(helo.endswith(b"...\r\n"), helo[-60:])
            proto.dataReceived(b"EHLO client.example\r\n")
            ehlo = take(transport)
            self.assertTrue(ehlo.startswith(b"250-mx.example.com x"), ehlo[:40])
            self.assertLinesFit(ehlo)

    def test_longestAuthRequired(self) -> None:
        """
        The longest C{authRequiredMessage} taken is sent whole, in one
        reply line.
        """
        text = "y" * 480
        proto, transport, handler = greeted(authRequiredMessage=text)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\n")
        output = take(transport)
        self.assertIn(b"530 5.7.0 " + text.encode() + b"\r\n", output)
        self.assertLinesFit(output)
