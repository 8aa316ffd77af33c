"""The shape of val at the end: ``regression`` (a rise that stays), ``noise`` (a single spike that recovered, named as
such), ``plateau`` (converged: flat over the last half).

- Eval noise is measured from 7+ evaluations (:func:`.curve.eval_noise`: pseudo-residuals against the line through
  each evaluation's neighbours, so a smooth decay that flattens is trend, not noise). A rise counts beyond 3 sd of the
  difference of two evaluations, and never under 0.1% of the loss; with fewer evaluations, 1% of the loss.
- regression: the last two evaluations beyond that threshold above val's lowest logged value, or the last one by a
  paired bootstrap over val documents (p < 0.05), while train did not fall (a rise while train falls is overfitting).
  SageMaker Debugger LossNotDecreasing, with the noise measured.
- noise: a rise above the lowest so far beyond the threshold that came back (a spike: one finding, separate from any
  plateau), or is the last evaluation (the next one tells a spike from a trend). An observation, not a problem.
- plateau: a line fitted to the last half of the evaluations (a spike's evaluations left out) declines by less than
  1% of the loss (ours), by two standard errors where noise is measured (the larger of the curve's noise and the
  line's own residuals). Never on a rising val. An observation: a converged run is not a sick one; what it converged
  to is the other rules' question.
"""

from __future__ import annotations

import math

import numpy as np

from orchestrator.diagnose.rules.base import (
    Context,
    Finding,
    fired,
    fit,
    half,
    pct,
    spiked,
    two,
    val_size,
    window_mean,
)
from orchestrator.diagnose.rules.curve import Curve

TRAIN_FALL = 0.01  # train "fell": down by more than 1% (a rise while it falls is overfitting's)
PLATEAU_REL = 0.01
SURE = 2  # standard errors the decline must clear the threshold by
SMALL_VAL_DOCUMENTS = 100  # below this, a few documents can move the val mean by tenths of a nat


def regression(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    if len(curve.val) < 2 or fired(found, "overfit") or curve.best == len(curve.val) - 1:
        return []
    b, log = curve.best, curve.log
    risen, how, sure = curve.risen(b)
    if not risen:
        return []
    first, last = curve.steps[b], curve.steps[-1]
    tb, tl = window_mean(log, first), window_mean(log, last)
    train = f"; train {tb:.3g} → {tl:.3g} (means over a tenth of the run)" if tb is not None and tl is not None else ""
    evals = len(curve.val) - 1 - b
    lowest, final = two(curve.val[b], curve.val[-1])
    return [
        Finding(
            "regression",
            f"Loss increased at step {curve.steps[b + 1]:,}",
            f"val {lowest} → {final} from step {first:,} (its lowest) to {last:,} "
            f"({pct(curve.val[b], curve.val[-1])}, {evals} evaluation{'s' if evals > 1 else ''}), not back since"
            + train,
            f"val above its lowest beyond noise ({how}) while train did not fall",
            sure,
        )
    ]


def noise(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    trend = fired(found, "regression") or fired(found, "overfit")
    # a rise still up at the end is the trend those rules judged; one at the last evaluation alone is not yet either
    episodes = [e for e in curve.spikes() if e[2] is not None or (not trend and e[0] == len(curve.val) - 1)]
    if not episodes:
        return []
    size = val_size(curve.log, ctx)
    small = size is not None and size[0] < SMALL_VAL_DOCUMENTS
    on = f" on {'only ' if small else ''}{size[0]:,} val documents ({size[1]:,} tokens)" if size else ""
    parts = []
    for i, peak, back in episodes:
        rose = (
            f"val rose {curve.val[peak] - curve.floor(i):+.3g} to {curve.val[peak]:.4g} at step {curve.steps[peak]:,}"
        )
        parts.append(
            f"{rose} and was back to {curve.val[back]:.4g} by step {curve.steps[back]:,}: a spike that recovered"
            if back is not None
            else f"{rose}, the last evaluation: the next one tells a spike from a trend"
        )
    tell = (
        "a larger val set (a few hundred documents), 2+ seeds, or per-document losses for a paired test (plateau-sweep "
        "records them) would tell"
    )
    _, how = curve.threshold(float(np.min(curve.val)))
    recovered = all(back is not None for _, _, back in episodes)
    what = "spike that recovered" if recovered else "rise at the last evaluation"
    return [
        Finding(
            "noise",
            f"A single {what}: possibly noise" if len(parts) == 1 else f"{len(parts)} single rises: possibly noise",
            "; ".join(parts) + f"{on}. One evaluation cannot tell noise from a transient instability; " + tell,
            f"a rise above the lowest so far {how}, on one evaluation or undone by a later one",
            "low",
            problem=False,
            data={"spikes": len(parts), "steps": [curve.steps[p] for _, p, _ in episodes]},
        )
    ]


def plateau(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    if fired(found, "overfit") or fired(found, "regression") or len(curve.val) < 3:
        return []
    spikes = {j for i, _, back in curve.spikes() if back is not None for j in range(i, back)}
    if len(curve.val) - len(spikes) < 3:
        spikes = set()  # too few evaluations to leave a spike out: the line goes through it
    steps = [s for k, s in enumerate(curve.steps) if k not in spikes]
    values = [float(v) for k, v in enumerate(curve.val) if k not in spikes]
    s, v = half(steps, values)
    fall, fires, sure, margin, thr = _flat(curve, s, v)
    if not fires:
        return []
    log = curve.log
    tf, tl = window_mean(log, s[0]), window_mean(log, s[-1])
    train = f"; train {tf:.3g} → {tl:.3g}" if tf is not None and tl is not None else ""
    left = f", the spike's {len(spikes)} evaluation{'s' * (len(spikes) > 1)} left out" if spikes else ""
    if not spikes and spiked(found):
        left = ", with a spike between"
    return [
        Finding(
            "plateau",
            f"Val has plateaued from step {s[0]:,} to {s[-1]:,}",
            f"val {v[0]:.4g} → {v[-1]:.4g} over {s[-1] - s[0]:,} steps ({len(s)} evaluations{left}); a line fitted "
            f"through them {_trend(fall)}{margin}{train}. The run has converged at this configuration: more steps of "
            "it gain nothing measurable",
            f"fitted decline over the last {len(s)} of {len(curve.val)} evaluations (the last half) < "
            f"{PLATEAU_REL:.0%} of the loss ({thr:.4f})"
            + (", by two standard errors" if curve.sigma is not None else ""),
            sure,
            problem=False,
            data={"from": s[0], "to": s[-1], "spiked": spiked(found)},
        )
    ]


def _flat(curve: Curve, s: list[int], v: list[float]) -> tuple[float, bool, str, str, float]:
    """(fitted decline, flat?, confidence, its margin in words, threshold) of the evaluations (s, v)."""
    slope, _ = fit(s, v)
    fall = -slope * (s[-1] - s[0])
    thr = PLATEAU_REL * float(np.mean(v))
    if curve.sigma is None:
        return fall, fall < thr, "low", f" (eval noise unmeasured: {len(curve.val)} evaluations in all)", thr
    # with noise measured, the fitted decline must be below the threshold by two standard errors: a curve that falls
    # is not called flat because noise bent one fit
    # the noise is the larger of the curve's estimate and the line's own residuals here: either alone is one draw of
    # a dozen points, and an underestimate would call a falling curve flat
    x = np.asarray(s, dtype=float)
    _, line_se = fit(s, v)
    se = max(curve.sigma * (x[-1] - x[0]) / math.sqrt(float(np.sum((x - x.mean()) ** 2))), line_se * (x[-1] - x[0]))
    return (
        fall,
        fall + SURE * se < thr,
        "medium" if len(s) >= 6 else "low",
        f" (± {se:.4f}, from the estimated noise)",
        thr,
    )


def _trend(fall: float) -> str:
    """A fitted decline in words, at the precision it is printed."""
    shown = round(fall, 4)
    return f"falls {shown:.4f}" if shown > 0 else f"rises {-shown:.4f}" if shown < 0 else "is flat (0.0000)"
