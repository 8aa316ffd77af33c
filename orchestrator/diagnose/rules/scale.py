"""``scale``: train and val are not on one scale, so no rule may compare them, and the train curve is not read as
nats per token until it is put back on val's.

Fires when the logged train loss is at least ``SCALE_FAR`` (4) times val at every evaluation, at a steady ratio (the
largest within 2x of the smallest), or within 25% of the run's gradient-accumulation steps where the log shows them
(trainer_state.json's train_batch_size and the summary's samples per step), or when both are sums: every train and val
value above ln of the largest listed vocabulary (12.5 nats), which no mean per token or per example reaches (a CTC
loss summed over a batch of clips, in the thousands). A sum grows with the batch and the lengths it sums over, which
train and eval seldom share, so no ratio of the two is a gap. A real gap is neither: train above val by
dropout, augmentation or a train loss averaged over a window while it falls is tens of percent (a DistilBERT
classifier's 100-step windows: 2-3.4x, unsteady), and memorisation widens the gap instead of holding it.

The causes it names: the Trainer's train loss summed over the accumulation steps instead of averaged, for models
that take no loss kwargs (transformers#35204, fixed by #35207), when the ratio is near the accumulation steps or a
power of two (the usual accumulation settings); otherwise a loss summed rather than averaged (over tokens or
sequences), or regularisation only train sees.
"""

from __future__ import annotations

import math
from statistics import median

from orchestrator.diagnose.rules.base import Context, Finding
from orchestrator.diagnose.rules.curve import Curve
from orchestrator.diagnose.rules.models import LARGEST_VOCABULARY

SCALE_FAR = 4  # ours: 2-3.4x is what window averaging and dropout give a fast-learning classifier
STEADY = 2  # the largest ratio within 2x of the smallest: a scale, not a gap that grows
NEAR = 0.25  # a ratio within 25% of the accumulation steps (or a power of two) is the accumulation bug's
SUMMED = math.log(LARGEST_VOCABULARY)  # above a uniform guess over any listed vocabulary: no mean loss, a sum


def accumulation(curve: Curve) -> int | None:
    """Gradient-accumulation steps x devices, where the log shows them: samples per optimizer step (the end-of-run
    summary's train_samples_per_second / train_steps_per_second) over the per-device batch (trainer_state.json)."""
    log = curve.log
    per_second, steps = log.summary.get("train_samples_per_second"), log.summary.get("train_steps_per_second")
    batch = log.meta.get("train_batch_size")
    if not per_second or not steps or not isinstance(batch, int) or batch <= 0:
        return None
    return max(1, round(per_second / steps / batch))


def scale(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    log = curve.log
    pairs = [(s, log.train_at(s), float(v)) for s, v in zip(curve.steps, curve.val)]
    pairs = [(s, t, v) for s, t, v in pairs if t is not None and t > 0 and v > 0]
    if len(pairs) < 2:
        return []
    if len(pairs) >= 3:
        pairs = pairs[
            1:
        ]  # the first evaluation can sit anywhere (before training, or mid-warmup): the scale is the rest
    ratios = [t / v for _, t, v in pairs]
    typical = median(ratios)
    if all(t > SUMMED and v > SUMMED for _, t, v in pairs):
        return [_summed(pairs, ratios, typical)]
    steady = max(ratios) <= STEADY * min(ratios)
    accum = accumulation(curve)
    by_accum = accum is not None and accum >= 2 and all(abs(r / accum - 1) <= NEAR for r in ratios)
    if not by_accum and not (steady and min(ratios) >= SCALE_FAR):
        return []
    power = 2 ** round(math.log2(typical))
    if by_accum or abs(typical / power - 1) <= NEAR:
        steps = (
            f"{accum} accumulation steps (the log's samples per step over its batch)"
            if by_accum
            else (f"{power}, a usual number of accumulation steps")
        )
        cause = (
            f"the ratio is near {steps}: the Hugging Face Trainer's logged train loss summed over the gradient-"
            "accumulation steps instead of averaged, for models that take no loss kwargs (transformers#35204, fixed "
            f"by #35207): divide the train curve by {accum if by_accum else power} before comparing, or upgrade "
            "transformers"
        )
    else:
        cause = (
            f"the known causes, most common first: the Trainer's train loss summed over about {typical:.0f} gradient-"
            "accumulation steps (transformers#35204, fixed by #35207: check gradient_accumulation_steps, the log "
            "does not show it), a loss summed rather than averaged (over tokens or sequences), or dropout or "
            "augmentation that only train sees"
        )
    shown = ", ".join(f"{t:.3g} vs {v:.3g} at step {s:,}" for s, t, v in pairs[:4])
    return [
        Finding(
            "scale",
            f"Train and val on different scales: train is {typical:.1f}x val at every evaluation"
            + (" after the first" if len(ratios) < len(curve.val) else ""),
            f"train vs val: {shown}{' ...' if len(pairs) > 4 else ''} (ratios {min(ratios):.1f} to "
            f"{max(ratios):.1f}); {cause}. Until then no rule compares train with val (gaps, memorisation, "
            "underfitting), and the train curve is not read as nats per token",
            f"train >= {SCALE_FAR}x val at every evaluation with the largest ratio within {STEADY}x of the smallest, "
            f"or within {NEAR:.0%} of the accumulation steps the log shows",
            "high" if by_accum or "near" in cause.split(":")[0] else "medium",
            data={"ratio": typical},
        )
    ]


def _summed(pairs: list[tuple[int, float, float]], ratios: list[float], typical: float) -> Finding:
    shown = ", ".join(f"{t:,.0f} vs {v:,.0f} at step {s:,}" for s, t, v in pairs[:3])
    return Finding(
        "scale",
        "Train and val are sums, not means: they are not on one scale",
        f"train vs val: {shown}{' ...' if len(pairs) > 3 else ''} (train {min(ratios):.1f} to {max(ratios):.1f}x "
        f"val); every value is above {SUMMED:.1f} nats, more than a uniform guess over any listed vocabulary, so "
        "each is a loss summed over a batch (or over its tokens or frames), not averaged. A sum grows with the batch "
        "size and the lengths it sums over, which train and eval seldom share: compare each curve only with itself, "
        "read the task's own metric where the log has one, and log a mean (reduction='mean') to compare them. Until "
        "then no rule compares train with val (gaps, memorisation, underfitting), and neither is read as nats per "
        "token",
        f"every train and val value above ln {LARGEST_VOCABULARY:,} = {SUMMED:.2f} nats: sums, not means",
        "medium",
        data={"ratio": typical},
    )
