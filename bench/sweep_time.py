"""Sweep time: the options run in parallel by our launcher vs one after another.

Both sweeps use the same spec on a local Ray instance; "sequential" is the same
launcher with max_concurrent=1, which is what running the options one by one
costs (without even counting a human between runs).

    python -m bench.sweep_time --set run.steps=30
"""

from __future__ import annotations

from bench.orchestration import parse_sweep_args, sweep


def main() -> None:
    args = parse_sweep_args(__doc__)
    results = {}
    for label, concurrency in (("parallel", None), ("sequential", 1)):
        result = sweep(args.spec, args.only, args.set, concurrency)
        total = result["ray_start_s"] + result["sweep_s"]
        results[label] = total
        print(
            f"{label:<11} {total:7.1f} s wall ({len(result['rows'])} runs), {result['tokens'] / total:,.0f} aggregate "
            "tokens/s"
        )
    print(f"sequential / parallel wall time: {results['sequential'] / results['parallel']:.2f}x")


if __name__ == "__main__":
    main()
