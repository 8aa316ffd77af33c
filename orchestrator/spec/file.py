"""The spec file: read safely, overridden by ``--set``, narrowed by ``--only``, resolved into a plan.

A spec is small, hand-written YAML. Anything else is refused with the file's name and
what is wrong: bytes that are not UTF-8 text, an empty or comment-only file, YAML that
would expand hugely through aliases ("billion laughs") or nests too deeply, or a top
level that is not a mapping. Any bytes in, a plan or a :class:`SpecError` out, never a
traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from contract.text import NotText, decode_text
from orchestrator.spec.experiment import ExperimentSpec, SpecError, format_validation_error
from orchestrator.spec.resolve import Plan, deep_merge, resolve_runs, set_path

# The default job: the loss-plateau plan in miniature, on the bundled model and corpus.
DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "specs" / "smoke.yaml"
DEFAULT_NAME = "default"

MAX_BYTES = 1_000_000
MAX_NODES = 20_000  # after alias expansion; a real spec has a few hundred
MAX_DEPTH = 30


def read_spec(path: str) -> dict[str, Any]:
    """The mapping in the YAML spec at ``path``. Raises :class:`SpecError` naming the file and the problem."""
    try:
        raw = Path(path).read_bytes()
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder; pass a spec file (specs/*.yaml)") from None
    except OSError as err:
        raise SpecError(f"{path}: cannot read the spec ({err.strerror}); check the path") from None
    if len(raw) > MAX_BYTES:
        raise SpecError(
            f"{path}: {len(raw):,} bytes is far too large for a spec (at most {MAX_BYTES:,}); is it the right file?"
        )
    try:
        text = decode_text(raw)
    except NotText as err:
        raise SpecError(
            f"{path}: {err}; " + ("a spec is a YAML text file" if err.binary else "save it as UTF-8")
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _check_size(root, path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(
            f"{path}: not valid YAML{at}: {problem}; a spec is a YAML mapping (see specs/smoke.yaml)"
        ) from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to be a spec (more than {MAX_DEPTH} levels)") from None
    if data is None:
        raise SpecError(
            f"{path}: the spec is empty; write `base:` and `options:` (see specs/smoke.yaml), or leave out SPEC to run "
            "the default job"
        )
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec must be a YAML mapping with base/options, got a {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise SpecError(f"{path}: top-level keys must be names, got {bad[0]!r}")
    return data


def _check_size(root: yaml.Node, path: str) -> None:
    """Count nodes as if every alias were expanded, without expanding them; refuse cycles and deep nesting."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int, open_: frozenset[int]) -> int:
        if depth > MAX_DEPTH:
            raise SpecError(f"{path}: nested too deeply to be a spec (more than {MAX_DEPTH} levels)")
        if id(node) in open_:
            raise SpecError(f"{path}: an alias refers to a node that contains it; a spec cannot be recursive")
        if id(node) in sizes:
            return sizes[id(node)]
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        total = 1 + sum(size(child, depth + 1, open_ | {id(node)}) for child in children)
        if total > MAX_NODES:
            raise SpecError(
                f"{path}: expands to more than {MAX_NODES:,} values (through YAML aliases?); "
                "a spec is a few hundred at most"
            )
        sizes[id(node)] = total
        return total

    size(root, 0, frozenset())


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
        at_experiment = top in ExperimentSpec.model_fields and top not in ("base", "options")
        set_path(experiment if at_experiment else run, key.split("."), value)
    return experiment, run


def load(path: str | None, sets: list[str] = (), only: list[str] | None = None) -> tuple[ExperimentSpec, Plan]:
    """Read, validate and expand a spec file (or the default job, when ``path`` is None). Raises :class:`SpecError`."""
    if path is None:
        data, where = {**read_spec(str(DEFAULT_SPEC)), "name": DEFAULT_NAME}, "(the default job, specs/smoke.yaml)"
        # the bundled corpus, wherever the command is run from (results still go under ./runs)
        corpus = DEFAULT_SPEC.parents[1] / data["base"]["data"]["path"]
        data = deep_merge(data, {"base": {"data": {"path": str(corpus)}}})
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
