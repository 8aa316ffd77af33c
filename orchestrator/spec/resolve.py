"""Resolving an experiment into runs: options deep-merged into the base, lists expanded, seeds added.

Each option is a partial override that is deep-merged into the base and then validated
as one whole :class:`~contract.spec.TrainSpec`, so an option can only produce a run that
would also be valid written out in full. A list where the schema expects one value
(``optim: {grad_clip: [2.0, 5.0]}``) expands into one run per value; ``run.seed`` lists
expand the same way, and an option that lists none runs with ``control_seeds`` seeds (the
control) or ``option_seeds`` (the others).

With ``lr_search``, each option's variants (the control's too) become arms, one per
learning rate, which the sweep prunes by successive halving (:class:`Search`); the
control also keeps its own runs at its own learning rate, the reference for every arm.

Every run of an experiment is scored by one evaluation protocol
(:class:`~contract.spec.EvalProtocol`), so they must share their val documents and
tokenizer; that is checked here too.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import types
import typing
from typing import Any

from pydantic import BaseModel

from contract.presets import n_positions
from contract.spec import EvalProtocol, TrainSpec
from orchestrator.spec.experiment import (
    EvaluationSpec,
    ExperimentSpec,
    LrSearchSpec,
    SpecError,
    format_validation_error,
    submodel,
)


class Run(BaseModel):
    """One resolved run: an option (or one grid point or seed of it) and its full spec."""

    name: str  # e.g. "loose_clipping[grad_clip=2.0,seed=1]"
    option: str  # "loose_clipping"
    variant: str  # the name without its seed: "loose_clipping[grad_clip=2.0]"; seeds of one variant are pooled
    overrides: dict[str, Any]
    spec: TrainSpec
    search: str | None = None  # an arm of this LR search (Search.name); None: not in a search


class Search(BaseModel):
    """One variant's LR search: its arms, one per learning rate, and the rungs where they are pruned."""

    name: str  # the variant searched: "current", "loose_clipping[grad_clip=2.0]"
    option: str
    lrs: list[float]  # ascending
    runs: list[str]  # the arms, in the order of lrs
    rungs: list[int]  # evaluation steps where each arm's val loss is ranked against its search's other arms
    eta: int  # at each rung, the best 1/eta of the arms there so far go on


def dir_name(run_name: str) -> str:
    """A storage-safe folder name for a run: ``loose_clipping[grad_clip=2.0]`` -> ``loose_clipping-grad_clip_2.0``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_name.replace("[", "-")).strip("_")


class Plan(BaseModel):
    """An experiment resolved: its runs and the one protocol that scores them all."""

    runs: list[Run]
    evaluation: EvalProtocol
    searches: list[Search] = []  # with lr_search: one per variant searched


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


def _takes_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_takes_sequence(arg) for arg in typing.get_args(annotation))
    return False


def sweep_axes(
    data: dict[str, Any], model: type[BaseModel] = TrainSpec, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], list[Any]]]:
    """The (field path, values) pairs where ``data`` holds a list for a single-valued field."""
    axes = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            continue  # unknown keys are left for validation to reject by name
        sub = submodel(field.annotation)
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


def _expand(
    option: str, merged: dict[str, Any], overrides: dict[str, Any]
) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(name, variant, run dict, overrides) for every point of the option's sweep axes."""
    axes = sweep_axes(merged)
    empty = [".".join(path) for path, values in axes if not values]
    if empty:
        raise SpecError(
            f"option {option!r}: {empty[0]} is an empty list, which would sweep over nothing; give one value or a list "
            "of values"
        )
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


def _with_seeds(merged: dict[str, Any], count: int) -> dict[str, Any]:
    """An option's merged dict with ``count`` consecutive seeds from its own, unless it lists seeds itself."""
    seed = _seed(merged)
    if count == 1 or not isinstance(seed, int):
        return merged
    out = copy.deepcopy(merged)
    out.setdefault("run", {})["seed"] = list(range(seed, seed + count))
    return out


def _seed(data: dict[str, Any]) -> Any:
    """The run.seed a merged dict gives: its own, else the default's."""
    run = data.get("run", {})
    return run.get("seed", TrainSpec.model_fields["run"].default.seed) if isinstance(run, dict) else None


def _lists_seed(override: dict[str, Any] | None) -> bool:
    return isinstance((override or {}).get("run"), dict) and "seed" in override["run"]


class _Seeds:
    """Seed numbers handed out in turn from the experiment's first seed, so that no two variants share one: a shared
    seed starts two runs from the same initialisation and data order, and the interval assumes independent seeds."""

    def __init__(self, first: int):
        self.next = first

    def take(self, count: int) -> list[int]:
        out = list(range(self.next, self.next + count))
        self.next += count
        return out


def _seeded_points(
    option: str, merged: dict[str, Any], overrides: dict[str, Any], count: int, seeds: _Seeds | None
) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(name, variant, run dict, overrides) for every point of the option's sweep axes, each on its seeds: the next
    ``count`` of ``seeds``, or (None: the option chose them) its own."""
    if seeds is None:
        return _expand(option, _with_seeds(merged, count), overrides)
    points = []
    for _, variant, run, run_overrides in _expand(option, merged, overrides):
        for seed in seeds.take(count):
            seeded, seeded_overrides = copy.deepcopy(run), copy.deepcopy(run_overrides)
            set_path(seeded, SEED, seed)
            if count > 1:  # a sweep over seeds, as a list of them would be: the run's name and overrides say it
                set_path(seeded_overrides, SEED, seed)
            name = variant if count == 1 else _with_label(variant, f"seed={seed}")
            points.append((name, variant, seeded, seeded_overrides))
    return points


def _with_label(variant: str, label: str) -> str:
    return f"{variant[:-1]},{label}]" if variant.endswith("]") else f"{variant}[{label}]"


def resolve_runs(experiment: ExperimentSpec, sets: dict[str, Any] | None = None, only: list[str] | None = None) -> Plan:
    """Expand an experiment into validated runs and its evaluation protocol.

    Raises :class:`SpecError` naming the option and the field.

    ``sets`` (from ``--set``) applies to every run after its option; ``only`` keeps those options. Seeds are handed
    out over every option, kept or not, so that ``--only`` never changes a run's seed: the control takes the first
    ``control_seeds`` from the experiment's run.seed, then each variant of each other option, in the spec's order, its
    ``option_seeds`` (an LR search's arms one each). An option that lists run.seed itself, or a list of seeds given
    to every run, keeps those.
    """
    options = experiment.options or {"base": {}}
    unknown = sorted(set(only or ()) - set(options))
    if unknown:
        raise SpecError(f"--only {', '.join(unknown)}: no such option; choose from {', '.join(options)}")
    first = _seed(deep_merge(experiment.base, sets or {}))
    seeds = _Seeds(first) if isinstance(first, int) else None
    kept = [option for option in options if not only or option in only]
    runs: dict[str, list[Run]] = {}
    searches: dict[str, list[Search]] = {}
    for option in sorted(options, key=lambda o: o != experiment.control):  # the control first, then the spec's order
        overrides = deep_merge(options[option] or {}, sets or {})
        merged = deep_merge(experiment.base, overrides)
        own = None if _lists_seed(options[option]) and not _lists_seed(sets) else seeds
        lrs = _search_lrs(option, merged, experiment.lr_search)
        count = experiment.control_seeds if option == experiment.control else experiment.option_seeds
        points = [] if lrs and option != experiment.control else _seeded_points(option, merged, overrides, count, own)
        arms = _arms(option, merged, overrides, lrs, option == experiment.control, own)
        if option not in kept:  # its seeds are taken above; a run --only leaves out is not validated (nor refused)
            continue
        runs[option] = [_validated(option, *point) for point in points]
        searches[option] = []
        for variant, variant_arms in arms.items():
            validated = [_validated(option, *arm, search=variant) for arm in variant_arms]
            runs[option] += validated
            searches[option].append(_search(variant, option, validated, experiment.lr_search))
    plan_runs = [run for option in kept for run in runs[option]]
    _check_distinct(plan_runs, experiment.control)
    _check_comparable(plan_runs, experiment.control)
    return Plan(
        runs=plan_runs,
        evaluation=evaluation_protocol(experiment.evaluation, plan_runs),
        searches=[search for option in kept for search in searches[option]],
    )


def _validated(
    option: str, name: str, variant: str, run: dict[str, Any], overrides: dict[str, Any], search: str | None = None
) -> Run:
    try:
        spec = TrainSpec.model_validate(run)
    except Exception as err:  # pydantic.ValidationError, re-worded with its location (a seed is never the cause)
        raise SpecError(format_validation_error(err, f"option {variant!r}", TrainSpec)) from None
    return Run(name=name, option=option, variant=variant, overrides=overrides, spec=spec, search=search)


# ------------------------------------------------------------------ the LR search

LR = ("optim", "lr")


def _search_lrs(option: str, merged: dict[str, Any], search: LrSearchSpec | None) -> list[float]:
    """The learning rates an option's arms run at, ascending; [] when it is not searched."""
    if search is None or (option not in search.lrs and search.factors is None):
        return []
    optim = merged.get("optim") if isinstance(merged.get("optim"), dict) else {}
    own = optim.get("lr", TrainSpec.model_fields["optim"].default.lr)
    if isinstance(own, list):
        raise SpecError(
            f"option {option!r}: optim.lr is a list, and lr_search searches the learning rate; give this option's "
            f"learning rates in lr_search.lrs.{option} instead"
        )
    if option in search.lrs:
        return sorted(search.lrs[option])
    if not isinstance(own, (int, float)) or isinstance(own, bool):
        return []  # not a number: validation rejects it by name
    return sorted({float(f"{own * factor:.3g}") for factor in search.factors})


def _arms(
    option: str,
    merged: dict[str, Any],
    overrides: dict[str, Any],
    lrs: list[float],
    control: bool,
    seeds: _Seeds | None,
) -> dict[str, list[tuple[str, str, dict[str, Any], dict[str, Any]]]]:
    """Per variant of the option, one arm per learning rate: (name, variant, run dict, overrides), each on one seed:
    the next of ``seeds``, or (None: the option chose its seeds) its own (the control's arms on its first)."""
    seed = merged.get("run", {}).get("seed") if isinstance(merged.get("run"), dict) else None
    if isinstance(seed, list) and control and seed:
        merged = deep_merge(merged, {"run": {"seed": seed[0]}})
    elif isinstance(seed, list) and lrs:
        raise SpecError(
            f"option {option!r}: run.seed lists {len(seed)} seeds, but in an LR search each arm runs one seed (its "
            "comparison counts the seed noise of the variants that run several, the control's); give one seed"
        )
    out: dict[str, list[tuple[str, str, dict[str, Any], dict[str, Any]]]] = {}
    for _, variant, run, run_overrides in _expand(option, merged, overrides) if lrs else []:
        for lr in lrs:
            arm, arm_overrides = copy.deepcopy(run), copy.deepcopy(run_overrides)
            set_path(arm, LR, lr)
            set_path(arm_overrides, LR, lr)
            if seeds is not None:
                (seed,) = seeds.take(1)
                set_path(arm, SEED, seed)
            name = _with_label(variant, f"lr={lr}")
            out.setdefault(variant, []).append((name, name, arm, arm_overrides))
    return out


def _search(variant: str, option: str, arms: list[Run], search: LrSearchSpec) -> Search:
    """The search over ``arms``, with its rungs: evaluation steps from the first at or after the warmup, times eta."""
    spec = arms[0].spec
    every, steps, warmup = spec.run.eval_every, spec.run.steps, spec.warmup_steps
    first = search.first_rung or every * max(1, math.ceil(warmup / every))
    if first % every or first < warmup:
        raise SpecError(
            f"lr_search.first_rung: {first} must be an evaluation step (a multiple of run.eval_every {every}) at or "
            f"after the warmup ({warmup} steps) of option {option!r}; use {every * max(1, math.ceil(warmup / every))}"
        )
    rungs = []
    while first < steps:
        rungs.append(first)
        first *= search.eta
    return Search(
        name=variant,
        option=option,
        lrs=[a.spec.optim.lr for a in arms],
        runs=[a.name for a in arms],
        rungs=rungs,
        eta=search.eta,
    )


def _check_distinct(runs: list[Run], control: str | None) -> None:
    """Every run needs a folder of its own, and the control must be one configuration (over seeds)."""
    seen: dict[str, str] = {}
    for run in runs:
        folder = dir_name(run.name)
        if folder in seen:
            raise SpecError(
                f"option {run.option!r}: runs {seen[folder]!r} and {run.name!r} would share the folder {folder!r}; "
                "a list with a repeated value (run.seed: [0, 0]) or names that differ only in punctuation; make them "
                "distinct"
            )
        seen[folder] = run.name
    variants = sorted({r.variant for r in runs if r.option == control and r.search is None})
    if len(variants) > 1:
        raise SpecError(
            f"option {control!r} (the control) sweeps a setting into {', '.join(variants)}; the control must be one "
            "configuration (seeds aside): move the sweep to another option"
        )


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
                    f"option {run.variant!r}: {field} is {get(run.spec)!r} but {get(reference.spec)!r} in "
                    f"{reference.name!r}; "
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
            raise SpecError(
                f"evaluation.context: {context} exceeds the n_positions {limit} of option {name!r}'s model; "
                f"use at most {limit}"
            )
    try:
        return EvalProtocol(
            context=context,
            stride=evaluation.stride or max(1, context // 2),
            max_documents=evaluation.max_documents,
            selection_fraction=evaluation.selection_fraction,
        )
    except Exception as err:
        raise SpecError(format_validation_error(err, "evaluation", EvalProtocol)) from None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# Fields that change how a run is executed, never what it learns (README, "Resources change speed, never results"):
# no difference between two runs' results comes from them
EXECUTION_ONLY = (
    "resources.",
    "compute.micro_batch_size",
    "compute.attention",
    "compute.compile",
    "compute.compile_mode",
    "compute.loss",
    "compute.profile",
    "run.keep_checkpoints",
    "run.max_failures",
)


def differences(a: Run, b: Run) -> dict[str, tuple[Any, Any]]:
    """The spec fields where ``a`` differs from ``b`` that can change its results: field -> (a's value, b's value).

    The seed is left out (a variant is its runs over seeds), and so are the :data:`EXECUTION_ONLY` fields. A block
    that is null on one side (``lora`` of a full fine-tune) is one difference, not one per field.
    """
    da, db = a.spec.model_dump(mode="json"), b.spec.model_dump(mode="json")
    out: dict[str, tuple[Any, Any]] = {}
    for section in sorted(set(da) | set(db)):
        va, vb = da.get(section), db.get(section)
        if isinstance(va, dict) and isinstance(vb, dict):
            fa, fb = flatten(va, f"{section}."), flatten(vb, f"{section}.")
            out.update({k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)})
        elif va != vb:
            out[section] = (va, vb)
    return {k: v for k, v in out.items() if k != "run.seed" and not k.startswith(EXECUTION_ONLY)}


def value_at(run: Run, path: str) -> Any:
    """The value of a dotted spec field (``data.block_size``, or a whole block: ``lora``), None where it is absent."""
    value: Any = run.spec.model_dump(mode="json")
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value
