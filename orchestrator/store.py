"""An experiment's folder in storage: started once, resumed by relaunching, never mixed with another sweep.

``<storage.path>/<name>/plan.json`` records the experiment and its resolved plan when it
starts. A relaunch with the same plan resumes it; ``--status``, ``--report`` and
``python -m orchestrator.diagnose`` read it back.
"""

from __future__ import annotations

from contract.spec import StorageSpec
from contract.storage import filesystem, join, read_json, write_json
from orchestrator.spec import ExperimentSpec, Plan, SpecError

PLAN_FILE = "plan.json"


def prepare(experiment: ExperimentSpec, plan: Plan, fresh: bool) -> tuple[ExperimentSpec, bool]:
    """Decide between a new experiment and resuming one; returns (experiment, resuming).

    The same name with the same resolved runs resumes. The same name with other runs is
    refused (two sweeps are never mixed in one folder); ``fresh`` picks an unused name
    ``NAME-2``, ``NAME-3``, ... instead. Records the experiment and its plan (plan.json),
    from which ``--status``, ``--report`` and the diagnosis read it back.
    """
    fs, root = filesystem(experiment.storage.path, experiment.storage)
    if fresh:
        base, n = experiment.name, 1
        while fs.get_file_info(f"{root}/{experiment.name}").type.name != "NotFound":
            n += 1
            experiment = experiment.model_copy(update={"name": f"{base}-{n}"})
    plan_uri = join(experiment.storage.path, experiment.name, PLAN_FILE)
    resolved = plan.model_dump(mode="json")
    stored = _read(experiment.storage, experiment.name)
    if stored is not None:
        before = stored["plan"]
        if before != resolved:
            old, new = {r["name"]: r for r in before.get("runs", [])}, {r["name"]: r for r in resolved["runs"]}
            differ = sorted(set(old) ^ set(new)) or sorted(n for n in new if old[n] != new[n]) or ["evaluation"]
            raise SpecError(
                f"experiment {experiment.name!r} in {experiment.storage.path} was started with different runs "
                f"(differing: {', '.join(differ)}); relaunch with the original spec and flags to resume it, "
                "or pass --fresh to start over under a new name"
            )
        return experiment, True
    fs.create_dir(f"{root}/{experiment.name}", recursive=True)
    write_json(plan_uri, experiment.storage, {"experiment": experiment.model_dump(mode="json"), "plan": resolved}, indent=2)
    return experiment, False


def stored_plan(storage: StorageSpec, name: str) -> tuple[ExperimentSpec, Plan] | None:
    """The experiment and plan an experiment in storage was started with, or None when there is none."""
    stored = _read(storage, name)
    if stored is None:
        return None
    try:
        return ExperimentSpec.model_validate(stored["experiment"]), Plan.model_validate(stored["plan"])
    except ValueError as err:
        raise SpecError(f"{join(storage.path, name, PLAN_FILE)}: not a plan this version can read ({str(err).splitlines()[0]}); use --fresh or another name") from None


def _read(storage: StorageSpec, name: str) -> dict | None:
    """plan.json as written by prepare(), or None when there is none; SpecError when it is something else."""
    uri = join(storage.path, name, PLAN_FILE)
    try:
        stored = read_json(uri, storage)
    except ValueError as err:  # not JSON
        raise SpecError(f"{uri}: unreadable ({err}); the experiment folder is damaged: use --fresh or another name") from None
    if stored is not None and not (isinstance(stored, dict) and {"experiment", "plan"} <= set(stored)):
        raise SpecError(f"{uri}: written by an earlier version of plateau-sweep, which this one cannot resume; use --fresh or another name")
    return stored
