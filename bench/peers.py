"""
Side-by-side SMTP sink benchmark, W1 to W5, driven by Postfix's smtp-source.

    python bench/peers.py [--reps 3] [--seconds 10] [--workloads W1,W2,W3,W4,W5]
                          [--servers smtp-sink,twisted.mail,twisted-smtpd,...]
                          [--idle 2000] [--json FILE] [--no-pin]

Normally started by bench/run.sh, which installs smtp-source and the peers
first.  Workloads (smtp-source always gets C{-M localhost}):

  - W1: C{-d -s 1 -l 1024}: 1 KiB messages over one kept connection.
  - W2: C{-d -s 50 -l 1024}: 1 KiB messages over 50 kept connections.
  - W3: C{-d -s 4 -l 1048576}: 1 MiB messages over 4 kept connections.
  - W4: C{-s 20 -l 1024}: one 1 KiB message per connection, 20 at a time.
  - W5: resident memory of the server process while it holds C{--idle} idle
    connections that have each had their EHLO answered.

Servers (all by default): Postfix's C{smtp-sink} (C), Node's
C{smtp-server}, twisted.mail, aiosmtpd, and twisted-smtpd in the default
configuration (logging on) four ways: C{--sink}, C{--sink --quiet} (no log
line per connection and message), C{--maildir} (durable delivery, each
run into a Maildir of its own below C{$BENCH_MAILDIR}, all removed at the
end) and C{--sink --workers 2};
"twisted-smtpd --quiet --maildir" and "twisted-smtpd --quiet --workers 2"
can be asked for too.  Ratios are taken against the first twisted-smtpd row
listed.

Each timed run gets a fresh server process; servers take turns within each
round (A B C, A B C, ...).  The first round warms each server up and picks a
message count lasting about C{--seconds}; every round then warms up briefly
and runs that count.  With two or more vCPUs, the server runs on the first
and smtp-source on the second, except W1, where both share the first (one
connection in lock-step runs several times faster when both ends share a
core, so that is the stable placement); a C{--workers} row is never pinned
(both of its workers would share one core).  Only processes started here are
signalled, all traffic goes to 127.0.0.1, and every run is bounded in count
and time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import sys
import time
from collections.abc import Sequence

from _benchlib import (
    Server,
    calibrate,
    cpus,
    emptyMaildir,
    machineLine,
    median,
    peerAvailable,
    serverCommands,
    smtpSource,
    versions,
)

OURS = "twisted-smtpd"
DEFAULT_SERVERS = (
    "smtp-sink",
    "smtp-server",
    "twisted.mail",
    "aiosmtpd",
    OURS,
    "twisted-smtpd --quiet",
    "twisted-smtpd --maildir",
    "twisted-smtpd --workers 2",
)

# name: (smtp-source arguments, first warm-up count, count bound, unit, what)
WORKLOADS: dict[str, tuple[list[str], int, int, str, str]] = {
    "W1": (["-d", "-s", "1", "-l", "1024"], 200, 400_000, "msgs/s", "1 KiB, 1 session"),
    "W2": (["-d", "-s", "50", "-l", "1024"], 1000, 1_000_000, "msgs/s", "1 KiB, 50 sessions"),
    "W3": (["-d", "-s", "4", "-l", "1048576"], 16, 20_000, "MiB/s", "1 MiB, 4 sessions"),
    "W4": (["-s", "20", "-l", "1024"], 200, 100_000, "conn/s", "1 KiB, new connection each, 20"),
}
PER = {"msgs/s": "msg", "MiB/s": "MiB", "conn/s": "conn"}


def placement(workload: str, pin: bool) -> tuple[int | None, int | None]:
    """
    The vCPUs of the server and of smtp-source for C{workload}.
    """
    v = cpus()
    if not pin or len(v) < 2:
        return None, None
    return (v[0], v[0]) if workload == "W1" else (v[0], v[1])


def throughput(
    workload: str,
    servers: dict[str, list[str]],
    reps: int,
    seconds: float,
    pin: bool,
    logs: str,
) -> list[dict[str, object]]:
    args, start, limit, unit, _ = WORKLOADS[workload]
    serverCpu, clientCpu = placement(workload, pin)
    counts: dict[str, int] = {}
    records = []
    for rep in range(reps):
        for name, command in servers.items():
            record: dict[str, object] = {"workload": workload, "server": name, "rep": rep}
            cpu = None if "--workers" in name else serverCpu
            server = Server(name, command, logs, cpu=cpu)
            try:
                server.waitReady()
                if name not in counts:
                    counts[name] = calibrate(
                        server.port, args, seconds, start=start, limit=limit, cpu=clientCpu
                    )
                else:
                    smtpSource(server.port, args, max(start, counts[name] // 10), cpu=clientCpu)
                n = counts[name]
                run = smtpSource(server.port, args, n, cpu=clientCpu, server=server, timeout=120)
                alive = server.alive()
                record.update(n=n, wall=run.wall, serverCpu=run.serverCpu, clientCpu=run.clientCpu)
                record["rssKiB"] = server.rss()
                if run.ok and alive:
                    record["rate"] = n / run.wall  # W3: n messages of 1 MiB each
                else:
                    record["error"] = f"rc={run.returncode} timedOut={run.timedOut} alive={alive}: "
                    record["error"] = str(record["error"]) + run.output.strip()[-160:]
            except (OSError, RuntimeError) as e:
                record["error"] = f"{type(e).__name__}: {e}"
            finally:
                exited = server.stop()
                if workload == "W3":
                    # Gigabytes: not kept to the end (see MAILDIR).
                    emptyMaildir(server.maildir)
                if exited is not None:
                    record.setdefault("error", f"server exited with {exited}")
            records.append(record)
            if "rate" in record:
                wall = float(record["wall"])  # type: ignore[arg-type]
                print(
                    f"  {workload} rep {rep + 1} {name:14} {record['rate']:9.1f} {unit}"
                    f"  (n={record['n']}, {wall:.1f} s, server CPU "
                    f"{100 * float(record['serverCpu']) / wall:.0f}%, "  # type: ignore[arg-type]
                    f"smtp-source CPU {100 * float(record['clientCpu']) / wall:.0f}%)",  # type: ignore[arg-type]
                    flush=True,
                )
            else:
                print(f"  {workload} rep {rep + 1} {name:14} FAILED {record['error']}", flush=True)
    return records


def openIdle(port: int, count: int, deadline: float) -> tuple[list[socket.socket], str | None]:
    """
    Open up to C{count} connections, one at a time, each read to its EHLO
    reply and then left idle.  Stops at the first failure or at the deadline.
    """
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            if time.monotonic() > deadline:
                return held, f"deadline after {len(held)}"
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(s)
            if not s.recv(4096).startswith(b"220"):
                return held, f"no greeting after {len(held) - 1}"
            s.sendall(b"EHLO bench.example\r\n")
            reply = b""
            while not any(line[3:4] == b" " for line in reply.split(b"\r\n")):
                chunk = s.recv(4096)
                if not chunk:
                    return held, f"closed after {len(held) - 1}"
                reply += chunk
    except OSError as e:
        return held, f"{type(e).__name__} after {len(held)}: {e}"
    return held, None


def memory(
    servers: dict[str, list[str]], reps: int, idle: int, pin: bool, logs: str
) -> list[dict[str, object]]:
    serverCpu, _ = placement("W5", pin)
    records = []
    for rep in range(reps):
        for name, command in servers.items():
            record: dict[str, object] = {"workload": "W5", "server": name, "rep": rep}
            server = Server(name, command, logs, cpu=serverCpu)
            held: list[socket.socket] = []
            try:
                server.waitReady()
                warm, _ = openIdle(server.port, 1, time.monotonic() + 10)
                for s in warm:
                    s.close()
                time.sleep(1.0)
                before = server.rss()
                t0 = time.monotonic()
                held, error = openIdle(server.port, idle, time.monotonic() + 120)
                record["openSeconds"] = time.monotonic() - t0
                time.sleep(1.0)
                after = server.rss()
                record.update(idleKiB=before, heldKiB=after, opened=len(held))
                if held:
                    record["kibPerConn"] = (after - before) / len(held)
                if error or not server.alive():
                    record["error"] = f"{error} alive={server.alive()}"
            except (OSError, RuntimeError) as e:
                record["error"] = f"{type(e).__name__}: {e}"
            finally:
                for s in held:
                    with contextlib.suppress(OSError):
                        s.close()
                server.stop()
            records.append(record)
            if "kibPerConn" in record:
                print(
                    f"  W5 rep {rep + 1} {name:14} idle {before / 1024:.1f} MiB, "
                    f"{len(held)} conns {after / 1024:.1f} MiB, "
                    f"{record['kibPerConn']:.2f} KiB/conn",
                    flush=True,
                )
            else:
                print(f"  W5 rep {rep + 1} {name:14} FAILED {record.get('error')}", flush=True)
    return records


def table(
    records: Sequence[dict[str, object]], names: Sequence[str], workloads: Sequence[str]
) -> str:
    """
    Markdown tables: medians, ranges, CPU per unit, twisted-smtpd's ratio to
    each peer (of the medians, and the median of same-round ratios).
    """
    out: list[str] = []

    def pick(wl: str, name: str, key: str) -> list[float]:
        return [
            float(r[key])  # type: ignore[arg-type]
            for r in records
            if r["workload"] == wl and r["server"] == name and r.get(key) is not None
        ]

    for wl in workloads:
        if wl == "W5":
            continue
        args, _, _, unit, what = WORKLOADS[wl]
        out += [
            "",
            f"### {wl}: {what} ({unit}, higher is better)",
            "",
            f"`smtp-source -M localhost {' '.join(args)} -m N 127.0.0.1:PORT`",
            "",
            f"| server | median {unit} | min - max | server CPU µs/{PER[unit]} | "
            f"twisted-smtpd ÷ server (medians) | same round (median) | failed |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        ours = median(pick(wl, OURS, "rate"))
        oursByRep = {
            r["rep"]: r.get("rate") for r in records if r["workload"] == wl and r["server"] == OURS
        }
        for name in names:
            rows = [r for r in records if r["workload"] == wl and r["server"] == name]
            if not rows:
                continue
            rates = pick(wl, name, "rate")
            ok = [r for r in rows if r.get("rate")]
            cpu = median(1e6 * float(r["serverCpu"]) / int(r["n"]) for r in ok)  # type: ignore[arg-type, call-overload]
            paired = median(
                float(oursByRep[r["rep"]]) / float(r["rate"])  # type: ignore[arg-type]
                for r in ok
                if oursByRep.get(r["rep"])
            )
            rate = median(rates)
            out.append(
                "| {} | {} | {} | {} | {} | {} | {}/{} |".format(
                    name,
                    f"{rate:.1f}" if rate else "failed",
                    f"{min(rates):.1f} - {max(rates):.1f}" if rates else "",
                    f"{cpu:.0f}" if cpu is not None else "-",
                    f"{ours / rate:.2f}" if ours and rate else "-",
                    f"{paired:.2f}" if paired is not None else "-",
                    len(rows) - len(ok),
                    len(rows),
                )
            )
    if "W5" in workloads:
        out += [
            "",
            "### W5: memory holding idle post-EHLO connections (lower is better)",
            "",
            "| server | idle RSS MiB | RSS holding MiB | KiB per connection (median) | min - max "
            "| opened | failed |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name in names:
            rows = [r for r in records if r["workload"] == "W5" and r["server"] == name]
            if not rows:
                continue
            per = pick("W5", name, "kibPerConn")
            idleMiB = median(v / 1024 for v in pick("W5", name, "idleKiB"))
            heldMiB = median(v / 1024 for v in pick("W5", name, "heldKiB"))
            out.append(
                "| {} | {} | {} | {} | {} | {} | {}/{} |".format(
                    name,
                    f"{idleMiB:.1f}" if idleMiB is not None else "-",
                    f"{heldMiB:.1f}" if heldMiB is not None else "-",
                    f"{median(per):.2f}" if per else "failed",
                    f"{min(per):.2f} - {max(per):.2f}" if per else "",
                    ",".join(str(o) for o in sorted({r.get("opened") for r in rows})),  # type: ignore[type-var]
                    sum(1 for r in rows if r.get("error")),
                    len(rows),
                )
            )
    return "\n".join(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of a timed run")
    parser.add_argument("--workloads", default="W1,W2,W3,W4,W5")
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS))
    parser.add_argument("--idle", type=int, default=2000, help="connections held in W5")
    parser.add_argument(
        "--json", default=f"/tmp/twisted-smtpd-bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    parser.add_argument("--no-pin", action="store_true", help="leave placement to the scheduler")
    parser.add_argument("--logs", default="/tmp/twisted-smtpd-bench-logs")
    args = parser.parse_args(argv)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in workloads:
        if w not in WORKLOADS and w != "W5":
            parser.error(f"unknown workload {w!r}")
    known = serverCommands()
    servers = {}
    for name in [n.strip() for n in args.servers.split(",") if n.strip()]:
        if name not in known:
            parser.error(f"unknown server {name!r}; known: {', '.join(known)}")
        if peerAvailable(name):
            servers[name] = known[name]
        else:
            print(f"skipping {name}: not importable by the server Python (run bench/run.sh)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.idle + 256 if hard == resource.RLIM_INFINITY else min(hard, args.idle + 256)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    pin = not args.no_pin
    print(f"peers: {machineLine()}, {args.reps} rounds, {args.seconds:.0f} s per run")
    print("  " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    print(f"  servers: {', '.join(servers)}")
    emptyMaildir()
    t0 = time.monotonic()
    records: list[dict[str, object]] = []
    try:
        for wl in workloads:
            print(f"{wl}:", flush=True)
            if wl == "W5":
                records += memory(servers, args.reps, args.idle, pin, args.logs)
            else:
                records += throughput(wl, servers, args.reps, args.seconds, pin, args.logs)
    finally:
        emptyMaildir()
    elapsed = time.monotonic() - t0
    with open(args.json, "w") as f:
        json.dump({"machine": machineLine(), "records": records, "servers": servers}, f, indent=1)
    print()
    print(f"## Results: medians of {args.reps} rounds, {elapsed:.0f} s, {machineLine()}")
    print(table(records, list(servers), workloads))
    print(f"\nraw results: {args.json}; server logs: {args.logs}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
