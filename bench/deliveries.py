"""
What a delivery costs per message under a W2-like load (many 1 KiB messages
over a few kept connections, Postfix's C{smtp-source}): C{--sink},
C{--maildir}, C{--amqp} into a throwaway RabbitMQ broker and C{--webhook}
to a local C{twisted.web} receiver, all on 127.0.0.1.

    .venv/bin/python bench/deliveries.py [--messages 2000] [--sessions 8]
                                         [--rows sink,maildir,amqp,webhook]

Runs with the project's own virtualenv, whose Python also runs the servers
(they need pika; C{bash bench/run.sh deliveries} uses C{.venv}),
and RabbitMQ from Debian's rabbitmq-server package for the C{amqp} row.  Each
row gets a fresh server; the table gives messages per second, wall and
server CPU time per message, and the CPU of the broker or receiver per
message.  After each run the messages are counted where they went (the
queue's depth, the receiver's count, the Maildir), so a row whose
deliveries went missing fails instead of reporting a figure.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _benchlib import (
    HERE,
    MAILDIR,
    Server,
    cpuSeconds,
    emptyMaildir,
    freePort,
    machineLine,
    oursCommand,
    settleAfterRemoval,
    smtpSource,
)

LOGS = "/tmp/twisted-smtpd-bench-logs"


def run(name: str, argv: list[str], args: argparse.Namespace, peer: int | None) -> dict[str, float]:
    """
    One warm-up and one timed run against a fresh server.
    """
    load = ["-d", "-s", str(args.sessions), "-l", "1024"]
    with Server(name, argv, LOGS) as server:
        server.waitReady(60)
        warm = smtpSource(server.port, load, args.sessions * 10)
        if not warm.ok:
            raise RuntimeError(f"{name}: warm-up failed: {warm.output}")
        p0 = cpuSeconds(peer) if peer else 0.0
        timed = smtpSource(server.port, load, args.messages, server=server, timeout=600)
        p1 = cpuSeconds(peer) if peer else 0.0
        if not timed.ok:
            raise RuntimeError(f"{name}: run failed: {timed.output}")
    n = args.messages
    return {
        "rate": n / timed.wall,
        "wall": timed.wall / n * 1e6,
        "server": timed.serverCpu / n * 1e6,
        "peer": (p1 - p0) / n * 1e6,
        "total": n + args.sessions * 10,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--rows", default="sink,maildir,amqp,webhook")
    args = parser.parse_args(argv)
    # The servers need pika: run them with this interpreter.
    os.environ.setdefault("OURS_PYTHON", sys.executable)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    quiet = ("--quiet",)
    results: list[tuple[str, dict[str, float]]] = []
    print(machineLine())
    for row in rows:
        if row == "sink":
            results.append(("--sink", run("deliveries-sink", oursCommand(extra=quiet), args, None)))
        elif row == "maildir":
            emptyMaildir()
            settleAfterRemoval()
            argv_ = oursCommand(("--maildir", MAILDIR), quiet)
            result = run("deliveries-maildir", argv_, args, None)
            stored = len(os.listdir(os.path.join(MAILDIR, "new")))
            emptyMaildir()
            if stored != result["total"]:
                raise RuntimeError(f"maildir: {stored} stored, {result['total']} sent")
            results.append(("--maildir", result))
        elif row == "amqp":
            from tests.integration.rabbitmq import RabbitMQ

            broker = RabbitMQ(tempfile.mkdtemp(prefix="twisted-smtpd-bench-rabbitmq-"))
            try:
                broker.start()
                assert broker.process is not None
                queue = "bench"
                argv_ = oursCommand(("--amqp", broker.url, "--amqp-queue", queue), quiet)
                result = run("deliveries-amqp", argv_, args, broker.process.pid)
                depth = broker.depth(queue)
            finally:
                broker.shutdown()
            if depth != result["total"]:
                raise RuntimeError(f"amqp: {depth} in the queue, {result['total']} sent")
            results.append(("--amqp (RabbitMQ, confirms)", result))
        elif row == "webhook":
            port = freePort()
            countFile = tempfile.mktemp(prefix="twisted-smtpd-bench-webhook-")
            receiver = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "_webhookreceiver.py"), str(port), countFile],
                start_new_session=True,
            )
            try:
                time.sleep(1.0)
                url = f"http://127.0.0.1:{port}/hook"
                argv_ = oursCommand(("--webhook", url, "--webhook-secret", "bench"), quiet)
                result = run("deliveries-webhook", argv_, args, receiver.pid)
            finally:
                os.killpg(receiver.pid, signal.SIGTERM)
                receiver.wait(30)
            with open(countFile) as f:
                received = int(f.read().split()[0])
            os.unlink(countFile)
            if received != result["total"]:
                raise RuntimeError(f"webhook: {received} received, {result['total']} sent")
            results.append(("--webhook (twisted.web receiver, signed)", result))
        else:
            raise SystemExit(f"unknown row {row!r}")
    print(
        f"W2-like: {args.messages} messages of 1 KiB over {args.sessions} kept sessions "
        "(smtp-source -d), --quiet"
    )
    print("| delivery | msgs/s | wall µs/msg | server CPU µs/msg | broker/receiver CPU µs/msg |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results:
        peer = f"{r['peer']:.0f}" if r["peer"] else "-"
        print(f"| {name} | {r['rate']:.0f} | {r['wall']:.0f} | {r['server']:.0f} | {peer} |")


if __name__ == "__main__":
    main()
