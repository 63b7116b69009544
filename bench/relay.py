"""
Relaying over STARTTLS to a real Postfix: messages per second and
milliseconds per message for C{twistd smtpd --relay}, before and after the
session pool, beside C{--maildir}.

    python bench/relay.py --messages 200 --before /tmp/relay-before

C{--before DIR} is an exported older checkout (C{git archive 2053bf8 | tar
-x -C DIR}) run for the "before" row.  Runs as root (Postfix).  A throwaway
Postfix on 127.0.0.1 with a certificate made here offers STARTTLS and
discards what it queues; the client (smtplib, in this process) sends the
messages one after the other on one connection, or on C{--concurrency}
connections at once.  Everything is bounded and local.
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from _benchlib import Server, machineLine  # noqa: E402

from tests.certs import CertificateAuthority  # noqa: E402
from tests.integration.nexthops import Postfix  # noqa: E402

BODY = b"Subject: bench\r\n\r\n" + b"0123456789abcdef" * 60 + b"\r\n"


class _Cleanups:
    """
    Stands for a test case: collects the cleanups L{Postfix.start} adds.
    """

    def __init__(self) -> None:
        self.cleanups: list[Any] = []

    def addCleanup(self, f: Any, *args: Any) -> None:
        self.cleanups.append((f, args))

    def fail(self, message: str) -> None:
        raise RuntimeError(message)

    def run(self) -> None:
        for f, args in reversed(self.cleanups):
            f(*args)


def twistd(source: str, *args: str) -> tuple[list[str], dict[str, str]]:
    argv = [
        sys.executable,
        "-c",
        "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
        "-n",
        "--pidfile=",
        "smtpd",
        "--listen",
        "tcp:{port}:interface=127.0.0.1",
        "--hostname",
        "localhost",
        "--no-reverse-lookup",
        *args,
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = source
    return argv, env


def send(port: int, count: int, concurrency: int) -> float:
    """
    Send C{count} messages; return the seconds it took.
    """
    errors: list[str] = []

    def worker(n: int) -> None:
        client = smtplib.SMTP("127.0.0.1", port, timeout=60)
        try:
            client.ehlo("bench.example")
            for _ in range(n):
                refused = client.sendmail("bench@example.com", ["rcpt@example.org"], BODY)
                if refused:
                    errors.append(repr(refused))
            client.quit()
        except smtplib.SMTPException as e:
            errors.append(str(e))

    share = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]
    threads = [threading.Thread(target=worker, args=(n,)) for n in share]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} errors, first: {errors[0]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--before", help="an exported older checkout for the 'before' row")
    options = parser.parse_args()
    checkout = os.path.dirname(HERE)
    work = tempfile.mkdtemp(prefix="relay-bench-")
    cleanups = _Cleanups()
    try:
        ca = CertificateAuthority(os.path.join(work, "ca"))
        issued = ca.server("localhost")
        postfix = Postfix(
            relayhost=1,
            certificate=(issued.certificatePath, issued.keyPath),
            settings={"relayhost": "", "default_transport": "discard"},
        )
        postfix.start(cleanups)
        relay = [
            "--quiet",
            "--relay",
            f"localhost:{postfix.port}",
            "--relay-ca",
            ca.certificatePath,
        ]
        rows: list[tuple[str, str, list[str]]] = []
        if options.before:
            rows.append(("--relay, before the pool", options.before, relay))
        rows += [
            (
                "--relay --relay-idle 0 (a session per message)",
                checkout,
                [*relay, "--relay-idle", "0"],
            ),
            ("--relay (pooled sessions)", checkout, relay),
            ("--maildir (no relay)", checkout, ["--quiet", "--maildir", os.path.join(work, "md")]),
        ]
        print(machineLine())
        print(f"{options.messages} messages of {len(BODY)} bytes, {options.concurrency} client(s)")
        print("| server | msgs/s | ms/msg | Postfix connections |")
        print("| --- | --- | --- | --- |")
        for name, source, args in rows:
            argv, env = twistd(source, *args)
            before = postfix.count(": connect from")
            with Server(name, argv, os.path.join(work, "logs"), env=env) as server:
                server.waitReady()
                send(server.port, 5, 1)  # warm up: imports, first session
                start = postfix.count(": connect from")
                elapsed = send(server.port, options.messages, options.concurrency)
                connections = postfix.count(": connect from") - start
            del before
            rate = options.messages / elapsed
            print(
                f"| `{name}` | {rate:.0f} | {1000 * elapsed / options.messages:.1f} | "
                f"{connections if 'relay' in name else '-'} |"
            )
    finally:
        cleanups.run()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
