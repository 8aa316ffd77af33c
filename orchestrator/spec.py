"""Experiment specs: what to train, for every candidate fix, validated before anything starts.

An experiment is a ``base`` run plus named ``options``. Each option is a partial
override that is deep-merged into the base and then validated as one whole
:class:`TrainSpec`, so an option can only produce a run that would also be valid
written out in full. A list where the schema expects one value
(``optim: {grad_clip: [2.0, 5.0]}``) expands into one run per value.

Every model forbids unknown keys; defaults live in the field declarations, and
cross-field checks raise errors that name the field and the fix. They never
rewrite the user's values.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from jobs.presets import n_positions

DEFAULT_DATA = "sources/training_data_final_merged.md"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# --------------------------------------------------------------------- one run


class ModelSpec(Strict):
    name: str = Field(
        "tiny-gpt2",
        description="Hugging Face hub id (`gpt2`), a local folder written by `save_pretrained`, "
        "an `s3://bucket/prefix` holding such a folder, or the bundled preset `tiny-gpt2`.",
    )
    init: Literal["pretrained", "random"] = Field(
        "pretrained",
        description="`pretrained` loads the weights; `random` builds the same architecture from "
        "its config with fresh weights (tests, benchmarks).",
    )
    tokenizer: str | None = Field(
        None, description="Where the tokenizer comes from, in the same forms as `name`; null uses `name`'s own."
    )


class LoraSpec(Strict):
    rank: int = Field(8, gt=0, description="LoRA rank r. Trainable parameters grow linearly with it.")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        ["c_attn"],
        min_length=1,
        description="Module names to adapt. GPT-2's fused QKV projection is `c_attn`; "
        "`c_proj`, `c_fc` add the attention output and the MLP.",
    )


class DataSpec(Strict):
    path: str = Field(
        DEFAULT_DATA,
        description="Markdown Q&A, plain text or JSONL (`text`, or `question`/`answer`), "
        "a local path (relative to the working directory) or an `s3://` URI.",
    )
    format: Literal["auto", "markdown", "text", "jsonl"] = Field(
        "auto", description="`auto` picks by file extension: .md, .jsonl, anything else is text."
    )
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Share of documents held out for validation.")
    split_seed: int = Field(0, description="Salts the document hash that assigns each document to train or val.")
    block_size: int = Field(128, gt=0, description="Tokens per training sequence; at most the model's n_positions.")
    batch_size: int = Field(16, gt=0, description="Sequences per step on each worker.")

    def check_file(self) -> None:
        """Raise when a local data file is missing or empty (s3:// is checked when read).

        Not a validator: a worker re-validating its spec may run in another working
        directory (Tune moves trial actors into their trial folder); the launcher
        calls this before anything starts.
        """
        if self.path.startswith("s3://"):
            return
        file = Path(self.path)
        if not file.is_file():
            raise ValueError(
                f"data.path: data file {self.path!r} does not exist (relative paths resolve against the working "
                f"directory {Path.cwd()}); fix the path or use an s3:// URI"
            )
        if file.stat().st_size == 0:
            raise ValueError(f"data.path: data file {self.path!r} is empty; point data.path at the training text")


class ScheduleSpec(Strict):
    kind: Literal["constant", "warmup_constant", "warmup_linear"] = Field(
        "constant",
        description="`constant`; `warmup_constant`: linear warmup then constant; "
        "`warmup_linear`: linear warmup then linear decay to `floor_ratio` x lr at the last step.",
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Warmup length as a share of `run.steps`.")
    floor_ratio: float = Field(0.1, ge=0, le=1, description="`warmup_linear` only: final lr as a share of `optim.lr`.")

    @model_validator(mode="after")
    def _fields_match_kind(self) -> ScheduleSpec:
        if self.kind == "constant" and self.warmup_ratio > 0:
            raise ValueError("warmup_ratio is set but kind is 'constant'; use kind: warmup_constant or warmup_linear")
        if self.kind != "constant" and self.warmup_ratio == 0:
            raise ValueError(f"kind {self.kind!r} needs warmup_ratio > 0 (e.g. 0.05 for 5% warmup)")
        if self.kind != "warmup_linear" and "floor_ratio" in self.model_fields_set:
            raise ValueError(f"floor_ratio only applies to kind: warmup_linear, not {self.kind!r}; remove it")
        return self


class OptimSpec(Strict):
    lr: float = Field(1e-5, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    grad_clip: float | None = Field(
        1.0, gt=0, description="Clip the global gradient norm to this `max_norm`; null disables clipping."
    )
    schedule: ScheduleSpec = ScheduleSpec()


class RunSpec(Strict):
    steps: int = Field(200, gt=0, description="Optimizer steps.")
    eval_every: int = Field(50, gt=0, description="Evaluate (and report to Ray) every N steps and at the last step.")
    eval_batches: int | None = Field(
        None, gt=0, description="Validation batches per evaluation; null evaluates the whole val split."
    )
    checkpoint_every: int = Field(100, gt=0, description="Checkpoint every N steps (a multiple of eval_every) and at the end.")
    keep_checkpoints: int = Field(2, gt=0, description="Best checkpoints kept by val loss (the latest is always kept for resume).")
    max_failures: int = Field(2, ge=0, description="Worker failures Ray Train recovers from (restarting from the latest checkpoint).")
    seed: int = Field(0, description="Seeds init, dropout and data order.")


class ComputeSpec(Strict):
    precision: Literal["fp32", "bf16"] = Field("fp32", description="`bf16` runs forward and loss under bf16 autocast (weights and optimizer stay fp32).")
    attention: Literal["sdpa", "eager"] = Field("sdpa", description="Attention kernel: PyTorch scaled_dot_product_attention (flash/memory-efficient on GPU) or the eager reference.")
    compile: bool = Field(False, description="torch.compile the model (first steps are slower while it compiles).")


class ResourcesSpec(Strict):
    num_workers: int = Field(1, gt=0, description="Data-parallel workers (DDP through TorchTrainer).")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs per worker; fractions let several runs share a GPU.")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs per worker (Ray logical resources).")


class TrainSpec(Strict):
    """Everything one training run needs. This is what a worker receives."""

    method: Literal["lora", "full"] = Field("lora", description="`lora` trains adapters only; `full` trains every weight.")
    model: ModelSpec = ModelSpec()
    lora: LoraSpec = LoraSpec()
    data: DataSpec = DataSpec()
    optim: OptimSpec = OptimSpec()
    run: RunSpec = RunSpec()
    compute: ComputeSpec = ComputeSpec()
    resources: ResourcesSpec = ResourcesSpec()

    @property
    def warmup_steps(self) -> int:
        return int(self.optim.schedule.warmup_ratio * self.run.steps)

    @model_validator(mode="after")
    def _consistent(self) -> TrainSpec:
        if self.method == "full" and "lora" in self.model_fields_set:
            raise ValueError("lora: LoRA settings given but method is 'full'; remove the lora block (`lora: null` in an option) or use method: lora")
        limit = n_positions(self.model.name)
        if limit is not None and self.data.block_size > limit:
            raise ValueError(f"data.block_size: {self.data.block_size} exceeds the model's n_positions {limit} ({self.model.name}); use at most {limit}")
        run = self.run
        for field in ("eval_every", "checkpoint_every"):
            if getattr(run, field) > run.steps:
                raise ValueError(f"run.{field}: {getattr(run, field)} is more than run.steps {run.steps}; use at most {run.steps}")
        if run.checkpoint_every % run.eval_every:
            raise ValueError(f"run.checkpoint_every: {run.checkpoint_every} is not a multiple of run.eval_every {run.eval_every}; checkpoints are ranked by the val loss measured at the same step")
        if self.optim.schedule.kind != "constant" and not 0 < self.warmup_steps < run.steps:
            raise ValueError(f"optim.schedule.warmup_ratio: {self.optim.schedule.warmup_ratio} of {run.steps} steps gives {self.warmup_steps} warmup steps; it must be at least 1 and shorter than the run")
        return self


# ------------------------------------------------------------------ experiment


class StorageSpec(Strict):
    path: str = Field("runs", description="Where checkpoints and results go: a local folder or `s3://bucket/prefix`.")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, SeaweedFS, Ceph, R2); null is AWS.")
    region: str | None = Field(None, description="S3 region; null uses the AWS chain's default.")

    @model_validator(mode="after")
    def _endpoint_needs_s3(self) -> StorageSpec:
        if not self.path.startswith("s3://") and (self.endpoint_url or self.region):
            raise ValueError(f"storage.endpoint_url/region are set but storage.path {self.path!r} is local; use an s3://bucket/prefix path or remove them")
        return self


class EarlyStoppingSpec(Strict):
    enabled: bool = Field(True, description="Stop a run whose val loss regresses.")
    min_delta: float = Field(0.01, ge=0, description="A val loss counts as a regression when it exceeds the run's best by more than this.")
    patience: int = Field(2, gt=0, description="Consecutive regressing evaluations before the run is stopped.")
    grace_evals: int = Field(1, ge=0, description="Evaluations at the start of a run that never count as regressions.")


class ExperimentSpec(Strict):
    name: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Experiment name; its folder in storage. Relaunching the same name resumes it.")
    control: str | None = Field(None, description="The option every other option is compared against (usually the current configuration).")
    max_concurrent: int | None = Field(None, gt=0, description="Runs at once; null runs as many as the cluster's resources fit.")
    storage: StorageSpec = StorageSpec()
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
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
    """One resolved run: an option (or one grid point of it) and its full spec."""

    name: str
    option: str
    overrides: dict[str, Any]
    spec: TrainSpec


class SpecError(Exception):
    """An invalid spec. ``str()`` is the user-facing message: location, problem, fix."""


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: dicts recurse, ``None`` deletes the key, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _submodel(annotation: Any) -> type[BaseModel] | None:
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


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def _expand(option: str, merged: dict[str, Any], overrides: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    axes = sweep_axes(merged)
    if not axes:
        return [(option, merged, overrides)]
    points = []
    for values in itertools.product(*(vals for _, vals in axes)):
        run, run_overrides, label = copy.deepcopy(merged), copy.deepcopy(overrides), []
        for (path, _), value in zip(axes, values):
            _set_path(run, path, value)
            _set_path(run_overrides, path, value)
            label.append(f"{path[-1]}={value}")
        points.append((f"{option}[{','.join(label)}]", run, run_overrides))
    return points


def resolve_runs(experiment: ExperimentSpec, sets: dict[str, Any] | None = None, only: list[str] | None = None) -> list[Run]:
    """Expand an experiment into validated runs. Raises :class:`SpecError` naming option and field.

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
        for name, run, run_overrides in _expand(option, merged, overrides):
            try:
                spec = TrainSpec.model_validate(run)
                spec.data.check_file()
            except Exception as err:  # pydantic.ValidationError or ValueError, re-worded with its location
                raise SpecError(format_validation_error(err, f"option {name!r}", TrainSpec)) from None
            runs.append(Run(name=name, option=option, overrides=run_overrides, spec=spec))
    return runs


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
        lines.append(f"{where}: " + (f"{loc}: " if loc else "") + msg + (f" (got {e['input']!r})" if e["type"] not in ("extra_forbidden", "value_error") and not isinstance(e["input"], dict) else ""))
    return "\n".join(lines)


def _known_fields_hint(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    for key in loc[:-1]:
        sub = _submodel(model.model_fields[key].annotation) if key in model.model_fields else None
        if sub is None:
            break
        model = sub
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return (f"did you mean {close[0]!r}? " if close else "") + f"valid fields: {', '.join(known)}"


class JobConfig(Strict):
    """What one Ray Train run receives (as a dict at the Ray boundary, re-validated first thing)."""

    experiment: str
    run_name: str
    option: str
    spec: TrainSpec
    storage: StorageSpec


def json_schema() -> dict[str, Any]:
    """JSON Schema of a spec file, for editor completion (see README).

    ``base`` and each option are TrainSpecs in which any field may also be a list
    (a sweep) or null (an option removing a base field).
    """
    ref = "#/$defs/{model}"
    train = TrainSpec.model_json_schema(ref_template=ref)
    experiment = ExperimentSpec.model_json_schema(ref_template=ref)
    defs = {**train.pop("$defs"), **experiment.pop("$defs", {}), "TrainSpec": train}
    for definition in defs.values():
        if definition is train or definition.get("title") in {m.__name__ for m in (StorageSpec, EarlyStoppingSpec)}:
            continue
        for key, prop in definition.get("properties", {}).items():
            if "$ref" not in prop and prop.get("type") != "array" and "items" not in prop:
                definition["properties"][key] = {"anyOf": [prop, {"type": "array", "items": prop}, {"type": "null"}], "description": prop.get("description", "")}
    for key, prop in train["properties"].items():
        train["properties"][key] = {"anyOf": [prop, {"type": "null"}], "description": prop.get("description", "")}
    experiment["properties"]["base"] = {"$ref": "#/$defs/TrainSpec", "description": "The run every option starts from."}
    experiment["properties"]["options"] = {
        "type": "object",
        "description": "Named partial overrides of base; a list value sweeps, null removes a base field.",
        "additionalProperties": {"anyOf": [{"$ref": "#/$defs/TrainSpec"}, {"type": "null"}]},
    }
    experiment["$defs"] = defs
    return experiment
