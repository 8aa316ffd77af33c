"""Sweep time: the runs of a spec all at once, as the launcher starts them, against one after another.

All through the same launcher on a local Ray instance, each in a fresh process;
"one after another" is the same sweep with max_concurrent=1, what trying the options
one by one costs (without even counting a human between runs). On a CPU-only machine
the launcher already runs only as many at once as the cores hold (bench.orchestration).
"levers off" is the sweep as launched with every start-up lever of
orchestrator/sweep/startup.py off: on a GPU, where the levers were not tuned, whether
they cost anything.

    python -m bench.sweep_time --set run.steps=30
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from bench.orchestration import SUMMARY_HEADER, measure, summary_line, table
from orchestrator.sweep.startup import LEVERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=None)
    parser.add_argument("--only", action="append")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument(
        "--sweeps",
        default="as launched,levers off,one by one",
        help="which sweeps to run, comma-separated (default: all three)",
    )
    args = parser.parse_args()
    chosen = args.sweeps.split(",")
    print(f"machine: {platform.node()} | {platform.machine()}, {os.cpu_count()} cores | {time.strftime('%Y-%m-%d')}")
    results = {}
    sweeps = [
        ("as launched", [], ""),
        ("levers off", [], ",".join(LEVERS)),
        ("one by one", ["max_concurrent=1"], ""),
    ]
    for label, extra, off in [s for s in sweeps if s[0] in chosen]:
        args_ = argparse.Namespace(spec=args.spec, only=args.only, set=[*args.set, *extra], cpu=False)
        results[label] = measure(args_, off)
        if label == "as launched":  # where its runs' time went, then each sweep's line as soon as it ends
            table(results[label])
            print(f"\n{SUMMARY_HEADER}")
        print(summary_line(label, results[label]), flush=True)
    walls = {label: r["wall_s"] for label, r in results.items()}
    for label in ("one by one", "levers off"):
        if label in walls and "as launched" in walls:
            print(f"{label} / as launched: {walls[label] / walls['as launched']:.2f}x")


if __name__ == "__main__":
    main()
