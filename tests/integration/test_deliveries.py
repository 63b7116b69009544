# -*- test-case-name: tests.integration.test_deliveries -*-
"""
Every delivery of C{twistd smtpd}, driven through a real server process:
Maildir (default, per recipient, with trace headers), mbox, pipe, debug,
sink, a custom handler, relay to a second server and LMTP to a second
server in LMTP mode.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterator

from tests.certs import CertificateAuthority
from tests.integration import recordinghandler
from tests.integration.helpers import (
    RECIPIENT,
    SENDER,
    ServerTestCase,
    TwistdServer,
    connect,
    maildirContents,
    message,
    readReply,
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
        C{Maildir/domains/<domain>/<localpart>/}, lower-cased, by the time of
        the 250 (mail for the domain C{tmp} included, which stays out of the
        Maildir's own C{tmp/}); a mailbox name that cannot be a directory is
        refused at RCPT.
        """
        self.startServer("--maildir-per-recipient")
        client = self.smtp()
        body = message(2)
        self.assertEqual(
            client.sendmail(SENDER, ["Bob@Example.ORG", "carol@example.net", "victim@TMP"], body),
            {},
        )
        for parts in [("example.org", "bob"), ("example.net", "carol"), ("tmp", "victim")]:
            self.assertDelivered([body], os.path.join(self.maildir, "domains", *parts))
        self.assertEqual(os.listdir(os.path.join(self.maildir, "tmp")), [])
        self.assertEqual(maildirContents(self.maildir)[0], [])
        client.ehlo()
        self.assertEqual(client.mail(SENDER)[0], 250)
        for mailbox in ['"../etc"@example.org', '"a/b"@example.org', '".."@example.org']:
            code, text = client.docmd(f"RCPT TO:<{mailbox}>")
            self.assertEqual(code, 553, text)
        client.quit()
        self.assertEqual(sorted(os.listdir(self.maildir)), ["cur", "domains", "new", "tmp"])
        self.assertEqual(
            sorted(os.listdir(os.path.join(self.maildir, "domains"))),
            ["example.net", "example.org", "tmp"],
        )
        self.assertEqual(os.listdir(os.path.join(self.maildir, "domains", "example.org")), ["bob"])
        self.stopServer()

    def test_existingOnly(self) -> None:
        """
        With C{--maildir-existing-only}, RCPT to a recipient whose Maildir
        the operator made is accepted and the message lands there; any other
        is refused with 550 5.1.1, no directory is made for it, and its
        refusal is logged.
        """
        server = self.startServer("--maildir-per-recipient", "--maildir-existing-only")
        bob = os.path.join(self.maildir, "domains", "example.org", "bob")
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(bob, sub))
        client = self.smtp()
        body = message(3)
        refused = client.sendmail(SENDER, ["bob@example.org", "carol@example.org"], body)
        self.assertEqual(
            refused, {"carol@example.org": (550, b"5.1.1 Recipient address rejected: User unknown")}
        )
        client.quit()
        self.assertDelivered([body], bob)
        self.assertEqual(os.listdir(os.path.join(self.maildir, "domains", "example.org")), ["bob"])
        server.waitForLog("reject: RCPT from")
        self.stopServer()

    def test_refusalsSpreadOverAKeptConnection(self) -> None:
        """
        A client that keeps its connection for 30 messages, each with one
        recipient refused as unknown, delivers all of them: an accepted
        message forgives the refusals before it, as Postfix does, so the
        30 refusals never reach the 20 errors that end a session.
        """
        self.startServer("--maildir-per-recipient", "--maildir-existing-only")
        bob = os.path.join(self.maildir, "domains", "example.org", "bob")
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(bob, sub))
        client = self.smtp()
        bodies = [message(n) for n in range(30)]
        for body in bodies:
            refused = client.sendmail(SENDER, ["carol@example.org", "bob@example.org"], body)
            self.assertEqual(list(refused), ["carol@example.org"])
        client.quit()
        self.assertDelivered(bodies, bob)
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
        C{--debug} prints each message with its envelope on standard output,
        naming the session with the id of its log lines.
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
        session = re.search(r"\] (\S+) connect from ", output)
        assert session is not None, output
        self.assertIn(f"session: {session.group(1)}\n", output)
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
        self.assertDelivered([body], os.path.join(target.directory, "Maildir"), forwarded=True)
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
        self.assertDelivered([body], maildir, forwarded=True, recipient=RECIPIENT)
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
        self.assertDelivered([body], os.path.join(target.directory, "Maildir"), forwarded=True)
        self.stopServer()
        self.stopServer(target)


#: The size of the message that L{BoundedMemoryTests} sends, in bytes: 200
#: MiB (about 35 seconds for the four deliveries on two busy cores); set
#: C{TWISTED_SMTPD_BIG_MESSAGE} to another number of bytes for a quicker run.
BIG_MESSAGE = int(os.environ.get("TWISTED_SMTPD_BIG_MESSAGE", str(200 << 20)))
#: How much the server's peak resident memory may grow while it receives and
#: stores that message.
RSS_GROWTH_LIMIT = 20 << 20
_BLOCK_LINES = 8192


def memoryOf(pid: int) -> dict[str, int]:
    """
    C{VmHWM} (peak resident memory) and C{VmRSS} of process C{pid}, in
    bytes, from C{/proc/<pid>/status}.
    """
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                values[name] = int(value.split()[0]) * 1024
    return values


class BigMessage:
    """
    A large message generated block by block, never held whole: blocks of
    CRLF lines (none begins with a dot or C{From }), each numbered so that
    no two are alike, and the SHA-256 of the bytes stored in a Maildir (as
    sent) and in an mbox (LF line ends, plus the blank separator line).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.raw = hashlib.sha256()
        self.mbox = hashlib.sha256()

    def blocks(self) -> Iterator[bytes]:
        header = b"Subject: big\r\nMessage-ID: <big@example.com>\r\n\r\n"
        yield self._take(header)
        sent = len(header)
        number = 0
        filler = b" bounded memory proof " + b"x" * 40 + b"\r\n"
        while sent < self.size:
            block = b"".join(b"%012d" % (number + i) + filler for i in range(_BLOCK_LINES))
            number += _BLOCK_LINES
            block = block[: self.size - sent]
            if not block.endswith(b"\r\n"):
                block = block[:-2] + b"\r\n"
            sent += len(block)
            yield self._take(block)
        self.mbox.update(b"\n")

    def _take(self, block: bytes) -> bytes:
        self.raw.update(block)
        self.mbox.update(block.replace(b"\r\n", b"\n"))
        return block


def fileDigest(path: str, skipFirstLine: bool = False) -> str:
    """
    The SHA-256 of the file at C{path}, read a block at a time.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if skipFirstLine:
            f.readline()
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class BoundedMemoryTests(ServerTestCase):
    """
    Every disk delivery keeps memory bounded: a message of L{BIG_MESSAGE}
    bytes (200 MiB unless C{TWISTED_SMTPD_BIG_MESSAGE} says otherwise)
    grows the server's peak resident memory by less than 20 MiB and is
    stored byte for byte.  The stored copies are removed after each test.
    """

    def makeDirectory(self) -> str:
        directory = super().makeDirectory()
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    def send(self, server: TwistdServer, recipient: str) -> tuple[BigMessage, int]:
        """
        Send a small message (to warm the server up), then the big one, in
        one session.

        @return: The message and the server's peak memory growth during it.
        """
        with connect(server.port) as sock, sock.makefile("rb") as replies:
            self.assertEqual(readReply(replies)[0], 220)
            for command, code in [
                (b"EHLO client.example", 250),
                (b"MAIL FROM:<sender@example.com>", 250),
                (f"RCPT TO:<{recipient}>".encode(), 250),
                (b"DATA", 354),
            ]:
                sock.sendall(command + b"\r\n")
                self.assertEqual(readReply(replies)[0], code, command)
            sock.sendall(b"Subject: warm-up\r\n\r\nsmall\r\n.\r\n")
            self.assertEqual(readReply(replies)[0], 250)
            before = memoryOf(server.pid)
            big = BigMessage(BIG_MESSAGE)
            for command, code in [
                (b"MAIL FROM:<sender@example.com>", 250),
                (f"RCPT TO:<{recipient}>".encode(), 250),
                (b"DATA", 354),
            ]:
                sock.sendall(command + b"\r\n")
                self.assertEqual(readReply(replies)[0], code, command)
            for block in big.blocks():
                sock.sendall(block)
            sock.sendall(b".\r\n")
            code, text = readReply(replies)
            self.assertEqual(code, 250, text)
            after = memoryOf(server.pid)
            sock.sendall(b"QUIT\r\n")
            readReply(replies)
        growth = after["VmHWM"] - before["VmHWM"]
        self.assertLess(growth, RSS_GROWTH_LIMIT, (before, after))
        return big, growth

    def bigServer(self, *args: str, maildir: bool = False) -> TwistdServer:
        return self.startServer("--size", "0", "--quiet", *args, maildir=maildir)

    def test_maildirBoundedMemory(self) -> None:
        """
        C{--maildir}: bounded memory, the file in C{new/} exact.
        """
        server = self.bigServer(maildir=True)
        big, growth = self.send(server, RECIPIENT)
        new = os.path.join(self.maildir, "new")
        names = sorted(os.listdir(new), key=lambda n: os.path.getsize(os.path.join(new, n)))
        self.assertEqual(fileDigest(os.path.join(new, names[-1])), big.raw.hexdigest())
        self.stopServer()

    def test_maildirPerRecipientBoundedMemory(self) -> None:
        """
        C{--maildir-per-recipient}: bounded memory, the recipient's copy
        exact.
        """
        server = self.bigServer("--maildir-per-recipient", maildir=True)
        big, growth = self.send(server, "bob@example.org")
        new = os.path.join(self.maildir, "domains", "example.org", "bob", "new")
        names = sorted(os.listdir(new), key=lambda n: os.path.getsize(os.path.join(new, n)))
        self.assertEqual(fileDigest(os.path.join(new, names[-1])), big.raw.hexdigest())
        self.stopServer()

    def test_mboxBoundedMemory(self) -> None:
        """
        C{--mbox}: bounded memory, the appended message exact in mboxrd
        form after its C{From } line.
        """
        path = os.path.join(self.makeDirectory(), "big.mbox")
        server = self.bigServer("--mbox", path)
        big, growth = self.send(server, RECIPIENT)
        with open(path, "rb") as f:
            warmUp = f.readline() + f.readline() + f.readline() + f.readline() + f.readline()
            offset = len(warmUp)
        self.assertEqual(warmUp.split(b"\n", 1)[1], b"Subject: warm-up\n\nsmall\n\n")
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            f.seek(offset)
            self.assertTrue(f.readline().startswith(b"From sender@example.com "))
            while block := f.read(1 << 20):
                digest.update(block)
        self.assertEqual(digest.hexdigest(), big.mbox.hexdigest())
        self.stopServer()

    def test_pipeBoundedMemory(self) -> None:
        """
        C{--pipe} with a command writing its input to a file: bounded
        memory, the file exact.
        """
        out = self.makeDirectory()
        server = self.bigServer("--pipe", f"sh -c 'cat > {out}/msg.$$'")
        big, growth = self.send(server, RECIPIENT)
        names = sorted(os.listdir(out), key=lambda n: os.path.getsize(os.path.join(out, n)))
        self.assertEqual(len(names), 2)
        self.assertEqual(fileDigest(os.path.join(out, names[-1])), big.raw.hexdigest())
        self.stopServer()
