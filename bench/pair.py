"""
Two servers at the same time, for an A/B comparison of their CPU per unit of
work from which the machine's drift cancels out.

    bash bench/run.sh pair --a SOURCE_OR_SERVER --b SOURCE_OR_SERVER
                           [--a-args "--quiet"] [--b-args ...]
                           [--workload W2] [--rounds 5] [--count N]

C{--a} and C{--b} each name a twisted-smtpd source tree (a checkout, or a
commit exported with C{git archive}), run as C{twistd -n smtpd --sink} with
its extra C{--a-args}/C{--b-args} (C{--b-args=--quiet}; C{"--maildir
{maildir}"} instead of C{--sink}, a Maildir of its own), or a server of
C{bench/peers.py} (C{twisted.mail}, C{"twisted-smtpd --quiet"}, ...).

Both servers run pinned to the same vCPU at once, each loaded by its own
C{smtp-source} with the same arguments (W2, W3 or W4 of C{bench/peers.py}),
both sources on the other vCPU.  Whatever slows the machine during a round
(another guest on the host, a lower clock) slows both servers alike, so the
ratio of their CPU per message (or MiB, or connection) holds still where two
runs one after the other differ by 10% or more.  The two share the vCPU, so
their throughput is not compared; and each runs with the other's load in the
caches, so the figures are above those of C{bench/run.sh peers}.  Each round
starts the two sources in the other order.

Use it to tell whether a change saves CPU: two identical servers agree
within about 1% here, and the ratio of the medians is the result.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import tempfile

from _benchlib import (
    Server,
    cpus,
    emptyMaildir,
    machineLine,
    oursCommand,
    serverCommands,
    serverEnv,
    smtpSource,
    sourceArgv,
    startSource,
)
from peers import PER, WORKLOADS

#: Messages (W2, W3) or connections (W4) each source sends in a round: about
#: five to ten seconds here.
COUNTS = {"W2": 40_000, "W3": 400, "W4": 10_000}


def _server(what: str, extra: str) -> tuple[str, list[str], dict[str, str]]:
    """
    The row name, argv and environment of C{--a} or C{--b}.
    """
    known = serverCommands()
    if what in known and not os.path.isdir(what):
        return what, known[what] + shlex.split(extra), serverEnv()
    if not os.path.isfile(os.path.join(what, "twisted_smtpd", "__init__.py")):
        raise SystemExit(
            f"pair: {what!r} is neither a twisted-smtpd source tree nor one of {sorted(known)}"
        )
    env = serverEnv()
    # The source tree first, ahead of the checkout serverEnv puts there.
    env["PYTHONPATH"] = os.path.abspath(what) + os.pathsep + env["PYTHONPATH"]
    name = f"twisted-smtpd from {what}" + (f" {extra}" if extra else "")
    words = shlex.split(extra)
    # --sink unless the arguments name the Maildir ({maildir}: one of its own).
    delivery = () if "--maildir" in words else ("--sink",)
    return name, oursCommand(delivery, words), env


def _round(servers: list[Server], args: list[str], count: int, cpu: int, flip: bool) -> list[float]:
    """
    Load both servers at once; their CPU seconds over the round.
    """
    before = [s.cpu() for s in servers]
    order = servers[::-1] if flip else servers
    procs = {
        server.name: startSource(sourceArgv(server.port, args, count), cpu) for server in order
    }
    try:
        for name, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                raise SystemExit(f"pair: smtp-source against {name} took over 600 s") from None
            if proc.returncode != 0:
                raise SystemExit(f"pair: smtp-source against {name} failed: {out.decode()[-300:]}")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [s.cpu() - b for s, b in zip(servers, before, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--a", required=True, help="source tree or server name (A)")
    parser.add_argument("--b", required=True, help="source tree or server name (B)")
    parser.add_argument("--a-args", default="", help="extra twistd smtpd arguments of A")
    parser.add_argument("--b-args", default="", help="extra twistd smtpd arguments of B")
    parser.add_argument("--workload", default="W2", choices=sorted(COUNTS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=None, help="per source and round")
    args = parser.parse_args()
    vcpus = cpus()
    if len(vcpus) < 2:
        raise SystemExit("pair: needs two vCPUs (servers on one, sources on the other)")
    serverCpu, sourceCpu = vcpus[0], vcpus[1]
    sourceArgs = WORKLOADS[args.workload][0]
    count = args.count or COUNTS[args.workload]
    unit = PER[WORKLOADS[args.workload][3]]
    # W3's messages are 1 MiB each: a message is a MiB.
    per = count
    rows = [_server(args.a, args.a_args), _server(args.b, args.b_args)]
    print(f"pair: {machineLine()}")
    for label, (name, _, _) in zip("AB", rows, strict=True):
        print(f"  {label}: {name}")
    print(
        f"  {args.workload}: smtp-source -M localhost {' '.join(sourceArgs)} -m {count}"
        f" against each, at once; servers on vCPU {serverCpu}, sources on vCPU {sourceCpu}"
    )
    logs = tempfile.mkdtemp(prefix="pair-logs-")
    servers = [
        Server(label, argv, logs, cpu=serverCpu, env=env)
        for label, (_, argv, env) in zip("AB", rows, strict=True)
    ]
    try:
        for server in servers:
            server.waitReady()
            warm = smtpSource(server.port, sourceArgs, max(1, count // 20), cpu=sourceCpu)
            if not warm.ok:
                raise SystemExit(f"pair: warm-up of {server.name} failed: {warm.output}")
        results: list[tuple[float, float]] = []
        for n in range(args.rounds):
            a, b = _round(servers, sourceArgs, count, sourceCpu, flip=n % 2 == 1)
            results.append((a / per * 1e6, b / per * 1e6))
            print(
                f"round {n + 1}: A {results[-1][0]:7.1f}  B {results[-1][1]:7.1f}"
                f" µs of CPU per {unit}   B/A {b / a:.3f}",
                flush=True,
            )
    finally:
        for server in servers:
            server.stop()
            emptyMaildir(server.maildir)
    a = statistics.median(r[0] for r in results)
    b = statistics.median(r[1] for r in results)
    ratios = [r[1] / r[0] for r in results]
    print(
        f"medians: A {a:.1f}  B {b:.1f} µs per {unit}; B/A {b / a:.3f}"
        f" (rounds {min(ratios):.3f}-{max(ratios):.3f}); server logs in {logs}"
    )


if __name__ == "__main__":
    main()
