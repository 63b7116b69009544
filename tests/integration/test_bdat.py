"""
CHUNKING (RFC 3030) over a real loopback connection: pipelined BDAT
chunks with binary content.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd.testing import MessageRecorder, listenForTests


def replies(f: Any, count: int) -> list[bytes]:
    """
    Read C{count} whole replies (multi-line ones joined).
    """
    out = []
    for _ in range(count):
        reply = b""
        while True:
            line = f.readline()
            reply += line
            if line[3:4] != b"-":
                break
        out.append(reply)
    return out


class BdatTests(TestCase):
    @inlineCallbacks
    def test_pipelinedChunks(self) -> Any:
        """
        A 3 MiB binary message in pipelined BDAT chunks arrives whole; every
        chunk gets its 250 and the LAST one the message's.
        """
        recorder = MessageRecorder()
        server = yield listenForTests(recorder)
        self.addCleanup(server.close)
        body = os.urandom(3 * 1024 * 1024)
        chunks = [body[i : i + 1000000] for i in range(0, len(body), 1000000)]

        def client() -> list[bytes]:
            with socket.create_connection((server.host, server.port), timeout=30) as s:
                f = s.makefile("rb")
                f.readline()
                s.sendall(b"EHLO c\r\n")
                ehlo = replies(f, 1)[0]
                assert b"CHUNKING" in ehlo and b"BINARYMIME" in ehlo, ehlo
                request = (
                    b"MAIL FROM:<a@example.com> BODY=BINARYMIME\r\nRCPT TO:<b@example.com>\r\n"
                )
                for index, chunk in enumerate(chunks):
                    last = b" LAST" if index == len(chunks) - 1 else b""
                    request += b"BDAT %d%s\r\n" % (len(chunk), last) + chunk
                s.sendall(request + b"QUIT\r\n")
                return replies(f, 2 + len(chunks) + 1)

        got = yield deferToThread(client)
        self.assertEqual(got[0][:3], b"250")
        self.assertEqual(got[1][:3], b"250")
        self.assertEqual([r[:3] for r in got[2:-1]], [b"250"] * len(chunks))
        self.assertIn(b"OK: recorded as message 1", got[-2])
        self.assertEqual(got[-1][:3], b"221")
        self.assertEqual(recorder.messages[0].data, body)

    @inlineCallbacks
    def test_refusedBdatChunkIsDiscarded(self) -> Any:
        """
        Over a real socket, in SMTP and LMTP: a BDAT refused for want of
        MAIL, for want of RCPT, after LAST and with 502, each carrying a
        whole second transaction in its chunk sent in small writes, gets its
        refusal; the smuggled transaction is never run, the pipelined NOOP
        behind it is, and only the real message is delivered.
        """
        smuggled = (
            b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\n"
            b"DATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n"
        )
        refused = b"BDAT %d LAST\r\n" % len(smuggled) + smuggled + b"NOOP\r\n"
        for lmtp in (False, True):
            for disabled in ((), ("BDAT",)):
                recorder = MessageRecorder()
                options = ServerOptions(
                    name="mx.test.invalid",
                    disableReverseLookup=True,
                    lmtp=lmtp,
                    disabledCommands=disabled,
                )
                server = yield listenForTests(recorder, options)
                self.addCleanup(server.close)
                hello = b"LHLO c\r\n" if lmtp else b"EHLO c\r\n"
                mail = b"MAIL FROM:<a@example.com>\r\n"
                rcpt = b"RCPT TO:<b@example.com>\r\n"
                if disabled:
                    steps = [mail + rcpt + refused]
                else:
                    steps = [refused, mail + refused, rcpt + b"BDAT 2 LAST\r\nhi" + refused]

                address = (server.host, server.port)

                def client(
                    steps: list[bytes] = steps, hello: bytes = hello, address: Any = address
                ) -> list[bytes]:
                    with socket.create_connection(address, timeout=30) as s:
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        f = s.makefile("rb")
                        f.readline()
                        s.sendall(hello)
                        ehlo = replies(f, 1)[0]
                        got = [ehlo]
                        for step in steps:
                            for i in range(0, len(step), 7):
                                s.sendall(step[i : i + 7])
                            # One reply per command line, none for the chunk.
                            got += replies(f, step.count(b"\r\n") - smuggled.count(b"\r\n"))
                        s.sendall(b"QUIT\r\n")
                        got += replies(f, 1)
                        return got

                got = yield deferToThread(client)
                codes = [reply[:3] for reply in got[1:]]
                if disabled:
                    self.assertNotIn(b"CHUNKING", got[0])
                    expected = [b"250", b"250", b"502", b"250", b"221"]
                else:
                    expected = [b"503", b"250", b"250", b"503", b"250"]
                    expected += [b"250", b"250", b"503", b"250", b"221"]
                self.assertEqual(codes, expected, (lmtp, disabled, got))
                delivered = [] if disabled else [b"hi"]
                self.assertEqual([m.data for m in recorder.messages], delivered)

    @inlineCallbacks
    def test_chunkPastSizeLimit(self) -> Any:
        """
        Over a real socket: pipelined chunks of a message past the size
        limit, each holding command text, get 250 until the chunk that
        passes the limit, 552 5.3.4 for it and for every chunk after it; no
        chunk runs as a command, nothing is delivered, and the next message
        in the same connection is.
        """
        recorder = MessageRecorder()
        options = ServerOptions(name="mx.test.invalid", disableReverseLookup=True, size=100)
        server = yield listenForTests(recorder, options)
        self.addCleanup(server.close)
        smuggled = b"RSET\r\nMAIL FROM:<evil@example.com>\r\n"
        envelope = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
        request = envelope + b"BDAT 90\r\n" + b"x" * 90
        request += b"BDAT %d\r\n" % len(smuggled) + smuggled
        request += b"BDAT 60\r\n" + b"y" * 60
        request += b"BDAT %d LAST\r\n" % len(smuggled) + smuggled
        request += envelope + b"BDAT 2 LAST\r\nhiQUIT\r\n"

        def client() -> list[bytes]:
            with socket.create_connection((server.host, server.port), timeout=30) as s:
                f = s.makefile("rb")
                f.readline()
                s.sendall(b"EHLO c\r\n")
                replies(f, 1)
                for i in range(0, len(request), 11):
                    s.sendall(request[i : i + 11])
                return replies(f, 10)

        got = yield deferToThread(client)
        self.assertEqual(
            [r[:9] for r in got],
            [b"250 2.1.0", b"250 2.1.5", b"250 2.0.0"]
            + [b"552 5.3.4"] * 3
            + [b"250 2.1.0", b"250 2.1.5", b"250 2.0.0", b"221 2.0.0"],
            got,
        )
        self.assertIn(b"message exceeds", got[4])
        self.assertIn(b"chunk discarded", got[5])
        self.assertEqual([m.data for m in recorder.messages], [b"hi"])
