"""
CPU cost of the SMTP protocol code alone, in memory: twisted-smtpd against
Twisted's C{twisted.mail.smtp}, per message and per connection.

    bash bench/run.sh protocol [--messages 20000] [--connections 5000]
                               [--rounds 5] [--cpu N]

No socket, no reactor, no kernel: each server's protocol is fed the bytes a
non-pipelining client sends, as C{smtp-source} sends them (HELO, then each
command and the 1 KiB body on their own), over Twisted's C{StringTransport},
and the CPU time of the process (C{time.process_time}) is divided by the
work done:

  - message: one session sends MAIL, RCPT, DATA and a 1 KiB body again and
    again (W1 and W2 per message);
  - connection: a session per message, from the connection to QUIT and the
    end of the connection, while another session stays open (W4 per
    connection).

The servers, each in a fresh process pinned to one vCPU, taking turns
within every round:

  - C{twisted-smtpd}: the configuration of C{twistd -n smtpd --sink} (the
    options C{twistd smtpd} builds, its session log lines written by the
    buffered writer into a file, the reverse lookup answered by the hosts
    file);
  - C{twisted-smtpd --quiet}: the same without the session log lines;
  - C{twisted.mail}: C{twisted.mail.smtp.ESMTP} with a delivery that
    discards every message, as the side-by-side benchmark runs it.

What a real run adds to these figures, the kernel's work for the loopback
connection and Twisted's reactor (waking up, reading, writing, accepting and
closing), is the same for both Twisted servers, but for the two
C{epoll_ctl} calls per reply that C{twisted.mail} makes more: the
difference between a server's CPU per message in C{bench/run.sh peers} and
its figure here is that fixed cost.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _benchlib import REPO, cpus, machineLine, pinTo, serverEnv

SERVERS = ("twisted-smtpd", "twisted-smtpd --quiet", "twisted.mail")
MODES = ("message", "connection")

#: The 1 KiB message C{smtp-source -l 1024} sends after DATA (four header
#: lines, then lines of 80 octets), with the final dot.
BODY = (
    b"From: <sender@example.com>\r\nTo: <recipient@example.com>\r\n"
    b"Date: Thu,  3 Dec 2026 14:11:17 +0000 (UTC)\r\n"
    b"Message-Id: <5b99.0003.0000@client.example.com>\r\n\r\n"
    + b"".join(b"%d" % (n % 10) + b"X" * 77 + b"\r\n" for n in range(1, 13))
    + b"X" * 64
    + b"\r\n.\r\n"
)
MESSAGE = (
    b"MAIL FROM:<sender@example.com>\r\n",
    b"RCPT TO:<recipient@example.com>\r\n",
    b"DATA\r\n",
    BODY,
)
PEER = ("127.0.0.1", 40000)
HOST = ("127.0.0.1", 25)


def _oursFactory(quiet: bool, logDirectory: str) -> Any:
    # In the child only, which has twisted-smtpd on its path: a reactor
    # whose timer never fires, so the writer writes whenever its buffer
    # fills.
    from logcost import _RunningReactor
    from twisted.internet.task import Clock

    from twisted_smtpd._serving.logging import SessionLogger
    from twisted_smtpd._serving.logwriter import BufferedLogWriter
    from twisted_smtpd._serving.server import SMTPServerFactory
    from twisted_smtpd._twistd.tap import Options

    config = Options()
    config.parseOptions(["--sink", "--listen", "tcp:0:interface=127.0.0.1"])
    options = config["serverOptions"]
    factory = SMTPServerFactory(config["handler"], options, reactor=Clock())
    if not quiet:
        out = open(os.path.join(logDirectory, "smtpd.log"), "w")  # noqa: SIM115
        writer = BufferedLogWriter(out, reactor=_RunningReactor())
        factory.addObserver(SessionLogger(options.ignoredHosts, writer))
    return factory


def _twistedMailFactory() -> Any:
    # The sink the side-by-side benchmark runs, with logging off as there.
    from twisted.logger import globalLogBeginner

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
    from twisted_mail_sink import Factory, discard

    globalLogBeginner.beginLoggingTo([discard], redirectStandardIO=False)
    return Factory()


def _connect(factory: Any) -> tuple[Any, Any]:
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    peer = IPv4Address("TCP", *PEER)
    protocol = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", *HOST))
    protocol.makeConnection(transport)
    return protocol, transport


def _perMessage(factory: Any) -> Callable[[int], None]:
    protocol, transport = _connect(factory)
    protocol.dataReceived(b"HELO client.example.com\r\n")

    def run(count: int) -> None:
        received = protocol.dataReceived
        for n in range(count):
            for data in MESSAGE:
                received(data)
            if n % 64 == 0:
                if b"250 " not in transport.value()[-200:]:
                    raise RuntimeError(f"no 250 reply: {transport.value()[-200:]!r}")
                transport.clear()

    return run


def _perConnection(factory: Any) -> Callable[[int], None]:
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    done = Failure(ConnectionDone())
    # One more session stays open, as in a server that is never idle:
    # the first connection to a server without any would start its
    # deadline timer, and the last to go would stop it.
    _connect(factory)

    def run(count: int) -> None:
        for _ in range(count):
            protocol, transport = _connect(factory)
            received = protocol.dataReceived
            received(b"HELO client.example.com\r\n")
            for data in MESSAGE:
                received(data)
            received(b"QUIT\r\n")
            if not transport.value().startswith(b"220 ") or b"\r\n221 " not in transport.value():
                raise RuntimeError(f"unexpected session: {transport.value()!r}")
            protocol.connectionLost(done)

    return run


#: Sessions or messages run before the measured ones, in every child.
WARM_UP = 300


def child(server: str, mode: str, count: int) -> float:
    """
    Measure one server and mode in this process: L{WARM_UP} rounds first,
    then C{count}.

    @return: CPU microseconds per message or per connection.
    """
    with tempfile.TemporaryDirectory() as directory:
        if server == "twisted.mail":
            factory = _twistedMailFactory()
        else:
            factory = _oursFactory(server.endswith("--quiet"), directory)
        run = (_perMessage if mode == "message" else _perConnection)(factory)
        run(WARM_UP)
        start = time.process_time()
        run(count)
        return (time.process_time() - start) / count * 1e6


def _childCommand(server: str, mode: str, count: int) -> list[str]:
    return [sys.executable, __file__, "--child", server, mode, str(count)]


def _instructions(server: str, mode: str, count: int, env: dict[str, str]) -> float:
    """
    Instructions per message or connection, counted by Valgrind's
    callgrind: the difference between a run of C{count} and one of a
    quarter of it, divided by the difference in work, so that start-up and
    warm-up cancel out.  Hash randomisation is off, so that two runs of the
    same code count the same.
    """
    totals = []
    counts = (max(1, count // 4), count)
    for n in counts:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                *_childCommand(server, mode, n),
            ],
            check=True,
            capture_output=True,
            text=True,
            env={**env, "PYTHONHASHSEED": "0"},
            timeout=3600,
        )
        match = re.search(r"Collected : (\d+)", done.stderr)
        if match is None:
            raise RuntimeError(f"no instruction count from valgrind: {done.stderr[-300:]}")
        totals.append(int(match.group(1)))
    return (totals[1] - totals[0]) / (counts[1] - counts[0])


def _ratios(results: dict[tuple[str, str], list[float]], counted: bool) -> None:
    for mode in MODES:
        base = results[("twisted.mail", mode)]
        for server in SERVERS[:2]:
            ours = results[(server, mode)]
            ratio = f"{statistics.median(base) / statistics.median(ours):.2f}x"
            if not counted:
                sameRound = statistics.median(b / o for b, o in zip(base, ours, strict=True))
                ratio += f" by the medians, {sameRound:.2f}x same-round"
            print(f"{mode:10s} {server:22s} twisted.mail / it: {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--messages", type=int, default=None, help="20000 (2000 counting instructions)"
    )
    parser.add_argument(
        "--connections", type=int, default=None, help="5000 (700 counting instructions)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=None, help="the vCPU to pin to (the last)")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions with Valgrind instead of timing (one round, noise-free)",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("SERVER", "MODE", "COUNT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        server, mode, count = args.child
        print(f"{child(server, mode, int(count)):.3f}")
        return
    counted = args.instructions
    counts = {
        "message": args.messages or (2000 if counted else 20000),
        "connection": args.connections or (700 if counted else 5000),
    }
    cpu = args.cpu if args.cpu is not None else cpus()[-1]
    env = serverEnv()
    print(machineLine())
    print(f"twisted-smtpd from {REPO}")
    results: dict[tuple[str, str], list[float]] = {}
    for round in range(1 if counted else args.rounds):
        for mode in MODES:
            for server in SERVERS:
                if counted:
                    value = _instructions(server, mode, counts[mode], env)
                    shown = f"{value:9.0f} instructions"
                else:
                    out = subprocess.run(
                        _childCommand(server, mode, counts[mode]),
                        check=True,
                        capture_output=True,
                        text=True,
                        env=env,
                        preexec_fn=pinTo(cpu),
                        timeout=600,
                    ).stdout
                    value = float(out.split()[-1])
                    shown = f"{value:7.1f} µs"
                results.setdefault((server, mode), []).append(value)
                print(f"round {round + 1} {mode:10s} {server:22s} {shown}", flush=True)
    print()
    if counted:
        print("Instructions (callgrind), per message and per connection")
    else:
        print(f"CPU µs, medians of {args.rounds} rounds (range); pinned to vCPU {cpu}")
    print(f"{'server':22s} {'per message':>24s} {'per connection':>24s}")
    for server in SERVERS:
        cells = []
        for mode in MODES:
            values = results[(server, mode)]
            if counted:
                cells.append(f"{values[0]:.0f}")
            else:
                cells.append(
                    f"{statistics.median(values):6.1f} ({min(values):.1f}-{max(values):.1f})"
                )
        print(f"{server:22s} {cells[0]:>24s} {cells[1]:>24s}")
    print()
    _ratios(results, counted)


if __name__ == "__main__":
    main()
