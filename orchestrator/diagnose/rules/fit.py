"""How the model fits its data: ``overfit`` (val rising while train falls; memorisation), ``underfit``, and
``lora_capacity`` (only on positive evidence).

- overfit: val has risen beyond noise since its lowest logged value and the train loss kept falling (its mean over a
  tenth of the run, by more than 1%): the best checkpoint is the raw lowest val, or the run's own
  metric_for_best_model's best where the log shows it. Without an eval loss, memorisation read from the train loss
  alone (a language model's): after more than ``MANY_EPOCHS`` (3) epochs (fine-tuning recipes run 1 to 3: Stanford
  Alpaca 3, Unsloth's guide "1-3; more is generally not optimal"), train collapsing under ``COLLAPSE`` (0.1 nats/token:
  the training tokens get 90% probability, e^-0.1) and under a tenth of where it began, or dropping at the epoch
  boundaries (at 3/4 or more of them, 2 at least: the mean over the last tenth of an epoch before the boundary against
  the first tenth after, by more than 2%, three standard errors of that mean, and twice the drift within the epoch
  before): the model is fitting examples it has seen. With val still at its best, a gap that grows is memorisation only
  where the run has more trainable parameters than training tokens (our sweeps know both): a gap alone is not
  overfitting while val still improves.
- underfit: train within 10% of val (SageMaker Debugger Overfit's ratio_threshold) after 3+ epochs (a model that
  learns memorises a corpus seen that often), or, with the data size unknown, both flat.
- lora_capacity: LoRA whose train loss stopped falling (< 1% over the last half) while staying at or above what the
  pretrained model scores on ordinary text (a reference), at an LR the prior for its size calls in range, from a sound
  start, with no memorisation and fewer adapter parameters than training tokens where both are known (LoRA Without
  Regret: low ranks fall behind full fine-tuning once the data outgrows them). Every check is made, or it never fires.
"""

from __future__ import annotations

import numpy as np

from orchestrator.diagnose.rules.base import (
    Context,
    Finding,
    decline,
    epochs,
    epochs_at,
    fired,
    fmt_lr,
    noted,
    pct,
    two,
    window_mean,
)
from orchestrator.diagnose.rules.curve import Curve
from orchestrator.diagnose.rules.learning_rate import lr_prior, lr_that_ran
from orchestrator.diagnose.rules.models import reference, trainable
from orchestrator.diagnose.rules.start import BASELINE_FAR

OVERFIT_RATIO = 0.1  # SageMaker Debugger Overfit, ratio_threshold
UNDERFIT_EPOCHS = 3
TRAIN_FALL = 0.01  # train "still falling": down by more than 1% since val's best
PLATEAU_REL = 0.01  # a fitted decline under 1% of the loss is flat (ours)
MANY_EPOCHS = 3
COLLAPSE = 0.1
BOUNDARY_WINDOW = 0.1  # a tenth of an epoch either side of a boundary
BOUNDARY_DROP = 0.02
BOUNDARY_SHARE = 0.75


def overfit(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    if len(curve.val) == 0:
        return _memorised(curve, ctx, found)
    if len(curve.val) < 2:
        return []
    log, b = curve.log, curve.best
    explains = {"explains": ("regression",)}
    if b < len(curve.val) - 1:
        risen, how, sure = curve.risen(b)
        best_step, last_step = curve.steps[b], curve.steps[-1]
        tb, tl = window_mean(log, best_step), window_mean(log, last_step)
        if risen and tb is not None and tl is not None and tl < tb * (1 - TRAIN_FALL):
            e_best, _ = epochs_at(log, ctx, best_step)
            e_last, _ = epochs_at(log, ctx, last_step)
            seen = f", epochs {e_best:.1f} → {e_last:.1f}" if e_best is not None and e_last is not None else ""
            chosen = curve.best_by_metric()
            keep, metric = best_step, ""
            if chosen is not None and chosen.metric != "eval_loss":
                keep = chosen.step
                series = log.metrics[chosen.metric]
                metric = (
                    f"; by the run's own selection metric `{chosen.metric}` ({chosen.how.split(': ')[0]}) the best "
                    f"is {chosen.value:.4g} at step {chosen.step:,}, and it ends at {series[-1][1]:.4g}"
                )
            lowest, final = two(curve.val[b], curve.val[-1])
            checkpoint = log.checkpoints.get(keep) or (
                log.best_checkpoint if log.best_checkpoint and str(keep) in log.best_checkpoint else None
            )
            return [
                Finding(
                    "overfit",
                    f"Overfitting: val lowest at step {best_step:,}, train still falling",
                    f"val {lowest} at step {best_step:,} (its lowest logged value) → {final} at step {last_step:,} "
                    f"({pct(curve.val[b], curve.val[-1])}) while train fell {tb:.3g} → {tl:.3g} "
                    f"(means over a tenth of the run){seen}{metric}",
                    f"val risen since its lowest ({how}) and train down by more than {TRAIN_FALL:.0%}",
                    sure,
                    data={"best_step": keep, "checkpoint": checkpoint, "turned": True, **explains},
                )
            ]
    return _memorising(curve, ctx, found)


def _memorising(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    """Val still at its best, but train pulling away from it with more trainable parameters than training tokens:
    memorisation under way (our sweeps, which know both numbers)."""
    log = curve.log
    n, tokens = trainable(ctx), ctx.corpus.train_tokens if ctx.corpus else None
    if n is None or tokens is None or n <= tokens or noted(found, "scale"):
        return []
    paired = [(s, v, log.train_at(s)) for s, v in zip(curve.steps, curve.val) if log.train_at(s) is not None]
    if len(paired) < 2:
        return []
    (s0, v0, t0), (s1, v1, t1) = paired[0], paired[-1]
    ratio, grew = (v1 - t1) / t1 if t1 > 0 else 0.0, (v1 - t1) - (v0 - t0)
    if ratio <= OVERFIT_RATIO or grew <= 0:
        return []
    seen, _ = epochs_at(log, ctx, s1)
    why = [f"{seen:.1f} epochs of a {tokens:,}-token corpus"] if seen is not None else []
    why.append(f"{n:,} trainable parameters, {n / tokens:,.0f} per training token")
    return [
        Finding(
            "overfit",
            "Memorisation under way: train pulling away from val",
            f"at step {s1:,}: train {t1:.2f}, val {v1:.2f}, a gap of {v1 - t1:.2f} nats ({ratio:.0%} of train), up "
            f"from {v0 - t0:.2f} at step {s0:,}, after {', with '.join(why)}; val is still at its lowest, but the "
            "gain can reverse with more steps",
            f"(val - train) / train > {OVERFIT_RATIO} (SageMaker Debugger Overfit) and growing, with more trainable "
            "parameters than training tokens",
            "medium",
            data={"best_step": curve.steps[curve.best], "checkpoint": None, "turned": False},
        )
    ]


def _memorised(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    """No eval loss: memorisation read from a language model's train loss, after many epochs."""
    log = curve.log
    trains = log.trains
    if noted(found, "task") or noted(found, "scale") or len(trains) < 10:
        return []
    if any(f.rule == "numerics" and f.data.get("broken") for f in found):
        return []  # a run that blew up swings; that is not fitting
    seen, how = epochs_at(log, ctx, trains[-1].step)
    if seen is None or seen <= MANY_EPOCHS:
        return []
    k = max(2, len(trains) // 10)
    start, end = float(np.mean([p.train_loss for p in trains[:k]])), float(np.mean([p.train_loss for p in trains[-k:]]))
    signs = []
    if end < COLLAPSE and end < 0.1 * start:
        signs.append(
            f"train collapsed from {start:.3g} to {end:.3g} nats/token (means of the first and last tenth of the log): "
            f"the training tokens get {np.exp(-end):.0%} probability on average"
        )
    drops = _boundary_drops(log)
    if drops is not None:
        signs.append(drops)
    if not signs:
        return []
    evals = len(log.metrics) and max(len(v) for v in log.metrics.values())
    check = (
        "the log has no eval loss to show when generalisation stopped"
        if not evals
        else "its evaluations have no eval loss; watch whether its metric stopped improving"
    )
    return [
        Finding(
            "overfit",
            f"Memorisation: after {epochs(seen)} epochs the model is fitting examples it has seen",
            f"{'; '.join(signs)}; after {epochs(seen)} epochs ({how}), more than the 1 to 3 of fine-tuning recipes. "
            f"Epochs past the first few teach the training answers, not the task; {check}",
            f"more than {MANY_EPOCHS} epochs with train under {COLLAPSE} nats/token and a tenth of its start, or "
            f"dropping at {BOUNDARY_SHARE:.0%}+ of epoch boundaries",
            "medium",
            data={"best_step": None, "checkpoint": None, "turned": False, "train_only": True},
        )
    ]


def _boundary_drops(log) -> str | None:
    """The drops at epoch boundaries, in words, when the train loss steps down at most of them; None otherwise."""
    points = [(p.epoch, p.train_loss) for p in log.trains if p.epoch is not None]
    if not points:
        return None
    last, w = points[-1][0], BOUNDARY_WINDOW
    checked, dropped = 0, []
    for k in range(1, int(last + 1e-9) + 1):
        if k > last - w / 2:
            break
        before = [v for e, v in points if k - w <= e < k]
        after = [v for e, v in points if k <= e < k + w]
        earlier = [v for e, v in points if k - 2 * w <= e < k - w]
        if min(len(before), len(after), len(earlier)) < 2:
            continue
        checked += 1
        mb, ma = float(np.mean(before)), float(np.mean(after))
        se = float(np.std(before, ddof=1)) / np.sqrt(len(before))
        drift = abs(float(np.mean(earlier)) - mb)
        drop = mb - ma
        if drop > BOUNDARY_DROP * mb and drop > 3 * se and drop > 2 * drift:
            dropped.append(f"{mb:.3g} → {ma:.3g} at epoch {k}")
    if len(dropped) < 2 or len(dropped) < BOUNDARY_SHARE * checked:
        return None
    return (
        f"train drops at {len(dropped)} of {checked} epoch boundaries ({'; '.join(dropped)}), each beyond the noise "
        "and the drift within the epoch before: the model scores examples it has seen better each time it sees them"
    )


def underfit(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    log = curve.log
    last = next((p for p in reversed(log.evals) if log.train_at(p.step) is not None), None)
    if last is None or fired(found, "overfit") or fired(found, "regression") or noted(found, "scale"):
        return []  # a rising val is not a model that fails to fit; train on another scale cannot be compared
    train = log.train_at(last.step)
    ratio = (last.val_loss - train) / train if train > 0 else 0.0
    val_flat = decline(curve.steps, list(curve.val))
    if abs(ratio) > OVERFIT_RATIO or val_flat is None or val_flat[0] >= PLATEAU_REL * last.val_loss:
        return []  # apart, or val still improving: a model that still learns is not underfitting yet
    seen, how = epochs_at(log, ctx, last.step)
    if seen is not None and seen >= UNDERFIT_EPOCHS:
        return [
            Finding(
                "underfit",
                "Underfitting: not even the training data is fit",
                f"after about {epochs(seen)} epochs ({how}), train {train:.2f} is within {abs(ratio):.0%} of val "
                f"{last.val_loss:.2f} at step {last.step:,}, and val has stopped falling: a model that learns "
                "memorises a corpus seen this often",
                f"|val - train| / train <= {OVERFIT_RATIO} after {UNDERFIT_EPOCHS}+ epochs, val flat over the last "
                f"half (< {PLATEAU_REL:.0%})",
                "high" if seen >= 10 else "medium",
            )
        ]
    flat = decline([p.step for p in log.trains], [p.train_loss for p in log.trains])
    if seen is None and flat is not None and flat[0] < PLATEAU_REL * train:
        return [
            Finding(
                "underfit",
                "Underfitting: train and val both flat and close",
                f"at step {last.step:,}: train {train:.2f}, val {last.val_loss:.2f} ({ratio:+.0%}), and train fell "
                f"only {flat[0]:.3f} over the last half of the run",
                f"|val - train| / train <= {OVERFIT_RATIO} with train and val flat (data size unknown: pass the data "
                "or --train-tokens to count epochs)",
                "low",
            )
        ]
    return []


def lora_capacity(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    log, model = curve.log, ctx.model
    if ctx.known("method") != "lora" or model is None:
        return []
    if any(noted(found, r) for r in ("baseline", "learning_rate", "overfit", "scale", "numerics", "evidence")):
        return []
    prior, (lr, _) = lr_prior(ctx, log), lr_that_ran(log, ctx)
    ref = reference(model)
    if prior is None or lr is None or not prior.contains(lr, "lora") or ref is None:
        return []  # the LR not judged in range, or no reference to call the train loss high against: no evidence
    trains = log.trains
    flat = decline([p.step for p in trains], [p.train_loss for p in trains])
    level = trains[-1].train_loss if trains else None
    if flat is None or level is None or flat[0] >= PLATEAU_REL * level or level < ref.loss:
        return []
    n, tokens = trainable(ctx), ctx.corpus.train_tokens if ctx.corpus else None
    if n is not None and tokens is not None and n >= tokens:
        return []  # an adapter with more parameters than the data has tokens is not short of capacity
    rank = ctx.known("lora.rank")
    sizes = f"; {n:,} adapter parameters for {tokens:,} training tokens" if n and tokens else ""
    return [
        Finding(
            "lora_capacity",
            "Train loss flat and high at a learning rate in range: LoRA capacity may be the limit",
            f"train fell only {flat[0]:.3f} over the last half of the run at LoRA rank {rank}, and sits at "
            f"{level:.2f}, above the {ref.loss:.2f} pretrained {model} scores on {ref.on} ({ref.source}); lr "
            f"{fmt_lr(lr)} is inside {prior.describe('lora')}; the first loss is within {BASELINE_FAR}x of the "
            f"reference (rule baseline silent) and nothing memorises (rule overfit silent){sizes}. A larger rank at "
            "the same LR (or full fine-tuning) tells",
            f"train's fitted decline < {PLATEAU_REL:.0%} of the loss and at or above the model's reference, with the "
            "LR in the prior's range, a sound start and no memorisation (LoRA Without Regret: low ranks fall behind "
            "full fine-tuning once the data outgrows them)",
            "low",
            data={"explains": ("plateau", "underfit")},
        )
    ]
