"""
Messages per second against concurrency, as a chart.

    python bench/chart.py [--sessions 1,2,5,10,20,50,100] [--reps 3] [--seconds 4]
                          [--servers twisted-smtpd,aiosmtpd,twisted.mail]
                          [--out docs/perf-concurrency.png] [--json FILE]
    python bench/chart.py --replot docs/perf-concurrency.json [--out ...]

For each session count N, each server gets a fresh process and smtp-source
sends 1 KiB messages over N kept connections (C{-M localhost -d -s N -l
1024}) for about C{--seconds}, after a warm-up that picks the count.  The
median of C{--reps} rounds is plotted with matplotlib (in the bench venv that
bench/run.sh makes, not in the project's dependencies), and the numbers are
printed as a Markdown table; the results are written as JSON beside the
chart (C{docs/perf-concurrency.json}), from which C{--replot} redraws it.
With two or more vCPUs the server runs on the first and smtp-source on the
second at every point.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from _benchlib import (
    CHECKOUT,
    Server,
    calibrate,
    cpus,
    machineLine,
    median,
    peerAvailable,
    serverCommands,
    smtpSource,
)

COLOURS = {"twisted-smtpd": "#1f77b4", "aiosmtpd": "#d62728", "twisted.mail": "#2ca02c"}


def sweep(
    servers: dict[str, list[str]], sessions: list[int], reps: int, seconds: float, logs: str
) -> list[dict[str, object]]:
    vcpus = cpus()
    serverCpu, clientCpu = (vcpus[0], vcpus[1]) if len(vcpus) >= 2 else (None, None)
    records: list[dict[str, object]] = []
    for rep in range(reps):
        for n in sessions:
            args = ["-d", "-s", str(n), "-l", "1024"]
            for name, command in servers.items():
                record: dict[str, object] = {"server": name, "sessions": n, "rep": rep}
                server = Server(name, command, logs, cpu=serverCpu)
                try:
                    server.waitReady()
                    count = calibrate(
                        server.port,
                        args,
                        seconds,
                        start=max(200, 20 * n),
                        limit=400_000,
                        cpu=clientCpu,
                    )
                    run = smtpSource(server.port, args, count, cpu=clientCpu, server=server)
                    if run.ok and server.alive():
                        record.update(
                            rate=count / run.wall, cpuPerMsg=run.serverCpu / count, n=count
                        )
                    else:
                        record["error"] = run.output.strip()[-160:]
                except (OSError, RuntimeError) as e:
                    record["error"] = f"{type(e).__name__}: {e}"
                finally:
                    server.stop()
                records.append(record)
                shown = f"{record['rate']:8.0f} msgs/s" if "rate" in record else "FAILED"
                print(f"  rep {rep + 1} sessions {n:3d} {name:14} {shown}", flush=True)
    return records


def medians(records: list[dict[str, object]]) -> dict[str, dict[int, float]]:
    found: dict[str, dict[int, list[float]]] = {}
    for r in records:
        if r.get("rate") is not None:
            by = found.setdefault(str(r["server"]), {})
            by.setdefault(int(r["sessions"]), []).append(float(r["rate"]))  # type: ignore[call-overload, arg-type]
    return {s: {n: median(v) or 0.0 for n, v in sorted(by.items())} for s, by in found.items()}


def plot(points: dict[str, dict[int, float]], out: str, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    for name, by in points.items():
        xs = list(by)
        ax.plot(xs, [by[x] for x in xs], marker="o", label=name, color=COLOURS.get(name))
    ax.set_xscale("log")
    ticks = sorted({x for by in points.values() for x in by})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel("concurrent sessions (smtp-source -s N, connections kept)")
    ax.set_ylabel("messages per second (1 KiB)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_title("SMTP sink throughput against concurrency\n" + subtitle, fontsize=10)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out)
    print(f"chart written to {out}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,2,5,10,20,50,100")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--servers", default="twisted-smtpd,aiosmtpd,twisted.mail")
    parser.add_argument("--out", default=os.path.join(CHECKOUT, "docs", "perf-concurrency.png"))
    parser.add_argument(
        "--json", help="where to keep the raw results [default: --out with .json for .png]"
    )
    parser.add_argument("--replot", help="plot a JSON file written by an earlier run")
    parser.add_argument("--logs", default="/tmp/twisted-smtpd-bench-logs")
    args = parser.parse_args(argv)
    if args.replot:
        with open(args.replot) as f:
            saved = json.load(f)
        records, subtitle = saved["records"], saved["subtitle"]
    else:
        known = serverCommands()
        servers = {}
        for name in [n.strip() for n in args.servers.split(",") if n.strip()]:
            if name not in known:
                parser.error(f"unknown server {name!r}")
            if peerAvailable(name):
                servers[name] = known[name]
            else:
                print(f"skipping {name}: not importable by the server Python (run bench/run.sh)")
        sessions = [int(s) for s in args.sessions.split(",")]
        subtitle = f"{machineLine()}; median of {args.reps}; server and client on separate vCPUs"
        print(f"concurrency sweep: {subtitle}")
        records = sweep(servers, sessions, args.reps, args.seconds, args.logs)
        # Kept beside the chart (docs/perf-concurrency.json), so that the
        # chart in the documentation can be redrawn from the data it shows.
        args.json = args.json or os.path.splitext(args.out)[0] + ".json"
        with open(args.json, "w") as f:
            json.dump({"records": records, "subtitle": subtitle}, f, indent=1)
        print(f"raw results: {args.json}")
    points = medians(records)
    names = list(points)
    allSessions = sorted({n for by in points.values() for n in by})
    print()
    print("| sessions | " + " | ".join(f"{n} msgs/s" for n in names) + " |")
    print("|---:|" + "---:|" * len(names))
    for s in allSessions:
        cells = [f"{points[n][s]:.0f}" if s in points[n] else "-" for n in names]
        print(f"| {s} | " + " | ".join(cells) + " |")
    plot(points, args.out, subtitle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
