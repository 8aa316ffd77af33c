"""What a run says at each evaluation: one typed record from the worker to the verdict.

The worker (``jobs.train``) builds a :class:`Report` at step 0 and at every evaluation, and
hands it to ``ray.train.report`` as a dict: the only place it is one. Tune passes it to the
driver's callbacks with its own bookkeeping fields around it; :meth:`Report.from_result`
takes the record's fields back out, whatever those are, so a field added here reaches each
run's ``history.json``, the records, ``summary.json`` and the export with no other edit.
A checkpoint keeps the report of its evaluation (``metrics.json``), so a resumed run can
hand the driver the evaluation it restarted from.

Every value is finite or null: the worker says "not finite" with ``diverged`` and null, so
the record is the same in Python, in JSON and after a round trip through storage. The worker
fills every field it measures; null (or a default) is what a record says where nothing was
measured: no training window at step 0, no evaluation after a divergence, no GPU for MFU, and
in records written by other means (a benchmark's, a test's, an earlier version's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from contract.spec import Strict


class Timers(Strict):
    """Cumulative seconds of one attempt of a run (since its workers last started), by phase. The worker adds to
    its own as it goes and reports a copy of them as they are when it builds the report: the report's own
    checkpoint snapshot and its wait in ray.train.report count in the next one."""

    setup: float = Field(
        0.0, ge=0, description="Worker start to its first step: data, model, the checkpoint it resumed, memory probe."
    )
    train: float = Field(0.0, ge=0, description="Training steps (forward, backward, update), to the window's sync.")
    eval: float = Field(0.0, ge=0, description="Scoring the val documents.")
    checkpoint: float = Field(0.0, ge=0, description="Copying checkpoints to host memory (writing and upload run on).")
    report: float = Field(0.0, ge=0, description="Waiting in ray.train.report (a barrier across the run's workers).")


class Report(Strict):
    """One evaluation of one run: its losses, the training window before it, and where and how it ran."""

    # Kept in history.json only; summary.json's history is every other field (per-document and per-step arrays,
    # the worker's messages, and the evaluation a resumed run restarted from, which the history holds as its own row)
    HISTORY_ONLY: ClassVar[frozenset[str]] = frozenset({"doc_nll", "doc_tokens", "grad_norms", "notes", "restored"})

    step: int = Field(ge=0, description="Optimizer steps done at this evaluation; 0 is before any training.")
    total_steps: int = Field(gt=0, description="The run's run.steps.")

    # the evaluation, on the experiment's protocol
    val_loss: float | None = Field(
        None,
        description="Mean NLL per token on the val documents that choose (all of them without a selection share): "
        "what early stopping and checkpoint ranking use. null when the run diverged before it was evaluated.",
    )
    doc_nll: list[float] | None = Field(
        None, description="Summed NLL of each val document's scored tokens: what the paired bootstrap resamples."
    )
    doc_tokens: list[int] | None = Field(None, description="Scored tokens of each val document (the same every time).")
    eval_tokens: int | None = Field(None, ge=0, description="Val tokens every evaluation scores (doc_tokens' sum).")
    checkpoint: str | None = Field(
        None,
        description="The checkpoint written at this evaluation, relative to the run's folder "
        "(train-<trial id>/step_NNNNNN, contract.layout); null when none was.",
    )

    # the training window since the previous report (none at step 0)
    train_loss: float | None = Field(None, description="Mean training loss over the window; null if not finite.")
    lr: float | None = Field(None, description="The learning rate of the window's last step.")
    grad_norm: float | None = Field(None, description="Mean pre-clip gradient norm over the window.")
    clip_rate: float | None = Field(None, ge=0, le=1, description="Share of the window's steps that were clipped.")
    grad_norms: list[float | None] = Field(
        default_factory=list,
        description="The pre-clip gradient norm at each step of the window (null where not finite): the diagnosis "
        "reads their percentiles.",
    )
    tokens_per_s: float | None = Field(None, ge=0, description="Training tokens per second over the window.")
    mfu: float | None = Field(
        None, ge=0, description="Model FLOPs utilisation against the GPU's peak at the run's precision; null on CPU."
    )
    diverged: bool = Field(False, description="A training loss in the window was not finite: the run ends here.")
    diverged_at: int | None = Field(None, description="The first step whose training loss was not finite.")

    # where and how it ran
    micro_batch_size: int | None = Field(None, gt=0, description="Sequences per forward and backward on each worker.")
    accumulation_steps: int | None = Field(None, gt=0, description="Micro-batches per optimizer step on each worker.")
    memory_fallback: str | None = Field(
        None, description="Why the micro-batch is smaller than the spec asked (it did not fit); null when it is not."
    )
    data_longer_than_block: float | None = Field(
        None, ge=0, le=1, description="Share of the data's documents longer than data.block_size."
    )
    node_id: str | None = Field(
        None, description="The Ray node of the run's first worker (null outside a Ray cluster: Train's local mode)."
    )
    resumed_from: int = Field(
        0, ge=0, description="The step this attempt of the run started from (0, or the checkpoint it resumed)."
    )
    first_step_at: float | None = Field(
        None, description="When this attempt's first step began (seconds since the epoch)."
    )
    timers: Timers = Field(default_factory=Timers, description="Where this attempt's time went, cumulative.")
    reported_at: float | None = Field(
        None, description="When the worker reported this evaluation (seconds since the epoch)."
    )
    notes: list[str] = Field(
        default_factory=list,
        description="The worker's messages since its last report (its data, a resume, a smaller micro-batch), "
        "printed by the driver as the run's own lines.",
    )
    restored: Report | None = Field(
        None,
        description="The evaluation of the checkpoint this attempt resumed from, sent once: the driver keeps it even "
        "if it died before it could record it.",
    )

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> Report:
        """The report in a Tune result: its own fields, whatever Tune or Ray Train added around them."""
        return cls.model_validate({name: value for name, value in result.items() if name in cls.model_fields})


# The field Ray Train keeps the best checkpoints by, among the reports that carry one (sweep/trial.py): Ray takes a
# field's name, and this is the one place it is spelled
RANKED_BY = "val_loss"
