"""
The cost of PIPELINING, EHLO, STARTTLS and AUTH, with a client of its own
(asyncio, one process, N concurrent connections): smtp-source sends HELO and
never pipelines, so these are measured here.

    python bench/pipelining.py [--conns 20] [--seconds 5] [--reps 3]
                               [--modes connect,helo,ehlo,lockstep,pipelined,starttls,
                                        fulltls,resumed,tlsnoops,auth]
                               [--servers twisted-smtpd,aiosmtpd,twisted.mail]

Modes (each a fresh server per repetition, 1 s of warm-up, then C{--seconds}
of load):

  - C{connect}: greeting, QUIT.  C{helo}: greeting, HELO, QUIT.  C{ehlo}:
    greeting, EHLO, QUIT.  The difference between them is the cost of the
    greeting command; a connection each.
  - C{lockstep}: on connections kept open, MAIL, RCPT and DATA each wait for
    their reply, then a 1 KiB message.  C{pipelined}: MAIL, RCPT and DATA in
    one write (RFC 2920), then the message once 354 came.  Messages.
  - C{starttls}: greeting, EHLO, STARTTLS, the TLS handshake, EHLO, QUIT (TLS
    1.3, an EC P-256 certificate: the one given with C{--tls-cert} when the
    plugin has that flag, else the server's self-signed fallback).
  - C{fulltls}: as C{starttls}, with the blocking client of C{resumed}
    offering no session: every handshake is a full one.  The baseline of
    C{resumed}, with the same client.
  - C{resumed}: as C{starttls}, but each client connection offers the TLS
    session of its previous one (Python's C{ssl} with C{session=}), so that
    the server resumes it from its session ticket; the share of handshakes
    that resumed is printed (for C{fulltls} too: none).
  - C{tlsnoops}: on connections kept open after STARTTLS, runs of 1000
    NOOPs in one write, each run's replies read before the next: the cost
    of pipelined replies through TLS.  NOOPs.
  - C{auth}: greeting, EHLO, AUTH PLAIN with the credentials in the command,
    QUIT, over plain text (C{--allow-insecure-auth}).

For each it prints operations per second, the server's CPU per operation
(user + system from C{/proc}), and the client's CPU share (near 100% means
the client, not the server, set the pace: then read the CPU column).  STARTTLS
and AUTH run against twisted-smtpd only.  Traffic goes to 127.0.0.1 only;
every run is bounded by time and by C{--max-ops}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

from _benchlib import (
    HERE,
    Server,
    cpus,
    machineLine,
    median,
    oursCommand,
    peerAvailable,
    serverCommands,
    serverEnv,
    venvPython,
)

MODES = (
    "connect",
    "helo",
    "ehlo",
    "lockstep",
    "pipelined",
    "starttls",
    "fulltls",
    "resumed",
    "tlsnoops",
    "auth",
)
OURS_ONLY = {"starttls", "fulltls", "resumed", "tlsnoops", "auth"}
NOOP_RUN = 1000
NOOP_REPLY = b"250 2.0.0 OK\r\n"
PER_MESSAGE = {"lockstep", "pipelined"}
USER, PASSWORD = "bench", "bench-password"

BODY = (
    b"From: <sender@bench.example>\r\nTo: <rcpt@bench.example>\r\nSubject: bench\r\n\r\n"
    + b"x" * 76
    + b"\r\n"
)
BODY = BODY + (b"y" * 76 + b"\r\n") * ((1024 - len(BODY)) // 78) + b".\r\n"


class Reader:
    """
    Reads whole replies from an asyncio stream.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    async def reply(self) -> bytes:
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line[3:4] != b"-":
                return line

    async def expect(self, code: bytes) -> None:
        line = await self.reply()
        if not line.startswith(code):
            raise RuntimeError(f"expected {code.decode()}, got {line[:120]!r}")


async def openSession(port: int, greeting: bytes | None):  # type: ignore[no-untyped-def]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = Reader(reader)
    await replies.expect(b"220")
    if greeting is not None:
        writer.write(greeting)
        await replies.expect(b"250")
    return reader, writer, replies


async def close(writer: asyncio.StreamWriter, replies: Reader | None) -> None:
    if replies is not None:
        writer.write(b"QUIT\r\n")
        await replies.expect(b"221")
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()


async def oneConnection(mode: str, port: int, tls: ssl.SSLContext) -> None:
    """
    One connection of a per-connection mode, from connect to close.
    """
    greeting = {"connect": None, "helo": b"HELO bench.example\r\n"}.get(
        mode, b"EHLO bench.example\r\n"
    )
    _, writer, replies = await openSession(port, greeting)
    if mode == "starttls":
        writer.write(b"STARTTLS\r\n")
        await replies.expect(b"220")
        await writer.start_tls(tls, server_hostname="localhost")
        writer.write(b"EHLO bench.example\r\n")
        await replies.expect(b"250")
    elif mode == "auth":
        token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
        writer.write(b"AUTH PLAIN " + token + b"\r\n")
        await replies.expect(b"235")
    await close(writer, replies)


def resumedConnection(port: int, tls: ssl.SSLContext, previous: list[ssl.SSLSession]) -> bool:
    """
    One C{resumed} or C{fulltls} connection with blocking sockets (asyncio's
    C{start_tls} cannot offer a session): greeting, EHLO, STARTTLS, the
    handshake offering C{previous[0]} if any, EHLO, QUIT.  Keep the new
    session in C{previous}.

    @return: Whether the handshake resumed the session offered.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as plain:
        reader = plain.makefile("rb")

        def expect(code: bytes) -> None:
            while True:
                line = reader.readline(1024)
                if not line.startswith(code):
                    raise RuntimeError(f"expected {code.decode()}, got {line[:120]!r}")
                if line[3:4] != b"-":
                    return

        expect(b"220")
        plain.sendall(b"EHLO bench.example\r\n")
        expect(b"250")
        plain.sendall(b"STARTTLS\r\n")
        expect(b"220")
        reader.close()
        offered = previous[0] if previous else None
        with tls.wrap_socket(plain, server_hostname="localhost", session=offered) as secure:
            reader = secure.makefile("rb")
            secure.sendall(b"EHLO bench.example\r\n")
            expect(b"250")
            secure.sendall(b"QUIT\r\n")
            expect(b"221")
            reader.close()
            # session_reused is None only on a socket with no TLS
            # connection (never connected, or unwrapped).
            resumed = bool(secure.session_reused)
            if secure.session is not None:
                previous[:] = [secure.session]
    return resumed


async def messages(mode: str, port: int, deadline: float, budget: list[int]) -> int:
    """
    Send messages over one kept connection until the deadline or the budget.
    """
    _, writer, replies = await openSession(port, b"EHLO bench.example\r\n")
    envelope = (b"MAIL FROM:<sender@bench.example>\r\n", b"RCPT TO:<rcpt@bench.example>\r\n")
    done = 0
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        if mode == "pipelined":
            writer.write(b"".join(envelope) + b"DATA\r\n")
            await replies.expect(b"250")
            await replies.expect(b"250")
            await replies.expect(b"354")
        else:
            for command in envelope:
                writer.write(command)
                await replies.expect(b"250")
            writer.write(b"DATA\r\n")
            await replies.expect(b"354")
        writer.write(BODY)
        await replies.expect(b"250")
        done += 1
    await close(writer, replies)
    return done


async def noops(port: int, tls: ssl.SSLContext, deadline: float, budget: list[int]) -> int:
    """
    Send runs of L{NOOP_RUN} pipelined NOOPs over one connection after
    STARTTLS until the deadline or the budget (in NOOPs).
    """
    reader, writer, replies = await openSession(port, b"EHLO bench.example\r\n")
    writer.write(b"STARTTLS\r\n")
    await replies.expect(b"220")
    await writer.start_tls(tls, server_hostname="localhost")
    writer.write(b"EHLO bench.example\r\n")
    await replies.expect(b"250")
    done = 0
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= NOOP_RUN
        writer.write(b"NOOP\r\n" * NOOP_RUN)
        got = await reader.readexactly(len(NOOP_REPLY) * NOOP_RUN)
        if got != NOOP_REPLY * NOOP_RUN:
            raise RuntimeError(f"unexpected NOOP replies: {got[:120]!r}")
        done += NOOP_RUN
    await close(writer, replies)
    return done


async def load(mode: str, port: int, conns: int, seconds: float, maxOps: int) -> int:
    """
    Run C{conns} workers for C{seconds}; return the operations completed.
    """
    deadline = time.monotonic() + seconds
    budget = [maxOps]
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE

    async def connector() -> int:
        done = 0
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            await oneConnection(mode, port, tls)
            done += 1
        return done

    def resumer() -> int:
        done = 0
        previous: list[ssl.SSLSession] = []
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            if mode == "fulltls":
                previous.clear()
            resumed[0 if resumedConnection(port, tls, previous) else 1] += 1
            done += 1
        return done

    resumed = [0, 0]
    if mode in PER_MESSAGE:
        workers = [messages(mode, port, deadline, budget) for _ in range(conns)]
    elif mode == "tlsnoops":
        workers = [noops(port, tls, deadline, budget) for _ in range(conns)]
    elif mode in ("fulltls", "resumed"):
        workers = [asyncio.to_thread(resumer) for _ in range(conns)]
    else:
        workers = [connector() for _ in range(conns)]
    results = await asyncio.wait_for(asyncio.gather(*workers), seconds + 30)
    if mode in ("fulltls", "resumed"):
        print(f"  resumed {resumed[0]} of {sum(resumed)} handshakes", flush=True)
    return sum(results)


def measure(server: Server, mode: str, conns: int, seconds: float, maxOps: int) -> dict[str, float]:
    asyncio.run(load(mode, server.port, conns, 1.0, maxOps))  # warm-up
    c0, t0 = server.cpu(), time.monotonic()
    own0 = os.times()
    ops = asyncio.run(load(mode, server.port, conns, seconds, maxOps))
    wall = time.monotonic() - t0
    own1 = os.times()
    cpu = server.cpu() - c0
    client = (own1.user - own0.user) + (own1.system - own0.system)
    return {"ops": ops, "wall": wall, "cpu": cpu, "client": client}


def pluginFlags() -> str:
    """
    The C{twistd smtpd --help} text, to see which flags the plugin has.
    """
    argv = oursCommand()
    if argv[0] == "sh":
        return ""
    head = argv[: argv.index("smtpd") + 1]
    probe = subprocess.run(
        [*head, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=serverEnv(),
        cwd=tempfile.gettempdir(),  # not a folder holding another twisted_smtpd
        check=False,
    )
    return probe.stdout


def makeCertificate(folder: str) -> tuple[str, str] | None:
    """
    An EC P-256 self-signed certificate for C{localhost}, with C{openssl}.
    """
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    if shutil.which("openssl") is None:
        return None
    request = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"]
    request += ["ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost"]
    subprocess.run(
        [*request, "-days", "2", "-keyout", key, "-out", cert],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return cert, key


def oursFor(mode: str, flags: str, folder: str) -> tuple[list[str], str]:
    """
    The command line of twisted-smtpd for C{mode}, and a note on it.
    """
    if mode not in OURS_ONLY:
        return oursCommand(), "--sink"
    hasTls = "--tls-cert" in flags
    certificate = makeCertificate(folder) if hasTls else None
    tlsArgs = ["--tls-cert", certificate[0], "--tls-key", certificate[1]] if certificate else []
    if mode in ("starttls", "fulltls", "resumed", "tlsnoops"):
        note = "--tls-cert (EC P-256)" if certificate else "self-signed fallback (EC P-256)"
        if mode == "tlsnoops" and "--max-junk-commands" in flags:
            # Runs of 1000 NOOPs on one connection: past the junk command
            # limit, each would count as an error.
            tlsArgs = [*tlsArgs, "--max-junk-commands", "0"]
            note += ", --max-junk-commands 0"
        return oursCommand(("--sink",), tlsArgs), note
    if "--auth" in flags and "--allow-insecure-auth" in flags:
        extra = [*tlsArgs, "--auth", f"memory:{USER}:{PASSWORD}", "--allow-insecure-auth"]
        return oursCommand(("--sink",), extra), "--auth memory: --allow-insecure-auth"
    launcher = [venvPython(), os.path.join(HERE, "_authserver.py"), "{port}", USER, PASSWORD]
    return launcher, "bench/_authserver.py (SMTPServer, in-memory checker, allowInsecureAuth)"


def digits(mode: str) -> int:
    """
    The decimals of the CPU per operation: a NOOP costs about 2 µs.
    """
    return 2 if mode == "tlsnoops" else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conns", type=int, default=20, help="concurrent connections (20)")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed load per run (5)")
    parser.add_argument("--reps", type=int, default=3, help="runs per server and mode (3)")
    parser.add_argument("--max-ops", type=int, default=500_000, help="bound per run")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--servers", default="twisted-smtpd")
    parser.add_argument("--logs", default="/tmp/twisted-smtpd-bench-logs")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            parser.error(f"unknown mode {m!r}")
    known = serverCommands()
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    for n in names:
        if n not in known:
            parser.error(f"unknown server {n!r}")
    names = [n for n in names if peerAvailable(n)]

    vcpus = cpus()
    serverCpu = vcpus[0] if len(vcpus) >= 2 else None
    if len(vcpus) >= 2:
        os.sched_setaffinity(0, {vcpus[1]})
    folder = tempfile.mkdtemp(prefix="bench-pipelining-")
    flags = pluginFlags()
    print(f"pipelining, greeting, STARTTLS and AUTH costs: {machineLine()}")
    print(f"  {args.conns} concurrent connections, {args.seconds:.0f} s per run, {args.reps} runs")
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    notes: dict[str, str] = {}
    try:
        for mode in modes:
            for rep in range(args.reps):
                for name in names:
                    if mode in OURS_ONLY and name != "twisted-smtpd":
                        continue
                    command, note = (
                        oursFor(mode, flags, folder)
                        if name == "twisted-smtpd"
                        else (
                            known[name],
                            "",
                        )
                    )
                    if name == "twisted-smtpd":
                        notes[mode] = note
                    server = Server(name, command, args.logs, cpu=serverCpu)
                    try:
                        server.waitReady()
                        r = measure(server, mode, args.conns, args.seconds, args.max_ops)
                        results.setdefault((mode, name), []).append(r)
                        print(
                            f"  {mode:9} rep {rep + 1} {name:14} {r['ops'] / r['wall']:8.0f}/s"
                            f"  server {1e6 * r['cpu'] / max(1, r['ops']):6.{digits(mode)}f} µs/op"
                            f"  client CPU {100 * r['client'] / r['wall']:3.0f}%",
                            flush=True,
                        )
                    except (OSError, RuntimeError, TimeoutError, asyncio.IncompleteReadError) as e:
                        print(f"  {mode:9} rep {rep + 1} {name:14} FAILED {e!r}", flush=True)
                    finally:
                        server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print()
    print(
        "| mode | server | per second (median) | min - max | server CPU µs per op | client CPU % |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for mode in modes:
        for name in names:
            rs = results.get((mode, name))
            if not rs:
                continue
            rates = [r["ops"] / r["wall"] for r in rs]
            cpu = median(1e6 * r["cpu"] / max(1, r["ops"]) for r in rs)
            client = median(100 * r["client"] / r["wall"] for r in rs)
            unit = "msgs" if mode in PER_MESSAGE else "NOOPs" if mode == "tlsnoops" else "conns"
            print(
                f"| {mode} | {name} | {median(rates):.0f} {unit}/s | {min(rates):.0f} - "
                f"{max(rates):.0f} | {cpu:.{digits(mode)}f} | {client:.0f} |"
            )
    for mode, note in notes.items():
        if mode in OURS_ONLY:
            print(f"\n{mode}: twisted-smtpd ran as {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
