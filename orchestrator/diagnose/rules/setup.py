"""The run's setup: ``clipping``, ``schedule``, ``batch``, ``context``.

- clipping: more than 50% of steps clipped, the clip acting as an LR cut (Google tuning playbook: "extremely
  aggressive"; clip near the 90th percentile of norms); none clipped rules loosening out. Only with gradient norms in
  the log.
- schedule: a constant LR with a rise in the first 25% of steps (warmup: tuning playbook), or on a plateau at an LR a
  prior calls in range (decay to a tenth: nanoGPT, GPT-3); never where no prior judges the LR. Never with the LR too
  low: warmup and decay lower the mean LR further.
- batch: the effective batch is smaller than intended (--intended-batch); restored by accumulation in every arm, the
  control included.
- context: more than 20% of documents longer than a block, on a stuck curve whose start and LR are fine (the seed's
  root cause 4; 20% is ours; tiny-gpt2 scores 4.47 with 32 tokens of context and 4.39 with 256 on the bundled corpus:
  context is worth tenths of a nat).
"""

from __future__ import annotations

import numpy as np

from orchestrator.diagnose.rules.base import Context, Finding, fired, logged_schedule, noted
from orchestrator.diagnose.rules.curve import Curve
from orchestrator.diagnose.rules.learning_rate import lr_prior

CLIP_AGGRESSIVE = 0.5
CONTEXT_SHARE = 0.2


def clipping(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    log = curve.log
    max_norm = ctx.known("optim.grad_clip")
    norms = np.asarray(log.grad_norms, dtype=float)
    if max_norm is None or (len(norms) == 0 and log.clip_rate is None):
        return []  # no gradient norms, no judgement
    rate = log.clip_rate if log.clip_rate is not None else float(np.mean(norms > max_norm))
    p50, p90 = (float(np.percentile(norms, 50)), float(np.percentile(norms, 90))) if len(norms) else (None, None)
    spread = f"; pre-clip norms p50 {p50:.3g}, p90 {p90:.3g}" if p90 is not None else ""
    if rate > CLIP_AGGRESSIVE:
        return [
            Finding(
                "clipping",
                "Gradient clipping engages on most steps",
                f"{rate:.0%} of steps clipped at max_norm {max_norm:g}{spread}: the clip is acting as a learning-rate "
                "cut",
                f"clip rate > {CLIP_AGGRESSIVE:.0%} (tuning playbook: 'extremely aggressive')",
                "high",
                data={"p90": p90, "rate": rate, "explains": ("plateau",)},
            )
        ]
    if rate == 0:
        return [
            Finding(
                "clipping",
                "Gradient clipping never engages",
                f"0% of steps clipped at max_norm {max_norm:g}{spread}: loosening the clip cannot change anything",
                "clip rate = 0%",
                "high",
                problem=False,
                data={"p90": p90, "rate": rate},
            )
        ]
    return []


def schedule(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    kind, peak, described = logged_schedule(curve.log)
    if kind is None:
        kind = ctx.known("optim.schedule.kind")
    lr_finding = fired(found, "learning_rate")
    if kind != "constant" or (lr_finding and lr_finding.data["direction"] == "low"):
        return []  # warmup and decay both lower the mean LR: never for a run starved of it
    lr = peak or ctx.known("optim.lr")
    total = curve.log.points[-1].step if curve.log.points else 0
    early = [curve.steps[peak_i] for i, peak_i, _ in curve.spikes() if total and curve.steps[peak_i] <= 0.25 * total]
    if early:
        return [
            Finding(
                "schedule",
                "Constant learning rate without warmup, unstable early",
                f"lr {lr:.2g} from the first step; val jumped at step {early[0]:,}, in the first quarter of the run",
                "a constant schedule with a rise beyond noise in the first 25% of steps (tuning playbook: warmup for "
                "early instability)",
                "medium",
                data={"fix": "warmup"},
            )
        ]
    stuck = noted(found, "plateau")
    method = ctx.known("method")
    prior = lr_prior(ctx, curve.log) if method in ("lora", "full") else None
    judged = prior is not None and lr is not None and prior.contains(lr, method)
    if stuck and not lr_finding and not fired(found, "overfit") and judged:
        return [
            Finding(
                "schedule",
                "Constant learning rate on a plateau",
                f"lr {lr:.2g} from the first step to the last, inside {prior.describe(method)}, and val has stopped "
                "falling (the plateau above): a decay lets the last steps settle",
                "a constant schedule on a plateau at an LR in range (nanoGPT and GPT-3 decay to a tenth of the peak)",
                "low",
                data={"fix": "decay"},
            )
        ]
    return []


def batch(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    actual = ctx.known("data.batch_size")
    if ctx.intended_batch is None or actual is None or actual >= ctx.intended_batch:
        return []
    return [
        Finding(
            "batch",
            "Effective batch smaller than intended",
            f"batch {actual} instead of {ctx.intended_batch}: each step sees {actual / ctx.intended_batch:.0%} of the "
            "tokens meant; restored in every arm by accumulation, so all arms compare at the intended tokens per step",
            "effective batch < --intended-batch",
            "high",
            data={"intended": ctx.intended_batch, "actual": actual},
        )
    ]


def context_length(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    share = curve.log.longer_than_block
    if share is None and ctx.corpus is not None:
        share = ctx.corpus.longer_than_block
    stuck = noted(found, "plateau") or fired(found, "underfit")
    if share is None or share <= CONTEXT_SHARE or not stuck:
        return []
    if fired(found, "baseline") or fired(found, "learning_rate"):
        return []  # context is worth tenths of a nat; a broken start or LR explains more, and comes first
    return [
        Finding(
            "context",
            "Block size cuts many documents",
            f"{share:.0%} of documents are longer than block_size {ctx.known('data.block_size')}, on a stuck curve",
            f"more than {CONTEXT_SHARE:.0%} of documents longer than a block, with a plateau or underfitting",
            "low",
            data={"share": share},
        )
    ]
