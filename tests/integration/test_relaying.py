# -*- test-case-name: tests.integration.test_relaying -*-
"""
C{twistd smtpd --relay} in front of a real Postfix, and C{--lmtp-to} in
front of a real Dovecot LMTP server: the next hop's verdicts reach the
client at RCPT, nothing is lost or stored twice, extensions are passed on or
refused before the body, sessions are reused.

Postfix passes what it accepts on to a second C{twistd smtpd} (its
relayhost), whose Maildir shows what was delivered.
"""

from __future__ import annotations

import email
import os
import smtplib
from email.message import Message

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.certs import CertificateAuthority
from tests.integration.helpers import CLIENT_TIMEOUT, ServerTestCase, TwistdServer
from tests.integration.nexthops import DELIVERY_TIMEOUT, Dovecot, Postfix, waitUntil
from tests.tracing import traceField, untraced
from twisted_smtpd.handlers.relay import RelayHandler, defaultHeloName

SENDER = "alice@example.com"
BODY = b"Subject: relayed\r\nMessage-ID: <m1@example.com>\r\n\r\n.a dotted line\r\nend\r\n"
ACCESS = [
    ("refused@example.org", "550 5.1.1 No such user here"),
    ("deferred@example.org", "450 4.2.0 Try again later"),
]


def looping(hops: int) -> bytes:
    """
    A message arriving with C{hops} C{Received:} fields, a mail loop when
    there are more than fifty.
    """
    received = b"Received: from a.example by b.example; Mon, 7 Dec 2026 12:00:00 +0000\r\n"
    return received * hops + b"Subject: loop\r\n\r\nlooping\r\n"


def assertLoopsRefused(testCase: TestCase, client: smtplib.SMTP) -> None:
    """
    A message arriving through C{client}'s front with fifty-one C{Received:}
    fields is refused with 554 5.4.6; so is one whose fifty-first field
    comes past the first 64 KiB chunk, already on its way to the next hop
    when it arrives.
    """
    filler = b"X-Filler: " + b"f" * 900 + b"\r\n"
    for message in (looping(51), filler * 90 + looping(51)):
        with testCase.assertRaises(smtplib.SMTPDataError) as caught:
            client.sendmail(SENDER, ["bob@example.org"], message)
        testCase.assertEqual(caught.exception.smtp_code, 554)
        testCase.assertEqual(caught.exception.smtp_error[:5], b"5.4.6")


def maildir(server: TwistdServer) -> list[bytes]:
    """
    The messages the sink server stored, in name order.
    """
    new = os.path.join(server.directory, "Maildir", "new")
    if not os.path.isdir(new):
        return []
    return [open(os.path.join(new, name), "rb").read() for name in sorted(os.listdir(new))]


def report(message: bytes) -> list[Message]:
    """
    The field blocks of a DSN's C{message/delivery-status} part.
    """
    parsed = email.message_from_bytes(message)
    assert parsed.get_content_type() == "multipart/report", message
    status = parsed.get_payload()[1]
    assert status.get_content_type() == "message/delivery-status"
    blocks: list[Message] = status.get_payload()
    return blocks


class PostfixTests(ServerTestCase):
    """
    C{--relay} to a real Postfix with STARTTLS, recipient restrictions and a
    size limit.
    """

    def setUp(self) -> None:
        Postfix.require(self)
        self.sink = self.spawn("--hide", "DSN", "--no-reverse-lookup")
        self.ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        issued = self.ca.server("localhost")
        self.postfix = Postfix(
            relayhost=self.sink.port,
            access=ACCESS,
            certificate=(issued.certificatePath, issued.keyPath),
            settings={"message_size_limit": "100000", "smtpd_tls_loglevel": "1"},
        )
        self.postfix.start(self)
        self.front = self.spawn(
            "--relay",
            f"localhost:{self.postfix.port}",
            "--relay-ca",
            self.ca.certificatePath,
            "--relay-require-tls",
            "--no-reverse-lookup",
            maildir=False,
        )

    def client(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.front.port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        client.ehlo("client.example")
        return client

    def test_verdictsAtRcpt(self) -> None:
        """
        Postfix's 550 and 450 reach the client at RCPT with Postfix's
        words; the accepted recipient gets the message once, and the 250
        after the body carries Postfix's queue id.
        """
        client = self.client()
        self.assertEqual(client.mail(SENDER)[0], 250)
        code, text = client.rcpt("refused@example.org")
        self.assertEqual(code, 550)
        self.assertIn(b"5.1.1", text)
        self.assertIn(b"No such user here", text)
        code, text = client.rcpt("deferred@example.org")
        self.assertEqual(code, 450)
        self.assertIn(b"Try again later", text)
        self.assertEqual(client.rcpt("bob@example.org")[0], 250)
        code, text = client.data(BODY)
        self.assertEqual(code, 250)
        self.assertIn(b"queued as", text)
        client.quit()
        waitUntil(lambda: len(maildir(self.sink)) >= 1, DELIVERY_TIMEOUT, "the delivery")
        [stored] = maildir(self.sink)
        self.assertTrue(stored.endswith(b".a dotted line\r\nend\r\n"), stored)
        # Postfix logs the delivery once the sink's 250 has reached it.
        postfix = self.postfix
        waitUntil(lambda: postfix.count("status=") >= 1, DELIVERY_TIMEOUT, "Postfix's log line")
        self.assertEqual(postfix.count("status=sent"), 1, postfix.log)
        self.assertIn("to=<bob@example.org>", self.postfix.log)

    def test_traceAndHops(self) -> None:
        """
        Postfix stores the message with its own C{Received:} field first,
        then the relay's, then the message byte for byte (the fields Postfix
        adds to a header section without them after it); a message arriving
        with fifty-one C{Received:} fields is refused with 554 5.4.6 and
        Postfix delivers nothing of it.
        """
        client = self.client()
        self.assertEqual(client.sendmail(SENDER, ["bob@example.org"], BODY), {})
        waitUntil(lambda: len(maildir(self.sink)) >= 1, DELIVERY_TIMEOUT, "the delivery")
        [stored] = maildir(self.sink)
        ours = traceField(by=defaultHeloName()).search(stored)
        assert ours is not None, stored
        # Postfix's field, folded, is all that comes before.
        theirs = stored[: ours.start()]
        self.assertRegex(theirs, rb"\AReceived: from [^\r\n]*(\r\n[ \t][^\r\n]*)*\r\n\Z")
        self.assertIn(b"by postfix.test (Postfix) with ESMTPS id", theirs)
        header, body = BODY.split(b"\r\n\r\n", 1)
        rest = stored[ours.end() :]
        self.assertTrue(rest.startswith(header + b"\r\n"), rest)
        self.assertTrue(rest.endswith(b"\r\n\r\n" + body), rest)
        assertLoopsRefused(self, client)
        # The relay's next message, on a new session to Postfix, is
        # delivered after them: the refused ones never were.
        self.assertEqual(client.sendmail(SENDER, ["bob@example.org"], BODY), {})
        waitUntil(lambda: len(maildir(self.sink)) >= 2, DELIVERY_TIMEOUT, "the delivery")
        postfix = self.postfix
        waitUntil(lambda: postfix.count("status=") >= 2, DELIVERY_TIMEOUT, "Postfix's log line")
        self.assertEqual(postfix.count("status=sent"), 2, postfix.log)
        self.assertEqual(len(maildir(self.sink)), 2)
        self.assertFalse(any(b"Subject: loop" in m for m in maildir(self.sink)))
        # One line each says why, naming the session.
        line = "a mail loop: not passed to"
        waitUntil(lambda: line in self.front.output, DELIVERY_TIMEOUT, "the log line")
        self.assertEqual(self.front.output.count(line), 2, self.front.output)

    def test_sizeRefusedAtMail(self) -> None:
        """
        A SIZE above Postfix's message_size_limit is refused at MAIL with
        Postfix's 552.
        """
        client = self.client()
        code, text = client.mail(SENDER, ["SIZE=200000"])
        self.assertEqual(code, 552, text)
        self.assertIn(b"5.3.4", text)

    def test_binarymimeRefusedAtMail(self) -> None:
        """
        Postfix offers no BINARYMIME: BODY=BINARYMIME is refused at MAIL
        with 554 5.6.3, before any body.
        """
        client = self.client()
        code, text = client.mail(SENDER, ["BODY=BINARYMIME"])
        self.assertEqual((code, text[:5]), (554, b"5.6.3"))

    def test_bareNewline(self) -> None:
        """
        A bare LF the front keeps (C{--bare-newline legacy}) reaches
        Postfix unchanged, whose smtpd_forbid_bare_newline=reject refuses
        the message: the client gets Postfix's refusal, nothing is
        delivered, and nothing is altered on the way.
        """
        front = self.spawn(
            "--relay",
            f"localhost:{self.postfix.port}",
            "--relay-ca",
            self.ca.certificatePath,
            "--bare-newline",
            "legacy",
            maildir=False,
        )
        client = smtplib.SMTP("127.0.0.1", front.port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        client.ehlo("client.example")
        self.assertEqual(client.mail(SENDER)[0], 250)
        self.assertEqual(client.rcpt("bob@example.org")[0], 250)
        client.putcmd("DATA")
        self.assertEqual(client.getreply()[0], 354)
        client.send(b"Subject: bare\r\n\r\nline one\nline two\r\n.\r\n")
        code, text = client.getreply()
        self.assertEqual(code // 100, 5, text)
        self.assertIn(b"bare", text.lower())
        self.assertEqual(self.postfix.count("status=sent"), 0)

    def test_successReport(self) -> None:
        """
        NOTIFY=SUCCESS, ORCPT and ENVID are passed on: Postfix relays the
        message to a next hop without DSN and reports "relayed" to the
        sender (the report reaches the sink too).
        """
        client = self.client()
        self.assertEqual(client.mail(SENDER, ["ENVID=env42", "RET=HDRS"])[0], 250)
        code, text = client.rcpt(
            "bob@example.org", ["NOTIFY=SUCCESS", "ORCPT=rfc822;bob@example.org"]
        )
        self.assertEqual(code, 250, text)
        self.assertEqual(client.data(BODY)[0], 250)
        client.quit()
        waitUntil(lambda: len(maildir(self.sink)) >= 2, DELIVERY_TIMEOUT, "the report")
        reports = [m for m in maildir(self.sink) if b"multipart/report" in m]
        self.assertEqual(len(reports), 1, maildir(self.sink))
        blocks = report(reports[0])
        self.assertEqual(blocks[0]["Original-Envelope-Id"], "env42")
        self.assertIn("postfix.test", blocks[0]["Reporting-MTA"])
        self.assertEqual(blocks[1]["Action"], "relayed")
        self.assertIn("bob@example.org", blocks[1]["Original-Recipient"])

    def test_sessionsReused(self) -> None:
        """
        Five messages in a row use one TLS session to Postfix: its log shows
        one connection, with five MAIL commands.
        """
        for _ in range(5):
            client = self.client()
            self.assertEqual(client.sendmail(SENDER, ["bob@example.org"], BODY), {})
            client.quit()
        waitUntil(lambda: len(maildir(self.sink)) >= 5, DELIVERY_TIMEOUT, "the deliveries")
        # One connection besides the check that Postfix listens.
        self.assertEqual(self.postfix.count(": connect from localhost"), 2, self.postfix.log)
        self.assertEqual(
            self.postfix.count("TLS connection established from localhost"), 1, self.postfix.log
        )
        self.stopServer(self.front)
        # At shutdown the relay says QUIT.
        waitUntil(
            lambda: self.postfix.count("quit=1") == 1, DELIVERY_TIMEOUT, "the QUIT in the log"
        )
        self.assertIn("mail=5", self.postfix.log)


class PostfixAuthTests(ServerTestCase):
    """
    C{--relay-auth} against a Postfix that takes SASL from Dovecot and
    relays only for authenticated clients.
    """

    def setUp(self) -> None:
        Postfix.require(self)
        Dovecot.require(self)
        self.dovecot = Dovecot({"relayuser": ""}, passwords={"relayuser": "s3cret"})
        self.dovecot.start(self)
        self.sink = self.spawn("--no-reverse-lookup")
        self.ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        issued = self.ca.server("localhost")
        self.postfix = Postfix(
            relayhost=self.sink.port,
            certificate=(issued.certificatePath, issued.keyPath),
            settings={
                "smtpd_sasl_auth_enable": "yes",
                "smtpd_sasl_type": "dovecot",
                "smtpd_sasl_path": str(self.dovecot.authSocket),
                "smtpd_tls_auth_only": "yes",
                "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
                "smtpd_recipient_restrictions": "permit_sasl_authenticated, reject",
            },
        )
        self.postfix.start(self)

    def front(self, credentials: str) -> TwistdServer:
        return self.spawn(
            "--relay",
            f"localhost:{self.postfix.port}",
            "--relay-ca",
            self.ca.certificatePath,
            "--relay-auth",
            credentials,
            "--no-reverse-lookup",
            maildir=False,
        )

    def test_authenticated(self) -> None:
        """
        The relay authenticates over TLS and Postfix relays the message.
        """
        front = self.front("relayuser:s3cret")
        client = self.smtp(front.port)
        self.assertEqual(client.sendmail(SENDER, ["bob@example.org"], BODY), {})
        waitUntil(lambda: len(maildir(self.sink)) >= 1, DELIVERY_TIMEOUT, "the delivery")
        self.assertIn("sasl_username=relayuser", self.postfix.log)

    def test_wrongPassword(self) -> None:
        """
        Refused credentials are the relay's problem, not the message's:
        451 at MAIL, nothing relayed.
        """
        front = self.front("relayuser:wrong")
        client = self.smtp(front.port)
        client.ehlo("client.example")
        code, text = client.mail(SENDER)
        self.assertEqual(code, 451, text)
        self.assertEqual(self.postfix.count("mail="), 0)


class ResumptionTests(TestCase):
    """
    TLS session resumption with a real Postfix.
    """

    async def test_resumed(self) -> None:
        """
        A new session to Postfix offers the TLS session of the last one and
        Postfix resumes it (no full handshake).
        """
        Postfix.require(self)
        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        issued = ca.server("localhost")
        postfix = Postfix(relayhost=1, certificate=(issued.certificatePath, issued.keyPath))
        postfix.start(self)
        handler = RelayHandler(
            "localhost",
            postfix.port,
            tls="required",
            caCertificates=ca.certificatePath,
            heloName="relay.example",
            reactor=reactor,
        )
        self.addCleanup(handler.close)
        sessions = []
        for _ in range(3):
            session = await handler.openSession()
            sessions.append(session)
            await session.quit()
        self.assertEqual([s.secure for s in sessions], [True] * 3)
        self.assertEqual([s.resumed for s in sessions], [False, True, True])


class PlainPostfixTests(ServerTestCase):
    """
    A Postfix that offers no STARTTLS.
    """

    def setUp(self) -> None:
        Postfix.require(self)
        self.sink = self.spawn("--no-reverse-lookup")
        self.postfix = Postfix(relayhost=self.sink.port)
        self.postfix.start(self)

    def test_requireTLSRefusesPlaintext(self) -> None:
        """
        With C{--relay-require-tls} nothing is sent in plain text: 451 4.7.5
        at MAIL, and Postfix sees no MAIL.
        """
        front = self.spawn(
            "--relay", f"127.0.0.1:{self.postfix.port}", "--relay-require-tls", maildir=False
        )
        client = self.smtp(front.port)
        client.ehlo("client.example")
        code, text = client.mail(SENDER)
        self.assertEqual((code, text[:5]), (451, b"4.7.5"))
        self.assertEqual(self.postfix.count("mail="), 0)

    def test_requireTlsMessage(self) -> None:
        """
        A REQUIRETLS message (RFC 8689) is refused at MAIL with 550 5.7.10
        when the next hop offers no STARTTLS, even to a client that used
        TLS itself.
        """
        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        issued = ca.server("localhost")
        front = self.spawn(
            "--relay",
            f"127.0.0.1:{self.postfix.port}",
            "--tls-cert",
            issued.certificatePath,
            "--tls-key",
            issued.keyPath,
            maildir=False,
        )
        client = self.smtp(front.port)
        client.starttls()
        client.ehlo()
        code, text = client.mail(SENDER, ["REQUIRETLS"])
        self.assertEqual((code, text[:6]), (550, b"5.7.10"))
        # A message without it goes through in plain text.
        client.rset()
        self.assertEqual(client.sendmail(SENDER, ["bob@example.org"], BODY), {})


class DovecotTests(ServerTestCase):
    """
    C{--lmtp-to} a real Dovecot LMTP server.
    """

    def setUp(self) -> None:
        Dovecot.require(self)
        self.dovecot = Dovecot(
            {
                "alice": "",
                "bob": "",
                "carol": "userdb_quota_rule=*:storage=1B",
                "dan": "userdb_quota_rule=*:storage=1B",
            },
        )
        self.dovecot.start(self)

    def assertStored(self, user: str, count: int) -> None:
        """
        C{user}'s mailbox holds C{count} copies of L{BODY} (as Dovecot
        stores it: trace fields added, LF line ends).
        """
        stored = self.dovecot.mailbox(user)
        self.assertEqual(len(stored), count, stored)
        for message in stored:
            self.assertTrue(message.endswith(BODY.replace(b"\r\n", b"\n")), message)

    def front(self, *args: str) -> smtplib.SMTP:
        front = self.spawn("--lmtp-to", f"tcp:127.0.0.1:{self.dovecot.port}", *args, maildir=False)
        client = smtplib.SMTP("127.0.0.1", front.port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        client.ehlo("client.example")
        return client

    def test_unknownUserAtRcpt(self) -> None:
        """
        A user Dovecot does not know is refused at RCPT with its words;
        the message is stored once for the known one.
        """
        client = self.front()
        self.assertEqual(client.mail(SENDER)[0], 250)
        code, text = client.rcpt("nobody@example.org")
        self.assertEqual(code, 550)
        self.assertIn(b"doesn't exist", text)
        self.assertEqual(client.rcpt("bob@example.org")[0], 250)
        self.assertEqual(client.data(BODY)[0], 250)
        self.assertStored("bob", 1)

    def test_quotaAfterBodyNoDuplicate(self) -> None:
        """
        Dovecot stores the message for bob and refuses it for carol (over
        quota, 452) only after the body: the SMTP client gets 250, so it
        does not send again and bob has one copy; the sender, a local
        user, gets a "failed" DSN for carol through Dovecot.
        """
        client = self.front()
        self.assertEqual(
            client.sendmail("alice@example.com", ["bob@example.org", "carol@example.org"], BODY),
            {},
        )
        client.quit()
        self.assertStored("bob", 1)
        self.assertStored("carol", 0)
        waitUntil(lambda: self.dovecot.mailbox("alice"), DELIVERY_TIMEOUT, "the DSN")
        [dsn] = self.dovecot.mailbox("alice")
        blocks = report(dsn)
        self.assertEqual(blocks[1]["Final-Recipient"], "rfc822; carol@example.org")
        self.assertEqual(blocks[1]["Action"], "failed")
        self.assertEqual(blocks[1]["Status"], "4.2.2")

    def test_quotaAfterBodyAsNotifyAsks(self) -> None:
        """
        Of two recipients Dovecot refuses after the body, only the one whose
        C{NOTIFY} names C{FAILURE} is in the "failed" DSN the sender gets:
        C{NOTIFY=SUCCESS} asks for no report of a failure (RFC 3461 section
        4.1).
        """
        client = self.front()
        self.assertEqual(client.mail("alice@example.com")[0], 250)
        self.assertEqual(client.rcpt("bob@example.org")[0], 250)
        self.assertEqual(client.rcpt("carol@example.org", ["NOTIFY=SUCCESS"])[0], 250)
        self.assertEqual(client.rcpt("dan@example.org", ["NOTIFY=FAILURE"])[0], 250)
        self.assertEqual(client.data(BODY)[0], 250)
        client.quit()
        self.assertStored("bob", 1)
        waitUntil(lambda: self.dovecot.mailbox("alice"), DELIVERY_TIMEOUT, "the DSN")
        [dsn] = self.dovecot.mailbox("alice")
        blocks = report(dsn)
        self.assertEqual([b["Final-Recipient"] for b in blocks[1:]], ["rfc822; dan@example.org"])

    def test_allTemporaryIsRetried(self) -> None:
        """
        When the only recipient is refused temporarily after the body, the
        reply is that 4xx: nothing was stored, the client tries again.
        """
        client = self.front()
        with self.assertRaises(smtplib.SMTPDataError) as caught:
            client.sendmail(SENDER, ["carol@example.org"], BODY)
        self.assertEqual(caught.exception.smtp_code, 452)
        self.assertEqual(self.dovecot.mailbox("carol"), [])

    def test_lmtpFrontPerRecipient(self) -> None:
        """
        In LMTP mode the front passes Dovecot's reply for each recipient on.
        """
        front = self.spawn(
            "--lmtp", "--lmtp-to", f"tcp:127.0.0.1:{self.dovecot.port}", maildir=False
        )
        client = smtplib.LMTP("127.0.0.1", front.port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        client.ehlo("client.example")
        client.mail(SENDER)
        client.rcpt("bob@example.org")
        client.rcpt("carol@example.org")
        client.putcmd("DATA")
        self.assertEqual(client.getreply()[0], 354)
        client.send(BODY.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        self.assertEqual(client.getreply()[0], 250)
        code, text = client.getreply()
        self.assertEqual(code, 452)
        self.assertIn(b"Quota exceeded", text)

    def test_traceAndHops(self) -> None:
        """
        Dovecot stores the message with the front's C{Received:} field
        after its own trace fields, then the message byte for byte (LF line
        ends); a message arriving with fifty-one C{Received:} fields is
        refused with 554 5.4.6 and Dovecot stores nothing of it, the LMTP
        session being dropped before the body's end.
        """
        client = self.front("--no-reverse-lookup")
        self.assertEqual(client.sendmail(SENDER, ["bob@example.org"], BODY), {})
        [stored] = self.dovecot.mailbox("bob")
        ours = traceField(by=defaultHeloName(), newline=b"\n").search(stored)
        assert ours is not None, stored
        self.assertEqual(stored[ours.end() :], BODY.replace(b"\r\n", b"\n"))
        assertLoopsRefused(self, client)
        self.assertEqual(client.sendmail(SENDER, ["bob@example.org"], BODY), {})
        self.assertStored("bob", 2)

    def test_binarymimeRefusedAtMail(self) -> None:
        """
        Dovecot offers CHUNKING without BINARYMIME: a BODY=BINARYMIME
        message is refused at MAIL with 554 5.6.3, before any body.
        """
        client = self.front()
        code, text = client.mail(SENDER, ["BODY=BINARYMIME"])
        self.assertEqual((code, text[:5]), (554, b"5.6.3"))

    def test_sessionsReused(self) -> None:
        """
        Messages in a row use one LMTP session: Dovecot logs one connect.
        """
        client = self.front()
        # The check that Dovecot listens made one connection already.
        before = self.dovecot.log.count("Connect from")
        for _ in range(4):
            self.assertEqual(client.sendmail(SENDER, ["bob@example.org"], BODY), {})
        self.assertStored("bob", 4)
        self.assertEqual(self.dovecot.log.count("Connect from") - before, 1, self.dovecot.log)


class BinaryTests(ServerTestCase):
    """
    BINARYMIME byte for byte through C{--lmtp-to} to a twisted-smtpd in
    LMTP mode, which offers CHUNKING and BINARYMIME.
    """

    def test_binaryByteExact(self) -> None:
        """
        Bare CR, bare LF and NUL arrive unchanged, behind the front's
        C{Received:} field.
        """
        store = self.spawn("--lmtp", "--no-reverse-lookup")
        front = self.spawn(
            "--lmtp-to", f"tcp:127.0.0.1:{store.port}", "--no-reverse-lookup", maildir=False
        )
        body = b"Subject: bin\r\n\r\n\x00\x01\r\x02\n.\r\n\xff\r\n.\n\r"
        client = self.smtp(front.port)
        client.ehlo("client.example")
        self.assertEqual(client.mail(SENDER, ["BODY=BINARYMIME"])[0], 250)
        self.assertEqual(client.rcpt("bob@example.org")[0], 250)
        client.send(b"BDAT %d LAST\r\n" % len(body) + body)
        code, text = client.getreply()
        self.assertEqual(code, 250, text)
        [stored] = maildir(store)
        self.assertEqual(untraced(self, stored, by=defaultHeloName()), body)
