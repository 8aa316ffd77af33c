"""Sweep time: the runs of a spec all at once, as the launcher starts them, against one after another.

Both through the same launcher on a local Ray instance, each in a fresh process;
"one after another" is the same sweep with max_concurrent=1, what trying the options
one by one costs (without even counting a human between runs). On a CPU-only machine
the launcher already runs only as many at once as the cores hold (bench.orchestration).

    python -m bench.sweep_time --set run.steps=30
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from bench.orchestration import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=None)
    parser.add_argument("--only", action="append")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    print(f"machine: {platform.node()} | {platform.machine()}, {os.cpu_count()} cores | {time.strftime('%Y-%m-%d')}")
    walls = {}
    for label, extra in (("as launched", []), ("one by one", ["max_concurrent=1"])):
        result = measure(argparse.Namespace(spec=args.spec, only=args.only, set=[*args.set, *extra]))
        walls[label] = result["wall_s"]
        print(f"{label:<12} {result['wall_s']:7.1f} s wall ({result['runs_n']} runs)")
    print(f"one by one / as launched: {walls['one by one'] / walls['as launched']:.2f}x")


if __name__ == "__main__":
    main()
