"""An experiment's folder in storage, local or ``s3://``: its layout, and every read and write of it.

One experiment, one folder, ``<storage.path>/<name>/``::

    plan.json                  the experiment and its resolved plan, written when it starts
    early_stopping.json        the stopping rule's state per trial and why each run was stopped
    lr_search.json             with an LR search: each rung's arms and their val loss, and why each arm was pruned
    summary.json, report.md, loss_curves.png, <name>-confirm.yaml    the results
    <run>/history.json         every report the run made (contract.report.Report), rewritten after each one
    <run>/state.json           running, finished or failed (with the error), and since when
    <run>/train-<trial id>/    Ray Train's run: step_NNNNNN/ checkpoints (contract.layout), its snapshot
    <run>/result.json, events.out.tfevents.*    Tune's trial folder: its JSON log, TensorBoard
    <run>/error.txt            a failed run's traceback, written by Tune

``<run>`` is :meth:`ExperimentFolder.run_folder` of the run's name: Tune's trial folder, which
Tune names by the same method, in the experiment folder Tune is given (:meth:`ExperimentFolder.tune_storage`).
Every path it hands out is a full one, a local path or an ``s3://`` URI. The driver's Tune
callbacks write through this class; ``--status``, ``--report``, the records, the
diagnosis and the export read through it. It imports nothing of Ray, so reading an
experiment does not start or import Ray, from any machine that can reach the storage.

plan.json says which layout of this folder wrote the rest (:data:`LAYOUT`); an experiment of
an earlier layout is read through one conversion (:func:`_from_layout_1`) and never resumed.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from typing import Any

from contract.report import Report
from contract.spec import StorageSpec
from contract.storage import filesystem, is_s3, join, read_json, write_json
from orchestrator.spec.experiment import ExperimentSpec, SpecError
from orchestrator.spec.file import load
from orchestrator.spec.resolve import Plan, dir_name

# What this version writes. 2: each run's history.json holds contract.report.Report records, checkpoints by their
# path in the run's folder. 1 (plan.json says nothing): the rows the Tune callbacks copied out of Tune's results, by a
# list of names, with the checkpoint's path in storage; read through _from_layout_1.
LAYOUT = 2

PLAN = "plan.json"
EARLY_STOPPING = "early_stopping.json"
LR_SEARCH = "lr_search.json"
HISTORY = "history.json"
SUMMARY = "summary.json"
STATE = "state.json"


@dataclass(frozen=True)
class ExperimentFolder:
    """``<storage.path>/<name>/`` and what is in it."""

    storage: StorageSpec
    name: str

    @property
    def uri(self) -> str:
        """The folder as a path or ``s3://`` URI."""
        return join(self.storage.path, self.name)

    def file(self, name: str) -> str:
        """A file at the top of the folder (a result, the plan), as a path or URI."""
        return join(self.uri, name)

    def as_argument(self, name: str) -> str:
        """A file at the top of the folder as a command names it (quoted for a shell): its path, or in a bucket the
        name that ``aws s3 cp`` copies it down as."""
        return shlex.quote(name if is_s3(self.uri) else self.file(name))

    @staticmethod
    def run_folder(run: str) -> str:
        """The name of a run's own folder, Tune's trial folder (Tune names it with this too)."""
        return dir_name(run)

    def run_uri(self, run: str) -> str:
        """A run's own folder: Tune's trial folder, with Ray Train's run inside it."""
        return join(self.uri, self.run_folder(run))

    @staticmethod
    def train_run(trial_id: str) -> str:
        """The name of Ray Train's run in a trial's folder: the trial id, stable across relaunches, so a restored
        trial finds its checkpoints again (no timestamps)."""
        return f"train-{trial_id}"

    def checkpoint_uri(self, run: str, checkpoint: str) -> str:
        """A checkpoint of ``run``, given as its report records it (relative to the run's folder,
        contract.layout.checkpoint_in_run), where it is in this folder now."""
        return join(self.run_uri(run), checkpoint)

    def tune_storage(self) -> tuple[Any, str]:
        """The filesystem and storage path for Tune: with this folder's name as Tune's experiment name, Tune's
        experiment folder is this one."""
        return filesystem(self.storage.path, self.storage)

    def train_storage(self, run: str) -> tuple[Any, str]:
        """The filesystem and storage path for Ray Train's run of ``run``: its run's folder."""
        return filesystem(self.run_uri(run), self.storage)

    def error_file(self, run: str) -> str:
        """Where Tune keeps a failed run's whole traceback."""
        return join(self.run_uri(run), "error.txt")

    def filesystem(self) -> tuple[Any, str]:
        """The pyarrow filesystem and the folder's path within it (``bucket/prefix/name`` on S3)."""
        return filesystem(self.uri, self.storage)

    def exists(self) -> bool:
        fs, path = self.filesystem()
        return fs.get_file_info(path).type.name != "NotFound"

    # -- the plan

    def resolve(
        self, experiment: ExperimentSpec, plan: Plan, fresh: bool
    ) -> tuple[ExperimentFolder, ExperimentSpec, bool]:
        """Where this launch goes, reading only: returns (folder, experiment, resuming).

        The same name with the same experiment (its resolved runs and every experiment-level setting: the
        control, seeds, early stopping, evaluation, the LR search, tracking, concurrency) resumes. The same name
        with anything else is refused with what differs (a resumed sweep keeps the settings it started with, so a
        change would be half applied, and two sweeps are never mixed in one folder); ``fresh`` picks an unused
        name ``NAME-2``, ``NAME-3``, ... instead. A new experiment is :meth:`record`-ed before it runs.
        """
        folder, n = self, 1
        while fresh and folder.exists():
            n += 1
            folder = ExperimentFolder(self.storage, f"{self.name}-{n}")
        experiment = experiment.model_copy(update={"name": folder.name})
        stored = folder._read_plan()
        if stored is None:
            return folder, experiment, False
        where = f"experiment {folder.name!r} in {self.storage.path}"
        if _layout(stored) != LAYOUT:
            raise SpecError(
                f"{where} was started by an earlier version of plateau-sweep (folder layout {_layout(stored)}; this "
                f"version writes layout {LAYOUT}): it can be read (--status, --report, export, diagnose) but not "
                "resumed; pass --fresh to run it again under a new name"
            )
        changes = relaunch_changes(*folder.plan(), experiment, plan)
        if changes:
            raise SpecError(
                f"{where} was started with other settings than this launch asks for:\n"
                + "\n".join(f"  {change}" for change in changes)
                + "\nRelaunch with the spec and flags it was started with to resume it, or pass --fresh to start it "
                f"over under a new name ({self.name}-2, ...)"
            )
        return folder, experiment, True

    def record(self, experiment: ExperimentSpec, plan: Plan) -> None:
        """Start a new experiment here: its plan.json records it, and the layout of the files that follow."""
        fs, path = self.filesystem()
        fs.create_dir(path, recursive=True)
        stored = {
            "layout": LAYOUT,
            "experiment": experiment.model_dump(mode="json"),
            "plan": plan.model_dump(mode="json"),
        }
        self._write(PLAN, stored, indent=2)

    def start(
        self, experiment: ExperimentSpec, plan: Plan, fresh: bool
    ) -> tuple[ExperimentFolder, ExperimentSpec, bool]:
        """:meth:`resolve`, and :meth:`record` a new experiment: returns (folder, experiment, resuming)."""
        folder, experiment, resuming = self.resolve(experiment, plan, fresh)
        if not resuming:
            folder.record(experiment, plan)
        return folder, experiment, resuming

    def plan(self) -> tuple[ExperimentSpec, Plan] | None:
        """The experiment and plan this folder was started with, or None when there is none yet."""
        stored = self._read_plan()
        if stored is None:
            return None
        try:
            return ExperimentSpec.model_validate(stored["experiment"]), Plan.model_validate(stored["plan"])
        except ValueError as err:
            raise SpecError(
                f"{self.file(PLAN)}: not a plan this version can read ({str(err).splitlines()[0]}); "
                "use --fresh or another name"
            ) from None

    def layout(self) -> int:
        """The layout of this folder's files (:data:`LAYOUT` for an experiment not started yet)."""
        stored = self._read_plan()
        return LAYOUT if stored is None else _layout(stored)

    def _read_plan(self) -> dict | None:
        try:
            stored = self._read(PLAN)
        except ValueError as err:  # not JSON
            raise SpecError(
                f"{self.file(PLAN)}: unreadable ({err}); the experiment folder is damaged: use --fresh or another name"
            ) from None
        if stored is not None and not (isinstance(stored, dict) and {"experiment", "plan"} <= set(stored)):
            raise SpecError(
                f"{self.file(PLAN)}: written by an earlier version of plateau-sweep, which this one cannot resume; "
                "use --fresh or another name"
            )
        return stored

    # -- each run's record, written by the driver as results arrive

    def history(self, run: str) -> list[Report]:
        """The reports a run made, oldest first; [] before its first. A step redone after a failure appears
        twice."""
        rows = read_json(join(self.run_uri(run), HISTORY), self.storage) or []
        if self.layout() == 1:
            rows = [_from_layout_1(row) for row in rows]
        return [Report.model_validate(row) for row in rows]

    def write_history(self, run: str, reports: list[Report]) -> None:
        write_json(join(self.run_uri(run), HISTORY), self.storage, [r.model_dump(mode="json") for r in reports])

    def state(self, run: str) -> dict[str, Any]:
        """``{"state": "running" | "finished" | "failed", "error": ..., "since": ..., "started": ...}``, or {} before
        the run started (``started``: when its trial last started, ``since``: when it entered this state)."""
        return read_json(join(self.run_uri(run), STATE), self.storage) or {}

    def write_state(self, run: str, state: dict[str, Any]) -> None:
        write_json(join(self.run_uri(run), STATE), self.storage, state)

    # -- early stopping

    def early_stopping(self) -> dict[str, Any]:
        """``{"rules": {trial id: rule state}, "reasons": {run: why it was stopped}}``; empty before any evaluation."""
        return self._read(EARLY_STOPPING) or {"rules": {}, "reasons": {}}

    def write_early_stopping(self, state: dict[str, Any]) -> None:
        self._write(EARLY_STOPPING, state)

    # -- the LR search

    def lr_search(self) -> dict[str, Any]:
        """``{"rungs": {search: {step: {arm: val loss}}}, "pruned": {arm: why it was pruned}}``; empty before any
        rung."""
        return self._read(LR_SEARCH) or {"rungs": {}, "pruned": {}}

    def write_lr_search(self, state: dict[str, Any]) -> None:
        self._write(LR_SEARCH, state)

    # -- results

    def write_results(self, files: dict[str, bytes]) -> None:
        """Write result files (report.md, summary.json, the plot, the follow-up spec) at the top of the folder."""
        fs, path = self.filesystem()
        fs.create_dir(path, recursive=True)
        for name, payload in files.items():
            with fs.open_output_stream(f"{path}/{name}") as out:
                out.write(payload)

    def reported(self) -> bool:
        """Whether a report was written (summary.json and the rest): the sweep ended, or --report rebuilt it."""
        fs, path = self.filesystem()
        return fs.get_file_info(f"{path}/{SUMMARY}").type.name == "File"

    def _read(self, name: str) -> Any:
        return read_json(self.file(name), self.storage)

    def _write(self, name: str, value: Any, indent: int | None = None) -> None:
        write_json(self.file(name), self.storage, value, indent=indent)


def locate(source: str) -> ExperimentFolder:
    """The experiment a read-only command is pointed at: its folder (``<storage.path>/<name>``), its ``s3://`` URI
    (the endpoint from AWS_ENDPOINT_URL, as the AWS CLI reads it), or the spec that launched it (its storage and name).

    Only locates it; :meth:`ExperimentFolder.plan` says whether an experiment is there. Raises :class:`SpecError` for
    a spec file that does not load.
    """
    if source.endswith((".yaml", ".yml")):
        experiment, _ = load(source)
        return ExperimentFolder(experiment.storage, experiment.name)
    parent, _, name = source.rstrip("/").rpartition("/")
    endpoint = os.environ.get("AWS_ENDPOINT_URL") if is_s3(source) else None
    return ExperimentFolder(StorageSpec(path=parent or ".", endpoint_url=endpoint), name)


def _layout(stored: dict[str, Any]) -> int:
    """The layout a plan.json says its folder has (layout 1 wrote none)."""
    return stored.get("layout", 1)


def relaunch_changes(stored: ExperimentSpec, stored_plan: Plan, experiment: ExperimentSpec, plan: Plan) -> list[str]:
    """What a relaunch asks for that differs from what the experiment was started with, one line per field with the
    stored value first; [] when it is the same experiment.

    Every experiment-level setting counts, and the runs as resolved (``base`` and ``options`` only through them:
    the same runs spelled another way are the same experiment); the name and the storage say where it is.
    """
    where = {"name", "storage", "base", "options"}
    found = _differences(
        stored.model_dump(mode="json", exclude=where), experiment.model_dump(mode="json", exclude=where)
    )
    protocol = _differences(
        stored_plan.model_dump(mode="json", exclude={"runs"}), plan.model_dump(mode="json", exclude={"runs"})
    )
    found += [(f"plan.{path}", a, b) for path, a, b in protocol]
    old, new = {r.name: r for r in stored_plan.runs}, {r.name: r for r in plan.runs}
    if [*old] != [*new]:
        found.append(("runs", [*old], [*new]))
    for name in [n for n in old if n in new]:
        differ = _differences(old[name].model_dump(mode="json"), new[name].model_dump(mode="json"))
        found += [(f"run {name}: {path}", a, b) for path, a, b in differ]
    return [f"{path}: {json.dumps(a)} (stored) → {json.dumps(b)}" for path, a, b in found]


def _differences(before: Any, after: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, stored, new) for each field where ``before`` and ``after`` differ; a block present on one side
    only is one difference."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = [*before, *(k for k in after if k not in before)]
        return [d for k in keys for d in _differences(before.get(k), after.get(k), f"{path}.{k}" if path else k)]
    return [] if before == after else [(path, before, after)]


def _from_layout_1(row: dict[str, Any]) -> dict[str, Any]:
    """A history row of layout 1 as a report: the one conversion from the previous layout.

    Layout 1 kept Tune's own timestamp, the checkpoint's path in storage (its last two parts, Ray Train's run and the
    step's folder, are its place in the run's folder) and the timers as flat fields. Its other fields are the
    record's, and what an older row lacks (node_id, resumed_from) the record says as not reported.
    """
    row = dict(row)
    row.pop("timestamp", None)
    path = row.pop("checkpoint_path", None)
    row["checkpoint"] = "/".join(path.rstrip("/").split("/")[-2:]) if path else None
    row["timers"] = {k: row.pop(f"time_{k}_s") for k in ("setup", "train", "eval", "checkpoint", "report")}
    return row
