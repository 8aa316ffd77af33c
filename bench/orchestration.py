"""Orchestration overhead: where a local smoke sweep's wall time goes.

Runs specs/smoke.yaml (or --only some options) through the real launcher on a
local Ray instance and breaks the time down: Ray start, each trial's start-up
until its first step, then time in training steps, evaluation, checkpoint save
(+ upload, inside report), report() and idle. The figure to watch is the share of
each trial's wall time after its first step that is spent in training steps.

    python -m bench.orchestration
    python -m bench.orchestration --only lora_capacity --set run.steps=40
"""

from __future__ import annotations

import time

SCRIPT_START = time.time()  # before the heavy imports: launch-to-first-step includes them

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402

from orchestrator.launch import run  # noqa: E402
from orchestrator.spec import load  # noqa: E402


def sweep(spec: str, only: list[str] | None, sets: list[str], max_concurrent: int | None = None) -> dict:
    """Run one local sweep through the launcher's own run(); returns timings and each run's saved history rows."""
    storage = tempfile.mkdtemp(prefix="bench-")
    sets = [*sets, f"storage.path={storage}"] + ([f"max_concurrent={max_concurrent}"] if max_concurrent else [])
    experiment, plan = load(spec, sets, only)
    t0 = time.time()
    results = run(experiment, plan, local=True)
    t1 = time.time()
    folder = results.folder
    rows = {r.name: folder.history(r.name) for r in plan.runs}
    started = {r.name: folder.state(r.name).get("started") for r in plan.runs}
    tokens = sum(r.spec.data.batch_size * r.spec.data.block_size * r.spec.run.steps for r in plan.runs)
    return {"sweep_start": t0, "sweep_s": t1 - t0, "rows": rows, "started": started, "tokens": tokens}


def breakdown(result: dict) -> list[dict]:
    """Per run: start-up to first step, and the shares of its post-first-step wall time."""
    out = []
    for name, rows in result["rows"].items():
        if not rows:
            continue
        last = rows[-1]
        wall = last["reported_at"] - last["first_step_at"]
        parts = {k: last[f"time_{k}_s"] for k in ("train", "eval", "checkpoint", "report")}
        out.append(
            {
                "run": name,
                "startup_s": last["first_step_at"] - result["sweep_start"],
                "setup_in_worker_s": last["time_setup_s"],
                "wall_after_first_step_s": wall,
                **{f"{k}_share": v / wall for k, v in parts.items()},
                "idle_share": 1 - sum(parts.values()) / wall,
            }
        )
    return out


def parse_sweep_args(doc: str) -> argparse.Namespace:
    """The spec, --only and --set arguments both sweep benchmarks take; prints the machine line."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--spec", default="specs/smoke.yaml")
    parser.add_argument("--only", action="append")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    print(f"machine: {platform.node()} | {platform.machine()}, {os.cpu_count()} cores | {time.strftime('%Y-%m-%d')}")
    return args


def main() -> None:
    args = parse_sweep_args(__doc__)
    result = sweep(args.spec, args.only, args.set)
    rows = breakdown(result)
    first_step = min(r["startup_s"] for r in rows) + (result["sweep_start"] - SCRIPT_START)
    print(f"launch to first step      {first_step:.1f} s (process start, imports and Ray start included)")
    print(f"sweep wall time           {result['sweep_s']:.1f} s for {len(rows)} runs")
    print(
        f"\n{'run':<32}{'startup':>9}{'in worker':>10}{'after 1st':>10}"
        f"{'train':>8}{'eval':>7}{'ckpt':>7}{'report':>8}{'idle':>7}"
    )
    for r in rows:
        print(
            f"{r['run']:<32}{r['startup_s']:>8.1f}s{r['setup_in_worker_s']:>9.1f}s{r['wall_after_first_step_s']:>9.1f}s"
            f"{r['train_share']:>8.1%}{r['eval_share']:>7.1%}{r['checkpoint_share']:>7.1%}{r['report_share']:>8.1%}{r['idle_share']:>7.1%}"
        )
    shares = sorted(r["train_share"] for r in rows)
    print(f"\ntraining-step share after the first step: min {shares[0]:.1%}, median {shares[len(shares) // 2]:.1%}")


if __name__ == "__main__":
    main()
