# -*- test-case-name: tests.integration.test_deliveries -*-
"""
Every delivery of C{twistd smtpd}, driven through a real server process:
Maildir (default, per recipient, with trace headers), mbox, pipe, debug,
sink, a custom handler, relay to a second server and LMTP to a second
server in LMTP mode.
"""

from __future__ import annotations

import os

from tests.certs import CertificateAuthority
from tests.integration import recordinghandler
from tests.integration.helpers import (
    RECIPIENT,
    SENDER,
    ServerTestCase,
    maildirContents,
    message,
)


class MaildirTests(ServerTestCase):
    """
    The default delivery and its options.
    """

    def test_defaultMaildir(self) -> None:
        """
        Without a delivery flag, messages are stored in C{./Maildir} of the
        server's directory.
        """
        self.startServer(maildir=False)
        body = message(1)
        self.assertEqual(self.smtp().sendmail(SENDER, [RECIPIENT], body), {})
        self.assertDelivered([body], os.path.join(self.server.directory, "Maildir"))
        self.stopServer()

    def test_perRecipient(self) -> None:
        """
        With C{--maildir-per-recipient} each recipient gets its copy in
        C{Maildir/<domain>/<localpart>/}, lower-cased, by the time of the
        250; a mailbox name that cannot be a directory is refused at RCPT.
        """
        self.startServer("--maildir-per-recipient")
        client = self.smtp()
        body = message(2)
        self.assertEqual(
            client.sendmail(SENDER, ["Bob@Example.ORG", "carol@example.net"], body), {}
        )
        for parts in [("example.org", "bob"), ("example.net", "carol")]:
            self.assertDelivered([body], os.path.join(self.maildir, *parts))
        self.assertEqual(maildirContents(self.maildir)[0], [])
        client.ehlo()
        self.assertEqual(client.mail(SENDER)[0], 250)
        for mailbox in ['"../etc"@example.org', '"a/b"@example.org', '".."@example.org']:
            code, text = client.docmd(f"RCPT TO:<{mailbox}>")
            self.assertEqual(code, 553, text)
        client.quit()
        self.assertEqual(
            sorted(os.listdir(self.maildir)),
            sorted(["cur", "new", "tmp", "example.org", "example.net"]),
        )
        self.assertEqual(os.listdir(os.path.join(self.maildir, "example.org")), ["bob"])
        self.stopServer()

    def test_traceHeaders(self) -> None:
        """
        With C{--maildir-trace}, C{Return-Path:} and C{Received:} naming the
        server are prepended to the message.
        """
        self.startServer("--maildir-trace", "--hostname", "mx.test.example")
        body = message(3)
        self.assertEqual(self.smtp().sendmail(SENDER, [RECIPIENT], body), {})
        (stored,), _, _ = maildirContents(self.maildir)
        returnPath, received, rest = stored.split(b"\r\n", 2)
        self.assertEqual(returnPath, f"Return-Path: <{SENDER}>".encode())
        self.assertTrue(received.startswith(b"Received: from "), received)
        self.assertIn(b" by mx.test.example with ESMTP id ", received)
        self.assertEqual(rest, body)
        self.stopServer()


class OtherLocalDeliveryTests(ServerTestCase):
    """
    mbox, pipe, debug, sink and a custom handler.
    """

    def test_mbox(self) -> None:
        """
        C{--mbox PATH} appends each message with a C{From } separator line.
        """
        path = os.path.join(self.makeDirectory(), "mail.mbox")
        self.startServer("--mbox", path, maildir=False)
        client = self.smtp()
        for index in range(2):
            self.assertEqual(client.sendmail(SENDER, [RECIPIENT], message(index)), {})
        with open(path, "rb") as f:
            mbox = f.read()
        self.assertTrue(mbox.startswith(f"From {SENDER} ".encode()), mbox[:80])
        self.assertEqual(mbox.count(f"\nFrom {SENDER} ".encode()), 1)
        for index in range(2):
            self.assertIn(f"Subject: message {index}".encode(), mbox)
        self.stopServer()

    def test_pipe(self) -> None:
        """
        C{--pipe COMMAND} runs the command once per message with the message
        on its standard input.
        """
        out = self.makeDirectory()
        self.startServer("--pipe", f"sh -c 'cat > {out}/msg.$$'", maildir=False)
        client = self.smtp()
        sent = [message(index) for index in range(2)]
        for body in sent:
            self.assertEqual(client.sendmail(SENDER, [RECIPIENT], body), {})
        stored = []
        for name in os.listdir(out):
            with open(os.path.join(out, name), "rb") as f:
                stored.append(f.read())
        self.assertEqual(sorted(stored), sorted(sent))
        self.stopServer()

    def test_debug(self) -> None:
        """
        C{--debug} prints each message with its envelope on standard output.
        """
        self.startServer("--debug", maildir=False)
        self.assertEqual(self.smtp().sendmail(SENDER, [RECIPIENT], message(5)), {})
        self.server.waitForLog("END MESSAGE")
        output = self.server.output
        for expected in [
            "MESSAGE FOLLOWS",
            f"mail from: {SENDER}",
            f"rcpt to: {RECIPIENT}",
            "peer: 127.0.0.1:",
            "Subject: message 5",
        ]:
            self.assertIn(expected, output)
        self.assertFalse(os.path.exists(os.path.join(self.server.directory, "Maildir")))
        self.stopServer()

    def test_sink(self) -> None:
        """
        C{--sink} accepts messages and stores nothing.
        """
        self.startServer("--sink", maildir=False)
        self.assertEqual(self.smtp().sendmail(SENDER, [RECIPIENT], message(6)), {})
        self.assertEqual(os.listdir(self.server.directory), [])
        self.stopServer()

    def test_customHandler(self) -> None:
        """
        C{--handler MODULE:CALLABLE} with C{--handler-option}s runs the
        handler the callable returns: it records the message, and its reply
        text reaches the client.
        """
        records = os.path.join(self.makeDirectory(), "records")
        self.startServer(
            "--handler",
            "tests.integration.recordinghandler:make",
            "--handler-option",
            f"directory={records}",
            "--handler-option",
            "reply=OK: recorded by test",
            maildir=False,
        )
        client = self.smtp()
        client.ehlo()
        self.assertEqual(client.mail(SENDER)[0], 250)
        self.assertEqual(client.rcpt(RECIPIENT)[0], 250)
        body = message(7)
        code, text = client.data(body)
        self.assertEqual((code, text), (250, b"2.0.0 OK: recorded by test"))
        (record,) = recordinghandler.readRecords(records)
        self.assertEqual(record["body"], body.decode("ascii"))
        self.assertEqual((record["mailFrom"], record["rcptTo"]), (SENDER, [RECIPIENT]))
        self.assertEqual(record["remoteAddress"], list(client.sock.getsockname()))
        self.stopServer()


class ForwardingTests(ServerTestCase):
    """
    C{--relay} and C{--lmtp-to}, against a second C{twistd smtpd}.
    """

    def test_relayInsecure(self) -> None:
        """
        C{--relay 127.0.0.1:PORT --relay-insecure} forwards each message to
        the smarthost (here over STARTTLS with its self-signed certificate),
        which stores it as sent.
        """
        target = self.spawn()
        self.startServer("--relay", f"127.0.0.1:{target.port}", "--relay-insecure", maildir=False)
        body = message(8)
        self.assertEqual(self.smtp().sendmail(SENDER, [RECIPIENT, "b@example.com"], body), {})
        self.assertDelivered([body], os.path.join(target.directory, "Maildir"))
        self.stopServer()
        self.stopServer(target)

    def targetWithCertificate(self, name: str) -> tuple[CertificateAuthority, int, str]:
        """
        A smarthost serving a certificate for C{name} from a new CA.

        @return: The CA, the smarthost's port and its Maildir.
        """
        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        issued = ca.server(name)
        target = self.spawn("--tls-cert", issued.certificatePath, "--tls-key", issued.keyPath)
        self.target = target
        return ca, target.port, os.path.join(target.directory, "Maildir")

    def test_relayVerified(self) -> None:
        """
        With C{--relay-ca}, a smarthost whose certificate is valid for the
        relay's name gets the message.
        """
        ca, port, maildir = self.targetWithCertificate("localhost")
        self.startServer(
            "--relay", f"localhost:{port}", "--relay-ca", ca.certificatePath, maildir=False
        )
        body = message(9)
        self.assertEqual(self.smtp().sendmail(SENDER, [RECIPIENT], body), {})
        self.assertDelivered([body], maildir)
        self.stopServer()
        self.stopServer(self.target)

    def test_relayWrongName(self) -> None:
        """
        A smarthost whose certificate does not name the relay host is
        refused: the client gets a temporary failure at MAIL, when the
        relay opens its session to the smarthost, and nothing is delivered.
        """
        ca, port, maildir = self.targetWithCertificate("mail.example.com")
        self.startServer(
            "--relay", f"127.0.0.1:{port}", "--relay-ca", ca.certificatePath, maildir=False
        )
        client = self.smtp()
        client.ehlo()
        code, text = client.mail(SENDER)
        self.assertEqual((code, text[:5]), (451, b"4.7.5"), text)
        self.assertEqual(maildirContents(maildir)[0], [])
        client.quit()
        self.stopServer()
        self.stopServer(self.target)

    def test_lmtpTo(self) -> None:
        """
        C{--lmtp-to tcp:127.0.0.1:PORT} hands each message to a server in
        C{--lmtp} mode, which stores it.
        """
        target = self.spawn("--lmtp")
        self.startServer("--lmtp-to", f"tcp:127.0.0.1:{target.port}", maildir=False)
        body = message(11)
        self.assertEqual(self.smtp().sendmail(SENDER, [RECIPIENT, "b@example.com"], body), {})
        self.assertDelivered([body], os.path.join(target.directory, "Maildir"))
        self.stopServer()
        self.stopServer(target)
