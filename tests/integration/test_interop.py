# -*- test-case-name: tests.integration.test_interop -*-
"""
Real mail software through paths the suite otherwise tests with Python
clients or stand-ins: Postfix relaying over implicit TLS into an C{ssl:}
listener with keys of its own, a Postfix next hop that answers 421 at RCPT
to C{--relay}, Postfix sending XFORWARD, and Dovecot's LMTP proxy, a
client that sends BDAT, past the C{--size} limit of C{twistd smtpd
--lmtp}, and C{--pipe} into Dovecot's C{dovecot-lda} under C{--workers 2}.
"""

from __future__ import annotations

import os
import re
import smtplib
import socket

from cryptography.hazmat.primitives import hashes

from tests.certs import CertificateAuthority
from tests.integration.helpers import CLIENT_TIMEOUT, ServerTestCase, readReply, startWorkers
from tests.integration.nexthops import DELIVERY_TIMEOUT, Dovecot, Postfix, waitUntil
from tests.integration.test_relaying import maildir

SENDER = "alice@example.com"
BODY = b"Subject: interop\r\n\r\nbody\r\n"


class PostfixImplicitTLSTests(ServerTestCase):
    """
    Postfix as the client: its C{relayhost} is an C{ssl:} listener with a
    certificate of its own, served with C{--tls-min-version 1.3} and an
    C{@SECLEVEL=2} cipher string; Postfix encrypts from the first byte
    (C{smtp_tls_wrappermode}) and accepts only that certificate.
    """

    def test_delivered(self) -> None:
        Postfix.require(self)
        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        shared = ca.server("mail.example.com")
        own = ca.server("submission.example.com")
        self.startServer(
            "--tls-cert",
            shared.certificatePath,
            "--tls-key",
            shared.keyPath,
            "--tls-min-version",
            "1.3",
            "--tls-ciphers",
            "DEFAULT:@SECLEVEL=2",
            "--no-reverse-lookup",
            listen=[
                f"ssl:0:interface=127.0.0.1:privateKey={own.keyPath}:certKey={own.certificatePath}"
            ],
        )
        fingerprint = own.certificate.fingerprint(hashes.SHA256()).hex(":").upper()
        postfix = Postfix(
            relayhost=self.server.port,
            settings={
                "smtp_tls_wrappermode": "yes",
                "smtp_tls_security_level": "fingerprint",
                "smtp_tls_fingerprint_digest": "sha256",
                "smtp_tls_fingerprint_cert_match": fingerprint,
                "smtp_tls_loglevel": "1",
            },
        )
        postfix.start(self)
        client = self.smtp(postfix.port)
        self.assertEqual(client.sendmail(SENDER, ["bob@example.org"], BODY), {})
        client.quit()
        waitUntil(lambda: postfix.count("status=") >= 1, DELIVERY_TIMEOUT, "the delivery")
        self.assertEqual(postfix.count("status=sent"), 1, postfix.log)
        self.assertIn("Verified TLS connection established", postfix.log)
        self.assertIn(": TLSv1.3 with cipher", postfix.log)
        [stored] = maildir(self.server)
        self.assertTrue(stored.endswith(b"\r\n\r\nbody\r\n"), stored)
        self.stopServer()


class PostfixXForwardTests(ServerTestCase):
    """
    Postfix as an XFORWARD client (C{smtp_send_xforward_command}) relaying
    to C{twistd smtpd --xforward 127.0.0.1/32 --maildir-trace}: the
    original client Postfix names is in the message's log line; the
    C{Received:} field names Postfix, the client that connected.
    """

    def test_originalClientNamed(self) -> None:
        """
        The message's log line has the HELO name of the client that greeted
        Postfix and Postfix's queue id (C{orig_queue_id=}); the stored
        message's C{Received:} field names Postfix, as Postfix's own would.
        """
        Postfix.require(self)
        self.startServer(
            "--xforward",
            "127.0.0.1/32",
            "--maildir-trace",
            "--hostname",
            "mx.example.com",
            "--no-reverse-lookup",
        )
        postfix = Postfix(
            relayhost=self.server.port, settings={"smtp_send_xforward_command": "yes"}
        )
        postfix.start(self)
        client = smtplib.SMTP(
            "127.0.0.1",
            postfix.port,
            local_hostname="original-helo.example",
            timeout=CLIENT_TIMEOUT,
        )
        self.addCleanup(client.close)
        self.assertEqual(client.sendmail(SENDER, ["bob@example.org"], BODY), {})
        client.quit()
        waitUntil(lambda: postfix.count("status=") >= 1, DELIVERY_TIMEOUT, "the delivery")
        self.assertEqual(postfix.count("status=sent"), 1, postfix.log)
        match = re.search(r"\]: ([0-9A-Za-z]+): client=", postfix.log)
        assert match is not None, postfix.log
        queueId = match.group(1)
        [stored] = maildir(self.server)
        text = stored.decode("utf-8")
        received = " ".join(text.split("\r\nReceived: ", 1)[1].split("\r\n")[0].split())
        self.assertRegex(received, r"^from \S+ \(\S+ \[127\.0\.0\.1\]\) by mx\.example\.com ")
        self.assertNotIn("original-helo", received)
        self.server.waitForLog(
            f"orig_helo=original-helo.example orig_queue_id={queueId}: 250 ",
            timeout=DELIVERY_TIMEOUT,
        )
        self.stopServer()


class PostfixClosingAtRcptTests(ServerTestCase):
    """
    C{--relay} to a Postfix whose recipient restrictions answer 421 for one
    recipient: Postfix closes the session, the client is told 451 for that
    recipient and the rest of its transaction, and its next transaction
    goes through a new session.
    """

    def test_nextTransactionDelivered(self) -> None:
        Postfix.require(self)
        sink = self.spawn("--no-reverse-lookup")
        postfix = Postfix(
            relayhost=sink.port, access=[("closing@example.org", "421 4.7.0 Go away now")]
        )
        postfix.start(self)
        front = self.spawn("--relay", f"127.0.0.1:{postfix.port}", maildir=False)
        client = self.smtp(front.port)
        client.ehlo("client.example")
        self.assertEqual(client.mail(SENDER)[0], 250)
        self.assertEqual(client.rcpt("bob@example.org")[0], 250)
        code, text = client.rcpt("closing@example.org")
        self.assertEqual((code, text[:5]), (451, b"4.7.0"))
        self.assertIn(b"Go away now", text)
        code, text = client.rcpt("carol@example.org")
        self.assertEqual((code, text[:5]), (451, b"4.4.2"))
        self.assertEqual(client.rset()[0], 250)
        self.assertEqual(client.sendmail(SENDER, ["carol@example.org"], BODY), {})
        client.quit()
        waitUntil(lambda: len(maildir(sink)) >= 1, DELIVERY_TIMEOUT, "the delivery")
        # Postfix logs the delivery once the sink's 250 has reached it,
        # after the message is in the sink's Maildir.
        waitUntil(lambda: postfix.count("status=") >= 1, DELIVERY_TIMEOUT, "Postfix's log line")
        self.assertEqual(postfix.count("status=sent"), 1, postfix.log)
        self.assertIn("to=<carol@example.org>", postfix.log)
        self.assertNotIn("to=<bob@example.org>", postfix.log)
        front.waitForLog("closed the session at RCPT closing@example.org")
        self.assertEqual(front.output.count("closed the session at RCPT"), 1)


class DovecotProxyBdatTests(ServerTestCase):
    """
    Dovecot's LMTP proxy sends its recipients' messages on with BDAT to
    C{twistd smtpd --lmtp --size 2000}: a chunk past the limit is refused
    with 552 as Dovecot sends it, whether it is the last chunk (one reply
    per recipient) or one of several.
    """

    def setUp(self) -> None:
        Dovecot.require(self)
        self.back = self.spawn("--lmtp", "--size", "2000", "--no-reverse-lookup")
        proxy = f"proxy=y host=127.0.0.1 port={self.back.port} protocol=lmtp"
        self.dovecot = Dovecot({"bob@example.org": proxy, "carol@example.org": proxy})
        with open(self.dovecot.config, "a") as f:
            # Whole addresses as user names; the client's BDAT commands logged.
            f.write("lmtp_proxy = yes\nauth_username_format = %Lu\n")
            f.write("log_debug = category=smtp-client\n")
        self.dovecot.start(self)

    def lmtp(self, recipients: list[str], body: bytes) -> list[tuple[int, bytes]]:
        """
        One LMTP transaction with Dovecot: its replies after the message.
        """
        with socket.create_connection(("127.0.0.1", self.dovecot.port), CLIENT_TIMEOUT) as s:
            replies = s.makefile("rb")
            self.assertEqual(readReply(replies)[0], 220)
            s.sendall(b"LHLO client.example\r\n")
            self.assertEqual(readReply(replies)[0], 250)
            s.sendall(f"MAIL FROM:<{SENDER}>\r\n".encode())
            self.assertEqual(readReply(replies)[0], 250)
            for recipient in recipients:
                s.sendall(f"RCPT TO:<{recipient}>\r\n".encode())
                self.assertEqual(readReply(replies)[0], 250)
            s.sendall(b"DATA\r\n")
            self.assertEqual(readReply(replies)[0], 354)
            s.sendall(body + b".\r\n")
            answers = []
            for _ in recipients:
                code, lines = readReply(replies)
                answers.append((code, lines[-1]))
            s.sendall(b"QUIT\r\n")
            self.assertEqual(readReply(replies)[0], 221)
        return answers

    def test_lastChunkPastLimit(self) -> None:
        """
        A message in one last chunk: below the limit both recipients get 250
        and it is stored once; above it both get 552 5.3.4.
        """
        recipients = ["bob@example.org", "carol@example.org"]
        self.assertEqual([c for c, _ in self.lmtp(recipients, BODY)], [250, 250])
        big = BODY + (b"x" * 70 + b"\r\n") * 40
        answers = self.lmtp(recipients, big)
        self.assertEqual([(c, t[:5]) for c, t in answers], [(552, b"5.3.4")] * 2, answers)
        self.assertEqual(len(maildir(self.back)), 1)
        # Dovecot writes its debug lines after its reply has left.
        waitUntil(
            lambda: "Sent: BDAT " in self.dovecot.log, DELIVERY_TIMEOUT, "Dovecot's BDAT line"
        )
        self.back.waitForLog("552,552 Error: message exceeds fixed maximum message size")

    def test_chunkOfSeveralPastLimit(self) -> None:
        """
        A message Dovecot sends in several chunks: the first chunk, past the
        limit and not the last, is refused with 552, nothing is stored, and
        the next message goes through.
        """
        answers = self.lmtp(["bob@example.org"], BODY + (b"x" * 998 + b"\r\n") * 400)
        self.assertEqual([(c, t[:5]) for c, t in answers], [(552, b"5.3.4")], answers)
        # Dovecot writes its debug lines after its reply has left.
        waitUntil(
            lambda: re.search(r"Sent: BDAT \d+\n", self.dovecot.log) is not None,
            DELIVERY_TIMEOUT,
            "Dovecot's BDAT line",
        )
        self.assertEqual(maildir(self.back), [])
        self.assertEqual([c for c, _ in self.lmtp(["bob@example.org"], BODY)], [250])
        self.assertEqual(len(maildir(self.back)), 1)


class DovecotLdaPipeTests(ServerTestCase):
    """
    C{--pipe} into Dovecot's C{dovecot-lda} under C{--workers 2}: its exit
    codes reach the client, 0 as 250, C{EX_TEMPFAIL} (a full mailbox) as
    451 and C{EX_NOUSER} as 554, each message in a mailbox once.
    """

    def test_exitCodes(self) -> None:
        Dovecot.require(self)
        lda = "/usr/lib/dovecot/dovecot-lda"
        if not os.access(lda, os.X_OK):
            self.fail(f"{lda} is missing: the Debian package dovecot-core installs it")
        dovecot = Dovecot({"bob": "", "carol": "userdb_quota_rule=*:storage=1B"})
        dovecot.start(self)
        server, port = startWorkers(
            self, ["--pipe", f"{lda} -c {dovecot.config} -f ${{sender}} -d ${{recipient}}"]
        )
        answers = {}
        for recipient in ["bob", "carol", "nobody-here", "bob"]:
            client = self.smtp(port)
            client.ehlo("client.example")
            self.assertEqual(client.mail(SENDER)[0], 250)
            self.assertEqual(client.rcpt(f"{recipient}@example.org")[0], 250)
            code, text = client.data(BODY)
            answers.setdefault(recipient, []).append((code, text[:5]))
            client.quit()
        self.assertEqual(
            answers,
            {
                "bob": [(250, b"2.0.0")] * 2,
                "carol": [(451, b"4.3.0")],
                "nobody-here": [(554, b"5.3.0")],
            },
        )
        self.assertEqual(len(dovecot.mailbox("bob")), 2)
        self.assertEqual(dovecot.mailbox("carol"), [])
        server.waitForLog("pipe command failed (exit 67)")
