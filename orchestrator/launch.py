"""Run every option of a spec in parallel on Ray and say which fix worked.

    python -m orchestrator.launch [SPEC] [--local] [--only NAME]... [--set key.path=value]... [--fresh]
    python -m orchestrator.launch SPEC --dry-run     # the plan, after the checks a launch makes; starts nothing
    python -m orchestrator.launch SPEC --status      # progress of its experiment, from storage
    python -m orchestrator.launch SPEC --report      # rebuild report.md, summary.json and the plot from storage
    ray job submit --working-dir . -- python -m orchestrator.launch specs/best.yaml

Without SPEC the default job runs: the loss-plateau plan in miniature (specs/smoke.yaml:
the control with two seeds and every fix, on the bundled pretrained tiny GPT-2 and Q&A
corpus), stored under ./runs/default.

Exit codes: 0 the sweep answered (a verdict was reached; runs that failed are in the
report); 2 the spec, the data or the setup is wrong (nothing was started); 3 the sweep
ran but could not answer (the control did not finish, or no fix did), so that
``ray job`` and a KubeRay RayJob show it as failed. The report is written in both 0 and 3.

From Python (a notebook), :func:`run` is the same sweep::

    from orchestrator.launch import run
    from orchestrator.spec import load

    results = run(*load("specs/smoke.yaml", ["run.steps=20"]), local=True)
    print(results.comparisons.verdict.reason)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from contract.presets import PRESETS, config_dict, local_folder
from contract.storage import StorageUnavailable, check_writable, is_s3
from orchestrator.folder import ExperimentFolder
from orchestrator.results.report import Results
from orchestrator.spec import ExperimentSpec, Plan, SpecError, json_schema, load
from orchestrator.sweep import startup

EXIT_ANSWERED, EXIT_REFUSED, EXIT_UNANSWERED = 0, 2, 3


@dataclass
class Local:
    """A plan made to run on this machine, what was changed for it, and how many runs go at once."""

    plan: Plan
    notes: list[str]
    concurrency: int | None  # None: as many as the resources hold


def localize(experiment: ExperimentSpec, plan: Plan, gpus: int, cores: int) -> Local:
    """Local mode: every run trains on this machine.

    Relative data and model paths become absolute (Ray's workers do not start in this
    directory). GPU requests are split so all runs share the GPUs here, or dropped on a
    CPU-only machine; custom resources are dropped (this machine declares none); CPU
    requests stand, since Ray's CPUs are logical. On a CPU-only machine, unless the spec
    sets max_concurrent, only as many runs go at once as the cores hold: runs sharing two
    cores train no faster, and each run's processes compete for them while they start.
    """
    runs = plan.runs
    asking = [r for r in runs if r.spec.resources.gpus_per_worker > 0]
    workers = sum(r.spec.resources.num_workers for r in asking)
    total = sum(r.spec.resources.num_workers * r.spec.resources.gpus_per_worker for r in asking)
    share = None
    notes = []
    if asking and total > gpus:
        share = math.floor(gpus / workers * 100) / 100 if gpus else 0.0
        notes.append(
            f"local mode: {workers} GPU worker(s) share {gpus} GPU(s), {share:g} GPU each"
            if gpus
            else "local mode: no GPU here, runs train on the CPU"
        )
    if any(r.spec.resources.custom for r in runs):
        notes.append("local mode: resources.custom dropped, this machine declares no custom resources")
    localized = []
    for run in runs:
        spec, resources = run.spec, run.spec.resources
        if not is_s3(spec.data.path):
            spec = spec.model_copy(
                update={"data": spec.data.model_copy(update={"path": str(Path(spec.data.path).resolve())})}
            )
        if local_folder(spec.model.name) is not None and spec.model.name not in PRESETS:
            spec = spec.model_copy(
                update={"model": spec.model.model_copy(update={"name": str(Path(spec.model.name).resolve())})}
            )
        if share is not None and resources.gpus_per_worker > 0:
            resources = resources.model_copy(update={"gpus_per_worker": share})
        spec = spec.model_copy(update={"resources": resources.model_copy(update={"custom": {}})})
        localized.append(run.model_copy(update={"spec": spec}))
    concurrency = None
    if not gpus and experiment.max_concurrent is None and len(runs) > 1 and startup.on("concurrency"):
        smallest = min(r.spec.resources.num_workers * r.spec.resources.cpus_per_worker for r in runs)
        concurrency = max(1, min(len(runs), int(cores // smallest)))
        notes.append(
            f"local mode: {concurrency} run(s) at a time, for this machine's {cores} CPU cores and no GPU "
            "(set max_concurrent to choose)"
        )
    return Local(plan.model_copy(update={"runs": localized}), notes, concurrency)


def gpus_here() -> int:
    import torch

    return torch.cuda.device_count()


def preflight(experiment: ExperimentSpec, plan: Plan, write: bool = True) -> None:
    """Fail in seconds, before Ray starts, when the data, a model, the storage or tracking cannot be used.

    ``write=False`` (the dry run) checks that the storage is reachable without writing to it.
    """
    from contract.documents import DataError, read_documents
    from contract.models import ModelUnavailable, check_reachable

    for data in {
        (r.spec.data.path, r.spec.data.format): r.spec.data for r in plan.runs
    }.values():  # what read_documents reads
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
        check_writable(experiment.storage, probe=write)
    except StorageUnavailable as err:
        raise SpecError(str(err)) from None
    if experiment.tracking.mlflow_uri is not None and importlib.util.find_spec("mlflow") is None:
        raise SpecError("tracking.mlflow_uri is set but MLflow is not installed; pip install -e '.[tracking]'")


def run(experiment: ExperimentSpec, plan: Plan, *, local: bool = False, fresh: bool = False) -> Results:
    """Run the sweep and write its report: what ``python -m orchestrator.launch SPEC`` does, from Python.

    Checks the data, models, storage and tracking first (:class:`SpecError` before anything
    starts); refuses, before Ray starts, a relaunch that asks for anything the experiment was
    not started with (``fresh`` starts over under a new name); connects to the Ray cluster in
    RAY_ADDRESS, or with ``local`` starts a Ray instance on this machine (and stops it at the
    end); records a new experiment's plan.json; runs every run; and writes
    report.md, summary.json and the plot beside the checkpoints, from the experiment as stored
    (what ``--report`` reads). Returns the results: ``results.comparisons.verdict`` is the answer.
    """
    experiment = _absolute_storage(experiment)
    notes: list[str] = []
    concurrency = None
    if local:
        here = localize(experiment, plan, gpus_here(), os.cpu_count() or 1)
        plan, notes, concurrency = here.plan, here.notes, here.concurrency
    elif not is_s3(experiment.storage.path):
        notes.append(
            f"storage.path is the local folder {experiment.storage.path} on the driver's node: fine for one node; "
            "on a multi-node cluster use s3:// so every node writes to the same place"
        )
    preflight(experiment, plan)
    for note in notes:
        print(note)

    with _storage_errors():  # before Ray starts: a relaunch that asks for anything else is refused here
        folder, experiment, resuming = ExperimentFolder(experiment.storage, experiment.name).resolve(
            experiment, plan, fresh
        )

    from orchestrator.spec.plan import concurrency_line
    from orchestrator.sweep import trial as sweep  # Ray, only when a sweep runs: never for --status, --report, diagnose

    sweep.connect(local, plan, experiment.storage, concurrency)  # refuses a storage the cluster's nodes cannot share
    try:
        if not resuming:
            with _storage_errors():
                folder.record(experiment, plan)
        print(
            f"running {len(plan.runs)} run(s), {concurrency_line(experiment, plan, local, concurrency)}: "
            f"{', '.join(r.name for r in plan.runs)}",
            flush=True,
        )
        sweep.run_sweep(experiment, plan, folder, resuming, local, concurrency)
    finally:
        if local:  # we started this Ray instance, so we stop it
            sweep.disconnect()
    return report(*_stored(folder))


@contextlib.contextmanager
def _storage_errors():
    """plan.json could not be read or written: nothing has run, and the fix is the storage's."""
    try:
        yield
    except OSError as err:
        raise SpecError(f"storage: {err}; check storage.path, storage.endpoint_url and the credentials") from None


def report(folder: ExperimentFolder, experiment: ExperimentSpec, plan: Plan) -> Results:
    """Build the report from what is in the experiment's folder, with the diagnosis and the next experiment, and write
    it."""
    from orchestrator.diagnose.sweep import follow_up_spec, sweep_diagnosis
    from orchestrator.results import report as rendering
    from orchestrator.results.records import collect

    results = rendering.build(folder, experiment, plan, collect(folder, plan))
    results.diagnosis = sweep_diagnosis(results)
    follow_up = follow_up_spec(results)
    extra = {}
    if follow_up is not None:
        results.follow_up, extra = follow_up.name, {follow_up.name: follow_up.text.encode()}
    rendering.write(results, extra)
    return results


def _absolute_storage(experiment: ExperimentSpec) -> ExperimentSpec:
    """Trial actors run in their own folders: a local storage path must not depend on where they start."""
    if is_s3(experiment.storage.path):
        return experiment
    resolved = experiment.storage.model_copy(update={"path": str(Path(experiment.storage.path).resolve())})
    return experiment.model_copy(update={"storage": resolved})


def _stored(folder: ExperimentFolder) -> tuple[ExperimentFolder, ExperimentSpec, Plan]:
    """The experiment in ``folder`` as it was started (its plan.json): what run(), --status and --report report on."""
    stored = folder.plan()
    if stored is None:
        raise SpecError(
            f"no experiment {folder.name!r} in {folder.storage.path} yet; launch it first (same spec and --set flags)"
        )
    return folder, *stored


def _folder(experiment: ExperimentSpec) -> ExperimentFolder:
    """The folder of the spec's experiment (--status and --report)."""
    return ExperimentFolder(_absolute_storage(experiment).storage, experiment.name)


def _print_results(results: Results) -> None:
    from orchestrator.results.report import export_command, table

    print()
    print(results.comparisons.verdict.reason)
    print()
    print(table(results))
    uri = results.folder.uri
    print(
        f"\nresults: {uri}/summary.json, report.md, loss_curves.png"
        + (f"; next: {uri}/{results.follow_up}" if results.follow_up else "")
    )
    print(f"export: {export_command(results)}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="?", help="experiment spec (YAML); omit for the default job")
    parser.add_argument(
        "--local",
        action="store_true",
        help="start a local Ray instance on this machine instead of connecting to a cluster",
    )
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this option (repeatable)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field for every run, e.g. --set run.steps=100 (repeatable)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start over under a new name (NAME-2, ...) instead of resuming an experiment of the same name",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--dry-run", action="store_true", help="check the spec, data, models and storage, print the plan; start nothing"
    )
    mode.add_argument(
        "--status",
        action="store_true",
        help="print the progress of the spec's experiment from its storage; start nothing",
    )
    mode.add_argument(
        "--report",
        action="store_true",
        help="rebuild report.md, summary.json and loss_curves.png from storage; start nothing",
    )
    mode.add_argument("--schema", action="store_true", help="print the spec's JSON Schema and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return EXIT_ANSWERED
    try:
        experiment, plan = load(args.spec, args.set, args.only)
        if args.status:
            from orchestrator.results.status import show

            folder, _, stored = _stored(_folder(experiment))
            text = show(folder, stored)
        elif args.dry_run:
            from orchestrator.results.seed_prior import seed_notes
            from orchestrator.spec.plan import describe

            notes, concurrency = [], None
            if args.local:
                here = localize(experiment, plan, gpus_here(), os.cpu_count() or 1)
                plan, notes, concurrency = here.plan, here.notes, here.concurrency
            preflight(experiment, plan, write=False)
            text = "\n".join(
                [
                    *notes,
                    describe(
                        experiment, plan, concurrency, local=args.local, seed_notes=seed_notes(plan, experiment.control)
                    ),
                ]
            )
        elif args.report:
            results = report(*_stored(_folder(experiment)))
        else:
            results = run(experiment, plan, local=args.local, fresh=args.fresh)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as err:
        if not (args.status or args.report or args.dry_run):
            raise  # not a setup error (run() words those as SpecError): the sweep broke, show where
        print(f"error: storage: {err}; check storage.path, storage.endpoint_url and the credentials", file=sys.stderr)
        return EXIT_REFUSED
    if args.status or args.dry_run:
        print(text)
        return EXIT_ANSWERED
    _print_results(results)
    if not results.comparisons.answered:
        print(f"\nno answer: {results.comparisons.verdict.reason}", file=sys.stderr)
        return EXIT_UNANSWERED
    return EXIT_ANSWERED


if __name__ == "__main__":
    sys.exit(main())
