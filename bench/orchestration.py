"""Where a local sweep's wall time goes, and what each start-up lever saves.

Runs the default job (or a spec) through the launcher's own ``run()`` on a local Ray
instance, in a fresh process as a user runs it, and breaks the time down: launch to the
first run's first step; each run's start-up (its trial starting to its first step) and
what it spent after that in training steps, evaluation, checkpoints, report() and idle.

    python -m bench.orchestration                 # the default job, every lever on
    python -m bench.orchestration --ablate        # every lever on, then each lever off in turn, in one run
    python -m bench.orchestration --cpu           # and the CPU seconds each kind of process used
    python -m bench.orchestration --spec specs/smoke.yaml --only lora_capacity --set run.steps=40

The levers are those of orchestrator/sweep/startup.py; ``--ablate`` turns each off with
PLATEAU_STARTUP_OFF and reports what the sweep took without it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.results.timing import breakdown


def one(spec: str | None, only: list[str] | None, sets: list[str], out: Path) -> None:
    """Run one sweep in this process and write its breakdown to ``out`` (JSON)."""
    launched = float(os.environ.get("BENCH_LAUNCHED", time.time()))
    from orchestrator.launch import run
    from orchestrator.spec import load

    storage = tempfile.mkdtemp(prefix="bench-")
    experiment, plan = load(spec, [*sets, f"storage.path={storage}"], only)
    results = run(experiment, plan, local=True)
    ended = time.time()
    result = breakdown(results.folder, results.plan, launched)
    result.update(wall_s=ended - launched, runs_n=len(plan.runs), verdict=results.comparisons.verdict.reason)
    out.write_text(json.dumps(result))


def measure(args: argparse.Namespace, off: str = "") -> dict:
    """One sweep in a fresh process (as a user runs it), with the levers in ``off`` turned off; with
    ``args.cpu``, also the CPU seconds its processes used, by what each process is (``cpu_by_process``)."""
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    command = [sys.executable, "-m", "bench.orchestration", "--one", str(out), "--spec", args.spec or ""]
    command += [a for name in args.only or [] for a in ("--only", name)] + [a for s in args.set for a in ("--set", s)]
    env = {**os.environ, "PLATEAU_STARTUP_OFF": off, "BENCH_LAUNCHED": str(time.time())}
    sweep = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    used = _sample_cpu(sweep) if args.cpu else {}
    if sweep.wait():
        raise subprocess.CalledProcessError(sweep.returncode, command)
    return {**json.loads(out.read_text()), "cpu_by_process": used}


def _sample_cpu(sweep: subprocess.Popen, every_s: float = 0.3) -> dict[str, list]:
    """Until ``sweep`` ends: {what a process is: [how many, CPU seconds]} over it and every process under it.

    A process is named by its Ray title (``ray::RayTrainWorker``, ``ray::ImplicitFunc`` for a Tune trial),
    its Python script or its program; a process is sampled every ``every_s``, so one that lived less than
    that is missed, and one that ends counts what it had used at its last sample.
    """
    import psutil

    seen: dict[int, tuple[str, float]] = {}
    root = psutil.Process(sweep.pid)
    while sweep.poll() is None:
        for process in [root, *root.children(recursive=True)]:
            try:
                title = " ".join(process.cmdline())
                cpu = sum(process.cpu_times()[:2])
            except psutil.Error:  # gone meanwhile
                continue
            words = title.split() or ["?"]
            scripts = [Path(w).name for w in words if w.endswith(".py")]
            name = words[0].split(".")[0] if title.startswith("ray::") else (scripts or [Path(words[0]).name])[0]
            if "default_worker.py" in title:  # a Ray worker not yet given an actor
                name = "ray::IDLE"
            if process.pid == sweep.pid:
                name = "the driver"
            old = seen.get(process.pid, (name, 0.0))  # a name seen before a worker gets its actor is provisional
            seen[process.pid] = (old[0] if old[0] not in ("?", "ray::IDLE") else name, max(cpu, old[1]))
        time.sleep(every_s)
    used: dict[str, list] = {}
    for name, cpu in seen.values():
        count_and_cpu = used.setdefault(name, [0, 0.0])
        count_and_cpu[0] += 1
        count_and_cpu[1] += cpu
    return used


def table(result: dict) -> None:
    print(
        f"{'run':<32}{'start-up':>9}{'in worker':>10}{'after 1st':>10}{'train':>8}{'eval':>7}{'ckpt':>7}{'report':>8}"
    )
    for r in result["runs"]:
        print(
            f"{r['run']:<32}{r['startup_s']:>8.1f}s{r['in_worker_s']:>9.1f}s{r['after_first_step_s']:>9.1f}s"
            f"{r['train_share']:>8.1%}{r['eval_share']:>7.1%}{r['checkpoint_share']:>7.1%}{r['report_share']:>8.1%}"
        )


SUMMARY_HEADER = f"{'':<28}{'wall':>9}{'1st step':>11}{'last 1st':>11}{'start-up':>10}"


def summary_line(label: str, r: dict) -> str:
    return (
        f"{label:<28}{r['wall_s']:>7.1f} s{r['launch_to_first_step_s']:>9.1f} s"
        f"{r['launch_to_last_first_step_s']:>9.1f} s{r['startup_share_of_run_time']:>10.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=None, help="a spec file; the default job if omitted")
    parser.add_argument("--only", action="append")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--ablate", action="store_true", help="also run with each start-up lever off, one at a time")
    parser.add_argument("--cpu", action="store_true", help="also the CPU seconds each kind of process used")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # internal: run one sweep here, write its JSON
    args = parser.parse_args()
    if args.one:
        return one(args.spec or None, args.only, args.set, args.one)
    from orchestrator.sweep.startup import LEVERS

    print(f"machine: {platform.node()} | {platform.machine()}, {os.cpu_count()} cores | {time.strftime('%Y-%m-%d')}")
    configurations = [("every lever on", "")]
    if args.ablate:  # before (none of them), then each one's share: the sweep without it
        configurations += [("every lever off", ",".join(LEVERS))] + [(f"without {lever}", lever) for lever in LEVERS]
    results = {label: measure(args, off) for label, off in configurations}
    first = results["every lever on"]
    table(first)
    if args.cpu:
        print(f"\nCPU seconds by process (every lever on; {first['wall_s']:.1f} s of wall time under the sampler):")
        for name, (count, cpu) in sorted(first["cpu_by_process"].items(), key=lambda kv: -kv[1][1]):
            print(f"  {cpu:8.1f} s  {count:3d} x {name}")
        print(f"  {sum(cpu for _, cpu in first['cpu_by_process'].values()):8.1f} s  in all")
    print(f"\n{SUMMARY_HEADER}")
    for label, result in results.items():
        print(summary_line(label, result))
    if args.ablate:
        print("\nwhat each lever saves (wall time without it - with every lever):")
        for label, result in list(results.items())[2:]:
            print(f"  {label.removeprefix('without '):<24}{result['wall_s'] - first['wall_s']:+7.1f} s")


if __name__ == "__main__":
    main()
