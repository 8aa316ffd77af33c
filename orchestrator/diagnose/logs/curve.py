"""The one step every reader ends in: its rows become the curve the rules read, and a reading of what was taken and
what was left.

Readers only parse: each turns its format into :class:`Rows` (records in file order, as the file names its keys).
This module alone decides which key is the train loss, which rows are not training or evaluation (``predict_*``,
``test_*``, the end-of-run summary), where the non-finite values are, and how steps are numbered when the file has
none. So every format is read by the same rules, and every reading says the same things the same way.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FIELDS = ("train_loss", "val_loss", "lr", "grad_norm", "epoch")
LABELS = {
    "step": "step",
    "train_loss": "train loss",
    "val_loss": "eval loss",
    "lr": "LR",
    "grad_norm": "grad norm",
    "epoch": "epoch",
}
# The keys each field is read from, in order of preference: the Trainer's own names first (its CSV also carries the
# end-of-run summary's `train_loss`, which must never win over `loss`), then ours, W&B's (`train/...`), Lightning's
# (`_step` before `_epoch` means) and the spellings people type. A name ending in `*` is a prefix (Lightning's
# LearningRateMonitor logs `lr-AdamW`).
NAMES: dict[str, tuple[str, ...]] = {
    "step": ("step", "global_step", "train/global_step", "current_steps", "Step", "_step", "iter", "iteration"),
    "train_loss": (
        "loss",
        "train_loss",
        "train/loss",
        "train_loss_step",
        "training_loss",
        "Training Loss",
        "train_loss_epoch",
    ),
    "val_loss": (
        "eval_loss",
        "val_loss",
        "eval/loss",
        "validation_loss",
        "valid_loss",
        "val/loss",
        "Validation Loss",
        "val_loss_epoch",
    ),
    "lr": ("learning_rate", "lr", "train/learning_rate", "lr-*"),
    "grad_norm": ("grad_norm", "train/grad_norm", "gradient_norm", "grad_2.0_norm_total"),
    "epoch": ("epoch", "train/epoch", "Epoch"),
}
# What the Trainer logs once, at the end of train(): a summary of the run, not a point of the curve
SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos")
# Entries from predict() or a test set: not training and not the evaluation the run was tuned on
NOT_TRAINING = ("predict_", "test_")
MIN_POINTS = 3  # fewer cannot show a trend: the diagnosis says so rather than judge the run


class LogError(ValueError):
    """The log cannot be read: the message names the file, the place, and what was expected."""


@dataclass
class Point:
    step: int
    train_loss: float | None = None
    val_loss: float | None = None
    lr: float | None = None
    grad_norm: float | None = None
    epoch: float | None = None  # passes over the training data so far, when the log counts them


@dataclass
class Record:
    """One row, entry or line of a log, with the keys and raw values the file gives it."""

    where: str  # "line 12", "row 7", "log_history[3]": how a person finds it in the file
    values: dict[str, Any]
    step: int | None = None  # set by a reader that infers the step itself (the console log), else read from a key


@dataclass
class Rows:
    """What a reader parsed: its format's name, its records in file order, and what it noticed on the way."""

    format: str
    records: list[Record]
    notes: list[str] = field(default_factory=list)
    names: dict[str, tuple[str, ...]] = field(default_factory=lambda: NAMES)
    meta: dict[str, Any] = field(default_factory=dict)  # what the file says about the run besides its records


@dataclass
class Skipped:
    reason: str
    where: list[str]
    detail: str = ""  # e.g. the summary's own train_loss


@dataclass
class NonFinite:
    """The NaN or infinite values of one field: evidence, never dropped without a word."""

    field: str
    key: str
    steps: list[int]
    kinds: dict[str, int]  # "nan" / "inf" / "-inf" / "blank" (an empty cell where its kind of row has a value) -> count
    logged: int  # how many values of this field the log has in all


@dataclass
class Reading:
    """What a reader took and what it left: the JSON's ``reading`` and the diagnosis's "What was read"."""

    format: str
    records: int
    mapping: dict[str, str]  # field -> the file's key for it
    points: int
    trains: int
    evals: int
    steps: tuple[int, int] | None  # first and last step read
    skipped: list[Skipped] = field(default_factory=list)
    nonfinite: list[NonFinite] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)  # keys the file has that no field reads
    notes: list[str] = field(default_factory=list)

    @property
    def too_few(self) -> bool:
        return self.points < MIN_POINTS

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "records": self.records,
            "mapping": self.mapping,
            "missing": [f for f in FIELDS if f not in self.mapping],
            "points": self.points,
            "train_points": self.trains,
            "evaluations": self.evals,
            "steps": list(self.steps) if self.steps else None,
            "skipped": [{"reason": s.reason, "count": len(s.where), "where": s.where[:20]} for s in self.skipped],
            "nonfinite": [
                {
                    "field": n.field,
                    "key": n.key,
                    "count": len(n.steps),
                    "of": n.logged,
                    "first_step": n.steps[0],
                    "last_step": n.steps[-1],
                    "kinds": n.kinds,
                }
                for n in self.nonfinite
            ],
            "unread": self.unread,
            "notes": self.notes,
        }

    def markdown(self) -> list[str]:
        span = f", steps {self.steps[0]:,} to {self.steps[1]:,}" if self.steps else ""
        lines = [
            f"- {self.format}: {self.records:,} {_plural(self.records, 'record')} read, {self.points:,} "
            f"{_plural(self.points, 'point')} of the curve ({self.trains:,} with a train loss, {self.evals:,} "
            f"{_plural(self.evals, 'evaluation')}){span}."
        ]
        taken = [f"{LABELS[f]} ← `{self.mapping[f]}`" for f in ("step", *FIELDS) if f in self.mapping]
        lines.append(f"- Taken: {'; '.join(taken) or 'nothing'}.")
        missing = [LABELS[f] for f in ("train_loss", "val_loss", "lr", "grad_norm") if f not in self.mapping]
        if missing:
            lines.append(f"- Not in the log: {', '.join(missing)}.")
        for s in self.skipped:
            at = ", ".join(s.where[:3]) + (f" and {len(s.where) - 3:,} more" if len(s.where) > 3 else "")
            lines.append(f"- Skipped {len(s.where):,} {_plural(len(s.where), 'record')}: {s.reason} ({at}){s.detail}.")
        for n in self.nonfinite:
            kinds = ", ".join(f"{count:,} {kind}" for kind, count in n.kinds.items())
            blank = " where rows of their kind have a value, as pandas writes NaN" if "blank" in n.kinds else ""
            lines.append(
                f"- Non-finite: {len(n.steps):,} of {n.logged:,} {LABELS[n.field]} values ({kinds}{blank}), steps "
                f"{n.steps[0]:,} to {n.steps[-1]:,}: kept as evidence (rule `numerics`), left out of the curve."
            )
        if self.unread:
            shown = ", ".join(f"`{k}`" for k in self.unread[:10])
            more = f" and {len(self.unread) - 10} more" if len(self.unread) > 10 else ""
            lines.append(f"- Not read: {shown}{more}.")
        lines += [f"- {note}" for note in self.notes]
        return lines


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
    reading: Reading | None = None  # what the reader took and left (None for our own sweeps, read from their records)
    # eval metrics besides the loss (eval_accuracy, eval_wer, ...) as (step, value), finite values only
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)  # the end-of-run summary's numbers (train_loss: the mean)
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. trainer_state.json's best_metric, train_batch_size

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


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def number(value: Any, key: str, where: str) -> float | None:
    """A logged value as a float (NaN and infinities kept), None when empty; LogError naming the place otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise LogError(f"{where}: {key} {value!r} is not a number")
    try:
        return float(value)
    except ValueError:
        raise LogError(f"{where}: {key} {value!r} is not a number") from None


def merge(points: list[Point]) -> list[Point]:
    """One point per step, later fields filling earlier gaps; sorted by step."""
    by: dict[int, Point] = {}
    for p in points:
        q = by.setdefault(p.step, Point(p.step))
        for name in FIELDS:
            if getattr(p, name) is not None:
                setattr(q, name, getattr(p, name))
    return [by[s] for s in sorted(by)]


def resolve(keys: list[str], names: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """field -> the first of its names the file has."""
    mapping = {}
    for what, candidates in names.items():
        for name in candidates:
            found = [k for k in keys if k.startswith(name[:-1])] if name.endswith("*") else [name] * (name in keys)
            if found:
                mapping[what] = found[0]
                break
    return mapping


def expected_names(names: dict[str, tuple[str, ...]] = NAMES) -> str:
    """The mapping a reader expects, for a refusal: the loss keys it knows."""
    return (
        f"a train loss ({', '.join(names['train_loss'])}) or an eval loss ({', '.join(names['val_loss'])}), "
        f"each with a step ({', '.join(names['step'])}) or one row per epoch"
    )


def _is_summary(values: dict[str, Any]) -> bool:
    return any(k.rpartition("/")[2] in SUMMARY_KEYS for k, v in values.items() if v not in (None, ""))


def _not_training(values: dict[str, Any]) -> bool:
    return any(k.rpartition("/")[2].startswith(NOT_TRAINING) for k, v in values.items() if v not in (None, ""))


BLANKABLE = ("train_loss", "grad_norm")  # logged by every train record: a blank cell there is a missing value


def _filled(values: dict[str, Any], mapping: dict[str, str], what: str) -> bool:
    return what in mapping and values.get(mapping[what]) not in (None, "")


def _kind(values: dict[str, Any], mapping: dict[str, str]) -> str | None:
    """ "eval" for an evaluation record (its loss, or any eval_* value), "train" for a train record (a loss, an LR or a
    gradient norm), else None."""
    evaluation = any(v not in (None, "") and k.startswith(("eval_", "eval/")) for k, v in values.items())
    if evaluation or _filled(values, mapping, "val_loss"):
        return "eval"
    if any(_filled(values, mapping, f) for f in ("train_loss", "lr", "grad_norm")):
        return "train"
    return None


def _blanks(values: dict[str, Any], mapping: dict[str, str], carried: Counter) -> list[str]:
    """The fields this record leaves blank although records of its kind log them: NaN, as pandas writes it (an empty
    cell) or as JSON without NaN writes it (null)."""
    kind = _kind(values, mapping)
    if kind == "eval":
        return ["val_loss"] if "val_loss" in mapping and not _filled(values, mapping, "val_loss") else []
    if kind == "train":
        return [f for f in BLANKABLE if carried[f] and not _filled(values, mapping, f)]
    return []


def build(rows: Rows, name: str, where: str) -> RunLog:
    """The curve of ``rows`` and its reading. LogError, naming the keys found and the names expected, when no key holds
    a train or eval loss."""
    if not rows.records:  # nothing was logged (a trainer_state.json's empty log_history): evidence, not a bad file
        empty = Reading(rows.format, 0, {}, 0, 0, 0, None, notes=[*rows.notes, "The log holds no record at all."])
        return RunLog(name=name, points=[], source=rows.format, reading=empty, meta=rows.meta)
    keys = list(dict.fromkeys(k for r in rows.records for k in r.values))
    mapping = resolve(keys, rows.names)
    if "train_loss" not in mapping and "val_loss" not in mapping:
        found = ", ".join(keys[:30]) + (f", ... ({len(keys)} in all)" if len(keys) > 30 else "") or "none"
        raise LogError(
            f"{where}: no training or evaluation loss in this {rows.format}: keys found: {found}; expected "
            f"{expected_names(rows.names)}: if one of the keys found is the loss, rename it to one of these"
        )
    loss_keys = [mapping[f] for f in ("train_loss", "val_loss") if f in mapping]
    carried = Counter(
        f
        for r in rows.records
        if _kind(r.values, mapping) == "train"
        for f in BLANKABLE
        if _filled(r.values, mapping, f)
    )
    skipped: dict[str, Skipped] = {}
    kept: list[tuple[Record, dict[str, float | None], list[str]]] = []
    end_of_run: dict[str, float] = {}
    for record in rows.records:
        at = f"{where}: {record.where}"
        values = {f: number(record.values.get(mapping[f]), mapping[f], at) for f in FIELDS if f in mapping}
        summary = _is_summary(record.values)
        # the summary's own train_loss is the run's mean, never a point, even where it is the only train loss key
        has_loss = any(
            record.values.get(k) not in (None, "") and not (summary and k.rpartition("/")[2] == "train_loss")
            for k in loss_keys
        )
        blanks = _blanks(record.values, mapping, carried)
        reason = None
        if not has_loss and _not_training(record.values):
            reason = "predict_* or test_* entries, neither training nor evaluation"
        elif not has_loss and summary:
            reason = "the end-of-run summary, not a point of the curve"
        elif (
            not blanks
            and all(values.get(f) is None for f in ("train_loss", "val_loss", "lr", "grad_norm"))
            and not _eval_metrics(record.values, mapping)  # an evaluation of ROUGE or accuracy alone is one too
        ):
            reason = f"no value in {', '.join(f'`{mapping[f]}`' for f in FIELDS[:4] if f in mapping)}"
        if reason is not None:
            skip = skipped.setdefault(reason, Skipped(reason, []))
            skip.where.append(record.where)
            summary_loss = number(record.values.get("train_loss"), "train_loss", at)
            if reason.startswith("the end-of-run") and summary_loss is not None:
                skip.detail = f"; its train_loss {summary_loss:.4g} is the mean over the run"
            if reason.startswith("the end-of-run"):
                end_of_run = _numbers(record.values)
            continue
        kept.append((record, values, blanks))
    used = {f for _, values, blanks in kept for f in FIELDS if values.get(f) is not None or f in blanks}
    notes = list(rows.notes)
    steps = _steps(kept, mapping, skipped, notes, where)
    points, nonfinite, duplicates = _points(kept, steps, mapping)
    if duplicates:
        notes.append(duplicates)
    points = merge(points)
    curve = [p for p in points if p.train_loss is not None or p.val_loss is not None]
    reading = Reading(
        format=rows.format,
        records=len(rows.records),
        mapping={  # the keys the curve came from: a key only skipped records carry (a summary's train_loss) is not
            **({"step": mapping["step"]} if "step" in mapping else {}),
            **{f: mapping[f] for f in FIELDS if f in used},
        },
        points=len(curve),
        trains=sum(p.train_loss is not None for p in curve),
        evals=sum(p.val_loss is not None for p in curve),
        steps=(curve[0].step, curve[-1].step) if curve else None,
        skipped=list(skipped.values()),
        nonfinite=nonfinite,
        unread=[k for k in keys if k not in mapping.values()],
        notes=notes,
    )
    return RunLog(
        name=name,
        points=points,
        source=rows.format,
        grad_norms=[p.grad_norm for p in points if p.grad_norm is not None],
        reading=reading,
        metrics=_metrics(kept, steps, mapping),
        summary=end_of_run,
        meta=rows.meta,
    )


# eval keys that describe the evaluation's cost, not the model
_COST = ("_runtime", "_samples_per_second", "_steps_per_second", "_num_tokens")


def _metrics(
    kept: list[tuple[Record, dict[str, float | None], list[str]]], steps: list[int | None], mapping: dict[str, str]
) -> dict[str, list[tuple[int, float]]]:
    """The eval metrics besides the loss (``eval_accuracy``, ``eval/f1``), per step, finite values only."""
    out: dict[str, list[tuple[int, float]]] = {}
    for (record, _, _), step in zip(kept, steps):
        if step is None:
            continue
        for key, value in _eval_metrics(record.values, mapping).items():
            out.setdefault(key, []).append((step, value))
    return out


def _eval_metrics(values: dict[str, Any], mapping: dict[str, str]) -> dict[str, float]:
    return {
        key: value
        for key, value in _numbers(values).items()
        if key.startswith(("eval_", "eval/")) and key != mapping.get("val_loss") and not key.endswith(_COST)
    }


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a record (strings that read as numbers included)."""
    out = {}
    for key, value in values.items():
        try:
            x = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            continue
        if x is not None and math.isfinite(x):
            out[key] = x
    return out


def _steps(
    kept: list[tuple[Record, dict[str, float | None], list[str]]],
    mapping: dict[str, str],
    skipped: dict[str, Skipped],
    notes: list[str],
    where: str,
) -> list[int | None]:
    """Each kept record's step: the reader's, else the file's step key, else (the file has none) the epoch when rows
    are whole epochs, else the logging event's number. A record without one is skipped, and said so."""
    if kept and all(r.step is not None for r, _, _ in kept):
        return [r.step for r, _, _ in kept]
    if "step" in mapping:
        key, out = mapping["step"], []
        for record, _, _ in kept:
            at = f"{where}: {record.where}"
            raw = record.step if record.step is not None else number(record.values.get(key), key, at)
            if raw is None or not math.isfinite(raw):
                skipped.setdefault("no step", Skipped("no step", [])).where.append(record.where)
                out.append(None)
            elif raw != int(raw):
                raise LogError(f"{at}: {key} {raw!r} is not a whole number of steps")
            else:
                out.append(int(raw))
        return out
    epochs = [v.get("epoch") for _, v, _ in kept]
    if epochs and all(e is not None and math.isfinite(e) and e == int(e) for e in epochs):
        trains = [e for e, (_, v, _) in zip(epochs, kept) if v.get("train_loss") is not None]
        if all(a < b for a, b in zip(trains, trains[1:])):
            notes.append("No step in the log: one row per epoch, so the curve's steps are epochs.")
            return [int(e) for e in epochs]
    notes.append(
        "No step in the log: points are numbered by logging event (the n-th train loss logged), not optimizer steps; "
        "an evaluation takes the number of the train loss before it."
    )
    out, event = [], 0
    for _, values, _ in kept:
        if values.get("train_loss") is not None:
            event += 1
        out.append(max(event, 1))
    return out


def _points(
    kept: list[tuple[Record, dict[str, float | None], list[str]]], steps: list[int | None], mapping: dict[str, str]
) -> tuple[list[Point], list[NonFinite], str]:
    """Points with the finite values; the non-finite ones per field; a note on steps logged more than once."""
    points, bad, logged = [], {}, Counter()
    seen: dict[tuple[str, int], float] = {}
    repeated: set[int] = set()
    spread = 0.0
    for (_, values, blanks), step in zip(kept, steps):
        if step is None:
            continue
        point = Point(step)
        for what in blanks:
            logged[what] += 1
            bad.setdefault(what, []).append((step, "blank"))
        for what, value in values.items():
            if value is None:
                continue
            logged[what] += 1
            if not math.isfinite(value):
                bad.setdefault(what, []).append(
                    (step, "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
                )
                continue
            if what in ("train_loss", "val_loss"):
                if (what, step) in seen:
                    repeated.add(step)
                    spread = max(spread, abs(seen[(what, step)] - value))
                seen[(what, step)] = value
            setattr(point, what, value)
        points.append(point)
    nonfinite = [
        NonFinite(what, mapping[what], sorted(s for s, _ in found), dict(Counter(k for _, k in found)), logged[what])
        for what, found in bad.items()
        if what != "epoch"
    ]
    note = ""
    if repeated:
        note = (
            f"{len(repeated):,} {_plural(len(repeated), 'step')} logged more than once (e.g. two processes writing one "
            f"log, or a resumed run): the last value is kept; the copies differ by at most {spread:.4g}."
        )
    return points, nonfinite, note
