"""A Hugging Face Trainer ``trainer_state.json``: its ``log_history``, one entry per ``Trainer.log`` call (train logs,
evaluations, the end-of-run summary, and whatever a script appended: ``predict_*`` metrics, often without a step).
Entries that are not training or evaluation are left by the shared step, which says so; the rest is read."""

from __future__ import annotations

from typing import Any

from orchestrator.diagnose.logs.curve import LogError, Record, Rows


def read(state: dict[str, Any], where: str) -> tuple[Rows, str | None]:
    """(rows, the trainer's best checkpoint) of a parsed trainer_state.json."""
    history = state.get("log_history")
    if not isinstance(history, list):
        raise LogError(
            f"{where}: JSON without a log_history list, so not a trainer_state.json (keys found: "
            f"{', '.join(list(state)[:20]) or 'none'}); expected a trainer_state.json, a JSON list of log records, or "
            "JSONL"
        )
    records = []
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            raise LogError(f"{where}: log_history[{i}] is {type(entry).__name__}, not an entry")
        records.append(Record(f"log_history[{i}]", entry))
    notes = []
    if state.get("best_metric") is not None:
        notes.append(f"The trainer's own best: {state.get('best_metric')!r} at {state.get('best_model_checkpoint')}.")
    best = state.get("best_model_checkpoint")
    meta = {k: v for k, v in state.items() if k != "log_history"}
    return Rows("Hugging Face trainer_state.json", records, notes, meta=meta), best if isinstance(best, str) else None
