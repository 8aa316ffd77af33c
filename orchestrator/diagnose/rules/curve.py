"""The val curve as the log gives it, and what several rules need from it: its noise, its raw best point (by the run's
own ``metric_for_best_model`` where the log shows it), what counts as a rise, and the spikes that came back.

Every figure printed as "val" is a logged value. The only estimate is the noise, named as one wherever it is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from orchestrator.diagnose.logs import RunLog
from orchestrator.diagnose.rules.base import fit, half
from orchestrator.results.stats import ALPHA, paired_bootstrap

# Evaluations needed to measure eval noise: pseudo-residuals from 5+ later evaluations (the first third is trend)
NOISE_EVALS = 7
RISE_SIGMAS = 3  # a rise counts beyond 3 standard deviations of the difference of two evaluations
SPIKE_SIGMAS = 4  # a pseudo-residual beyond 4 sd of the others is a spike, left out of the noise estimate
# and never under 1% of the loss: a smaller rise changes no decision (the emitted spec's early stopping ignores rises
# under 1% of the loss too), and exact evaluations of a smooth curve would otherwise call every wiggle beyond noise
RISE_FLOOR = 0.01
REGRESSION_REL = 0.01  # a rise counts above 1% of the loss when noise cannot be measured
# Metrics where a lower value is better; any other metric_for_best_model is higher-is-better (the Trainer's own default
# is greater_is_better = not name.endswith("loss"), and people set it False for error rates)
LOWER_IS_BETTER = ("loss", "wer", "cer", "perplexity", "ppl", "error", "mse", "mae", "rmse")


@dataclass
class Best:
    """The log's best evaluation, raw: by the run's own metric_for_best_model when the log shows it, else the lowest
    eval loss."""

    step: int
    value: float
    metric: str  # the log's key: eval_loss, eval_accuracy, eval_wer
    greater_is_better: bool
    how: str  # how the metric was chosen, for the reader


@dataclass
class Curve:
    """The val curve, its noise, and what counts as a rise."""

    log: RunLog
    steps: list[int]
    val: np.ndarray
    sigma: float | None  # eval-to-eval noise (sd), when there are enough evaluations to measure it

    @classmethod
    def of(cls, log: RunLog) -> Curve:
        evals = log.evals
        val = np.asarray([p.val_loss for p in evals], dtype=float)
        steps = [p.step for p in evals]
        return cls(log, steps, val, eval_noise(steps, val))

    @property
    def best(self) -> int:
        """The index of the lowest logged val (raw: a lucky low is what the log shows, and the threshold for a rise
        is the difference of two noisy evaluations)."""
        return int(np.argmin(self.val))

    def floor(self, i: int) -> float:
        """The lowest val before evaluation ``i``."""
        return float(np.min(self.val[:i]))

    def threshold(self, level: float) -> tuple[float, str]:
        """How far above ``level`` an evaluation must be to be more than noise, and how that was decided."""
        if self.sigma is not None:
            thr = max(RISE_SIGMAS * math.sqrt(2) * self.sigma, RISE_FLOOR * level)
            return (
                thr,
                f"> {thr:.3f} ({RISE_SIGMAS} sd of the difference of two evaluations, eval noise estimated at sd "
                f"{self.sigma:.4f}, and at least {RISE_FLOOR:.0%} of the loss)",
            )
        thr = REGRESSION_REL * level
        return (
            thr,
            f"> {thr:.3f} ({REGRESSION_REL:.0%} of the loss: under {NOISE_EVALS} evaluations, noise is unmeasured)",
        )

    def risen(self, since: int) -> tuple[bool, str, str]:
        """Whether val has risen beyond noise since evaluation ``since`` and stayed there: (fired, threshold,
        confidence)."""
        after = len(self.val) - 1 - since
        docs = dict(self.log.doc_losses)
        first, last = self.steps[since], self.steps[-1]
        if after >= 1 and first in docs and last in docs and self.log.doc_tokens:
            c = paired_bootstrap(
                np.asarray([docs[last]]), np.asarray([docs[first]]), np.asarray(self.log.doc_tokens), resamples=2000
            )
            return (
                c.p < ALPHA and c.ci95[0] > 0,
                f"paired bootstrap over val documents: p {c.p:.3f}, 95% CI [{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}]",
                "high" if after >= 2 else "medium",
            )
        thr, how = self.threshold(float(self.val[since]))
        tail = self.val[-2:] - self.val[since]
        return (
            after >= 2 and bool(np.all(tail > thr)),
            f"the last two evaluations {how}",
            ("high" if self.sigma is not None else "medium"),
        )

    def spikes(self) -> list[tuple[int, int, int | None]]:
        """Rises beyond noise above the best so far that came back: (first index, peak index, index back)."""
        out: list[tuple[int, int, int | None]] = []
        i = 1
        while i < len(self.val):
            floor = self.floor(i)
            thr, _ = self.threshold(floor)
            if self.val[i] - floor <= thr:
                i += 1
                continue
            j = i
            while j < len(self.val) and self.val[j] - floor > thr:
                j += 1
            peak = i + int(np.argmax(self.val[i:j]))
            out.append((i, peak, j if j < len(self.val) else None))
            i = j
        return out

    def best_by_metric(self) -> Best | None:
        """The raw best evaluation by the run's own selection metric, as far as the log shows it, else by the lowest
        eval loss; None without evaluations."""
        chosen = selection_metric(self.log)
        if chosen is not None:
            key, greater, how = chosen
            series = self.log.metrics.get(key) or [(s, float(v)) for s, v in zip(self.steps, self.val)]
            pick = max if greater else min
            step, value = pick(series, key=lambda sv: sv[1])
            step = next(s for s, v in series if v == value)  # the first time the best was reached: the Trainer's pick
            return Best(step, value, key, greater, how)
        if not len(self.val):
            return None
        b = self.best
        return Best(self.steps[b], float(self.val[b]), "eval_loss", False, "the lowest eval loss")


def selection_metric(log: RunLog) -> tuple[str, bool, str] | None:
    """(key, greater_is_better, how it was read) of the run's metric_for_best_model, when the log shows it:
    trainer_state.json keeps ``best_metric`` (the best value) and ``best_model_checkpoint`` / ``best_global_step`` (its
    step), so the metric is the eval key with that value at that step; greater_is_better is whether that value is the
    highest or the lowest of the key's values up to that step (ties: the metric's name decides)."""
    best, at = log.meta.get("best_metric"), _best_step(log.meta)
    if not isinstance(best, (int, float)) or isinstance(best, bool):
        return None
    series = dict(log.metrics)
    if log.evals:
        series.setdefault("eval_loss", [(p.step, p.val_loss) for p in log.evals])
    for key, values in series.items():
        hits = [s for s, v in values if math.isclose(v, best, rel_tol=1e-9, abs_tol=1e-12)]
        if not hits or (at is not None and at not in hits):
            continue
        upto = [v for s, v in values if s <= (at if at is not None else hits[0])]
        name = key.rpartition("_")[2] if key.startswith("eval_") else key
        by_name = not any(name.endswith(w) or key.endswith(w) for w in LOWER_IS_BETTER)
        greater = (
            True if best >= max(upto) and best > min(upto) else False if best <= min(upto) < max(upto) else by_name
        )
        where = f"step {at:,}" if at is not None else "its step"
        return (
            key,
            greater,
            f"the run's metric_for_best_model, read from trainer_state.json: best_metric {best:.6g} is `{key}` at "
            f"{where} ({'higher' if greater else 'lower'} is better)",
        )
    return None


def _best_step(meta: dict) -> int | None:
    step = meta.get("best_global_step")
    if isinstance(step, int):
        return step
    checkpoint = meta.get("best_model_checkpoint")
    tail = str(checkpoint).replace("\\", "/").rstrip("/").rpartition("/")[2] if checkpoint else ""
    return int(tail.removeprefix("checkpoint-")) if tail.removeprefix("checkpoint-").isdigit() else None


def eval_noise(steps: list[int], val: np.ndarray) -> float | None:
    """The sd of val around its trend, from the later evaluations (the first third is the early drop, trend): Gasser,
    Sroka and Jennen-Steinmetz's pseudo-residuals (Biometrika 1986), each evaluation against the straight line through
    its two neighbours, so a smooth decay that flattens leaves almost nothing while noise does; their root mean square,
    leaving out those beyond 4 sd of the median-based estimate (spikes are not noise)."""
    if len(val) < NOISE_EVALS:
        return None
    start = len(val) // 3 if len(val) - len(val) // 3 >= NOISE_EVALS else len(val) - NOISE_EVALS
    x, y = np.asarray(steps[start:], dtype=float), val[start:]
    left, mid, right = x[:-2], x[1:-1], x[2:]
    a = (right - mid) / (right - left)  # the weight of the left neighbour in the line at the middle point
    b = 1 - a
    pseudo = (a * y[:-2] + b * y[2:] - y[1:-1]) / np.sqrt(a**2 + b**2 + 1)  # var = sigma^2 for independent noise
    robust = 1.4826 * float(np.median(np.abs(pseudo)))
    kept = pseudo[np.abs(pseudo) <= SPIKE_SIGMAS * robust]  # never empty: half of them are within the median
    return math.sqrt(float(np.mean(kept**2)))


def trend_gain(curve: Curve) -> float | None:
    """What doubling the steps would gain if val stays linear in log(step) (fitted over the last half)."""
    steps = [s for s in curve.steps if s > 0]
    values = [float(v) for s, v in zip(curve.steps, curve.val) if s > 0]
    if len(steps) < 3:
        return None
    s, v = half(steps, values)
    slope, _ = fit([math.log(x) for x in s], v)
    return max(0.0, -slope * math.log(2))


def summary(log: RunLog) -> dict:
    """The JSON's ``curve``: the raw best and last evaluations as logged, and the one estimate, named."""
    curve = Curve.of(log)
    best = curve.best_by_metric()
    last = None
    if best is not None:
        series = log.metrics.get(best.metric) or [(s, float(v)) for s, v in zip(curve.steps, curve.val)]
        last = series[-1][1] if series else None
    evaluations = len(curve.val) or max((len(v) for v in log.metrics.values()), default=0)
    return {
        "best_val_step": best.step if best else None,
        "best_val": best.value if best else None,
        "last_val": last,
        "evaluations": evaluations,
        "metric": best.metric if best else None,
        "greater_is_better": best.greater_is_better if best else None,
        "chosen_by": best.how if best else None,
        "eval_noise_sd_estimate": round(curve.sigma, 6) if curve.sigma is not None else None,
    }
