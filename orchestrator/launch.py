"""Run every option of a spec in parallel on Ray and say which fix worked.

    python -m orchestrator.launch SPEC [--dry-run] [--local] [--only NAME]... [--set key.path=value]...
    ray job submit --working-dir . -- python -m orchestrator.launch specs/best.yaml

Without SPEC the embedded defaults run: one LoRA run of the bundled tiny GPT-2 on
the bundled corpus, stored under ./runs. Exit codes: 0 done (failed runs are
recorded in the report), 1 every run failed, 2 the spec or the setup is wrong
(nothing was started).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from jobs.presets import PRESETS, local_folder
from orchestrator.spec import ExperimentSpec, Run, SpecError, deep_merge, format_validation_error, json_schema, resolve_runs


def parse_sets(items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``key.path=value`` pairs (values parsed as YAML) split into experiment-level and per-run overrides."""
    experiment: dict[str, Any] = {}
    run: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected key.path=value, e.g. --set optim.lr=3e-5")
        value: Any = yaml.safe_load(raw)
        for part in reversed(key.split(".")):
            value = {part: value}
        top = key.split(".")[0]
        target = experiment if top in ExperimentSpec.model_fields and top not in ("base", "options") else run
        target.update(deep_merge(target, value))
    return experiment, run


def load(path: str | None, sets: list[str] = (), only: list[str] | None = None) -> tuple[ExperimentSpec, list[Run]]:
    """Read, validate and expand a spec file (or the embedded defaults). Raises :class:`SpecError`."""
    where = path or "(embedded defaults)"
    data: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise SpecError(f"{path}: cannot read the spec ({err.strerror}); check the path") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise SpecError(f"{path}: not valid YAML{at}: {getattr(err, 'problem', err)}; a spec is a YAML mapping (see specs/smoke.yaml)") from None
        if not isinstance(data, dict):
            raise SpecError(f"{path}: a spec must be a YAML mapping with base/options, got a {type(data).__name__}")
    experiment_sets, run_sets = parse_sets(list(sets))
    try:
        experiment = ExperimentSpec.model_validate(deep_merge(data, experiment_sets))
    except Exception as err:
        raise SpecError(format_validation_error(err, where, ExperimentSpec)) from None
    try:
        runs = resolve_runs(experiment, run_sets, only)
    except SpecError as err:
        raise SpecError(f"{where}: {err}") from None
    return experiment, runs


def localize(runs: list[Run], gpus: int) -> tuple[list[Run], list[str]]:
    """Local mode: every run starts at once on this machine.

    Relative data and model paths become absolute (Ray's workers do not start in
    this directory). GPU requests are split so all runs share the GPUs here, or
    dropped on a CPU-only machine; CPU requests stand, since Ray's CPUs are logical.
    """
    asking = [r for r in runs if r.spec.resources.gpus_per_worker > 0]
    workers = sum(r.spec.resources.num_workers for r in asking)
    total = sum(r.spec.resources.num_workers * r.spec.resources.gpus_per_worker for r in asking)
    share = None
    notes = []
    if asking and total > gpus:
        share = math.floor(gpus / workers * 100) / 100 if gpus else 0.0
        notes.append(f"local mode: {workers} GPU worker(s) share {gpus} GPU(s), {share:g} GPU each" if gpus else "local mode: no GPU here, runs train on the CPU")
    localized = []
    for run in runs:
        spec = run.spec
        if not spec.data.path.startswith("s3://"):
            spec = spec.model_copy(update={"data": spec.data.model_copy(update={"path": str(Path(spec.data.path).resolve())})})
        if local_folder(spec.model.name) is not None and spec.model.name not in PRESETS:
            spec = spec.model_copy(update={"model": spec.model.model_copy(update={"name": str(Path(spec.model.name).resolve())})})
        if share is not None and spec.resources.gpus_per_worker > 0:
            spec = spec.model_copy(update={"resources": spec.resources.model_copy(update={"gpus_per_worker": share})})
        localized.append(run.model_copy(update={"spec": spec}))
    return localized, notes


def connect(local: bool, runs: list[Run]) -> None:
    import ray

    from orchestrator.sweep import TRIAL_DRIVER_CPU

    if not local:
        if not os.environ.get("RAY_ADDRESS"):
            raise SpecError("no Ray cluster to connect to: submit with `ray job submit -- python -m orchestrator.launch SPEC`, set RAY_ADDRESS, or pass --local")
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        return
    demand = sum(r.spec.resources.num_workers * r.spec.resources.cpus_per_worker + TRIAL_DRIVER_CPU for r in runs)
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, math.ceil(demand)), include_dashboard=False, log_to_driver=True)


def gpus_here() -> int:
    import torch

    return torch.cuda.device_count()


def preflight(experiment: ExperimentSpec, runs: list[Run]) -> None:
    """Fail in seconds when a model or the storage cannot be reached, before any trial starts."""
    from jobs.model import ModelUnavailable, check_reachable
    from jobs.presets import config_dict
    from orchestrator.storage import StorageUnavailable, check_writable

    needed = set()
    for r in runs:
        model = r.spec.model
        needed.add(model.tokenizer or model.name)
        if model.init == "pretrained" or config_dict(model.name) is None:  # weights, or a shape we only know from there
            needed.add(model.name)
    for name in sorted(needed):
        try:
            check_reachable(name, experiment.storage)
        except ModelUnavailable as err:
            raise SpecError(str(err)) from None
    try:
        check_writable(experiment.storage)
    except StorageUnavailable as err:
        raise SpecError(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="?", help="experiment spec (YAML); omit for the embedded defaults")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the resolved plan; start nothing")
    parser.add_argument("--local", action="store_true", help="start a local Ray instance on this machine instead of connecting to a cluster")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this option (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field for every run, e.g. --set run.steps=100 (repeatable)")
    parser.add_argument("--fresh", action="store_true", help="start over under a new name (NAME-2, ...) instead of resuming an experiment of the same name")
    parser.add_argument("--schema", action="store_true", help="print the spec's JSON Schema and exit")
    args = parser.parse_args(argv)

    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return 0
    try:
        experiment, runs = load(args.spec, args.set, args.only)
        if not experiment.storage.path.startswith("s3://"):
            # Trial actors run in their own folders: hand them an absolute storage path.
            resolved = experiment.storage.model_copy(update={"path": str(Path(experiment.storage.path).resolve())})
            experiment = experiment.model_copy(update={"storage": resolved})
        notes: list[str] = []
        if not args.local and not experiment.storage.path.startswith("s3://"):
            notes.append(f"storage.path is the local folder {experiment.storage.path} on the driver's node: fine for one node; "
                         "on a multi-node cluster use s3:// so every node writes to the same place")
        if args.local:
            runs, notes = localize(runs, gpus_here())
        from orchestrator.plan import describe

        if args.dry_run:
            print(describe(experiment, runs))
            print(*notes, sep="\n")
            return 0
        preflight(experiment, runs)
        from orchestrator.sweep import prepare

        experiment, resuming = prepare(experiment, runs, args.fresh)
        print(*notes, sep="\n")
        connect(args.local, runs)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    try:
        return _sweep_and_report(experiment, runs, resuming)
    finally:
        if args.local:  # we started this Ray instance, so we stop it
            import ray

            ray.shutdown()


def _sweep_and_report(experiment: ExperimentSpec, runs: list[Run], resuming: bool) -> int:
    from orchestrator import history, report
    from orchestrator.sweep import dir_name, run_sweep

    print(f"running {len(runs)} run(s): {', '.join(r.name for r in runs)}", flush=True)
    outcome = run_sweep(experiment, runs, resuming)
    by_name = {res.config["job"]["run_name"]: res for res in outcome.results}
    records = [
        report.record(
            r.name, r.option, r.overrides, r.spec.run.steps,
            history.read(experiment.storage, experiment.name, dir_name(r.name)),
            by_name[r.name].error if r.name in by_name else None,
            outcome.stop_reasons.get(r.name),
            experiment.storage,
        )
        for r in runs
    ]
    uri = report.write(experiment, records)
    print()
    print(report.verdict(records, experiment.control, experiment.early_stopping.min_delta))
    print()
    print(report.table(records, experiment.control))
    print(f"\nresults: {uri}/summary.json, report.md, loss_curves.png")
    return 1 if all(r.status == "failed" for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
