"""The Hugging Face Trainer's console output: the ``{'loss': 0.93, 'grad_norm': 1.2, 'learning_rate': 2e-05,
'epoch': 0.5}`` and ``{'eval_loss': ...}`` lines it prints among tqdm bars and the script's own output, as saved by
``nohup``, ``tee`` or W&B (``files/output.log``).

The lines carry no step, so the step is read from the training progress bar (``20/613 [04:02<...]``) printed before
each line, checked against the line's epoch (step = epoch x steps per epoch). Where the two disagree by more than the
epoch's printed precision, the bar is not the line's (stdout is buffered while tqdm's stderr is not, and tqdm skips
redraws) and the epoch decides. Python's dict syntax is parsed as such: single quotes, ``nan``, ``inf``, and the
strings transformers 5 prints (``'loss': '2.602'``)."""

from __future__ import annotations

import ast
import bisect
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

from orchestrator.diagnose.logs.curve import Record, Rows

DICT = re.compile(r"\{'[^{}\n]*\}")  # str() of a flat dict, as Trainer's ProgressCallback writes it
COUNTER = re.compile(r"(\d+)/(\d+) \[")  # a tqdm bar: "  3%|▎   | 20/613 [04:02<28:09,  2.85s/it]"
EPOCH = re.compile(r"'epoch': ('?)([-+0-9.eE]+)")
METRIC_KEYS = {"loss", "eval_loss", "train_runtime", "grad_norm", "learning_rate"}
CONSTANTS = {"nan": float("nan"), "inf": float("inf")}


@dataclass
class _Line:
    pos: int
    values: dict[str, Any]
    epoch_half: float | None  # half a unit of the epoch's last printed digit: how exact the printed epoch is


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, type(None))):
        return node.value
    if isinstance(node, ast.Name) and node.id in CONSTANTS:
        return CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _value(node.operand)
        if isinstance(inner, (int, float)):
            return -inner if isinstance(node.op, ast.USub) else inner
    raise ValueError("not a logged value")


def metrics(text: str) -> dict[str, Any] | None:
    """The dict printed in ``text`` when it is a Trainer log line, else None."""
    try:
        node = ast.parse(text, mode="eval").body
        if not isinstance(node, ast.Dict) or not all(isinstance(k, ast.Constant) for k in node.keys):
            return None
        values = {str(k.value): _value(v) for k, v in zip(node.keys, node.values)}
    except (SyntaxError, ValueError, RecursionError):
        return None
    trainer = values.keys() & METRIC_KEYS or any(k.startswith(("eval_", "predict_", "test_")) for k in values)
    return values if trainer else None


def detect(text: str) -> bool:
    return any(metrics(m.group()) is not None for m in DICT.finditer(text))


def read(text: str) -> Rows:
    lines = []
    for m in DICT.finditer(text):
        values = metrics(m.group())
        if values is not None:
            epoch = EPOCH.search(m.group())
            lines.append(_Line(m.start(), values, _half_unit(epoch.group(2), bool(epoch.group(1))) if epoch else None))
    counters = [(m.start(), int(m.group(1)), int(m.group(2))) for m in COUNTER.finditer(text)]
    steps, notes = _steps(lines, counters)
    start = _last_run(lines, steps)
    if start:
        notes.append(
            f"The log holds more than one run: the step goes back at line {_line(text, lines[start].pos)}; only the "
            "last run is read "
            f"({len(lines) - start:,} of {len(lines):,} log lines)."
        )
        lines, steps = lines[start:], steps[start:]
    records = [Record(f"line {_line(text, line.pos)}", line.values, step) for line, step in zip(lines, steps)]
    return Rows("Hugging Face Trainer console log", records, notes)


def _steps(lines: list[_Line], counters: list[tuple[int, int, int]]) -> tuple[list[int | None], list[str]]:
    """Each line's step, from the training bar checked against its epoch; all None (numbered by logging event in the
    shared step) when the log has no bar to read it from."""
    trains = [line for line in lines if "loss" in line.values]
    before = [pos for pos, _, _ in counters]

    def last(pos: int, total: int | None = None) -> tuple[int, int] | None:
        i = bisect.bisect_left(before, pos)
        for _, n, t in reversed(counters[:i]):
            if total is None or t == total:
                return n, t
        return None

    totals = Counter(c[1] for c in (last(line.pos) for line in trains) if c)
    if not totals:
        return [None] * len(lines), ["No training progress bar in the log: steps are not known."]
    total = totals.most_common(1)[0][0]
    bar = [(c[0] if c else None) for c in (last(line.pos, total) for line in lines)]
    summary = next((line for line in lines if "train_runtime" in line.values), None)
    final = _float(summary.values.get("epoch")) if summary else None
    pairs = [(n, _float(line.values.get("epoch"))) for line, n in zip(lines, bar) if n and line in trains]
    ratios = [n / e for n, e in pairs if e]
    per_epoch = total / final if final else (statistics.median(ratios) if ratios else None)
    steps, from_epoch = [], 0
    for line, n in zip(lines, bar):
        epoch = _float(line.values.get("epoch"))
        if epoch is None or per_epoch is None or line.epoch_half is None:
            steps.append(n)
            continue
        implied = epoch * per_epoch
        tolerance = line.epoch_half * per_epoch + 0.5  # the epoch as exact as it is printed, the step a whole one
        if n is not None and abs(n - implied) <= tolerance:
            steps.append(n)
        else:
            steps.append(round(implied))
            from_epoch += 1
    if any(s is None for s in steps):
        return [None] * len(lines), [
            "A log line has neither a progress bar before it nor an epoch: steps are not known."
        ]
    count = total / per_epoch if per_epoch else None
    epochs = f" over {count:.3g} epoch{'' if count == 1 else 's'}" if count else ""
    notes = [f"Steps from the training progress bar (`n/{total}`{epochs}), checked against each line's epoch."]
    if from_epoch:
        notes.append(
            f"{from_epoch:,} of {len(lines):,} lines sit beside a progress bar that does not match their epoch (stdout "
            "is buffered, tqdm's stderr is not, and tqdm skips redraws): their step is the epoch's."
        )
    return steps, notes


def _half_unit(text: str, quoted: bool) -> float | None:
    """How far the true epoch can be from the printed one. transformers 5 prints it as a string to 4 significant
    digits (`'0.5'` is 0.5000); earlier versions print the float, rounded to 2 decimals at the coarsest."""
    value = _float(text)
    if value is None:
        return None
    if quoted:
        return 0.5 * 10 ** (math.floor(math.log10(abs(value))) - 3) if value else 0.5e-4
    decimals = len(text.partition(".")[2]) if "e" not in text.lower() else 17
    return 0.5 * 10 ** -max(decimals, 2)


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _last_run(lines: list[_Line], steps: list[int | None]) -> int:
    """Where the last run in the log starts: the last train line whose step is below the train step before it."""
    start, previous = 0, None
    for i, (line, step) in enumerate(zip(lines, steps)):
        if "loss" not in line.values or step is None:
            continue
        if previous is not None and step < previous:
            start = i
        previous = step
    return start


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
