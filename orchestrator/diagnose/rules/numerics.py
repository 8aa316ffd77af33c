"""What the log can show at all (``evidence``), and numbers no sound run produces (``numerics``).

- evidence: fewer than three evaluations (none, one, two), an empty history, a summary only, or fewer than three
  points of the curve: the log cannot show the run's health (two points fit any trend), so it is not called healthy
  (``healthy`` null), gets no projection, and is told what to log. A broken run stays broken: a train curve that
  shows one (``data["broken"]``) makes ``healthy`` false even so.
- numerics: NaN or infinite losses or gradient norms; a train loss of exactly 0 at every logged step (no token is
  scored: every label masked); a gradient norm of exactly 0 at every step (nothing reaches the trained weights); a loss
  above a uniform guess over the vocabulary after the run had been below it, or an end-of-run mean above it (the run
  blew up: a model that knows nothing scores ln V).
"""

from __future__ import annotations

import math

from orchestrator.diagnose.logs.curve import MIN_POINTS
from orchestrator.diagnose.rules.base import Context, Finding, noted
from orchestrator.diagnose.rules.curve import Curve
from orchestrator.diagnose.rules.models import LARGEST_VOCABULARY, vocabulary

MIN_EVALS = 3  # evaluations needed to show a trend: two points fit any line


def evaluations(curve: Curve) -> int:
    """Evaluations in the log: of the eval loss, else of its most logged eval metric (ROUGE, accuracy)."""
    return len(curve.val) or max((len(v) for v in curve.log.metrics.values()), default=0)


def evidence(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    log, reading = curve.log, curve.log.reading
    evals, few_points = evaluations(curve), reading is not None and reading.too_few
    if evals >= MIN_EVALS and not few_points:
        return []
    if reading is None and evals:
        return []  # a run of ours: every one evaluates, and its per-document losses are the evidence
    missing = _missing(curve, evals)
    total = log.meta.get("max_steps") or log.meta.get("global_step") or (log.points[-1].step if log.points else None)
    cadence = f"eval_steps={max(1, int(total) // 10):,}, " if isinstance(total, (int, float)) and total else ""
    logging = (
        f"logging_steps={max(1, int(total) // 50):,}, "
        if isinstance(total, (int, float)) and total and few_points
        else ""
    )
    return [
        Finding(
            "evidence",
            f"The log cannot show the run's health: {missing}",
            f"{_counts(curve, evals)}. Without evaluations on held-out data the log cannot show generalisation, and "
            "under three it cannot show a trend, so the run is neither called healthy nor projected from its train "
            f"loss. Log the train loss every few steps and evaluate about ten times a run ({logging}{cadence}"
            "eval_strategy='steps', and load_best_model_at_end with metric_for_best_model), then diagnose again",
            f"fewer than {MIN_EVALS} evaluations or {MIN_POINTS} points of the curve: two points fit any trend",
            "high",
        )
    ]


def _missing(curve: Curve, evals: int) -> str:
    log, reading = curve.log, curve.log.reading
    if reading is not None and reading.records == 0:
        logged, steps = log.meta.get("logging_steps"), log.meta.get("global_step")
        why = (
            f" (the run made {steps:,} steps and logs every {logged:,})"
            if isinstance(logged, int) and isinstance(steps, int) and steps < logged
            else ""
        )
        return f"its history is empty: nothing was logged{why}"
    if not log.points and log.summary:
        return "it holds the end-of-run summary only"
    if reading is not None and reading.too_few and reading.points and not evals:
        return (
            f"{reading.points} point{'s' * (reading.points != 1)} read from {reading.records:,} "
            f"record{'s' * (reading.records != 1)}"
        )
    if evals == 0:
        return "no evaluation"
    return f"{'one evaluation' if evals == 1 else f'{evals} evaluations'} only"


def _counts(curve: Curve, evals: int) -> str:
    log = curve.log
    parts = [
        f"{len(log.trains):,} train loss{'es' * (len(log.trains) != 1)} and {evals} evaluation{'s' * (evals != 1)}"
    ]
    if curve.steps:
        parts.append("at step" + "s" * (len(curve.steps) > 1) + " " + ", ".join(f"{s:,}" for s in curve.steps[:3]))
    if log.reading is not None:
        parts += [f"{len(s.where):,} skipped: {s.reason}{s.detail}" for s in log.reading.skipped]
    return "; ".join(parts)


def numerics(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    return _nonfinite(curve) + _impossible(curve, ctx, found)


def _nonfinite(curve: Curve) -> list[Finding]:
    reading, log = curve.log.reading, curve.log
    if reading is None or not reading.nonfinite:
        return []
    parts, persistent = [], True
    for bad in reading.nonfinite:
        first = bad.steps[0]
        after = [p for p in log.points if p.step > first and getattr(p, bad.field) is not None]
        before = [p for p in log.points if p.step < first and getattr(p, bad.field) is not None]
        kinds = ", ".join(f"{n:,} {kind}" for kind, n in bad.kinds.items())
        label = NUMERIC_LABELS[bad.field]
        text = f"{label} (`{bad.key}`): {len(bad.steps):,} of {bad.logged:,} logged values are non-finite ({kinds}), "
        text += f"steps {first:,} to {bad.steps[-1]:,}"
        text += ", every one from its first on" if not after else f", with {len(after):,} finite ones after it"
        if before:
            text += f"; the last finite one {getattr(before[-1], bad.field):.4g} at step {before[-1].step:,}"
        parts.append(text)
        persistent = persistent and not after
    first_step = min(bad.steps[0] for bad in reading.nonfinite)
    losses = {bad.field for bad in reading.nonfinite} & {"train_loss", "val_loss"}
    later = [p.train_loss for p in log.trains if p.step > first_step]
    if later and all(loss == 0 for loss in later):
        parts.append(
            f"the train loss is logged as exactly 0 after step {first_step:,}: not a perfect fit, but what the "
            "Hugging Face Trainer's logging_nan_inf_filter (on by default) writes when every step's loss is NaN"
        )
    elif "train_loss" not in losses and log.trains:
        parts.append(
            f"the train loss stays finite ({log.trains[-1].train_loss:.4g} at step {log.trains[-1].step:,}); the "
            "Hugging Face Trainer's logging_nan_inf_filter (on by default) logs a window's mean in place of a NaN or "
            "inf loss, so a finite logged loss does not show finite steps"
        )
    return [
        Finding(
            "numerics",
            f"Non-finite values from step {first_step:,}"
            + (": every value after is NaN or inf" if persistent else ": some steps are NaN or inf"),
            "; ".join(parts),
            "any NaN or infinite loss or gradient norm (a blank cell where the log's other rows of its kind have a "
            "value counts: pandas writes NaN so): that step's update is undefined; when every value after the first "
            "is non-finite the weights themselves are likely NaN, and later losses mean nothing. Isolated ones under "
            "fp16 are the loss scaler calibrating (it skips those steps)",
            "high" if persistent else "medium",
            data={"checks": NUMERICS_CHECKS, "broken": persistent},
        )
    ]


def _impossible(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    """Finite numbers that no sound run logs: all-zero losses or gradients, a loss above a uniform guess after the
    run had been below it, a mean over the run above it."""
    log, parts, checks = curve.log, [], []
    trains, norms = log.trains, [p.grad_norm for p in log.points if p.grad_norm is not None]
    if len(trains) >= MIN_POINTS and all(p.train_loss == 0 for p in trains):
        parts.append(
            f"the train loss is exactly 0 at all {len(trains):,} logged steps ({trains[0].step:,} to "
            f"{trains[-1].step:,}): a real loss is never exactly 0; no token is scored (every label is -100, e.g. a "
            "prompt mask that covers the whole padded sequence)"
        )
        checks.append("Print one batch's labels and count the positions that are not -100; fix the masking first.")
    if len(norms) >= MIN_POINTS and all(n == 0 for n in norms):
        parts.append(
            f"the gradient norm is exactly 0 at all {len(norms):,} logged steps: no gradient reaches the trained "
            "weights (nothing to score, or the trainable parameters are not the ones the loss depends on)"
        )
        checks.append("Check that peft's print_trainable_parameters() lists the adapters, and that the loss has grad.")
    lm = noted(found, "task") is None
    vocab = vocabulary(ctx)
    ceiling = vocab.guess if vocab else math.log(LARGEST_VOCABULARY)
    over = (
        f"a uniform guess over {vocab.size:,} tokens (ln = {ceiling:.2f}; {vocab.source})"
        if vocab
        else (f"a uniform guess over any listed vocabulary (ln {LARGEST_VOCABULARY:,} = {ceiling:.2f}, Gemma 3's)")
    )
    mean = log.summary.get("train_loss")
    blew_up = lm and mean is not None and mean > ceiling and not trains
    if blew_up:
        parts.append(f"the end-of-run summary's mean train loss is {mean:.4g}, above {over}: the run blew up")
    below = next((i for i, p in enumerate(trains) if p.train_loss < ceiling), None)
    blown = [p for p in trains[below + 1 :] if p.train_loss > ceiling] if lm and below is not None else []
    if blown:
        worst = max(blown, key=lambda p: p.train_loss)
        parts.append(
            f"the train loss rose above {over} at {len(blown):,} logged step{'s' * (len(blown) != 1)} after being "
            f"below it at step {trains[below].step:,} ({trains[below].train_loss:.3g}): first at step "
            f"{blown[0].step:,} ({blown[0].train_loss:.3g}), worst {worst.train_loss:.3g} at step {worst.step:,}; a "
            "model worse than knowing nothing has diverged"
        )
        checks.append(
            "Lower the LR or raise the effective batch (accumulation), keep gradient clipping, and check mixed "
            "precision (bf16, or fp16 with loss scaling)."
        )
    if not parts:
        return []
    return [
        Finding(
            "numerics",
            "Numbers no sound run logs: " + ("the run blew up" if blown or blew_up else "nothing is being trained"),
            "; ".join(parts),
            "a loss or gradient norm of exactly 0 at every logged step, or a loss above ln(vocabulary) after it had "
            "been below (or as the run's mean): impossible for a run that learns",
            "high",
            data={"checks": checks + NUMERICS_CHECKS[-1:], "broken": True},
        )
    ]


NUMERIC_LABELS = {"train_loss": "train loss", "val_loss": "eval loss", "grad_norm": "grad norm", "lr": "LR"}
NUMERICS_CHECKS = [
    "Find the first bad step: the batch there (an empty or fully masked target gives a 0 or NaN loss), and the LR "
    "then (a warmup that ends too high).",
    "Train in bf16 rather than fp16 where the hardware has it (no loss scaling to overflow), or keep fp16 with "
    "gradient clipping (max_grad_norm 1.0).",
    "Lower the LR, or warm up longer, and resume from the last checkpoint before the first bad step, not after it.",
    "Set logging_nan_inf_filter=False while you look, so the Trainer logs the raw losses.",
]
