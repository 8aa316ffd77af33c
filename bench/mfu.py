"""MFU of the job itself through the sweep, each compute lever on and off (bench/mfu.yaml's options).

Runs ``python -m orchestrator.launch bench/mfu.yaml --local`` with the options and
``--set`` overrides given (its console streams as the runs report), one run at a time,
then prints for each run: its last evaluation window's tokens/s and MFU (the first window
holds any compile, the second the profiled steps), the seconds from its start to its
first step and of its first window, and its profile's table when it has one.

    python -m bench.mfu --only full_eager --only full_compiled_chunked
    python -m bench.mfu --only lora_eager --set model.name=tiny-gpt2 --set resources.gpus_per_worker=0   # the CPU
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from orchestrator.folder import ExperimentFolder
from orchestrator.spec import Run, load

SPEC = "bench/mfu.yaml"


def table(folder: ExperimentFolder, runs: list[Run]) -> str:
    """One line per run from its history, and each profile's table after them."""
    lines = [f"{'run':<24}{'tok/s':>11}{'MFU':>8}{'ms/step':>9}{'start-up':>10}{'1st window':>12}"]
    profiles = []
    for run in runs:
        rows = [r for r in folder.history(run.name) if r.get("tokens_per_s")]
        if not rows:
            lines.append(f"{run.name:<24}  no window measured: {folder.state(run.name).get('error', '?')}")
            continue
        tokens = run.spec.data.batch_size * run.spec.data.block_size  # a step's
        last, first = rows[-1], rows[0]
        mfu = "-" if last.get("mfu") is None else f"{last['mfu']:.1%}"
        lines.append(
            f"{run.name:<24}{last['tokens_per_s']:>11,.0f}{mfu:>8}{1e3 * tokens / last['tokens_per_s']:>9.1f}"
            f"{last['time_setup_s']:>9.1f}s{first['step'] * tokens / first['tokens_per_s']:>11.1f}s"
        )
        for summary in sorted(Path(folder.run_uri(run.name)).glob("train-*/profile/summary.txt")):
            profiles.append(f"[{run.name}] {summary.read_text()}")
    return "\n".join(lines + [""] + profiles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", required=True)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--spec", default=SPEC)
    parser.add_argument("--storage", default=None, help="where the runs go (default: a fresh temporary folder)")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for the sweep; then it is stopped and the runs that finished a window are shown",
    )
    args = parser.parse_args()
    storage = args.storage or tempfile.mkdtemp(prefix="bench-mfu-")
    sets = [*args.set, f"storage.path={storage}"]
    command = [sys.executable, "-m", "orchestrator.launch", args.spec, "--local"]
    command += [a for name in args.only for a in ("--only", name)] + [a for s in sets for a in ("--set", s)]
    sweep = subprocess.Popen(command)
    try:
        sweep.wait(timeout=args.budget)  # no verdict without a control (exit 3): the figures are in the histories
    except subprocess.TimeoutExpired:
        print(f"bench.mfu: the sweep ran past its {args.budget:g} s; stopping it", flush=True)
        sweep.send_signal(signal.SIGINT)  # as Ctrl-C: the launcher stops its runs and Ray
        try:
            sweep.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sweep.kill()
    experiment, plan = load(args.spec, sets, args.only)
    folder = ExperimentFolder(experiment.storage, experiment.name)
    print(table(folder, plan.runs), flush=True)


if __name__ == "__main__":
    main()
