"""An experiment's folder in storage, local or ``s3://``: its layout, and every read and write of it.

One experiment, one folder, ``<storage.path>/<name>/``::

    plan.json                  the experiment and its resolved plan, written when it starts
    early_stopping.json        the stopping rule's state per trial and why each run was stopped
    lr_search.json             with an LR search: each rung's arms and their val loss, and why each arm was pruned
    summary.json, report.md, loss_curves.png, <name>-confirm.yaml    the results
    <run>/history.json         every evaluation the run reported, rewritten after each one
    <run>/state.json           running, finished or failed (with the error), and since when
    <run>/train-<trial id>/    Ray Train's run: step_NNNNNN/ checkpoints, its snapshot
    <run>/result.json, events.out.tfevents.*    Tune's trial folder: its JSON log, TensorBoard
    <run>/error.txt            a failed run's traceback, written by Tune

``<run>`` is :func:`~orchestrator.spec.dir_name` of the run's name. The driver's Tune
callbacks write through this class; ``--status``, ``--report``, the records, the
diagnosis and the export read through it. It imports nothing of Ray, so reading an
experiment does not start or import Ray, from any machine that can reach the storage.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Any

from contract.spec import StorageSpec
from contract.storage import filesystem, is_s3, join, read_json, write_json
from orchestrator.spec.experiment import ExperimentSpec, SpecError
from orchestrator.spec.file import load
from orchestrator.spec.resolve import Plan, dir_name

PLAN = "plan.json"
EARLY_STOPPING = "early_stopping.json"
LR_SEARCH = "lr_search.json"
HISTORY = "history.json"
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

    def run_uri(self, run: str) -> str:
        """A run's own folder: Tune's trial folder, with Ray Train's run inside it."""
        return join(self.uri, dir_name(run))

    def checkpoint_uri(self, run: str, recorded: str) -> str:
        """A checkpoint of ``run`` recorded as ``recorded`` (``.../<run>/train-<trial id>/step_NNNNNN``), in this
        folder: where it is now, when the folder was moved, copied or synced between a bucket and a disk since."""
        return join(self.run_uri(run), *recorded.rstrip("/").split("/")[-2:])

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

    def start(
        self, experiment: ExperimentSpec, plan: Plan, fresh: bool
    ) -> tuple[ExperimentFolder, ExperimentSpec, bool]:
        """Begin a new experiment here, or resume this one: returns (folder, experiment, resuming).

        The same name with the same resolved runs resumes. The same name with other runs is
        refused (two sweeps are never mixed in one folder); ``fresh`` picks an unused name
        ``NAME-2``, ``NAME-3``, ... instead. A new experiment's plan.json records it.
        """
        folder, n = self, 1
        while fresh and folder.exists():
            n += 1
            folder = ExperimentFolder(self.storage, f"{self.name}-{n}")
        experiment = experiment.model_copy(update={"name": folder.name})
        resolved = plan.model_dump(mode="json")
        stored = folder._read_plan()
        if stored is not None:
            before = stored["plan"]
            if before != resolved:
                old, new = {r["name"]: r for r in before.get("runs", [])}, {r["name"]: r for r in resolved["runs"]}
                differ = sorted(set(old) ^ set(new)) or sorted(n for n in new if old[n] != new[n]) or ["evaluation"]
                raise SpecError(
                    f"experiment {folder.name!r} in {self.storage.path} was started with different runs "
                    f"(differing: {', '.join(differ)}); relaunch with the original spec and flags to resume it, "
                    "or pass --fresh to start over under a new name"
                )
            return folder, experiment, True
        fs, path = folder.filesystem()
        fs.create_dir(path, recursive=True)
        folder._write(PLAN, {"experiment": experiment.model_dump(mode="json"), "plan": resolved}, indent=2)
        return folder, experiment, False

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

    def history(self, run: str) -> list[dict[str, Any]]:
        """The evaluations a run reported, oldest first; [] before its first. A step redone after a failure appears
        twice."""
        return read_json(join(self.run_uri(run), HISTORY), self.storage) or []

    def write_history(self, run: str, rows: list[dict[str, Any]]) -> None:
        write_json(join(self.run_uri(run), HISTORY), self.storage, rows)

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

    def summary(self) -> dict[str, Any] | None:
        """summary.json as the last report wrote it, or None before there is one."""
        return self._read("summary.json")

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
