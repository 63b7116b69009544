# -*- test-case-name: tests.integration.test_relayfallback -*-
"""
C{twistd smtpd --relay} in front of a next hop whose STARTTLS handshake
fails for real (its TLS takes only a cipher suite no client offers): with
opportunistic TLS and no certificate verification (C{--relay-insecure}),
the message goes on in plain text over a second connection, byte for
byte, as Postfix's smtp client does at security level C{may}; with the
certificate to be verified, or TLS required, the client gets 451 4.7.5
and nothing is sent in plain text.

The next hop is a small SMTP server in a thread of the test, on an
ephemeral port of 127.0.0.1, its certificate made in the test; every wait
is bounded.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from typing import BinaryIO

from tests.certs import CertificateAuthority
from tests.integration.helpers import CLIENT_TIMEOUT, ServerTestCase, TwistdServer
from tests.integration.nexthops import ThreadedNextHop, waitUntil
from tests.tracing import untraced
from twisted_smtpd.handlers.relay import defaultHeloName

SENDER = "alice@example.com"
RECIPIENT = "bob@example.org"
#: Dot-stuffing, a line of 998 octets, an empty line, trailing spaces.
MESSAGE = (
    b"Subject: fallback\r\nX-Test: 1\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n"
    + b"y" * 998
    + b"\r\n\r\ntrailing spaces   \r\nlast line\r\n"
)


class MismatchedTLSNextHop(ThreadedNextHop):
    """
    A next hop offering STARTTLS whose TLS (1.2 at most) accepts only
    C{ARIA128-GCM-SHA256}, which no client offers: the handshake after its
    220 fails with a C{handshake_failure} alert.  In plain text it takes
    every message and keeps its text as received (dot-stuffing removed).

    @ivar handshakes: The outcome of each handshake: C{"ok"} or the
        server's error.
    @ivar messages: The messages received, in order.
    @ivar greeted: How many sessions said EHLO.
    """

    def __init__(self, certificate: str, key: str) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certificate, key)
        self._context.maximum_version = ssl.TLSVersion.TLSv1_2
        self._context.set_ciphers("ARIA128-GCM-SHA256")
        self.handshakes: list[str] = []
        self.messages: list[bytes] = []
        self.greeted = 0
        super().__init__()

    def _command(self, connection: socket.socket, reader: BinaryIO, line: bytes) -> bool:
        verb = line[:4].upper()
        if verb == b"EHLO":
            self.greeted += 1
            connection.sendall(b"250-nexthop.example\r\n250 STARTTLS\r\n")
        elif verb == b"STAR":
            connection.sendall(b"220 2.0.0 Ready to start TLS\r\n")
            try:
                self._context.wrap_socket(connection, server_side=True).close()
            except (ssl.SSLError, OSError) as e:
                self.handshakes.append(str(e))
            else:
                self.handshakes.append("ok")
            return False
        elif verb == b"DATA":
            connection.sendall(b"354 Go ahead\r\n")
            lines = []
            while True:
                text = reader.readline(4096)
                if text in (b".\r\n", b""):
                    break
                lines.append(text[1:] if text.startswith(b".") else text)
            self.messages.append(b"".join(lines))
            connection.sendall(b"250 2.0.0 Queued as F1\r\n")
        elif verb == b"QUIT":
            connection.sendall(b"221 2.0.0 Bye\r\n")
            return False
        else:
            connection.sendall(b"250 2.0.0 OK\r\n")
        return True


class PlaintextFallbackTests(ServerTestCase):
    """
    C{--relay} to a next hop whose STARTTLS handshake fails.
    """

    def setUp(self) -> None:
        authority = CertificateAuthority(self.makeDirectory())
        issued = authority.server("127.0.0.1")
        self.nextHop = MismatchedTLSNextHop(issued.certificatePath, issued.keyPath)
        self.addCleanup(self.nextHop.stop)

    def front(self, *flags: str) -> TwistdServer:
        """
        A C{twistd smtpd} relaying to the next hop with C{flags}.
        """
        relay = f"127.0.0.1:{self.nextHop.port}"
        return self.spawn("--relay", relay, "--no-reverse-lookup", *flags, maildir=False)

    def send(self, front: TwistdServer) -> None:
        """
        Send L{MESSAGE} through C{front}.

        @raise smtplib.SMTPException: It was refused.
        """
        client = smtplib.SMTP("127.0.0.1", front.port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        client.ehlo("client.example")
        client.sendmail(SENDER, [RECIPIENT], MESSAGE)
        client.quit()

    def test_opportunisticFallsBackToPlaintext(self) -> None:
        """
        Opportunistic TLS without verification: the failed handshake is
        followed by a second connection in plain text (EHLO again, no
        STARTTLS), where the message arrives byte for byte; one log line
        names the next hop and the TLS error.
        """
        front = self.front("--relay-insecure")
        self.send(front)
        # The next hop's thread records a handshake once its own side of it
        # has failed, which may be after the server's side went on.
        waitUntil(lambda: self.nextHop.handshakes, CLIENT_TIMEOUT, "the next hop's handshake")
        self.assertEqual(len(self.nextHop.handshakes), 1)
        self.assertIn("NO_SHARED_CIPHER", self.nextHop.handshakes[0])
        self.assertEqual(self.nextHop.greeted, 2)
        [stored] = self.nextHop.messages
        self.assertEqual(untraced(self, stored, client=None, by=defaultHeloName()), MESSAGE)
        waitUntil(lambda: "passed to 127.0.0.1:" in front.output, CLIENT_TIMEOUT, "the log")
        lines = [line for line in front.output.splitlines() if "trying again in plain text" in line]
        self.assertEqual(len(lines), 1, front.output)
        self.assertIn(f"127.0.0.1:{self.nextHop.port}", lines[0])
        self.assertIn("handshake failure", lines[0])

    def test_noFallbackWhenVerifying(self) -> None:
        """
        With the certificate to be verified (the default), or with TLS
        required, the failed handshake makes the message fail temporarily
        (451 4.7.5): nothing is sent in plain text.
        """
        for flags in ((), ("--relay-require-tls", "--relay-insecure")):
            front = self.front(*flags)
            with self.assertRaises(smtplib.SMTPSenderRefused) as refused:
                self.send(front)
            self.assertEqual(refused.exception.smtp_code, 451, flags)
            self.assertIn(b"4.7.5", refused.exception.smtp_error)
            self.assertEqual(self.nextHop.messages, [])
            self.assertNotIn("trying again in plain text", front.output)
        waitUntil(
            lambda: len(self.nextHop.handshakes) == 2, CLIENT_TIMEOUT, "the next hop's handshakes"
        )
        self.assertEqual(self.nextHop.greeted, 2)
        self.assertEqual(len(self.nextHop.handshakes), 2)
