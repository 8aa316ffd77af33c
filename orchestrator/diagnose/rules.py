"""The rules a diagnosis applies to a training log, each with its threshold and where it comes from.

Each rule, when it fires, and where its threshold comes from:

- regression: val loss rises between two evaluations by more than noise: a paired bootstrap over val
  documents (p < 0.05) when the log has per-document losses (our sweeps), else by more than 1%.
  SageMaker Debugger LossNotDecreasing (a loss that does not decrease by diff_percent); 1% is ours.
- plateau: the best val loss improved over the last K evaluations (K = 2, or the last quarter of 8+) by
  less than 10% of its rate before them, or by less than 0.5% when there is no earlier part.
  SageMaker Debugger Overtraining (no improvement above `delta` for `patience` evaluations).
- overfit: (val - train) / train > 0.1 at the last evaluation, while val is not improving.
  SageMaker Debugger Overfit, `ratio_threshold` 0.1.
- underfit: train and val within that ratio, and both above half the loss of a uniform guess,
  ln(vocabulary). The seed's "both high = underfitting"; half of ln(V) is ours.
- clipping: more than 50% of steps clipped (the clip acts as an LR cut), or none clipped (loosening it
  cannot matter); suggest max_norm near the 90th percentile of unclipped norms. Google tuning playbook:
  ">50% of updates clipped is extremely aggressive", "clip at the 90th percentile of gradient norms".
- schedule: a constant learning rate with no warmup. Google tuning playbook (warmup for early
  instability); the seed's root cause 2.
- context: more than 20% of documents are longer than block_size. The seed's root cause 4; 20% is ours.
- batch: the effective batch is smaller than intended. The seed's root cause 3 (batch halved after an OOM).
- lora_capacity: LoRA at rank 8 or less on a plateau or while underfitting. The seed's root cause 1 (a
  heuristic, not a law).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contract.spec import TrainSpec
from orchestrator.diagnose.logs import RunLog
from orchestrator.results.stats import ALPHA, paired_bootstrap

REGRESSION_REL = 0.01
PLATEAU_REL = 0.10
PLATEAU_FLAT = 0.005
OVERFIT_RATIO = 0.1
CLIP_AGGRESSIVE = 0.5
CONTEXT_SHARE = 0.2


@dataclass
class Finding:
    rule: str
    title: str
    evidence: str  # the numbers
    threshold: str  # what made it fire
    causes: list[str] = field(default_factory=list)  # keys of orchestrator.diagnose.advice.CAUSES
    data: dict[str, Any] = field(default_factory=dict)  # numbers the advice uses (e.g. a clip threshold)


@dataclass
class Context:
    """What is known besides the curve: the run's configuration (a partial run spec) and intent."""

    config: dict[str, Any]
    intended_batch: int | None = None
    vocabulary: int | None = None  # of the model, for the underfitting level

    def get(self, path: str, default: Any = None) -> Any:
        """What the configuration states at ``path`` (e.g. "optim.lr"), else ``default``."""
        return _lookup(self.config, path, default)

    def value(self, path: str) -> Any:
        """What a run with this configuration uses: the stated value, else the run spec's default."""
        return self.get(path, _lookup(_DEFAULTS, path, None))


def _lookup(config: dict[str, Any], path: str, default: Any) -> Any:
    value: Any = config
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return default
        value = value[key]
    return value


_DEFAULTS = TrainSpec().model_dump(mode="json")


def diagnose(log: RunLog, ctx: Context) -> list[Finding]:
    """Every rule that fires on ``log``, in the order of the table above."""
    findings: list[Finding] = []
    for rule in (regression, plateau, fit, clipping, schedule, context_length, batch, lora_capacity):
        findings += rule(log, ctx, findings)
    return findings


def _pct(a: float, b: float) -> str:
    return f"{(b - a) / a:+.1%}" if a else f"{b - a:+.4f}"


def regression(log: RunLog, ctx: Context, found: list[Finding]) -> list[Finding]:
    evals = log.evals
    docs = dict(log.doc_losses)
    out = []
    for prev, cur in zip(evals, evals[1:]):
        rise = cur.val_loss - prev.val_loss
        if rise <= 0:
            continue
        if prev.step in docs and cur.step in docs and log.doc_tokens:
            c = paired_bootstrap(
                np.asarray([docs[cur.step]]), np.asarray([docs[prev.step]]), np.asarray(log.doc_tokens), resamples=2000
            )
            fires, threshold = (
                c.p < ALPHA and c.ci95[0] > 0,
                f"paired bootstrap over val documents: p {c.p:.3f}, 95% CI [{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}]",
            )
        else:
            fires, threshold = (
                rise > REGRESSION_REL * prev.val_loss,
                f"rise > {REGRESSION_REL:.0%} of the loss (no per-document losses in this log, so noise is not "
                "measured)",
            )
        if fires:
            train = (
                f"; train {prev.train_loss:.2f} → {cur.train_loss:.2f}"
                if prev.train_loss is not None and cur.train_loss is not None
                else ""
            )
            out.append(
                Finding(
                    "regression",
                    f"Loss increased at step {cur.step}",
                    f"val {prev.val_loss:.2f} → {cur.val_loss:.2f} at step {cur.step}, "
                    f"{_pct(prev.val_loss, cur.val_loss)}{train}",
                    threshold,
                    ["learning_rate", "batch", "clipping"],
                    {"step": cur.step, "rise": rise},
                )
            )
    return out


def plateau(log: RunLog, ctx: Context, found: list[Finding]) -> list[Finding]:
    evals = log.evals
    if len(evals) < 3:
        return []
    k = max(2, len(evals) // 4) if len(evals) >= 8 else 2
    best = np.minimum.accumulate([p.val_loss for p in evals])
    steps = [p.step for p in evals]
    start = len(evals) - 1 - k
    recent = (best[start] - best[-1]) / max(steps[-1] - steps[start], 1)
    if start > 0:
        earlier = (best[0] - best[start]) / max(steps[start] - steps[0], 1)
        fires = earlier > 0 and recent < PLATEAU_REL * earlier
        threshold = (
            f"improvement rate < {PLATEAU_REL:.0%} of the rate before (was {earlier:.2e}/step, now {recent:.2e}/step)"
        )
    else:
        fires = best[start] - best[-1] < PLATEAU_FLAT * best[start]
        threshold = f"best val improved by less than {PLATEAU_FLAT:.1%} over the last {k} evaluations"
    if not fires:
        return []
    first, last = evals[start], evals[-1]
    train = (
        f", train {first.train_loss:.2f} → {last.train_loss:.2f}"
        if first.train_loss is not None and last.train_loss is not None
        else ""
    )
    return [
        Finding(
            "plateau",
            f"Loss plateauing from step {first.step} to {last.step}",
            f"best val {best[start]:.2f} → {best[-1]:.2f} over {last.step - first.step} steps ({k} evaluations){train}",
            threshold,
            ["lora_capacity", "learning_rate", "context"],
            {"from": first.step, "to": last.step},
        )
    ]


def fit(log: RunLog, ctx: Context, found: list[Finding]) -> list[Finding]:
    last = next((p for p in reversed(log.evals) if p.train_loss is not None), None)
    if last is None or last.train_loss <= 0:
        return []
    ratio = (last.val_loss - last.train_loss) / last.train_loss
    improving = not any(f.rule == "plateau" for f in found) and not any(f.rule == "regression" for f in found)
    if ratio > OVERFIT_RATIO and not improving:
        return [
            Finding(
                "overfit",
                "Overfitting: validation loss well above training loss",
                f"at step {last.step}: train {last.train_loss:.2f}, val {last.val_loss:.2f}, (val - train) / train = "
                f"{ratio:.1%}",
                f"ratio > {OVERFIT_RATIO} (SageMaker Overfit ratio_threshold) while val is not improving",
                ["overfitting"],
            )
        ]
    if ctx.vocabulary and abs(ratio) <= OVERFIT_RATIO:
        uniform = math.log(ctx.vocabulary)
        if min(last.train_loss, last.val_loss) > uniform / 2:
            return [
                Finding(
                    "underfit",
                    "Underfitting: train and val both high",
                    f"at step {last.step}: train {last.train_loss:.2f}, val {last.val_loss:.2f} (gap {ratio:.1%}), "
                    f"against {uniform:.2f} for a uniform guess over {ctx.vocabulary:,} tokens",
                    f"gap within {OVERFIT_RATIO:.0%} and both above half of ln(vocabulary) = {uniform / 2:.2f}",
                    ["lora_capacity", "learning_rate"],
                )
            ]
    return []


def clipping(log: RunLog, ctx: Context, found: list[Finding]) -> list[Finding]:
    max_norm = ctx.value("optim.grad_clip")
    norms = np.asarray(log.grad_norms, dtype=float)
    if max_norm is None or (len(norms) == 0 and log.clip_rate is None):
        return []
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
                ["clipping"],
                {"p90": p90, "rate": rate},
            )
        ]
    if rate == 0:
        return [
            Finding(
                "clipping",
                "Gradient clipping never engages",
                f"0% of steps clipped at max_norm {max_norm:g}{spread}: loosening the clip cannot change anything",
                "clip rate = 0%",
                [],
                {"p90": p90, "rate": rate},
            )
        ]
    return []


def schedule(log: RunLog, ctx: Context, found: list[Finding]) -> list[Finding]:
    # a stated configuration without a schedule runs the default, constant (as the seed's script does)
    kind = ctx.value("optim.schedule.kind") if ctx.config else None
    lrs = [p.lr for p in log.points if p.lr is not None]
    constant = kind == "constant" if kind is not None else len(lrs) >= 3 and max(lrs) == min(lrs)
    if not constant:
        return []
    lr = ctx.get("optim.lr") or (lrs[0] if lrs else None)
    return [
        Finding(
            "schedule",
            "Constant learning rate, no warmup",
            f"lr {lr:g} from the first step to the last" if lr else "the learning rate never changes",
            "a constant schedule (tuning playbook: warmup for early instability; decay to fine-tune late)",
            ["learning_rate"],
        )
    ]


def context_length(log: RunLog, ctx: Context, found: list[Finding]) -> list[Finding]:
    share = log.longer_than_block
    block = ctx.get("data.block_size")
    if share is None or share <= CONTEXT_SHARE:
        return []
    return [
        Finding(
            "context",
            "Block size cuts many documents",
            f"{share:.0%} of documents are longer than block_size {block}",
            f"more than {CONTEXT_SHARE:.0%} of documents longer than a block",
            ["context"],
            {"share": share},
        )
    ]


def batch(log: RunLog, ctx: Context, found: list[Finding]) -> list[Finding]:
    actual = ctx.get("data.batch_size")
    if ctx.intended_batch is None or actual is None or actual >= ctx.intended_batch:
        return []
    return [
        Finding(
            "batch",
            "Effective batch smaller than intended",
            f"batch {actual} instead of {ctx.intended_batch} ({actual / ctx.intended_batch:.0%}): noisier gradients at "
            "the same learning rate",
            "effective batch < intended",
            ["batch"],
            {"intended": ctx.intended_batch, "actual": actual},
        )
    ]


def lora_capacity(log: RunLog, ctx: Context, found: list[Finding]) -> list[Finding]:
    rank = ctx.get("lora.rank")
    if ctx.value("method") != "lora" or rank is None or rank > 8:
        return []
    if not any(f.rule in ("plateau", "underfit") for f in found):
        return []
    return [
        Finding(
            "lora_capacity",
            "Low LoRA capacity on a plateau",
            f"LoRA rank {rank}, alpha {ctx.value('lora.alpha'):g}, while the loss has stopped improving",
            "rank <= 8 with a plateau or underfitting (the seed: GPT-2 fine-tuning often needs rank 16-32)",
            ["lora_capacity"],
        )
    ]
