# -*- test-case-name: tests.test_readme -*-
"""
The Python examples of C{README.md} run as shown: the library example as a
program sent mail with C{smtplib}, the testing example in this process.

(C{tests/test_handlercheck.py} type-checks the library example;
C{tests/test_docs.py} runs the examples of C{docs/}.)
"""

from __future__ import annotations

import contextlib
import os
import re
import smtplib
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.error import ProcessExitedAlready
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.test_examples import CLIENT_TIMEOUT, START_TIMEOUT, ExampleProcess, inThread

PROJECT = Path(__file__).resolve().parents[1]

#: Runs the program given as its argument with C{SMTPServer.listen} sending
#: the README's C{tcp:2525} to an ephemeral port of 127.0.0.1 and saying
#: which, as C{examples/} programs do.
_LAUNCHER = """\
import sys
from twisted_smtpd import SMTPServer

listen = SMTPServer.listen

def ephemeral(self, description):
    assert description == "tcp:2525", description
    def said(port):
        print(f"listening on port {port.getHost().port}", flush=True)
        return port
    return listen(self, "tcp:0:interface=127.0.0.1").addCallback(said)

SMTPServer.listen = ephemeral
path = sys.argv[1]
with open(path) as f:
    code = compile(f.read(), path, "exec")
exec(code, {"__name__": "__main__"})
"""


def pythonBlocks() -> list[str]:
    """
    The C{```python} blocks of C{README.md}, in order.
    """
    text = (PROJECT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


class LibraryExampleTests(TestCase):
    @defer.inlineCallbacks
    def test_runsAsShown(self) -> Any:
        """
        The library example serves: a recipient of example.com gets the
        handler's C{250 2.0.0 OK: thanks} and the handler prints the message's
        size; any other recipient is refused with 550 5.1.1.
        """
        program = Path(self.mktemp()).resolve()
        program.parent.mkdir(parents=True, exist_ok=True)
        program.write_text(pythonBlocks()[0])
        process = ExampleProcess()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        transport = reactor.spawnProcess(
            process,
            sys.executable,
            [sys.executable, "-c", _LAUNCHER, str(program)],
            env=env,
            path=str(program.parent),
        )

        def stop() -> defer.Deferred[Any]:
            with contextlib.suppress(ProcessExitedAlready):
                transport.signalProcess("TERM")
            return process.ended.addTimeout(START_TIMEOUT, reactor)

        self.addCleanup(stop)
        yield process.started.addTimeout(START_TIMEOUT, reactor)
        body = b"Subject: readme\r\n\r\nHello.\r\n"

        def send() -> tuple[dict[str, tuple[int, bytes]], tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", process.port, timeout=CLIENT_TIMEOUT) as client:
                client.ehlo()
                client.mail("sender@example.org")
                refused = {}
                for recipient in ("alice@example.com", "mallory@example.org"):
                    code, text = client.rcpt(recipient)
                    if code != 250:
                        refused[recipient] = (code, text)
                return refused, client.data(body)

        refused, reply = yield inThread(send)
        self.assertEqual(list(refused), ["mallory@example.org"])
        self.assertEqual(refused["mallory@example.org"], (550, b"5.1.1 No such user here"))
        self.assertEqual(reply, (250, b"2.0.0 OK: thanks"))
        yield stop()
        self.assertIn(f" sent {len(body)} bytes".encode(), process.output)
        self.assertIn(b"sender@example.org", process.output)


class TestingExampleTests(SynchronousTestCase):
    def test_runsAsShown(self) -> None:
        """
        The examples after the first (catching mail in your own tests) run
        in this process, their C{assert}s holding.
        """
        blocks = pythonBlocks()
        self.assertGreater(len(blocks), 1)
        for block in blocks[1:]:
            self.assertIn("assert ", block)
            exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
