"""Logs that are tables of per-step records: CSV with a header, JSONL, or a JSON list. Each format is known by its
columns and differs only in its names, which the shared step (:mod:`.curve`) maps; a reader here just labels the rows
and says what its format hides.

- the Hugging Face Trainer's ``log_history`` exported as CSV, JSONL or a JSON list (``loss``, ``eval_loss``,
  ``learning_rate``, ``grad_norm``, ``epoch``, ``step``, and the end-of-run summary with ``train_loss``);
- LLaMA-Factory's ``trainer_log.jsonl`` (``current_steps``, ``loss``, ``eval_loss``, ``lr``);
- Lightning's CSVLogger ``metrics.csv`` (``train_loss_step``, ``val_loss``, ``epoch``, ``step``; train and validation
  on separate rows);
- any other CSV or JSONL of per-step metrics (ours: ``step``, ``train_loss``, ``val_loss``, ``lr``, ``grad_norm``).

W&B's exports are CSV too, with their own quirks: :mod:`.wandb`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from typing import Any

from contract import documents
from orchestrator.diagnose.logs.curve import LogError, Record, Rows

TRAINER_KEYS = {"loss", "eval_loss", "train_runtime"}  # names only the Trainer's log_history uses
HEADER_NAME = re.compile(r"^[^|%{}<>'\"]{1,200}$")  # a column name: not a progress bar, a dict or a quoted string


def csv_records(text: str, where: str) -> tuple[list[str], list[Record]]:
    """(header, records) of CSV text with a header row; each record is named by its line."""
    reader = csv.DictReader(io.StringIO(text))
    header = [(f or "").strip() for f in reader.fieldnames or []]
    records = []
    for row in reader:
        if None in row:
            raise LogError(f"{where}: line {reader.line_num}: more fields than the header's {len(header)}")
        records.append(Record(f"line {reader.line_num}", {k.strip(): v for k, v in row.items() if k}))
    return header, records


def jsonl_records(text: str, where: str) -> list[Record]:
    try:
        return [Record(f"line {number}", values) for number, values in documents.jsonl_records(text)]
    except documents.DataError as err:
        raise LogError(f"{where}: {err}") from None


def looks_like_csv(text: str) -> bool:
    """A header of 2+ named fields, and rows that mostly have as many fields: a table, not prose with a comma."""
    lines = [line for line in text.splitlines() if line.strip()][:20]
    if len(lines) < 2 or lines[0].lstrip().startswith(("{", "[")):
        return False
    header, *rows = list(csv.reader(lines))
    names = header[1:] if not header[0].strip() else header  # pandas writes its index column without a name
    if len(header) < 2 or not all(HEADER_NAME.match(h.strip()) for h in names):
        return False
    full = [row for row in rows if len(row) == len(header)]
    numeric = [row for row in full if sum(_is_number(v) for v in row) * 2 >= len(row)]  # mostly numbers or empty
    return len(full) * 2 >= len(rows) and len(numeric) * 2 >= len(full)


def _is_number(value: str) -> bool:
    try:
        float(value or "0")
        return True
    except ValueError:
        return False


def trainer(records: list[Record], kind: str) -> Rows:
    return Rows(f"Hugging Face Trainer log_history ({kind})", records)


def llamafactory(records: list[Record], kind: str) -> Rows:
    return Rows(
        "LLaMA-Factory trainer_log.jsonl",
        records,
        notes=["LLaMA-Factory logs no gradient norm; its `lr` is the learning rate at each logged step."],
    )


def lightning(records: list[Record], kind: str) -> Rows:
    epoch_means = sorted({k for r in records for k in r.values if k.endswith("_epoch")})
    notes = ["Lightning logs train and validation on separate rows; each is placed at its own step."]
    if epoch_means:
        notes.append(
            f"Per-epoch means ({', '.join(f'`{k}`' for k in epoch_means)}) are left: the per-step values are read."
        )
    return Rows("Lightning metrics.csv", records, notes=notes)


def per_step(records: list[Record], kind: str) -> Rows:
    return Rows(f"{kind} of per-step metrics", records)


def _columns(records: list[Record]) -> set[str]:
    return {k for r in records for k in r.values}


# (detect on the column names, reader), most specific first: the first that matches reads the table
FORMATS: list[tuple[Callable[[set[str]], bool], Callable[[list[Record], str], Rows]]] = [
    (lambda cols: {"current_steps", "total_steps"} <= cols, llamafactory),
    (lambda cols: {"epoch", "step"} <= cols and any(c.endswith(("_step", "_epoch")) for c in cols), lightning),
    (lambda cols: bool(cols & TRAINER_KEYS), trainer),
    (lambda cols: True, per_step),
]


def read(records: list[Record], kind: str) -> Rows:
    """``records`` (from a CSV, JSONL or JSON list: ``kind``) as the rows of the format their columns show."""
    cols = _columns(records)
    reader = next(reader for detect, reader in FORMATS if detect(cols))
    return reader(records, kind)


def json_list(document: list[Any], where: str) -> list[Record]:
    """A JSON list of records (the Trainer's ``log_history`` saved on its own)."""
    if not all(isinstance(entry, dict) for entry in document):
        raise LogError(f"{where}: a JSON list of training records must hold objects only")
    return [Record(f"[{i}]", entry) for i, entry in enumerate(document)]
