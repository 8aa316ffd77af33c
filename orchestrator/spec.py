"""Experiment specs: what to train, for every candidate fix, validated before anything starts.

An experiment is a ``base`` run plus named ``options``. Each option is a partial
override that is deep-merged into the base and then validated as one whole
:class:`~contract.spec.TrainSpec`, so an option can only produce a run that would
also be valid written out in full. A list where the schema expects one value
(``optim: {grad_clip: [2.0, 5.0]}``) expands into one run per value; ``run.seed``
lists expand the same way, and the control runs with ``control_seeds`` seeds.

Every run of an experiment is scored by one evaluation protocol
(:class:`~contract.spec.EvalProtocol`), so they must share their val documents and
tokenizer; that is checked here too.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from contract.presets import n_positions
from contract.spec import EvalProtocol, StorageSpec, Strict, TrainSpec


class EarlyStoppingSpec(Strict):
    enabled: bool = Field(True, description="Stop a run whose val loss regresses.")
    min_delta: float = Field(0.01, ge=0, description="A val loss counts as a regression when it exceeds the run's best by more than this.")
    patience: int = Field(2, gt=0, description="Consecutive regressing evaluations before the run is stopped.")
    grace_evals: int = Field(1, ge=0, description="Evaluations at the start of a run (step 0 included) that never count as regressions.")


class EvaluationSpec(Strict):
    """The experiment's evaluation protocol; null fields are derived from the runs."""

    context: int | None = Field(
        None, gt=1, description="Tokens of context per evaluation window; null is the largest data.block_size among the runs (at most n_positions)."
    )
    stride: int | None = Field(None, gt=0, description="Tokens between evaluation windows; null is half the context.")
    max_documents: int | None = Field(None, gt=0, description="Score only the first N val documents; null scores all.")
    selection_fraction: float | None = Field(
        None, gt=0, lt=1,
        description="Compare each run at its best evaluation, chosen on this share of the val documents and scored on "
        "the rest (early stopping and checkpoint ranking use the choosing share). null compares the final evaluation on all documents.",
    )


class TrackingSpec(Strict):
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking URI (`http://host:5000`, `file:///path/mlruns`, `sqlite:///mlflow.db`); null logs to no MLflow."
    )
    mlflow_experiment: str | None = Field(None, description="MLflow experiment name; null uses the experiment's `name`.")


class ExperimentSpec(Strict):
    name: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Experiment name; its folder in storage. Relaunching the same name resumes it.")
    control: str | None = Field(None, description="The option every other option is compared against (usually the current configuration).")
    control_seeds: int = Field(
        2, gt=0,
        description="Seeds the control runs with (run.seed, run.seed + 1, ...) unless its option lists run.seed itself: "
        "their spread is the noise a fix must beat.",
    )
    max_concurrent: int | None = Field(None, gt=0, description="Runs at once; null runs as many as the cluster's resources fit.")
    storage: StorageSpec = StorageSpec()
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    tracking: TrackingSpec = TrackingSpec()
    base: dict[str, Any] = Field(default_factory=dict, description="The run every option starts from (a TrainSpec).")
    options: dict[str, dict[str, Any] | None] = Field(default_factory=dict, description="Named partial overrides of base; each becomes one run (or one per value of a list).")

    @field_validator("options")
    @classmethod
    def _option_names(cls, options: dict[str, Any]) -> dict[str, Any]:
        for name in options:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"option name {name!r}: use letters, digits, '_' and '-'")
        return options

    @model_validator(mode="after")
    def _control_exists(self) -> ExperimentSpec:
        if self.control is not None and self.control not in self.options:
            raise ValueError(f"control: {self.control!r} is not an option; choose one of {sorted(self.options)}")
        return self


# ------------------------------------------------------------ resolving runs


class Run(BaseModel):
    """One resolved run: an option (or one grid point or seed of it) and its full spec."""

    name: str  # e.g. "loose_clipping[grad_clip=2.0,seed=1]"
    option: str  # "loose_clipping"
    variant: str  # the name without its seed: "loose_clipping[grad_clip=2.0]"; seeds of one variant are pooled
    overrides: dict[str, Any]
    spec: TrainSpec


def dir_name(run_name: str) -> str:
    """A storage-safe folder name for a run: ``loose_clipping[grad_clip=2.0]`` -> ``loose_clipping-grad_clip_2.0``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_name.replace("[", "-")).strip("_")


class Plan(BaseModel):
    """An experiment resolved: its runs and the one protocol that scores them all."""

    runs: list[Run]
    evaluation: EvalProtocol


class SpecError(Exception):
    """An invalid spec. ``str()`` is the user-facing message: location, problem, fix."""


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: dicts recurse, anything else (``None`` too) replaces.

    ``None`` is a value: ``lora: null`` says a full fine-tune has no LoRA settings.
    """
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # LoraSpec | None
        subs = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return subs[0] if len(subs) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _takes_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_takes_sequence(arg) for arg in typing.get_args(annotation))
    return False


def sweep_axes(data: dict[str, Any], model: type[BaseModel] = TrainSpec, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], list[Any]]]:
    """The (field path, values) pairs where ``data`` holds a list for a single-valued field."""
    axes = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            continue  # unknown keys are left for validation to reject by name
        sub = _submodel(field.annotation)
        if sub is not None and isinstance(value, dict):
            axes += sweep_axes(value, sub, prefix + (key,))
        elif isinstance(value, list) and not _takes_sequence(field.annotation):
            axes.append((prefix + (key,), value))
    return axes


def set_path(data: dict[str, Any], path: tuple[str, ...] | list[str], value: Any) -> None:
    """Set ``data[path[0]][path[1]]... = value``, creating the dicts on the way."""
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


SEED = ("run", "seed")


def _label(option: str, parts: list[str]) -> str:
    return f"{option}[{','.join(parts)}]" if parts else option


def _expand(option: str, merged: dict[str, Any], overrides: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(name, variant, run dict, overrides) for every point of the option's sweep axes."""
    axes = sweep_axes(merged)
    empty = [".".join(path) for path, values in axes if not values]
    if empty:
        raise SpecError(f"option {option!r}: {empty[0]} is an empty list, which would sweep over nothing; give one value or a list of values")
    points = []
    for values in itertools.product(*(vals for _, vals in axes)):
        run, run_overrides, label, variant = copy.deepcopy(merged), copy.deepcopy(overrides), [], []
        for (path, _), value in zip(axes, values):
            set_path(run, path, value)
            set_path(run_overrides, path, value)
            label.append(f"{path[-1]}={value}")
            if path != SEED:
                variant.append(label[-1])
        points.append((_label(option, label), _label(option, variant), run, run_overrides))
    return points


def _control_seeds(merged: dict[str, Any], count: int) -> dict[str, Any]:
    """The control's merged dict with ``count`` consecutive seeds, unless it lists seeds itself."""
    seed = merged.get("run", {}).get("seed", TrainSpec.model_fields["run"].default.seed) if isinstance(merged.get("run", {}), dict) else None
    if count == 1 or not isinstance(seed, int):
        return merged
    out = copy.deepcopy(merged)
    out.setdefault("run", {})["seed"] = list(range(seed, seed + count))
    return out


def resolve_runs(experiment: ExperimentSpec, sets: dict[str, Any] | None = None, only: list[str] | None = None) -> Plan:
    """Expand an experiment into validated runs and its evaluation protocol. Raises :class:`SpecError` naming option and field.

    ``sets`` (from ``--set``) applies to every run after its option; ``only`` keeps those options.
    """
    options = experiment.options or {"base": {}}
    unknown = sorted(set(only or ()) - set(options))
    if unknown:
        raise SpecError(f"--only {', '.join(unknown)}: no such option; choose from {', '.join(options)}")
    runs = []
    for option, override in options.items():
        if only and option not in only:
            continue
        overrides = deep_merge(override or {}, sets or {})
        merged = deep_merge(experiment.base, overrides)
        if option == experiment.control:
            merged = _control_seeds(merged, experiment.control_seeds)
        for name, variant, run, run_overrides in _expand(option, merged, overrides):
            try:
                spec = TrainSpec.model_validate(run)
            except Exception as err:  # pydantic.ValidationError, re-worded with its location
                raise SpecError(format_validation_error(err, f"option {name!r}", TrainSpec)) from None
            runs.append(Run(name=name, option=option, variant=variant, overrides=run_overrides, spec=spec))
    _check_distinct(runs, experiment.control)
    _check_comparable(runs, experiment.control)
    return Plan(runs=runs, evaluation=evaluation_protocol(experiment.evaluation, runs))


def _check_distinct(runs: list[Run], control: str | None) -> None:
    """Every run needs a folder of its own, and the control must be one configuration (over seeds)."""
    seen: dict[str, str] = {}
    for run in runs:
        folder = dir_name(run.name)
        if folder in seen:
            raise SpecError(f"option {run.option!r}: runs {seen[folder]!r} and {run.name!r} would share the folder {folder!r}; "
                            "a list with a repeated value (run.seed: [0, 0]) or names that differ only in punctuation; make them distinct")
        seen[folder] = run.name
    variants = sorted({r.variant for r in runs if r.option == control})
    if len(variants) > 1:
        raise SpecError(f"option {control!r} (the control) sweeps a setting into {', '.join(variants)}; the control must be one "
                        "configuration (seeds aside): move the sweep to another option")


# The fields that decide which val documents there are and how they are tokenized:
# every run must agree on them, or their losses are not comparable.
_SHARED = {
    "data.path": lambda s: s.data.path,
    "data.format": lambda s: s.data.format,
    "data.val_fraction": lambda s: s.data.val_fraction,
    "data.split_seed": lambda s: s.data.split_seed,
    "the tokenizer (model.tokenizer, or model.name)": lambda s: s.model.tokenizer_source,
}


def _check_comparable(runs: list[Run], control: str | None) -> None:
    reference = next((r for r in runs if r.option == control), runs[0])
    for run in runs:
        for field, get in _SHARED.items():
            if get(run.spec) != get(reference.spec):
                raise SpecError(
                    f"option {run.name!r}: {field} is {get(run.spec)!r} but {get(reference.spec)!r} in {reference.name!r}; "
                    "every run is scored on the same val documents with the same tokenizer, so set it once in base "
                    "(to compare another dataset or tokenizer, run a second experiment)"
                )


def evaluation_protocol(evaluation: EvaluationSpec, runs: list[Run]) -> EvalProtocol:
    """The protocol every run is scored with; null context and stride are derived from the runs."""
    limits = {r.name: n_positions(r.spec.model.name) for r in runs}
    known = [n for n in limits.values() if n is not None]
    context = evaluation.context or min([max(r.spec.data.block_size for r in runs), *known])
    for name, limit in limits.items():
        if limit is not None and context > limit:
            raise SpecError(f"evaluation.context: {context} exceeds the n_positions {limit} of option {name!r}'s model; use at most {limit}")
    try:
        return EvalProtocol(
            context=context, stride=evaluation.stride or max(1, context // 2),
            max_documents=evaluation.max_documents, selection_fraction=evaluation.selection_fraction,
        )
    except Exception as err:
        raise SpecError(format_validation_error(err, "evaluation", EvalProtocol)) from None


def format_validation_error(err: Exception, where: str, root: type[BaseModel]) -> str:
    """Turn a pydantic ValidationError into lines of ``where: field.path: problem``."""
    errors = getattr(err, "errors", None)
    if errors is None:
        return f"{where}: {err}"
    lines = []
    for e in errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown field; {_known_fields_hint(root, e['loc'])}"
        shown = e["type"] not in ("extra_forbidden", "value_error") and not isinstance(e["input"], dict)
        lines.append(f"{where}: " + (f"{loc}: " if loc else "") + msg + (f" (got {_short(e['input'])})" if shown else ""))
    return "\n".join(lines)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _known_fields_hint(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    for key in loc[:-1]:
        sub = _submodel(model.model_fields[key].annotation) if key in model.model_fields else None
        if sub is None:
            break
        model = sub
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return (f"did you mean {close[0]!r}? " if close else "") + f"valid fields: {', '.join(known)}"


def json_schema() -> dict[str, Any]:
    """JSON Schema of a spec file, for editor completion (see README).

    ``base`` and each option are TrainSpecs in which any single-valued field may also
    be a list (a sweep).
    """
    ref = "#/$defs/{model}"
    train = TrainSpec.model_json_schema(ref_template=ref)
    experiment = ExperimentSpec.model_json_schema(ref_template=ref)
    defs = {**train.pop("$defs"), **experiment.pop("$defs", {}), "TrainSpec": train}
    experiment_level = {m.__name__ for m in (StorageSpec, EarlyStoppingSpec, EvaluationSpec, TrackingSpec)}
    for definition in defs.values():
        if definition is train or definition.get("title") in experiment_level:
            continue
        for key, prop in definition.get("properties", {}).items():
            if "$ref" not in prop and prop.get("type") != "array" and "items" not in prop:
                definition["properties"][key] = {"anyOf": [prop, {"type": "array", "items": prop}], "description": prop.get("description", "")}
    experiment["properties"]["base"] = {"$ref": "#/$defs/TrainSpec", "description": "The run every option starts from."}
    experiment["properties"]["options"] = {
        "type": "object",
        "description": "Named partial overrides of base; a list value sweeps.",
        "additionalProperties": {"anyOf": [{"$ref": "#/$defs/TrainSpec"}, {"type": "null"}]},
    }
    experiment["$defs"] = defs
    return experiment
