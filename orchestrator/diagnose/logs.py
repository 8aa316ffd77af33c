"""Training logs in the forms people have them, read into one shape: evaluations per step.

Accepted, detected from the content:
- a Hugging Face Trainer ``trainer_state.json`` (its ``log_history``);
- a nanoGPT-style text log: ``step 1500: train loss 6.6700, val loss 6.7100`` lines, with the
  ``saving checkpoint to ...`` and ``Resuming ... step N`` lines around them (other lines, such as
  ``iter N: loss ...`` and banners, are ignored);
- CSV with a header, or JSONL, of per-step metrics: ``step``, ``train_loss``, ``val_loss``,
  and optionally ``lr``, ``grad_norm``, ``epoch``.

Our own sweeps (a spec, or an experiment's folder in storage) are read by
:mod:`orchestrator.diagnose.sweep`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.text import NotText, decode_text

FORMATS = (
    "a Hugging Face trainer_state.json; a nanoGPT-style log (`step N: train loss X, val loss Y`); "
    "CSV or JSONL with step, train_loss, val_loss (and optionally lr, grad_norm, epoch); "
    "a plateau-sweep spec (.yaml) or an experiment's folder in storage"
)


class LogError(ValueError):
    """The log cannot be read: the message names the file, the line, and the formats accepted."""


@dataclass
class Point:
    step: int
    train_loss: float | None = None
    val_loss: float | None = None
    lr: float | None = None
    grad_norm: float | None = None
    epoch: float | None = None  # passes over the training data so far, when the log counts them


_FIELDS = ("train_loss", "val_loss", "lr", "grad_norm", "epoch")


@dataclass
class RunLog:
    """One run's curve and what is known about it."""

    name: str
    points: list[Point]
    source: str  # which format it came from
    grad_norms: list[float] = field(default_factory=list)  # per-step pre-clip norms, when the log has them
    clip_rate: float | None = None
    longer_than_block: float | None = None  # share of documents longer than block_size, when known
    doc_losses: list[tuple[int, list[float]]] = field(default_factory=list)  # (step, per-document NLL sums), ours only
    doc_tokens: list[int] | None = None
    resumed: list[int | None] = field(default_factory=list)  # steps the run resumed at (None: the log says no step)
    checkpoints: dict[int, str] = field(default_factory=dict)  # step -> where the log says it saved a checkpoint
    best_checkpoint: str | None = None  # the trainer's own pick (trainer_state.json best_model_checkpoint)

    @property
    def evals(self) -> list[Point]:
        return [p for p in self.points if p.val_loss is not None]

    @property
    def trains(self) -> list[Point]:
        return [p for p in self.points if p.train_loss is not None]

    def train_at(self, step: int) -> float | None:
        """The train loss logged at ``step`` or last before it (Trainer logs train and eval losses on separate
        rows)."""
        before = [p for p in self.trains if p.step <= step]
        return before[-1].train_loss if before else None


def _number(value: Any, what: str, where: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise LogError(f"{where}: {what} {value!r} is not a number") from None
    return x if math.isfinite(x) else None


def merge(points: list[Point]) -> list[Point]:
    """One point per step, later fields filling earlier gaps; sorted by step."""
    by: dict[int, Point] = {}
    for p in points:
        q = by.setdefault(p.step, Point(p.step))
        for name in _FIELDS:
            if getattr(p, name) is not None:
                setattr(q, name, getattr(p, name))
    return [by[s] for s in sorted(by)]


def read_text(path: str) -> str:
    """The file's text; LogError when it is missing, binary, not UTF-8 or empty."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise LogError(f"{path}: cannot read it ({err.strerror})") from None
    try:
        text = decode_text(raw)
    except NotText as err:
        raise LogError(f"{path}: {err}, not a training log; accepted: {FORMATS}") from None
    if not text.strip():
        raise LogError(f"{path}: the file is empty; accepted: {FORMATS}")
    return text


def parse(path: str) -> RunLog:
    """Detect the format of the log at ``path`` and read it. Raises :class:`LogError`."""
    try:
        return _parse(path)
    except RecursionError:
        raise LogError(f"{path}: nested too deeply to be a training log; accepted: {FORMATS}") from None


def _parse(path: str) -> RunLog:
    text = read_text(path)
    name = Path(path).stem
    first = next(line for line in text.splitlines() if line.strip()).strip()
    if first.startswith("{"):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        one_line = len([line for line in text.splitlines() if line.strip()]) == 1
        if (isinstance(whole, dict) and ("log_history" in whole or not one_line)) or (
            whole is None and not _one_json_line(first)
        ):
            return parse_trainer_state(text, path, name)  # a JSON document: it must be a trainer state
        return parse_jsonl(text, path, name)
    if "," in first and "step" in [c.strip().lower() for c in first.split(",")]:
        return parse_csv(text, path, name)
    if _NANOGPT.search(text):
        return parse_nanogpt(text, path, name)
    raise LogError(f"{path}: line 1: not a format this reads ({first[:60]!r}); accepted: {FORMATS}")


def _one_json_line(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def parse_trainer_state(text: str, path: str, name: str) -> RunLog:
    try:
        state = json.loads(text)
    except json.JSONDecodeError as err:
        raise LogError(f"{path}: line {err.lineno}: not valid JSON ({err.msg}); accepted: {FORMATS}") from None
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise LogError(
            f"{path}: line 1: JSON without a log_history list, so not a trainer_state.json; accepted: {FORMATS}"
        )
    points = []
    for i, entry in enumerate(history):
        if not isinstance(entry, dict) or "step" not in entry:
            raise LogError(f"{path}: log_history[{i}]: an entry without a step")
        points.append(_point(entry, HF_NAMES, f"{path}: log_history[{i}]"))
    points = merge(points)
    best = state.get("best_model_checkpoint")
    return RunLog(
        name=name,
        points=points,
        source="trainer_state.json",
        grad_norms=[p.grad_norm for p in points if p.grad_norm is not None],
        best_checkpoint=best if isinstance(best, str) else None,
    )


_NANOGPT = re.compile(
    r"^\s*step\s+(\d+)\s*:\s*train loss\s+(\S+?),\s*val loss\s+(\S+)\s*$", re.IGNORECASE | re.MULTILINE
)
_NANOGPT_START = re.compile(r"^\s*step\s+\d+\s*:", re.IGNORECASE)
_SAVED = re.compile(r"saving checkpoint to\s+(\S+)", re.IGNORECASE)
_RESUMED = re.compile(r"^\s*resum\w*\b(?:.*?\bstep\s+(\d+))?", re.IGNORECASE)


def parse_nanogpt(text: str, path: str, name: str) -> RunLog:
    points: list[Point] = []
    checkpoints: dict[int, str] = {}
    resumed: list[int | None] = []
    for number, line in enumerate(text.splitlines(), 1):
        if (saved := _SAVED.search(line)) and points:
            checkpoints[points[-1].step] = saved.group(1)  # nanoGPT saves right after the evaluation it ranks by
            continue
        if resume := _RESUMED.match(line):
            resumed.append(int(resume.group(1)) if resume.group(1) else None)  # a resume that loses state shows here
            continue
        if not _NANOGPT_START.match(line):
            continue  # iter lines, banners, anything else
        m = _NANOGPT.match(line)
        if m is None:
            raise LogError(
                f"{path}: line {number}: an evaluation line that does not read as `step N: train loss X, val loss Y`: "
                f"{line.strip()[:80]!r}"
            )
        where = f"{path}: line {number}"
        points.append(
            Point(int(m.group(1)), _number(m.group(2), "train loss", where), _number(m.group(3), "val loss", where))
        )
    return RunLog(name=name, points=merge(points), source="nanoGPT log", resumed=resumed, checkpoints=checkpoints)


# Which field of a Point each format's record calls what: our CSV/JSONL columns, and HF Trainer's log_history.
OUR_NAMES = {"train_loss": "train_loss", "val_loss": "val_loss", "lr": "lr", "grad_norm": "grad_norm", "epoch": "epoch"}
HF_NAMES = {
    "train_loss": "loss",
    "val_loss": "eval_loss",
    "lr": "learning_rate",
    "grad_norm": "grad_norm",
    "epoch": "epoch",
}


def _point(record: dict[str, Any], names: dict[str, str], where: str) -> Point:
    """One record as a Point; ``names`` maps each field to the record's key for it."""
    return Point(
        step=int(_number(record["step"], "step", where) or 0),
        **{field: _number(record.get(key), key, where) for field, key in names.items()},
    )


def _from_record(record: dict[str, Any], where: str) -> Point:
    if "step" not in record:
        raise LogError(f"{where}: no step; each row needs step, train_loss, val_loss")
    return _point(record, OUR_NAMES, where)


def parse_csv(text: str, path: str, name: str) -> RunLog:
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip() for f in reader.fieldnames or []]
    if "val_loss" not in fields and "train_loss" not in fields:
        raise LogError(
            f"{path}: line 1: the CSV header has no train_loss or val_loss column ({', '.join(fields)}); accepted: "
            f"{FORMATS}"
        )
    points = [
        _from_record({k.strip(): v for k, v in row.items() if k}, f"{path}: line {reader.line_num}") for row in reader
    ]
    points = merge(points)
    return RunLog(
        name=name, points=points, source="CSV", grad_norms=[p.grad_norm for p in points if p.grad_norm is not None]
    )


def parse_jsonl(text: str, path: str, name: str) -> RunLog:
    from jobs.data import DataError, jsonl_records

    try:
        points = merge([_from_record(record, f"{path}: line {number}") for number, record in jsonl_records(text)])
    except DataError as err:
        raise LogError(f"{path}: {err}") from None
    return RunLog(
        name=name, points=points, source="JSONL", grad_norms=[p.grad_norm for p in points if p.grad_norm is not None]
    )
