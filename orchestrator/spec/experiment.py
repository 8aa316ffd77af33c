"""The experiment spec: what a spec file says above the runs, validated before anything starts.

An experiment is a ``base`` run plus named ``options`` (partial overrides, resolved into
runs by :mod:`orchestrator.spec.resolve`), a ``control`` to compare them with, and the
settings every run shares: storage, early stopping, the evaluation protocol, tracking.
Every model forbids unknown keys; errors name the field and the fix.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from contract.spec import StorageSpec, Strict, TrainSpec


class SpecError(Exception):
    """An invalid spec. ``str()`` is the user-facing message: location, problem, fix."""


class EarlyStoppingSpec(Strict):
    enabled: bool = Field(True, description="Stop a run whose val loss regresses.")
    min_delta: float = Field(
        0.01, ge=0, description="A val loss counts as a regression when it exceeds the run's best by more than this."
    )
    patience: int = Field(2, gt=0, description="Consecutive regressing evaluations before the run is stopped.")
    grace_evals: int = Field(
        1, ge=0, description="Evaluations at the start of a run (step 0 included) that never count as regressions."
    )


class EvaluationSpec(Strict):
    """The experiment's evaluation protocol; null fields are derived from the runs."""

    context: int | None = Field(
        None,
        gt=1,
        description="Tokens of context per evaluation window; null is the largest data.block_size among the runs "
        "(at most n_positions).",
    )
    stride: int | None = Field(None, gt=0, description="Tokens between evaluation windows; null is half the context.")
    max_documents: int | None = Field(None, gt=0, description="Score only the first N val documents; null scores all.")
    selection_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Compare each run at its best evaluation, chosen on this share of the val documents and scored "
        "on the rest (early stopping and checkpoint ranking use the choosing share). null compares the final "
        "evaluation on all documents.",
    )


class LrSearchSpec(Strict):
    """Each option at its own best learning rate: a range of LRs per option, pruned by successive halving."""

    factors: list[float] | None = Field(
        [0.25, 0.5, 1.0, 2.0, 4.0],
        min_length=2,
        description="LRs to try, as multiples of each option's own optim.lr (to 3 significant digits), for every "
        "option not in `lrs`, the control included; null searches only the options in `lrs`.",
    )
    lrs: dict[str, list[float]] = Field(
        default_factory=dict,
        description="Explicit LRs for named options, instead of factors of their own (e.g. `full_finetune: "
        "[1.0e-4, 3.0e-4, 1.0e-3]`).",
    )
    eta: int = Field(
        2,
        ge=2,
        description="At each rung an arm goes on only if its val loss (on the selection documents) is among the best "
        "1/eta of its option's arms that have reached that rung so far (asynchronous successive halving).",
    )
    first_rung: int | None = Field(
        None,
        gt=0,
        description="Step of the first rung: an evaluation step at or after the warmup (early rungs are unfair to "
        "runs that converge late). null is the first evaluation at or after the warmup. Later rungs are at "
        "first_rung x eta^k, before the last step.",
    )

    @field_validator("factors")
    @classmethod
    def _factors(cls, factors: list[float] | None) -> list[float] | None:
        if factors is not None and (min(factors) <= 0 or len(set(factors)) < len(factors)):
            raise ValueError(f"factors: {factors} must be distinct and above 0, e.g. [0.25, 0.5, 1.0, 2.0, 4.0]")
        return factors

    @field_validator("lrs")
    @classmethod
    def _lrs(cls, lrs: dict[str, list[float]]) -> dict[str, list[float]]:
        for option, values in lrs.items():
            if len(values) < 2 or min(values) <= 0 or len(set(values)) < len(values):
                raise ValueError(
                    f"lrs.{option}: {values} must be at least 2 distinct learning rates above 0, e.g. [1.0e-4, 1.0e-3]"
                )
        return lrs


class TrackingSpec(Strict):
    mlflow_uri: str | None = Field(
        None,
        description="MLflow tracking URI (`http://host:5000`, `file:///path/mlruns`, `sqlite:///mlflow.db`); "
        "null logs to no MLflow.",
    )
    mlflow_experiment: str | None = Field(
        None, description="MLflow experiment name; null uses the experiment's `name`."
    )


class FollowsSpec(Strict):
    """The sweep a confirm run follows, and what that sweep took: the confirm's verdict reads the two together."""

    experiment: str = Field(description="The name of the sweep this one confirms.")
    take: str = Field(description="The variant that sweep took.")
    option: str = Field(description="The option of this experiment that runs the taken variant again.")
    delta: tuple[float, float, float] = Field(description="The take's Δ vs the control there: mean, 95% interval.")
    seeds: int = Field(gt=0, description="The seeds of the taken variant there.")
    provisional: bool = Field(
        False, description="The take rested on one seed and did not hold with twice the control's seed variance."
    )


class ExperimentSpec(Strict):
    name: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Experiment name; its folder in storage. Relaunching the same name resumes it.",
    )
    control: str | None = Field(
        None, description="The option every other option is compared against (usually the current configuration)."
    )
    control_seeds: int = Field(
        2,
        gt=0,
        description="Seeds the control runs with: the first seeds of the experiment (run.seed, run.seed + 1, ...), "
        "unless its option lists run.seed itself. Their spread is the noise a fix must beat; with fewer than 2 degrees "
        "of freedom of seed noise in the whole plan and no stored calibration, the verdict takes no fix.",
    )
    option_seeds: int = Field(
        2,
        gt=0,
        description="Seeds every other variant runs with, each its own: the seeds after the control's, variant by "
        "variant in the spec's order (an LR search's arms run one each), unless its option lists run.seed itself. "
        "Every variant's seeds join the seed noise each interval counts.",
    )
    max_concurrent: int | None = Field(
        None, gt=0, description="Runs at once; null runs as many as the cluster's resources fit."
    )
    storage: StorageSpec = StorageSpec()
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    tracking: TrackingSpec = TrackingSpec()
    lr_search: LrSearchSpec | None = Field(
        None, description="Search each option's learning rate (see LrSearchSpec); null runs each at its own optim.lr."
    )
    follows: FollowsSpec | None = Field(
        None,
        description="Set in a confirm spec written by a sweep's report: the sweep it confirms, read with this one's "
        "verdict; null for a sweep of its own.",
    )
    base: dict[str, Any] = Field(default_factory=dict, description="The run every option starts from (a TrainSpec).")
    options: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict,
        description="Named partial overrides of base; each becomes one run (or one per value of a list).",
    )

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

    @model_validator(mode="after")
    def _follows_an_option(self) -> ExperimentSpec:
        if self.follows is not None and self.follows.option not in self.options:
            raise ValueError(
                f"follows.option: {self.follows.option!r} is not an option; name the option that runs "
                f"{self.follows.take!r} again, one of {sorted(self.options)}"
            )
        return self

    @model_validator(mode="after")
    def _search_is_chosen_apart(self) -> ExperimentSpec:
        search = self.lr_search
        if search is None:
            return self
        if self.evaluation.selection_fraction is None:
            raise ValueError(
                "lr_search: each option's best LR is chosen on a share of the val documents and scored on the rest, "
                "so that choosing and scoring never use the same tokens; set evaluation.selection_fraction (e.g. 0.5)"
            )
        unknown = sorted(set(search.lrs) - set(self.options))
        if unknown:
            raise ValueError(
                f"lr_search.lrs: {', '.join(unknown)} is not an option; choose from {sorted(self.options)}"
            )
        return self


# ------------------------------------------------------------ errors and the schema


def submodel(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # LoraSpec | None
        subs = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return subs[0] if len(subs) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


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
        lines.append(
            f"{where}: " + (f"{loc}: " if loc else "") + msg + (f" (got {_short(e['input'])})" if shown else "")
        )
    return "\n".join(lines)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _known_fields_hint(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    for key in loc[:-1]:
        sub = submodel(model.model_fields[key].annotation) if key in model.model_fields else None
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
    experiment_level = {
        m.__name__ for m in (StorageSpec, EarlyStoppingSpec, EvaluationSpec, TrackingSpec, LrSearchSpec)
    }
    for definition in defs.values():
        if definition is train or definition.get("title") in experiment_level:
            continue
        for key, prop in definition.get("properties", {}).items():
            if "$ref" not in prop and prop.get("type") != "array" and "items" not in prop:
                definition["properties"][key] = {
                    "anyOf": [prop, {"type": "array", "items": prop}],
                    "description": prop.get("description", ""),
                }
    experiment["properties"]["base"] = {"$ref": "#/$defs/TrainSpec", "description": "The run every option starts from."}
    experiment["properties"]["options"] = {
        "type": "object",
        "description": "Named partial overrides of base; a list value sweeps.",
        "additionalProperties": {"anyOf": [{"$ref": "#/$defs/TrainSpec"}, {"type": "null"}]},
    }
    experiment["$defs"] = defs
    return experiment
