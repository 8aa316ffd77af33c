"""Run every option of a spec in parallel on Ray and say which fix worked.

    python -m orchestrator.launch [SPEC] [--dry-run] [--local] [--only NAME]... [--set key.path=value]...
    python -m orchestrator.launch SPEC --status      # progress of its experiment, from storage
    python -m orchestrator.launch SPEC --report      # rebuild report.md, summary.json and the plot from storage
    ray job submit --working-dir . -- python -m orchestrator.launch specs/best.yaml

Without SPEC the default job runs: the loss-plateau plan in miniature (specs/smoke.yaml:
the control with two seeds and every fix, on the bundled pretrained tiny GPT-2 and Q&A
corpus), stored under ./runs/default. Exit codes: 0 done (failed runs are recorded in
the report), 1 every run failed, 2 the spec, the data or the setup is wrong (nothing was
started).
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

from contract.presets import PRESETS, local_folder
from contract.storage import is_s3
from orchestrator.spec import ExperimentSpec, Plan, SpecError, deep_merge, format_validation_error, json_schema, resolve_runs, set_path
from orchestrator.specfile import read_spec

DEFAULT_SPEC = Path(__file__).resolve().parent.parent / "specs" / "smoke.yaml"
DEFAULT_NAME = "default"


def parse_sets(items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``key.path=value`` pairs (values parsed as YAML) split into experiment-level and per-run overrides."""
    experiment: dict[str, Any] = {}
    run: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise SpecError(f"--set {item!r}: expected key.path=value, e.g. --set optim.lr=3e-5")
        try:
            value: Any = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise SpecError(f"--set {item!r}: the value is not valid YAML; quote it") from None
        top = key.split(".")[0]
        set_path(experiment if top in ExperimentSpec.model_fields and top not in ("base", "options") else run, key.split("."), value)
    return experiment, run


def load(path: str | None, sets: list[str] = (), only: list[str] | None = None) -> tuple[ExperimentSpec, Plan]:
    """Read, validate and expand a spec file (or the default job). Raises :class:`SpecError`."""
    if path is None:
        data, where = {**read_spec(str(DEFAULT_SPEC)), "name": DEFAULT_NAME}, "(the default job, specs/smoke.yaml)"
    else:
        data, where = read_spec(path), path
    experiment_sets, run_sets = parse_sets(list(sets))
    try:
        experiment = ExperimentSpec.model_validate(deep_merge(data, experiment_sets))
    except Exception as err:  # pydantic.ValidationError, re-worded with its location
        raise SpecError(format_validation_error(err, where, ExperimentSpec)) from None
    try:
        plan = resolve_runs(experiment, run_sets, only)
    except SpecError as err:
        raise SpecError(f"{where}: {err}") from None
    return experiment, plan


def localize(plan: Plan, gpus: int) -> tuple[Plan, list[str]]:
    """Local mode: every run starts at once on this machine.

    Relative data and model paths become absolute (Ray's workers do not start in
    this directory). GPU requests are split so all runs share the GPUs here, or
    dropped on a CPU-only machine; CPU requests stand, since Ray's CPUs are logical.
    """
    runs = plan.runs
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
        if not is_s3(spec.data.path):
            spec = spec.model_copy(update={"data": spec.data.model_copy(update={"path": str(Path(spec.data.path).resolve())})})
        if local_folder(spec.model.name) is not None and spec.model.name not in PRESETS:
            spec = spec.model_copy(update={"model": spec.model.model_copy(update={"name": str(Path(spec.model.name).resolve())})})
        if share is not None and spec.resources.gpus_per_worker > 0:
            spec = spec.model_copy(update={"resources": spec.resources.model_copy(update={"gpus_per_worker": share})})
        localized.append(run.model_copy(update={"spec": spec}))
    return plan.model_copy(update={"runs": localized}), notes


def connect(local: bool, plan: Plan) -> None:
    import logging

    import ray

    from orchestrator.sweep import TRIAL_DRIVER_CPU

    if not local:
        if not os.environ.get("RAY_ADDRESS"):
            raise SpecError("no Ray cluster to connect to: submit with `ray job submit -- python -m orchestrator.launch SPEC`, set RAY_ADDRESS, or pass --local")
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True, logging_level=logging.WARNING)
        return
    demand = sum(r.spec.resources.num_workers * r.spec.resources.cpus_per_worker + TRIAL_DRIVER_CPU for r in plan.runs)
    cpus = max(os.cpu_count() or 1, math.ceil(demand))
    print(f"starting a local Ray instance ({cpus} logical CPUs)", flush=True)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=True, logging_level=logging.WARNING)


def gpus_here() -> int:
    import torch

    return torch.cuda.device_count()


def preflight(experiment: ExperimentSpec, plan: Plan) -> None:
    """Fail in seconds, before Ray starts, when the data, a model, the storage or tracking cannot be used."""
    from contract.presets import config_dict
    from contract.storage import StorageUnavailable, check_writable
    from jobs.data import DataError, read_documents
    from jobs.model import ModelUnavailable, check_reachable
    from orchestrator.tracking import TrackingUnavailable, mlflow_callback

    for data in {(r.spec.data.path, r.spec.data.format): r.spec.data for r in plan.runs}.values():  # what read_documents reads
        if not is_s3(data.path):  # s3:// data is checked the same way by the worker, after download
            try:
                read_documents(data, experiment.storage)
            except DataError as err:
                raise SpecError(str(err)) from None
    needed = set()
    for r in plan.runs:
        model = r.spec.model
        needed.add(model.tokenizer_source)
        if model.init == "pretrained" or config_dict(model.name) is None:  # weights, or a shape we only know from there
            needed.add(model.name)
    for name in sorted(needed):
        try:
            check_reachable(name, experiment.storage)
        except ModelUnavailable as err:
            raise SpecError(str(err)) from None
    try:
        check_writable(experiment.storage)
        mlflow_callback(experiment.tracking, experiment.name)
    except (StorageUnavailable, TrackingUnavailable) as err:
        raise SpecError(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="?", help="experiment spec (YAML); omit for the default job")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the resolved plan; start nothing")
    parser.add_argument("--local", action="store_true", help="start a local Ray instance on this machine instead of connecting to a cluster")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this option (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field for every run, e.g. --set run.steps=100 (repeatable)")
    parser.add_argument("--fresh", action="store_true", help="start over under a new name (NAME-2, ...) instead of resuming an experiment of the same name")
    parser.add_argument("--status", action="store_true", help="print the progress of the spec's experiment from its storage, running or finished; start nothing")
    parser.add_argument("--report", action="store_true", help="rebuild report.md, summary.json and loss_curves.png from storage; start nothing")
    parser.add_argument("--schema", action="store_true", help="print the spec's JSON Schema and exit")
    args = parser.parse_args(argv)

    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return 0
    try:
        experiment, plan = load(args.spec, args.set, args.only)
        if not is_s3(experiment.storage.path):
            # Trial actors run in their own folders: hand them an absolute storage path.
            resolved = experiment.storage.model_copy(update={"path": str(Path(experiment.storage.path).resolve())})
            experiment = experiment.model_copy(update={"storage": resolved})
        if (args.status or args.report) and not args.dry_run:  # the experiment as stored: nothing here is placed or started
            return _from_storage(experiment, args.status)
        notes: list[str] = []
        if not args.local and not is_s3(experiment.storage.path):
            notes.append(f"storage.path is the local folder {experiment.storage.path} on the driver's node: fine for one node; "
                         "on a multi-node cluster use s3:// so every node writes to the same place")
        if args.local:
            plan, notes = localize(plan, gpus_here())
        if args.dry_run:
            from orchestrator.plan import describe

            print(describe(experiment, plan))
            print(*notes, sep="\n")
            return 0
        from orchestrator import ray_workarounds  # noqa: F401  (before anything imports ray: it sets Ray's console variables)

        preflight(experiment, plan)
        from orchestrator.store import prepare

        experiment, resuming = prepare(experiment, plan, args.fresh)
        print(*notes, sep="\n")
        connect(args.local, plan)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the storage, read or written before any run starts
        print(f"error: storage: {err}; check storage.path, storage.endpoint_url and the credentials", file=sys.stderr)
        return 2

    try:
        from orchestrator.sweep import run_sweep

        print(f"running {len(plan.runs)} run(s): {', '.join(r.name for r in plan.runs)}", flush=True)
        run_sweep(experiment, plan, resuming)
        return _report(experiment, plan)
    finally:
        if args.local:  # we started this Ray instance, so we stop it
            import ray

            ray.shutdown()


def _from_storage(experiment: ExperimentSpec, status: bool) -> int:
    """--status and --report: the experiment as it was started (its plan.json), read from storage."""
    from orchestrator.store import stored_plan

    stored = stored_plan(experiment.storage, experiment.name)
    if stored is None:
        raise SpecError(f"no experiment {experiment.name!r} in {experiment.storage.path} yet; launch it first (same spec and --set flags)")
    experiment, plan = stored
    if status:
        from orchestrator.status import show

        print(show(experiment, plan))
        return 0
    return _report(experiment, plan)


def _report(experiment: ExperimentSpec, plan: Plan) -> int:
    """Build the report from what is in storage, write it, and print the verdict and the table."""
    from orchestrator import report
    from orchestrator.diagnose.sweep import follow_up_spec, sweep_diagnosis
    from orchestrator.records import collect

    records = collect(experiment, plan)
    results = report.build(experiment, plan, records)
    results.diagnosis = sweep_diagnosis(results)
    follow_up = follow_up_spec(results)
    extra = {}
    if follow_up is not None:
        results.follow_up, extra = follow_up.name, {follow_up.name: follow_up.text.encode()}
    uri = report.write(results, extra)
    print()
    print(results.comparisons.verdict.reason)
    print()
    print(report.table(results))
    print(f"\nresults: {uri}/summary.json, report.md, loss_curves.png" + (f"; next: {uri}/{results.follow_up}" if results.follow_up else ""))
    return 1 if all(r.status == "failed" for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
