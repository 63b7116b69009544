"""
Profile twisted-smtpd (C{--sink} by default) under load: where the CPU goes
per message.

    python bench/hotpaths.py [--tool cprofile|py-spy] [--workloads W1,W2,W3,W4]
                             [--top 25] [--out /tmp/twisted-smtpd-profiles]
                             [--delivery "--maildir /tmp/Maildir"]

The server runs alone on one vCPU while smtp-source drives it from the other
with a fixed amount of work (W1: both on the same vCPU, as C{peers} runs it):

  - W1: 1 KiB messages over one kept connection, each command waiting for
    its reply (C{-d -s 1 -l 1024}).
  - W2: 1 KiB messages over 50 kept connections (C{-d -s 50 -l 1024}).
  - W3: 1 MiB messages over 4 kept connections (C{-d -s 4 -l 1048576}).
  - W4: one 1 KiB message per new connection, 20 at a time (C{-s 20 -l 1024}).

C{cprofile} runs twistd with C{cProfile} switched on (deterministic: exact call
counts, but every Python call costs more, so absolute times are inflated,
about 2x on this code) and prints the top functions by own time, by
cumulative time, and by cumulative time among twisted-smtpd's own functions,
each per message (or per MiB for W3) and with calls per message.

C{py-spy} samples the running server from outside (no slowdown; needs the
C{py-spy} command, e.g. C{pip install py-spy} in a venv of its own) and prints
the top functions by own and by inclusive share of the samples (Python frames
only: time inside C functions counts as their Python caller's own time).

Profiles are kept in C{--out} (C{.prof} for pstats or snakeviz, C{.txt}
collapsed stacks for flame graph tools).
"""

from __future__ import annotations

import argparse
import collections
import os
import pstats
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from _benchlib import REPO, Server, cpus, machineLine, oursCommand, serverEnv, smtpSource

# name: (smtp-source arguments, messages, per-message unit)
WORKLOADS = {
    "W1": (["-d", "-s", "1", "-l", "1024"], 60_000, "msg"),
    "W2": (["-d", "-s", "50", "-l", "1024"], 150_000, "msg"),
    "W3": (["-d", "-s", "4", "-l", "1048576"], 6_000, "MiB"),
    "W4": (["-s", "20", "-l", "1024"], 30_000, "conn"),
}

# twistd kills itself with the signal that stopped it, so cProfile's own
# "-o" never gets to write: the profile is written by a shutdown trigger.
LAUNCHER = """\
import cProfile, os, sys
from twisted.internet import reactor
from twisted.scripts.twistd import run
profile = cProfile.Profile()
def dump():
    profile.disable()
    profile.dump_stats(os.environ["BENCH_PROFILE_OUT"])
reactor.addSystemEventTrigger("after", "shutdown", dump)
sys.argv[0] = "twistd"
profile.enable()
run()
"""


def shortName(key: tuple[str, int, str]) -> str:
    path, line, name = key
    if path == "~":
        return name
    for prefix in (REPO + os.sep, os.path.dirname(os.__file__) + os.sep):
        if path.startswith(prefix):
            path = path[len(prefix) :]
    path = path.split("site-packages" + os.sep)[-1]
    return f"{path}:{line}({name})"


def cprofileReport(path: str, units: int, unit: str, top: int) -> str:
    stats = pstats.Stats(path)
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    lines = [f"total own time under cProfile: {total:.2f} s, {1e6 * total / units:.0f} µs/{unit}"]
    ours = f"twisted_smtpd{os.sep}"
    for title, index, only in (
        ("own time (tottime)", 2, False),
        ("cumulative time (cumtime)", 3, False),
        ("cumulative time, twisted_smtpd functions only", 3, True),
    ):
        kept = [kv for kv in raw.items() if not only or ours in kv[0][0]]
        ranked = sorted(kept, key=lambda kv: kv[1][index], reverse=True)[:top]
        lines += [
            "",
            f"top {top} by {title}:",
            "",
            f"| function | calls/{unit} | own µs/{unit} | cum µs/{unit} | own % |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, (_, ncalls, tottime, cumtime, _) in ranked:
            lines.append(
                f"| `{shortName(key)}` | {ncalls / units:.2f} | {1e6 * tottime / units:.2f} "
                f"| {1e6 * cumtime / units:.2f} | {100 * tottime / total:.1f} |"
            )
    return "\n".join(lines)


def pyspyReport(path: str, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    samples = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = stack.split(";")
            samples += n
            own[frames[-1]] += n
            for fr in set(frames):
                inclusive[fr] += n
    lines = [f"{samples} samples"]
    for title, counter in (("own samples", own), ("inclusive samples", inclusive)):
        lines += ["", f"top {top} by {title}:", "", "| function | % |", "|---|---:|"]
        for name, n in counter.most_common(top):
            lines.append(f"| `{name.replace(REPO + os.sep, '')}` | {100 * n / samples:.1f} |")
    return "\n".join(lines)


def profile(
    workload: str, tool: str, out: str, top: int, logs: str, delivery: Sequence[str] = ("--sink",)
) -> str:
    args, count, unit = WORKLOADS[workload]
    vcpus = cpus()
    serverCpu, clientCpu = (vcpus[0], vcpus[1]) if len(vcpus) >= 2 else (None, None)
    if workload == "W1":
        clientCpu = serverCpu
    command = oursCommand(delivery)
    if command[0] == "sh":
        raise SystemExit("hotpaths.py profiles the built-in command; unset OURS")
    prof = os.path.join(out, f"{workload}.prof")
    if tool == "cprofile":
        command = [command[0], "-c", LAUNCHER, *command[3:]]
        if os.path.exists(prof):
            os.unlink(prof)
    env = serverEnv()
    env["BENCH_PROFILE_OUT"] = prof
    server = Server(f"profile-{workload}", command, logs, cpu=serverCpu, env=env)
    spy = None
    try:
        server.waitReady()
        warm = max(8, count // 20)
        smtpSource(server.port, args, warm, cpu=clientCpu)  # warm-up
        if tool == "py-spy":
            spyOut = os.path.join(out, f"{workload}.txt")
            spyArgs = ["record", "--format", "raw", "--function", "--rate", "500", "--nonblocking"]
            spyArgs += ["--pid", str(server.pid), "--output", spyOut]
            spy = subprocess.Popen(
                [shutil.which("py-spy") or "py-spy", *spyArgs],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        run = smtpSource(server.port, args, count, cpu=clientCpu, server=server, timeout=300)
        if not run.ok:
            raise RuntimeError(f"smtp-source failed: {run.output.strip()[-200:]}")
        units = count  # W3: one MiB per message
        head = (
            f"## {workload}: smtp-source {' '.join(args)} -m {count}: {count / run.wall:.0f} "
            f"{unit}/s, server CPU {1e6 * run.serverCpu / units:.0f} µs/{unit} "
            f"(under {tool})"
        )
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        server.stop(signal.SIGTERM)
    if tool == "cprofile":
        deadline = time.monotonic() + 30
        while not os.path.exists(prof) and time.monotonic() < deadline:
            time.sleep(0.2)
        # cProfile also saw the warm-up
        return head + "\n\n" + cprofileReport(prof, units + warm, unit, top)
    return head + "\n\n" + pyspyReport(os.path.join(out, f"{workload}.txt"), top)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tool", choices=("cprofile", "py-spy"), default="cprofile")
    parser.add_argument("--workloads", default="W1,W2,W3,W4")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default="/tmp/twisted-smtpd-profiles")
    parser.add_argument("--logs", default="/tmp/twisted-smtpd-bench-logs")
    parser.add_argument(
        "--delivery",
        default="--sink",
        help='the delivery options, e.g. "--maildir /tmp/Maildir" (default: --sink)',
    )
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    print(f"# twisted-smtpd hot paths ({args.tool}), {machineLine()}\n")
    for workload in [w.strip() for w in args.workloads.split(",") if w.strip()]:
        if workload not in WORKLOADS:
            parser.error(f"unknown workload {workload!r}")
        report = profile(workload, args.tool, args.out, args.top, args.logs, args.delivery.split())
        print(report, flush=True)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
