"""
DATA throughput of one connection on loopback.

    python bench/data_throughput.py [--mib 100] [--reps 3] [--maildir]
                                    [--servers twisted-smtpd,aiosmtpd,twisted.mail]

Starts each server as a fresh process on 127.0.0.1, opens one connection,
sends EHLO, MAIL, RCPT and DATA, then one message of C{--mib} MiB (CRLF lines
of about C{--line} bytes, 1000 by default, one in eight starting with a
period, dot-stuffed by the client) with C{sendall} in 256 KiB chunks, and waits for the reply to the
final C{.}.  It prints the rate (MB/s, 10^6 bytes of message per second, from
the first body byte sent to the reply) and the server's CPU seconds per MiB
(user + system, from C{/proc/PID/stat} around the body), and how many times
twisted-smtpd's rate each row's is, in the same run (above 1: twisted-smtpd
is faster).

Server and client are pinned to different vCPUs when there are two or more.
C{--maildir} adds a row for twisted-smtpd's durable Maildir delivery (into a
folder under /tmp, emptied after every message).  The aiosmtpd row runs without
aiosmtpd's 32 MiB default size limit, and twisted-smtpd with C{--size 0}.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

from _benchlib import (
    Server,
    cpus,
    emptyMaildir,
    machineLine,
    median,
    peerAvailable,
    serverCommands,
    versions,
)

MIB = 1 << 20
CHUNK = 256 * 1024


def makeBlock(size: int = MIB, width: int = 1000) -> bytes:
    """
    About C{size} bytes of dot-stuffed message text: CRLF lines of C{width}
    bytes or up to two fewer, every eighth line starting with a period (sent
    as two).
    """
    lines = []
    total = 0
    i = 0
    while total < size:
        text = (b"%07d " % i) + b"abcdefghijklmnopqrstuvwxyz0123456789" * (width // 36 + 1)
        text = text[: width - 2 - (i % 3)]
        if i % 8 == 0:
            text = b".." + text[1:]  # a line ". ..." after dot-stuffing
        line = text + b"\r\n"
        lines.append(line)
        total += len(line)
        i += 1
    return b"".join(lines)


def readReply(sock: socket.socket, buffer: bytearray, deadline: float) -> bytes:
    """
    Read one complete (possibly multi-line) reply; return its last line.
    """
    while True:
        start = 0
        while True:
            end = buffer.find(b"\r\n", start)
            if end < 0:
                break
            line = bytes(buffer[start:end])
            if len(line) < 4 or line[3:4] != b"-":
                del buffer[: end + 2]
                return line
            start = end + 2
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by the server")
        buffer += data


def expect(sock: socket.socket, buffer: bytearray, code: bytes, deadline: float) -> bytes:
    line = readReply(sock, buffer, deadline)
    if not line.startswith(code):
        raise RuntimeError(f"expected {code.decode()}, got {line[:200]!r}")
    return line


def sendMessage(server: Server, block: bytes, blocks: int, timeout: float) -> dict[str, float]:
    """
    One message of C{blocks} copies of C{block} over one connection.
    """
    deadline = time.monotonic() + timeout
    buffer = bytearray()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        expect(sock, buffer, b"220", deadline)
        sock.sendall(b"EHLO bench.example\r\n")
        expect(sock, buffer, b"250", deadline)
        sock.sendall(b"MAIL FROM:<sender@bench.example>\r\n")
        expect(sock, buffer, b"250", deadline)
        sock.sendall(b"RCPT TO:<rcpt@bench.example>\r\n")
        expect(sock, buffer, b"250", deadline)
        sock.sendall(b"DATA\r\n")
        expect(sock, buffer, b"354", deadline)
        view = memoryview(block)
        sock.settimeout(max(1.0, deadline - time.monotonic()))
        cpu0 = server.cpu()
        t0 = time.monotonic()
        for _ in range(blocks):
            for offset in range(0, len(block), CHUNK):
                sock.sendall(view[offset : offset + CHUNK])
            if time.monotonic() > deadline:
                raise TimeoutError("message not sent in time")
        sock.sendall(b".\r\n")
        final = readReply(sock, buffer, deadline)
        wall = time.monotonic() - t0
        cpu = server.cpu() - cpu0
        sock.sendall(b"QUIT\r\n")
    if not final.startswith(b"250"):
        raise RuntimeError(f"message refused: {final[:200]!r}")
    size = len(block) * blocks
    return {"wall": wall, "cpu": cpu, "bytes": size}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=100, help="message size in MiB (default 100)")
    parser.add_argument("--reps", type=int, default=3, help="messages per server (default 3)")
    parser.add_argument(
        "--line", type=int, default=1000, help="line length with CRLF (default 1000; 10 to 1000)"
    )
    parser.add_argument(
        "--servers",
        default="twisted-smtpd,aiosmtpd,twisted.mail",
        help="comma list among twisted-smtpd, aiosmtpd, twisted.mail",
    )
    parser.add_argument("--maildir", action="store_true", help="add twisted-smtpd --maildir")
    parser.add_argument("--timeout", type=float, default=300.0, help="per message, seconds")
    parser.add_argument("--logs", default="/tmp/twisted-smtpd-bench-logs")
    args = parser.parse_args(argv)

    known = serverCommands()
    known["aiosmtpd"] = [*known["aiosmtpd"], "0"]  # no size limit
    for name in ("twisted-smtpd", "twisted-smtpd --maildir"):
        # Its default limit is 10,240,000 bytes; the command ends in options.
        if known[name][0] != "sh":
            known[name] = [*known[name], "--size", "0"]
    rows: list[tuple[str, list[str]]] = []
    for name in [n.strip() for n in args.servers.split(",") if n.strip()]:
        if name not in known:
            parser.error(f"unknown server {name!r}")
        if not peerAvailable(name):
            print(f"skipping {name}: not importable by the server Python (run bench/run.sh)")
            continue
        rows.append((name, known[name]))
    if args.maildir and not any(name == "twisted-smtpd --maildir" for name, _ in rows):
        rows.append(("twisted-smtpd --maildir", known["twisted-smtpd --maildir"]))

    vcpus = cpus()
    serverCpu, clientCpu = (vcpus[0], vcpus[1]) if len(vcpus) >= 2 else (None, None)
    if clientCpu is not None:
        os.sched_setaffinity(0, {clientCpu})
    if not 10 <= args.line <= 1000:
        parser.error("--line must be between 10 and 1000")
    block = makeBlock(MIB, args.line)
    blocks = args.mib
    print(
        f"DATA throughput, one connection, {blocks} MiB message, {args.line}-byte lines: "
        + machineLine()
    )
    print("  " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in rows}
    for rep in range(args.reps):
        for name, command in rows:
            server = Server(name, command, args.logs, cpu=serverCpu)
            try:
                server.waitReady()
                sendMessage(server, block, 2, 60)  # warm-up
                r = sendMessage(server, block, blocks, args.timeout)
                results[name].append(r)
                print(
                    f"  rep {rep + 1} {name:24} {r['bytes'] / r['wall'] / 1e6:8.1f} MB/s"
                    f"  server CPU {r['cpu'] / (r['bytes'] / MIB) * 1000:6.2f} ms/MiB",
                    flush=True,
                )
            except (OSError, RuntimeError) as e:
                print(f"  rep {rep + 1} {name:24} FAILED {e}", flush=True)
            finally:
                server.stop()
                emptyMaildir()

    print()
    head = f"| server | MB/s (median of {args.reps}) | min - max | server CPU ms/MiB |"
    print(head + " twisted-smtpd ÷ server |")
    print("|---|---:|---:|---:|---:|")
    base = median(r["bytes"] / r["wall"] / 1e6 for r in results.get("twisted-smtpd", []))
    for name, _ in rows:
        rates = [r["bytes"] / r["wall"] / 1e6 for r in results[name]]
        if not rates:
            print(f"| {name} | failed | | | |")
            continue
        rate = median(rates)
        cpu = median(r["cpu"] / (r["bytes"] / MIB) * 1000 for r in results[name])
        ratio = f"{base / rate:.2f}" if base and rate else "-"
        print(
            f"| {name} | {rate:.1f} | {min(rates):.1f} - {max(rates):.1f} | {cpu:.2f} | {ratio} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
