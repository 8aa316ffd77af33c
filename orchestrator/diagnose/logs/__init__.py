"""Training logs in the forms people keep them, each read by a small reader into rows, and the rows into one curve by
one shared step (:mod:`.curve`) that also says what was taken and what was left.

The format is detected from the content, never from the file's name:

- a Hugging Face ``trainer_state.json`` (:mod:`.trainer_state`);
- the Trainer's console output, its ``{'loss': ...}`` lines among tqdm bars and the script's own lines
  (:mod:`.trainer_console`);
- tables of per-step records, CSV, JSONL or a JSON list: the Trainer's ``log_history`` exported, LLaMA-Factory's
  ``trainer_log.jsonl``, Lightning's ``metrics.csv``, ours (``step, train_loss, val_loss``) (:mod:`.tables`);
- W&B's CSV exports: a run's history, a chart (:mod:`.wandb`);
- a nanoGPT-style log, and build-nanogpt's or llm.c's one-value-a-line log (:mod:`.nanogpt`);
- TensorBoard event files, a file or a run directory (:mod:`.tfevents`);
- a run in an MLflow store, ``runs:/<run_id>`` (:mod:`.mlflow_run`).

Our own sweeps (a spec, or an experiment's folder in storage) are read by :mod:`orchestrator.diagnose.sweep`.
"""

from __future__ import annotations

import json
from pathlib import Path

from contract.text import NotText, decode_text
from orchestrator.diagnose.logs import mlflow_run, nanogpt, tables, tfevents, trainer_console, trainer_state, wandb
from orchestrator.diagnose.logs.curve import (
    LogError,
    NonFinite,
    Point,
    Reading,
    RunLog,
    build,
    merge,
)

__all__ = ["FORMATS", "LogError", "NonFinite", "Point", "Reading", "RunLog", "merge", "parse"]

FORMATS = (
    "a Hugging Face trainer_state.json, console log ({'loss': ...} lines), or log_history as CSV/JSONL/JSON; "
    "LLaMA-Factory's trainer_log.jsonl; Lightning's metrics.csv; a W&B history or chart export (CSV); TensorBoard "
    "event files; an MLflow run (runs:/RUN_ID); a nanoGPT-style log (`step N: train loss X, val loss Y`); CSV or JSONL "
    "with step, train_loss, val_loss; a plateau-sweep spec (.yaml) or an experiment's folder in storage"
)


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


def parse(source: str, run: str | None = None) -> RunLog:
    """Detect the format of the log at ``source`` (a file, a TensorBoard run directory, or ``runs:/<run_id>``) and
    read it; ``run`` picks one run where the source holds several. Raises :class:`LogError`."""
    try:
        return _parse(source, run)
    except RecursionError:
        raise LogError(f"{source}: nested too deeply to be a training log; accepted: {FORMATS}") from None


def _parse(source: str, run: str | None) -> RunLog:
    name = Path(source).stem
    if mlflow_run.is_run_uri(source):
        return build(mlflow_run.read(source), source.rstrip("/").rpartition("/")[2], source)
    path = Path(source)
    if path.is_dir() or (path.is_file() and tfevents.is_event_file(path)):
        return build(tfevents.read(path, run), path.name, source)
    text = read_text(source)
    first = next(line for line in text.splitlines() if line.strip()).strip()
    if first.startswith(("{", "[")):
        return _json(text, first, source, name)
    if tables.looks_like_csv(text):
        return _csv(text, source, name, run)
    if trainer_console.detect(text):
        return build(trainer_console.read(text), name, source)
    if nanogpt.detect_values(text):
        return build(nanogpt.read_values(text), name, source)
    if nanogpt.detect(text):
        rows, resumed, checkpoints = nanogpt.read(text, source)
        log = build(rows, name, source)
        log.resumed, log.checkpoints = resumed, checkpoints
        return log
    raise LogError(f"{source}: line 1: not a format this reads ({first[:60]!r}); accepted: {FORMATS}")


def _json(text: str, first: str, source: str, name: str) -> RunLog:
    """A JSON document (a trainer_state.json, or a list of records), else JSONL, one record a line; a console log
    that happens to start with a bracket is read as one."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        if not _one_object(first):  # a document that does not parse, rather than one record a line
            if trainer_console.detect(text):
                return build(trainer_console.read(text), name, source)
            raise LogError(f"{source}: line {err.lineno}: not valid JSON ({err.msg}); accepted: {FORMATS}") from None
        document = None
    lines = [line for line in text.splitlines() if line.strip()]
    if isinstance(document, list):
        return build(tables.read(tables.json_list(document, source), "JSON"), name, source)
    if isinstance(document, dict) and ("log_history" in document or len(lines) > 1):
        rows, best = trainer_state.read(document, source)
        log = build(rows, name, source)
        log.best_checkpoint = best
        return log
    return build(tables.read(tables.jsonl_records(text, source), "JSONL"), name, source)


def _one_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def _csv(text: str, source: str, name: str, run: str | None) -> RunLog:
    header, records = tables.csv_records(text, source)
    if wandb.is_runs_table(header):
        wandb.refuse_runs_table(records, source)
    if wandb.is_chart(header):
        return build(wandb.chart(header, records, run, source), name, source)
    if wandb.is_history(header):
        return build(wandb.history(records), name, source)
    return build(tables.read(records, "CSV"), name, source)
