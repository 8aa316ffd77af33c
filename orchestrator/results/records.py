"""One record per run, from its saved reports: what happened and which evaluation is compared.

Built from the reports in ``history.json`` (:class:`contract.report.Report`), so the same code
describes a finished sweep, a partly failed one, a relaunched one, or one read back from
storage by ``--report``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contract.report import Report
from contract.spec import EvalProtocol
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
    best_checkpoint: str | None  # in the experiment folder it was read from: a path or an s3:// URI
    compared_checkpoint: str | None  # the checkpoint of the compared evaluation (None when none was written there)
    node: str | None = None  # the Ray node its (first) worker ran on at its last report
    # each time it started again from a checkpoint (a lost worker or node, a relaunch): at_step, from_node, to_node
    restarts: list[dict[str, Any]] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list, repr=False)  # one per step (its latest), oldest first
    doc_nll: list[float] | None = field(default=None, repr=False)  # per val document, at compared_step
    doc_tokens: list[int] | None = field(default=None, repr=False)
    # state.json: running, finished or failed (None before it started)
    driver_state: str | None = field(default=None, repr=False)
    search: str | None = None  # the LR search this run is an arm of (Search.name); None outside a search
    lr: float | None = None  # its peak learning rate (optim.lr)
    selection_loss: float | None = None  # val loss on the choosing documents at compared_step: what a search ranks by

    def summary(self) -> dict[str, Any]:
        """What summary.json keeps: every field, and every report but for its arrays and messages (those stay in
        history.json)."""
        fields = {k: v for k, v in vars(self).items() if k not in ("reports", "doc_nll", "doc_tokens", "driver_state")}
        return {**fields, "history": [r.model_dump(mode="json", exclude=Report.HISTORY_ONLY) for r in self.reports]}

    def report_at(self, step: int | None) -> Report | None:
        """Its report at ``step`` (the latest, for a step redone), None without one."""
        return next((r for r in self.reports if r.step == step), None)


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
        reports = folder.history(run.name)
        state = folder.state(run.name)
        error = state.get("error") if state.get("state") == "failed" else None
        stopped = stop_reasons.get(run.name) or prune_reasons.get(run.name)
        pruned = run.name in prune_reasons
        rec = record(run, reports, error, stopped, plan.evaluation, pruned=pruned, folder=folder)
        rec.driver_state = state.get("state")
        out.append(rec)
    return out


def record(
    run: Run,
    reports: list[Report],
    error: str | None,
    stop_reason: str | None,
    protocol: EvalProtocol,
    pruned: bool = False,
    folder: ExperimentFolder | None = None,
) -> RunRecord:
    """One run's record from its reports, its error (if it failed) and its stop reason (if stopped, or ``pruned`` by
    its LR search); its checkpoints are located in ``folder`` (none without one)."""
    restarts = _restarts(reports)
    by_step = {r.step: r for r in reports}  # a step redone after a failure: its latest report counts
    reports = [by_step[step] for step in sorted(by_step)]
    evals = [r for r in reports if r.val_loss is not None]
    last = reports[-1] if reports else None
    steps = last.step if last else 0
    status, reason = _status(run, last, steps, error, stop_reason, pruned)
    best = min(evals, key=lambda r: r.val_loss) if evals else None
    compared = _compared(evals, protocol, status)
    doc_tokens = next((r.doc_tokens for r in reports if r.doc_tokens), None)
    norms = [n for r in reports for n in r.grad_norms if n is not None]
    checkpointed = [r for r in evals if r.checkpoint is not None]
    best_ckpt = min(checkpointed, key=lambda r: r.val_loss) if checkpointed else None
    trained = [r for r in reports if r.step > 0]

    def located(report: Report | None) -> str | None:
        """Where the checkpoint of ``report`` is in the folder read from (None when it wrote none)."""
        if report is None or report.checkpoint is None or folder is None:
            return None
        return folder.checkpoint_uri(run.name, report.checkpoint)

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
        final_val_loss=evals[-1].val_loss if evals else None,
        best_val_loss=best.val_loss if best else None,
        best_step=best.step if best else None,
        compared_step=compared.step if compared else None,
        compared_loss=finite(protocol.mean_nll(compared.doc_nll, doc_tokens, "score"))
        if compared and doc_tokens
        else None,
        final_train_loss=last.train_loss if last else None,
        tokens_per_s=_median([r.tokens_per_s for r in trained if r.tokens_per_s is not None]),
        clip_rate=_clip_rate(norms, run.spec.optim.grad_clip, trained),
        grad_norm_p50=float(np.percentile(norms, 50)) if norms else None,
        grad_norm_p90=float(np.percentile(norms, 90)) if norms else None,
        mfu=_median([r.mfu for r in trained if r.mfu is not None]),
        micro_batch_size=last.micro_batch_size if last else None,
        accumulation_steps=last.accumulation_steps if last else None,
        memory_fallback=next((r.memory_fallback for r in reports if r.memory_fallback), None),
        eval_tokens=last.eval_tokens if last else None,
        best_checkpoint=located(best_ckpt),
        compared_checkpoint=located(compared),
        node=last.node_id if last else None,
        restarts=restarts,
        reports=reports,
        doc_nll=compared.doc_nll if compared else None,
        doc_tokens=doc_tokens,
        search=run.search,
        lr=run.spec.optim.lr,
        selection_loss=compared.val_loss if compared else None,
    )


def _restarts(reports: list[Report]) -> list[dict[str, Any]]:
    """Each time the run's workers started again, from the reports in the order they were made.

    Every start of the workers reports its own ``first_step_at`` with its node and the step it
    resumed from, so a new start after the first is a restart: from which step, and from which
    node to which.
    """
    attempts: list[Report] = []
    for report in reports:
        if report.first_step_at is not None and (not attempts or report.first_step_at != attempts[-1].first_step_at):
            attempts.append(report)
    return [
        {"at_step": now.resumed_from, "from_node": before.node_id, "to_node": now.node_id}
        for before, now in zip(attempts, attempts[1:])
    ]


def _first_loss(evals: list[Report], doc_tokens: list[int] | None, protocol: EvalProtocol) -> float | None:
    """The first evaluation's loss on the scoring documents, so that it reads beside the compared loss."""
    if not evals:
        return None
    if evals[0].doc_nll and doc_tokens:
        return finite(protocol.mean_nll(evals[0].doc_nll, doc_tokens, "score"))
    return evals[0].val_loss


def _clip_rate(norms: list[float], max_norm: float | None, trained: list[Report]) -> float | None:
    """The share of steps whose pre-clip gradient norm exceeded max_norm (from the per-step norms when the reports
    have them)."""
    if max_norm is None:
        return 0.0 if trained else None
    if norms:
        return float(np.mean(np.asarray(norms) > max_norm))
    rates = [r.clip_rate for r in trained if r.clip_rate is not None]
    return float(np.mean(rates)) if rates else None


def _status(
    run: Run, last: Report | None, steps: int, error: str | None, stop_reason: str | None, pruned: bool
) -> tuple[str, str | None]:
    if error is not None:
        return "failed", error.strip().splitlines()[-1][:500] if error.strip() else "failed"
    if last is not None and last.diverged:
        return "diverged", f"diverged at step {last.diverged_at}: non-finite training loss"
    if stop_reason:
        return "pruned" if pruned else "early_stopped", stop_reason
    if steps >= run.spec.run.steps:
        return "completed", None
    return (
        "incomplete",
        f"stopped at step {steps} of {run.spec.run.steps} before finishing; relaunch the same command to resume",
    )


def _compared(evals: list[Report], protocol: EvalProtocol, status: str) -> Report | None:
    """The evaluation a run is compared at: the final one; with a selection share, the best by val loss (which is
    measured on that share only); and an early-stopped run's best, never the regressed evaluation that stopped it
    (without a selection share its best is chosen on the documents that also score it: early stopping stops a run
    at least min_delta past its best, so the choice is rarely close)."""
    evals = [r for r in evals if r.doc_nll]
    if not evals:
        return None
    if protocol.selection_fraction is None and status != "early_stopped":
        return evals[-1]
    return min(evals, key=lambda r: (r.val_loss, r.step))
