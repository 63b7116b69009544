"""
The W1-W5 comparison of a C{bench/peers.py} run as one table and one chart.

    python bench/peerschart.py RESULTS.json [--out docs/perf-peers.png]
    python bench/peerschart.py --replot docs/perf-peers.json

Reads the raw results C{bench/peers.py} wrote (its C{--json}), keeps them
beside the chart (C{docs/perf-peers.json}, from which C{--replot} redraws
it), prints a Markdown table with, per server, the median rate and the
median server CPU per unit of each workload and the memory per idle
connection of W5, and draws the rates as bars, one panel per workload
(matplotlib, from the bench venv that bench/run.sh makes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from _benchlib import CHECKOUT, median

UNITS = {"W1": ("msgs/s", "msg"), "W2": ("msgs/s", "msg"), "W3": ("MiB/s", "MiB")}
UNITS["W4"] = ("conn/s", "conn")


def summary(records: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    """
    Per server, the medians: C{"W2"} the rate, C{"W2 cpu"} the server CPU in
    microseconds per unit, C{"W5"} the KiB per idle connection.
    """
    values: dict[str, dict[str, list[float]]] = {}
    for r in records:
        by = values.setdefault(str(r["server"]), {})
        workload = str(r["workload"])
        if workload == "W5":
            if r.get("kibPerConn") is not None:
                by.setdefault("W5", []).append(float(r["kibPerConn"]))  # type: ignore[arg-type]
        elif r.get("rate") is not None:
            by.setdefault(workload, []).append(float(r["rate"]))  # type: ignore[arg-type]
            cpu = 1e6 * float(r["serverCpu"]) / int(r["n"])  # type: ignore[arg-type, call-overload]
            by.setdefault(f"{workload} cpu", []).append(cpu)
    return {
        server: {key: median(v) or 0.0 for key, v in by.items()} for server, by in values.items()
    }


def markdown(medians: dict[str, dict[str, float]]) -> str:
    """
    The table of L{summary}: rates and CPU rounded to units, W3 to one
    decimal, W5 to two.
    """
    head = ["server"]
    for w, (unit, per) in UNITS.items():
        head += [f"{w} {unit}", f"{w} CPU µs/{per}"]
    head.append("W5 KiB/conn")
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for server, by in medians.items():
        cells = [server]
        for w in UNITS:
            rate, cpu = by.get(w), by.get(f"{w} cpu")
            cells.append("-" if rate is None else f"{rate:.1f}" if w == "W3" else f"{rate:.0f}")
            cells.append("-" if cpu is None else f"{cpu:.0f}")
        kib = by.get("W5")
        cells.append("-" if kib is None else f"{kib:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(medians: dict[str, dict[str, float]], out: str, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = list(medians)
    fig, axes = plt.subplots(1, len(UNITS), figsize=(13, 0.45 * len(servers) + 2), dpi=100)
    for ax, (w, (unit, _)) in zip(axes, UNITS.items(), strict=True):
        rates = [medians[s].get(w, 0.0) for s in servers]
        colours = ["#1f77b4" if s.startswith("twisted-smtpd") else "#999999" for s in servers]
        ax.barh(range(len(servers)), rates, color=colours)
        ax.set_yticks(range(len(servers)))
        ax.set_yticklabels(servers if ax is axes[0] else [""] * len(servers), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{w} ({unit})", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
        for y, rate in enumerate(rates):
            ax.text(rate, y, f" {rate:.0f}", va="center", fontsize=7)
    fig.suptitle("SMTP sinks side by side (median of the rounds)\n" + subtitle, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out)
    print(f"chart written to {out}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", help="the JSON file bench/peers.py wrote")
    parser.add_argument("--out", default=os.path.join(CHECKOUT, "docs", "perf-peers.png"))
    parser.add_argument("--replot", help="redraw from a JSON file kept by an earlier call")
    args = parser.parse_args(argv)
    source = args.replot or args.results
    if source is None:
        parser.error("give the results of bench/peers.py, or --replot")
    with open(source) as f:
        saved = json.load(f)
    records, machine = saved["records"], saved["machine"]
    if not args.replot:
        kept = os.path.splitext(args.out)[0] + ".json"
        with open(kept, "w") as f:
            json.dump({"machine": machine, "records": records}, f, indent=1)
        print(f"results kept in {kept}")
    medians = summary(records)
    print(markdown(medians))
    plot(medians, args.out, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
