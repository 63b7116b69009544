"""
What a durable Maildir delivery costs per message on this file system,
without the network: the floor under the C{--maildir} rows of
C{bench/run.sh peers}.

    bash bench/run.sh maildirfloor [--messages 20000] [--batch 48]
                                   [--size 1100] [--sink-us N]

Pinned to one vCPU as the servers of C{peers} are, in fresh directories
below the benchmarks' Maildir location (L{MAILDIR}, so on the same file
system), it measures the thread CPU per message of two loops over the same
batches of messages of C{--size} bytes:

  - C{raw}: only the system calls a committed message needs, in the
    committer's order: an unnamed file (C{O_TMPFILE}; a named one in
    C{tmp/} where that does not work) created in C{tmp/} and written; one
    C{syncfs(2)} per batch (an C{fsync} per file where C{syncfs} is
    missing or the batch holds one message); the file linked (renamed) into C{new/} and closed; one
    C{fsync} of C{new/} per batch;
  - C{committer}: the handler's own commit cycles
    (C{twisted_smtpd.handlers._maildirdisk._commitCycle}), one per batch,
    each also making the names durable as it does when no message waits
    for the next cycle.

A batch of 48 is what the committer takes per cycle in W2, where 50
clients finish their messages together.  With C{--sink-us N}, the CPU per
message of C{twisted-smtpd} (C{--sink}) in a W2 run, it also prints the
highest share of C{--sink}'s rate that C{--maildir} could reach with the
server never idle and its reactor thread costing no more than C{--sink}'s:
N / (N + the loop's CPU per message).

Run it when no other benchmark runs.  It waits out the file system's
memory of earlier removals first, as the Maildir rows do, and removes its
files at the end (after which the Maildir rows wait in turn).
C{TWISTED_SMTPD_SOURCE} chooses the source of the C{committer} loop.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

from _benchlib import MAILDIR, cpus, emptyMaildir, machineLine, settleAfterRemoval

from twisted_smtpd.handlers import _maildirdisk
from twisted_smtpd.handlers._maildirdelivery import Delivery
from twisted_smtpd.handlers._maildirdirs import Directory, linkUnnamed
from twisted_smtpd.handlers._maildirnames import _uniqueName
from twisted_smtpd.handlers.maildir import MaildirHandler

#: The steps of the C{raw} loop, in order.
STEPS = ("create and write", "flush data", "link and close", "flush new/")


def _makeMaildir(path: str) -> tuple[str, str]:
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
    return os.path.join(path, "tmp"), os.path.join(path, "new")


def rawLoop(path: str, messages: int, batch: int, body: bytes) -> dict[str, list[float]]:
    """
    The system calls of C{messages} committed messages, C{batch} at a time.

    @return: For each step, the thread CPU seconds of each batch; and under
        C{"wall data"} and C{"wall new/"}, the wall seconds of each flush.
    """
    tmp, new = _makeMaildir(path)
    unnamed = _maildirdisk.unnamedFilesWork(tmp)
    syncfs = _maildirdisk._syncfs
    times: dict[str, list[float]] = {step: [] for step in (*STEPS, "wall data", "wall new/")}
    newDirectory = Directory(new)
    newDirectory.users = 1
    newFd = newDirectory.fd
    assert newFd is not None
    clock = time.thread_time
    try:
        for first in range(0, messages, batch):
            count = min(batch, messages - first)
            names = [f"m{first + i}" for i in range(count)]
            t0 = clock()
            fds = []
            for name in names:
                if unnamed:
                    fd = os.open(tmp, os.O_WRONLY | _maildirdisk._O_TMPFILE | os.O_CLOEXEC, 0o600)
                else:
                    fd = os.open(
                        os.path.join(tmp, name),
                        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                        0o600,
                    )
                os.write(fd, body)
                fds.append(fd)
            t1, w1 = clock(), time.perf_counter()
            # As the committer: one syncfs for more than one file.
            if syncfs is not None and count > 1:
                syncfs(fds[0])
            else:
                for fd in fds:
                    os.fsync(fd)
            t2, w2 = clock(), time.perf_counter()
            for name, fd in zip(names, fds, strict=True):
                if unnamed:
                    linkUnnamed(fd, newDirectory, name)
                else:
                    os.rename(os.path.join(tmp, name), os.path.join(new, name))
                os.close(fd)
            t3, w3 = clock(), time.perf_counter()
            os.fsync(newFd)
            t4, w4 = clock(), time.perf_counter()
            for step, seconds in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                times[step].append(seconds)
            times["wall data"].append(w2 - w1)
            times["wall new/"].append(w4 - w3)
    finally:
        newDirectory.release()
    return times


def committerLoop(path: str, messages: int, batch: int, body: bytes) -> list[float]:
    """
    The handler's commit cycles for C{messages} messages, C{batch} per
    cycle, as its pool thread runs them when no message waits for the next
    cycle.

    @return: The thread CPU seconds of each cycle.
    """
    handler = MaildirHandler(path)
    host = socket.gethostname()
    clock = time.thread_time
    times = []
    for first in range(0, messages, batch):
        deliveries = []
        for _ in range(min(batch, messages - first)):
            delivery = Delivery(handler, _uniqueName(host))
            delivery.chunks.append(body)
            deliveries.append(delivery)
        t0 = clock()
        results, _, settled = _maildirdisk._commitCycle(deliveries, [], handler.path, lambda: False)
        times.append(clock() - t0)
        if not settled or any(result is not None for result in results):
            raise RuntimeError(f"a commit cycle failed: {results}")
    return times


def perMessage(seconds: list[float], messages: int) -> float:
    return 1e6 * sum(seconds) / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--size", type=int, default=1100, help="bytes per message, CRLF included")
    parser.add_argument("--sink-us", type=float, default=None, metavar="N")
    args = parser.parse_args()
    if args.messages < 1 or args.batch < 1 or args.size < 2:
        parser.error("--messages and --batch must be positive, --size at least 2")
    os.sched_setaffinity(0, {cpus()[0]})
    settleAfterRemoval()
    base = os.path.join(MAILDIR, f"floor-{os.getpid()}")
    body = b"x" * (args.size - 2) + b"\r\n"
    print(machineLine())
    print(
        f"{args.messages} messages of {args.size} bytes, {args.batch} per flush, "
        f"in {base} (syncfs: {'yes' if _maildirdisk._syncfs is not None else 'no'})",
        flush=True,
    )
    try:
        raw = rawLoop(os.path.join(base, "raw"), args.messages, args.batch, body)
        committer = committerLoop(os.path.join(base, "committer"), args.messages, args.batch, body)
    finally:
        emptyMaildir(base)
    rawTotal = 0.0
    print("\n| step | thread CPU µs per message |\n|---|---:|")
    for step in STEPS:
        us = perMessage(raw[step], args.messages)
        rawTotal += us
        print(f"| raw: {step} | {us:.1f} |")
    print(f"| raw: all | {rawTotal:.1f} |")
    committerTotal = perMessage(committer, args.messages)
    print(f"| committer (`_commitCycle`) | {committerTotal:.1f} |")
    for label in ("data", "new/"):
        walls = raw[f"wall {label}"]
        print(
            f"\nflush of {label}: median {1e6 * statistics.median(walls):.0f} µs wall per flush"
            f" ({1e6 * statistics.median(walls) / args.batch:.1f} µs per message)"
        )
    if args.sink_us:
        sink = args.sink_us
        print(
            f"\nwith --sink at {sink:g} µs per message, --maildir could reach at most"
            f" {100 * sink / (sink + rawTotal):.1f}% of its rate (raw),"
            f" {100 * sink / (sink + committerTotal):.1f}% (committer)"
        )


if __name__ == "__main__":
    main()
