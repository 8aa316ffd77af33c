"""One record per run, from its saved evaluation history: what happened and which evaluation is compared.

Built from plain rows (``history.json``), so the same code describes a finished
sweep, a partly failed one, a relaunched one, or one read back from storage by
``--report``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contract.spec import EvalProtocol, StorageSpec
from contract.storage import is_s3
from orchestrator.folder import ExperimentFolder
from orchestrator.spec import Plan, Run

OK_STATUSES = ("completed", "early_stopped")  # the statuses a verdict may take (and an LR search may choose)


@dataclass
class RunRecord:
    run: str
    option: str
    variant: str  # the run without its seed: seeds of one variant are pooled
    seed: int
    overrides: dict[str, Any]
    status: str  # completed, early_stopped, pruned (an LR search's arm), diverged, failed, incomplete
    reason: str | None
    steps: int
    total_steps: int
    first_val_loss: float | None  # at the first evaluation (step 0: before any training)
    final_val_loss: float | None
    best_val_loss: float | None
    best_step: int | None
    compared_step: int | None  # the evaluation the verdict compares (see EvalProtocol.selection_fraction)
    compared_loss: float | None  # token-weighted mean NLL on the scoring documents at compared_step
    final_train_loss: float | None
    tokens_per_s: float | None
    clip_rate: float | None  # share of steps whose gradient norm was clipped
    grad_norm_p50: float | None  # pre-clip gradient norms over the whole run
    grad_norm_p90: float | None
    mfu: float | None  # median model FLOPs utilisation (GPU only)
    micro_batch_size: int | None
    accumulation_steps: int | None
    memory_fallback: str | None
    eval_tokens: int | None
    best_checkpoint: str | None
    compared_checkpoint: str | None  # the checkpoint of the compared evaluation (None when none was written there)
    node: str | None = None  # the Ray node its (first) worker ran on at its last report
    # each time it started again from a checkpoint (a lost worker or node, a relaunch): at_step, from_node, to_node
    restarts: list[dict[str, Any]] = field(default_factory=list)
    # step, train_loss, val_loss, lr, clip_rate, grad_norm, reported_at, node_id
    history: list[dict[str, Any]] = field(default_factory=list)
    doc_nll: list[float] | None = field(default=None, repr=False)  # per val document, at compared_step
    doc_tokens: list[int] | None = field(default=None, repr=False)
    # history.json, one row per step (its latest report)
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    # state.json: running, finished or failed (None before it started)
    driver_state: str | None = field(default=None, repr=False)
    search: str | None = None  # the LR search this run is an arm of (Search.name); None outside a search
    lr: float | None = None  # its peak learning rate (optim.lr)
    selection_loss: float | None = None  # val loss on the choosing documents at compared_step: what a search ranks by

    def summary(self) -> dict[str, Any]:
        """What summary.json keeps (the per-document arrays and the raw rows stay in history.json)."""
        return {k: v for k, v in vars(self).items() if k not in ("doc_nll", "doc_tokens", "rows", "driver_state")}


def val_documents(records: list[RunRecord]) -> int:
    """How many val documents the runs were scored on (every run on the same ones); 0 before any run reported."""
    return next((len(r.doc_tokens) for r in records if r.doc_tokens), 0)


def finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def collect(folder: ExperimentFolder, plan: Plan) -> list[RunRecord]:
    """Every run's record, read from the experiment's folder: what the report is built from, during a sweep,
    after it, or from another machine."""
    stop_reasons = folder.early_stopping()["reasons"]
    prune_reasons = folder.lr_search()["pruned"] if plan.searches else {}
    out = []
    for run in plan.runs:
        rows = folder.history(run.name)
        state = folder.state(run.name)
        error = state.get("error") if state.get("state") == "failed" else None
        stopped = stop_reasons.get(run.name) or prune_reasons.get(run.name)
        rec = record(run, rows, error, stopped, folder.storage, plan.evaluation, pruned=run.name in prune_reasons)
        rec.driver_state = state.get("state")
        out.append(rec)
    return out


def record(
    run: Run,
    rows: list[dict[str, Any]],
    error: str | None,
    stop_reason: str | None,
    storage: StorageSpec,
    protocol: EvalProtocol,
    pruned: bool = False,
) -> RunRecord:
    """One run's record from its saved history rows, its error (if it failed) and its stop reason (if stopped, or
    ``pruned`` by its LR search)."""
    restarts = _restarts(rows)
    by_step = {int(r["step"]): r for r in rows}  # a step redone after a failure: its latest report counts
    rows = [by_step[step] for step in sorted(by_step)]
    evals = [r for r in rows if finite(r.get("val_loss")) is not None]
    last = rows[-1] if rows else {}
    steps = int(last.get("step", 0))
    status, reason = _status(run, last, steps, error, stop_reason, pruned)
    best = min(evals, key=lambda r: r["val_loss"]) if evals else None
    compared = _compared(evals, protocol, status)
    doc_tokens = next((r["doc_tokens"] for r in rows if r.get("doc_tokens")), None)
    norms = [n for r in rows for n in (r.get("grad_norms") or []) if finite(n) is not None]
    checkpointed = [r for r in evals if isinstance(r.get("checkpoint_path"), str)]
    best_ckpt = _checkpoint(min(checkpointed, key=lambda r: r["val_loss"]), storage) if checkpointed else None
    trained = [r for r in rows if int(r["step"]) > 0]
    return RunRecord(
        run=run.name,
        option=run.option,
        variant=run.variant,
        seed=run.spec.run.seed,
        overrides=run.overrides,
        status=status,
        reason=reason,
        steps=steps,
        total_steps=run.spec.run.steps,
        first_val_loss=_first_loss(evals, doc_tokens, protocol),
        final_val_loss=finite(evals[-1]["val_loss"]) if evals else None,
        best_val_loss=finite(best["val_loss"]) if best else None,
        best_step=int(best["step"]) if best else None,
        compared_step=int(compared["step"]) if compared else None,
        compared_loss=finite(protocol.mean_nll(compared["doc_nll"], doc_tokens, "score"))
        if compared and doc_tokens
        else None,
        final_train_loss=finite(last.get("train_loss")),
        tokens_per_s=_median([r["tokens_per_s"] for r in trained if finite(r.get("tokens_per_s"))]),
        clip_rate=_clip_rate(norms, run.spec.optim.grad_clip, trained),
        grad_norm_p50=float(np.percentile(norms, 50)) if norms else None,
        grad_norm_p90=float(np.percentile(norms, 90)) if norms else None,
        mfu=_median([r["mfu"] for r in trained if finite(r.get("mfu")) is not None]),
        micro_batch_size=last.get("micro_batch_size"),
        accumulation_steps=last.get("accumulation_steps"),
        memory_fallback=next((r["memory_fallback"] for r in rows if r.get("memory_fallback")), None),
        eval_tokens=last.get("eval_tokens"),
        best_checkpoint=best_ckpt,
        compared_checkpoint=_checkpoint(compared, storage) if compared else None,
        node=last.get("node_id"),
        restarts=restarts,
        history=[
            {
                "step": int(r["step"]),
                **{
                    k: finite(r.get(k))
                    for k in ("train_loss", "val_loss", "lr", "clip_rate", "grad_norm", "reported_at")
                },
                "node_id": r.get("node_id"),
            }
            for r in rows
        ],
        doc_nll=compared["doc_nll"] if compared else None,
        doc_tokens=doc_tokens,
        rows=rows,
        search=run.search,
        lr=run.spec.optim.lr,
        selection_loss=finite(compared["val_loss"]) if compared else None,
    )


def _restarts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each time the run's workers started again, from the rows in the order they were reported.

    Every start of the workers reports its own ``first_step_at`` with its node and the step it
    resumed from, so a new start after the first is a restart: from which step, and from which
    node to which.
    """
    attempts = []
    for row in rows:
        if row.get("first_step_at") is not None and (
            not attempts or row["first_step_at"] != attempts[-1]["first_step_at"]
        ):
            attempts.append(row)
    return [
        {
            "at_step": int(now.get("resumed_from") or 0),
            "from_node": before.get("node_id"),
            "to_node": now.get("node_id"),
        }
        for before, now in zip(attempts, attempts[1:])
    ]


def _checkpoint(row: dict[str, Any], storage: StorageSpec) -> str | None:
    """The checkpoint written at this evaluation, as a path or URI (Ray records S3 ones without their scheme)."""
    path = row.get("checkpoint_path")
    if not isinstance(path, str):
        return None
    return f"s3://{path}" if is_s3(storage.path) else path


def _first_loss(evals: list[dict[str, Any]], doc_tokens: list[int] | None, protocol: EvalProtocol) -> float | None:
    """The first evaluation's loss on the scoring documents, so that it reads beside the compared loss."""
    if not evals:
        return None
    if evals[0].get("doc_nll") and doc_tokens:
        return finite(protocol.mean_nll(evals[0]["doc_nll"], doc_tokens, "score"))
    return finite(evals[0]["val_loss"])


def _clip_rate(norms: list[float], max_norm: float | None, trained: list[dict[str, Any]]) -> float | None:
    """The share of steps whose pre-clip gradient norm exceeded max_norm (from the per-step norms when the rows have
    them)."""
    if max_norm is None:
        return 0.0 if trained else None
    if norms:
        return float(np.mean(np.asarray(norms) > max_norm))
    rates = [r["clip_rate"] for r in trained if finite(r.get("clip_rate")) is not None]
    return float(np.mean(rates)) if rates else None


def _status(
    run: Run, last: dict[str, Any], steps: int, error: str | None, stop_reason: str | None, pruned: bool
) -> tuple[str, str | None]:
    if error is not None:
        return "failed", error.strip().splitlines()[-1][:500] if error.strip() else "failed"
    if last.get("diverged"):
        return "diverged", f"diverged at step {int(last['diverged_at'])}: non-finite training loss"
    if stop_reason:
        return "pruned" if pruned else "early_stopped", stop_reason
    if steps >= run.spec.run.steps:
        return "completed", None
    return (
        "incomplete",
        f"stopped at step {steps} of {run.spec.run.steps} before finishing; relaunch the same command to resume",
    )


def _compared(evals: list[dict[str, Any]], protocol: EvalProtocol, status: str) -> dict[str, Any] | None:
    """The evaluation a run is compared at: the final one; with a selection share, the best by val loss (which is
    measured on that share only); and an early-stopped run's best, never the regressed evaluation that stopped it
    (without a selection share its best is chosen on the documents that also score it: early stopping stops a run
    at least min_delta past its best, so the choice is rarely close)."""
    evals = [r for r in evals if r.get("doc_nll")]
    if not evals:
        return None
    if protocol.selection_fraction is None and status != "early_stopped":
        return evals[-1]
    return min(evals, key=lambda r: (r["val_loss"], r["step"]))
