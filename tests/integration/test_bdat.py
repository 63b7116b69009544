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
