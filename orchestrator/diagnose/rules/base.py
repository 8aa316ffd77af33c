"""What every rule reads: a finding, the run's context, the log's epochs and LR schedule, and straight-line fits."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contract.presets import config_dict
from contract.spec import TrainSpec
from orchestrator.diagnose.corpus import Corpus
from orchestrator.diagnose.logs import RunLog

# Stable rule ids, in the order findings of equal confidence are listed.
RULES = (
    "numerics",
    "evidence",
    "task",
    "scale",
    "baseline",
    "learning_rate",
    "overfit",
    "underfit",
    "regression",
    "plateau",
    "noise",
    "clipping",
    "schedule",
    "batch",
    "context",
    "lora_capacity",
)
# Findings that are causes: listed under "Root Causes" when they are problems, ranked by how sure they are
CAUSES = ("scale", "baseline", "learning_rate", "overfit", "clipping", "schedule", "context", "lora_capacity")
CONFIDENCE = ("high", "medium", "low")


@dataclass
class Finding:
    rule: str
    title: str
    evidence: str  # the numbers
    threshold: str  # what made it fire, and where that comes from
    confidence: str  # high, medium or low: how sure the numbers make it
    problem: bool = True  # False: an observation (eval noise, a clip that never engages, a converged run, the task)
    # numbers the advice uses; "explains": symptom rules; "broken": shows a broken run from the train loss alone
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("rule", "title", "evidence", "threshold", "confidence")}


@dataclass
class Context:
    """What is known besides the curve: the run's configuration (a partial run spec), intent and data."""

    config: dict[str, Any]
    intended_batch: int | None = None
    corpus: Corpus | None = None
    ours: bool = False  # the configuration is a whole run spec of ours: what it leaves out is our default, which ran

    def get(self, path: str, default: Any = None) -> Any:
        """What the configuration states at ``path`` (e.g. "optim.lr"), else ``default``."""
        return _lookup(self.config, path, default)

    def value(self, path: str) -> Any:
        """What a run of this configuration uses (the emitted spec): the stated value, else the run spec's default."""
        return self.get(path, _lookup(_DEFAULTS, path, None))

    def known(self, path: str) -> Any:
        """What the logged run used, as far as it is known: stated, or our default when the run was ours."""
        return self.value(path) if self.ours else self.get(path)

    @property
    def model(self) -> str | None:
        return self.known("model.name")

    @functools.cached_property
    def shape(self) -> dict[str, Any] | None:
        return config_dict(self.model) if self.model else None


def _lookup(config: dict[str, Any], path: str, default: Any) -> Any:
    value: Any = config
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return default
        value = value[key]
    return value


_DEFAULTS = TrainSpec().model_dump(mode="json")


def fired(found: list[Finding], rule: str) -> Finding | None:
    """The first finding of ``rule`` that is a problem."""
    return next((f for f in found if f.rule == rule and f.problem), None)


def noted(found: list[Finding], rule: str) -> Finding | None:
    """The first finding of ``rule``, problem or observation."""
    return next((f for f in found if f.rule == rule), None)


def spiked(found: list[Finding]) -> bool:
    return any(f.rule == "noise" and f.data.get("spikes") for f in found)


def pct(a: float, b: float) -> str:
    return f"{(b - a) / a:+.1%}" if a else f"{b - a:+.4f}"


def two(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` as logged losses are read: 2 decimals, or as many more as it takes to tell them apart."""
    d = 2
    while d < 6 and round(a, d) == round(b, d):
        d += 1
    return f"{a:.{d}f}", f"{b:.{d}f}"


def fmt_lr(x: float) -> str:
    """A learning rate as people write it: 2e-4, 2.5e-4."""
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def epochs(n: float) -> str:
    """Epochs as a person counts them: 0.4, 2.7, 164."""
    return f"{n:.1f}" if n < 10 else f"{n:,.0f}"


def epochs_at(log: RunLog, ctx: Context, step: int) -> tuple[float | None, str]:
    """Passes over the training data by ``step``: the log's own count, else steps x batch x block / train tokens."""
    counted = [p.epoch for p in log.points if p.epoch is not None and p.step <= step]
    if counted:
        return counted[-1], "the log's epoch count"
    batch, block = ctx.known("data.batch_size"), ctx.known("data.block_size")
    if ctx.corpus is None or not batch or not block or not ctx.corpus.train_tokens:
        return None, ""
    return step * batch * block / ctx.corpus.train_tokens, (
        f"{step:,} steps x {batch} x {block} tokens over {ctx.corpus.train_tokens:,} training tokens"
    )


def val_size(log: RunLog, ctx: Context) -> tuple[int, int] | None:
    """(documents, tokens) of the val set, when known."""
    if log.doc_tokens:
        return len(log.doc_tokens), sum(log.doc_tokens)
    if ctx.corpus is not None:
        return ctx.corpus.val_documents, ctx.corpus.val_tokens
    return None


def logged_schedule(log: RunLog) -> tuple[str | None, float | None, str]:
    """(kind, peak, description) of the LR the log records: constant, warmup, decay or warmup_decay."""
    points = [p for p in log.points if p.lr is not None]
    if len(points) < 3:
        return None, None, ""
    lrs = [p.lr for p in points]
    peak = max(lrs)
    at = lrs.index(peak)
    warm, decays = lrs[0] < 0.95 * peak and at > 0, lrs[-1] < 0.95 * peak
    kind = "warmup_decay" if warm and decays else "warmup" if warm else "decay" if decays else "constant"
    parts = [f"peak {fmt_lr(peak)}"]
    if warm:
        parts.append(f"warmup to step {points[at].step}")
    if decays:
        parts.append(f"decaying to {lrs[-1]:.2g} by step {points[-1].step}")
    if kind == "constant":
        parts.append(f"constant from step {points[0].step} to {points[-1].step}")
    return kind, peak, ", ".join(parts)


def fit(steps: list[int] | list[float], values: list[float]) -> tuple[float, float]:
    """(slope per step, standard error of the slope) of a least-squares line."""
    x, y = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    dof = len(x) - 2
    resid = y - (slope * x + intercept)
    sxx = float(np.sum((x - x.mean()) ** 2))
    se = math.sqrt(float(np.sum(resid**2)) / dof / sxx) if dof > 0 and sxx > 0 else math.inf
    return float(slope), se


def half(steps: list[int], values: list[float]) -> tuple[list[int], list[float]]:
    """The last half of a series, at least 3 points."""
    k = max(3, len(steps) - len(steps) // 2)
    return steps[-k:], values[-k:]


def decline(steps: list[int], values: list[float]) -> tuple[float, float] | None:
    """(decline, its standard error from the residuals) over the last half of a series by a straight-line fit; None
    under 3 points."""
    if len(steps) < 3:
        return None
    s, v = half(steps, values)
    slope, se = fit(s, v)
    span = s[-1] - s[0]
    return -slope * span, se * span


def window_mean(log: RunLog, step: int, share: float = 0.1) -> float | None:
    """The mean train loss over the logged points in the ``share`` of the run up to ``step`` (at least the point at or
    before it): a per-step train loss is one batch, too noisy to compare two steps by."""
    trains = log.trains
    if not trains:
        return None
    span = max(1.0, share * (trains[-1].step - trains[0].step))
    near = [p.train_loss for p in trains if step - span < p.step <= step]
    if near:
        return float(np.mean(near))
    # no train loss logged by then (train logged less often than val): the nearest one after it
    return log.train_at(step) or next((p.train_loss for p in trains if p.step > step), None)
