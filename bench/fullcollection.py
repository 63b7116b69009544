"""
What Python's garbage collector costs a C{twistd smtpd}: how long one full
collection holds up a started server, before and after it settles its
start-up heap, and what the collector does during W2.

    bash bench/run.sh fullcollection [--rounds 20] [DELIVERY OPTION ...]
    bash bench/run.sh fullcollection --load 20000 [DELIVERY OPTION ...]

Without C{--load}: builds and starts, in this process, the service of
C{twistd smtpd} (by default with C{--maildir} into a temporary directory,
its listener on a free port of 127.0.0.1) from the plugin's options, times
C{gc.collect()} (the fastest of C{--rounds}), calls L{settleStartupHeap
<twisted_smtpd._twistd.daemon.settleStartupHeap>} as the running server
does once its reactor runs, and times it again.

With C{--load N}: runs C{twistd -n smtpd} (default C{--maildir}) pinned to
one vCPU, as C{bench/run.sh peers} runs W2, with a C{gc.callbacks} hook
that times every collection; sends 3,000 messages of W2 (C{smtp-source -d
-s 50 -l 1024}, pinned to another vCPU) to warm it up, then C{N}, and
prints the collections of each generation during those C{N} and their
time.  C{TWISTED_SMTPD_SOURCE} chooses the source, as for every benchmark
here.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import tempfile
import time
from typing import Any

from _benchlib import Server, cpus, emptyMaildir, oursCommand, serverEnv, smtpSource

#: Run in the server before C{twistd}: times every collection, and writes
#: the totals to C{$FULLCOLLECTION_STATS} on SIGUSR2.
_HOOK = """
import gc, json, os, signal, time
_totals = {"collections": [0, 0, 0], "seconds": [0.0, 0.0, 0.0]}
_started = [0.0]
def _timed(phase, info):
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _totals["collections"][info["generation"]] += 1
        _totals["seconds"][info["generation"]] += time.perf_counter() - _started[0]
def _write(signum, frame):
    path = os.environ["FULLCOLLECTION_STATS"]
    with open(path + ".new", "w") as f:
        json.dump({**_totals, "frozen": gc.get_freeze_count()}, f)
    os.rename(path + ".new", path)
gc.callbacks.append(_timed)
signal.signal(signal.SIGUSR2, _write)
"""

W2 = ["-d", "-s", "50", "-l", "1024"]


def _fullCollection(rounds: int) -> float:
    """
    The fastest of C{rounds} full collections, in milliseconds.
    """
    fastest = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        gc.collect()
        fastest = min(fastest, time.perf_counter() - start)
    return fastest * 1000


def atStart(rounds: int, delivery: list[str]) -> None:
    """
    Time a full collection of a started server, before and after it settles
    its heap.
    """
    from twisted_smtpd._twistd import daemon, tap

    with tempfile.TemporaryDirectory() as directory:
        options = tap.Options()
        options.parseOptions(
            [
                *(delivery or ["--maildir", f"{directory}/Maildir"]),
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ]
        )
        service = tap.makeService(options)
        service.startService()
        tracked = len(gc.get_objects())
        before = _fullCollection(rounds)
        daemon.settleStartupHeap()
        after = _fullCollection(rounds)
        print(
            f"{tracked} objects tracked at start, {gc.get_freeze_count()} frozen; "
            f"a full collection: {before:.2f} ms before, {after:.4f} ms after"
        )
        service.stopService()


def _totals(server: Server, path: str) -> dict[str, Any]:
    """
    The collector's totals so far in C{server}: C{collections} and
    C{seconds} per generation, and the number of objects C{frozen}.
    """
    if os.path.exists(path):
        os.unlink(path)
    os.kill(server.pid, signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError("the server wrote no collector totals")
        time.sleep(0.05)
    with open(path) as f:
        totals: dict[str, Any] = json.load(f)
    return totals


def underLoad(messages: int, delivery: list[str]) -> None:
    """
    Count and time the collections of a running server during W2.
    """
    argv = oursCommand(delivery or ["--maildir", "{maildir}"])
    if argv[:2] == ["sh", "-c"]:
        raise SystemExit("--load runs twistd itself: unset OURS")
    argv[2] = _HOOK + argv[2]
    vcpus = cpus()
    serverCpu, sourceCpu = (vcpus[0], vcpus[1]) if len(vcpus) > 1 else (None, None)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "totals.json")
        env = {**serverEnv(), "FULLCOLLECTION_STATS": path}
        with Server("twisted-smtpd", argv, directory, cpu=serverCpu, env=env) as server:
            server.waitReady()
            warm = smtpSource(server.port, W2, 3000, cpu=sourceCpu)
            if not warm.ok:
                raise SystemExit(f"smtp-source failed: {warm.output}")
            before = _totals(server, path)
            run = smtpSource(server.port, W2, messages, cpu=sourceCpu, server=server, timeout=600)
            if not run.ok:
                raise SystemExit(f"smtp-source failed: {run.output}")
            after = _totals(server, path)
        # What a Maildir delivery wrote, removed as bench/run.sh peers does.
        emptyMaildir(server.maildir)
    cpu = run.serverCpu / messages * 1e6
    print(
        f"W2 {' '.join(delivery) or '--maildir'}: {messages} messages, "
        f"{messages / run.wall:.0f} msgs/s, server CPU {cpu:.0f} µs/msg; "
        f"{after['frozen']} objects frozen"
    )
    for generation, name in enumerate(("young (0)", "middle (1)", "full (2)")):
        count = after["collections"][generation] - before["collections"][generation]
        seconds = after["seconds"][generation] - before["seconds"][generation]
        each = f", {seconds / count * 1000:.2f} ms each" if count else ""
        print(
            f"  {name:10s} collections: {count:4d}, {seconds * 1000:7.1f} ms{each}, "
            f"{seconds / messages * 1e6:.2f} µs per message"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0].strip())
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--load", type=int, default=0, metavar="N", help="messages of W2")
    # Everything else is passed on to twistd smtpd (default: --maildir).
    args, delivery = parser.parse_known_args()
    if args.load:
        underLoad(args.load, delivery)
    else:
        atStart(args.rounds, delivery)


if __name__ == "__main__":
    main()
