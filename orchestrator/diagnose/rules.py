"""The rules a diagnosis applies to a training log: each reads the evidence, says how sure it is, and cites its source.

A finding states what the numbers show, the threshold that made it fire and how sure it is
(high, medium, low). Some findings are causes (``CAUSES``), listed only when the log or the
configuration holds direct evidence for them and ranked by how sure that evidence is, never by
how many findings mention them; the others are symptoms (a plateau, a rise) or observations
that rule something out (eval noise, a clip that never engages). Rule ids are stable (``RULES``);
the README's rule table says the same as this list.

- evidence: the reader took fewer than three points of the curve from the log (a summary row, two evaluations):
  the log cannot show the run's health, so it is not called healthy (``healthy`` null) and gets no projection.
- numerics: NaN or infinite losses or gradient norms in the log: the update at that step is undefined; where they
  start, how many, and whether every value after the first is non-finite (the weights are then likely NaN).
- baseline: the first evaluation above ``BASELINE_FAR`` (1.5) times what the model scores on
  ordinary text: the starting point is wrong (weights, tokenizer, labels, resume). References:
  nanoGPT's README baselines, val loss on OpenWebText per GPT-2 BPE token: gpt2 3.12, gpt2-medium
  2.84, gpt2-large 2.67, gpt2-xl 2.54; a local model's card (``pretraining.final_val_loss``:
  tiny-gpt2 3.49 on held-out Python docs). 1.5x is ours: another domain costs a pretrained model
  tenths of a nat (tiny-gpt2: 3.49 on its own text, 4.39 on the bundled Q&A corpus, 1.26x).
- learning_rate: the LR that ran (the log's peak, else the configuration) more than 3x from the
  prior for the method and the model's size (10x: far). Full fine-tuning: a tenth of the model's
  pretraining peak (GPT-3 paper, Table 2.1, by size: 6e-4 at 125M ... 1.2e-4 at 6.7B), which
  Hugging Face Trainer's default 5e-5 for GPT-2 124M and nanoGPT's finetune_shakespeare 3e-5 for
  gpt2-xl agree with. LoRA: 10x full fine-tuning ("LoRA Without Regret", Thinking Machines 2025;
  the LoRA paper fine-tuned GPT-2 Medium and Large at 2e-4). Or, with no prior, a slow (< 5%),
  straight (second half at 70%+ of the first half's rate) decline.
- overfit: val has risen beyond noise since its best and train kept falling (> 1%); or val still
  at its best but (val - train) / train > 0.1 (SageMaker Debugger Overfit's ratio_threshold),
  growing, after 2+ epochs or with more trainable parameters than training tokens: memorisation.
- underfit: train within that ratio of val after 3+ epochs (a model that learns memorises a corpus
  seen that often), or, with the data size unknown, both flat.
- noise: eval noise measured from 7+ evaluations (the larger of two spike-robust estimates: the
  median second difference, and the residuals of a quadratic in log step). A rise above the best
  so far beyond 3 sd of the difference of two evaluations (1% of the loss when noise is not
  measured) that came back, or is the last evaluation, is one finding: "possibly noise".
- regression: the last two evaluations beyond that threshold above the best level (the mean of an
  evaluation and its neighbours, so a lucky low is not the best), or the last one by a paired
  bootstrap over val documents (p < 0.05), while train did not fall. Consecutive rises are one
  finding. SageMaker Debugger LossNotDecreasing, with the noise measured.
- plateau: a line fitted to the last half of the evaluations declines by less than 1% of the loss
  (ours), by two standard errors where noise is measured. Never on a rising val.
- clipping: more than 50% of steps clipped, the clip acting as an LR cut (Google tuning playbook:
  "extremely aggressive"; clip near the 90th percentile of norms); none clipped rules loosening
  out. Only with gradient norms in the log.
- schedule: a constant LR with a rise in the first 25% of steps (warmup: tuning playbook), or on
  a plateau at an LR in range (decay to a tenth: nanoGPT, GPT-3). Never with the LR too low:
  warmup and decay lower the mean LR further.
- batch: the effective batch is smaller than intended (--intended-batch); restored by
  accumulation in every arm, the control included.
- context: more than 20% of documents longer than a block, on a stuck curve whose start and LR are
  fine (the seed's root cause 4; 20% is ours; tiny-gpt2 scores 4.47 with 32 tokens of context and
  4.39 with 256 on the bundled corpus: context is worth tenths of a nat).
- lora_capacity: LoRA whose train loss stopped falling (< 1% over the last half) at an LR in range
  and a start that is fine, with fewer adapter parameters than training tokens (LoRA Without
  Regret: low ranks fall behind full fine-tuning once the data outgrows them).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from contract.presets import config_dict, local_folder
from contract.spec import TrainSpec
from orchestrator.diagnose.corpus import Corpus
from orchestrator.diagnose.logs import RunLog
from orchestrator.diagnose.logs.curve import MIN_POINTS
from orchestrator.results.stats import ALPHA, paired_bootstrap

# Stable rule ids, in the order findings of equal confidence are listed.
RULES = (
    "evidence",
    "numerics",
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
CAUSES = ("baseline", "learning_rate", "overfit", "clipping", "schedule", "context", "lora_capacity")
CONFIDENCE = ("high", "medium", "low")

# nanoGPT README, "baselines": val loss of the released GPT-2 checkpoints on OpenWebText, nats per GPT-2 BPE token
GPT2_REFERENCE = {"gpt2": 3.12, "gpt2-medium": 2.84, "gpt2-large": 2.67, "gpt2-xl": 2.54}
BASELINE_FAR = 1.5
# GPT-3 paper (Brown et al. 2020), Table 2.1: pretraining peak learning rate by model size
GPT3_LR = ((125e6, 6.0e-4), (350e6, 3.0e-4), (760e6, 2.5e-4), (1.3e9, 2.0e-4), (2.7e9, 1.6e-4), (6.7e9, 1.2e-4))
# Models whose own pretraining peak is known: tiny-gpt2 was built by scripts/build_tiny_preset.py at its --lr default
OWN_PRETRAINING_LR = {"tiny-gpt2": 2e-3}
FULL_FT_FRACTION = 0.1  # full fine-tuning's LR as a share of the pretraining peak
LORA_FACTOR = 10  # LoRA's best LR over full fine-tuning's (LoRA Without Regret)
LR_BAND, LR_FAR = 3, 10
STRAIGHT = 0.7  # a second half declining at 70%+ of the first half's rate has not bent
SLOW = 0.05  # and less than 5% over the whole run is slow

OVERFIT_RATIO = 0.1  # SageMaker Debugger Overfit, ratio_threshold
MEMORISE_EPOCHS = 2
UNDERFIT_EPOCHS = 3
TRAIN_FALL = 0.01  # train "still falling": down by more than 1% since val's best
REGRESSION_REL = 0.01  # a rise counts above 1% of the loss when noise cannot be measured
NOISE_EVALS = 7  # evaluations to measure eval noise: a quadratic fit without a spike leaves 3 degrees of freedom
RISE_SIGMAS = 3  # a rise counts beyond 3 standard deviations of the difference of two evaluations
SPIKE_SIGMAS = 4  # a residual beyond 4 sd of the others is a spike, left out of the noise estimate
PLATEAU_REL = 0.01
CLIP_AGGRESSIVE = 0.5
CONTEXT_SHARE = 0.2
SMALL_VAL_DOCUMENTS = 100  # below this, a few documents can move the val mean by tenths of a nat


@dataclass
class Finding:
    rule: str
    title: str
    evidence: str  # the numbers
    threshold: str  # what made it fire, and where that comes from
    confidence: str  # high, medium or low: how sure the numbers make it
    problem: bool = True  # False: an observation that rules something out (eval noise, a clip that never engages)
    data: dict[str, Any] = field(default_factory=dict)  # numbers the advice uses; "explains": symptom rules

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


# ------------------------------------------------------------------ what is known about the model


@dataclass(frozen=True)
class Reference:
    loss: float  # nats per token of the model's own tokenizer
    on: str  # what it was measured on
    source: str


def reference(model: str) -> Reference | None:
    """What ``model`` scores on ordinary text, when known: the GPT-2 table, or a local model's card."""
    name = model.removeprefix("openai-community/")
    if name in GPT2_REFERENCE:
        return Reference(GPT2_REFERENCE[name], "OpenWebText", "nanoGPT's README baselines")
    folder = local_folder(model)
    card = _card(folder / "README.md") if folder else {}
    loss = (card.get("pretraining") or {}).get("final_val_loss")
    return Reference(float(loss), "held-out text of its pretraining corpus", "its model card") if loss else None


def _card(path: Path) -> dict[str, Any]:
    """A model card's YAML front matter."""
    if not path.is_file():
        return {}
    text = path.read_text()
    if not text.startswith("---"):
        return {}
    front = yaml.safe_load(text.split("---", 2)[1])
    return front if isinstance(front, dict) else {}


def parameters(shape: dict[str, Any] | None) -> int | None:
    """A GPT-2's parameter count from its config (weights and biases of every block, embeddings, final norm)."""
    if not shape or shape.get("model_type") != "gpt2":
        return None
    d, layers = shape["n_embd"], shape["n_layer"]
    block = 12 * d * d + 13 * d  # attention 4d^2 + 4d, MLP 8d^2 + 5d, two layer norms 4d
    return layers * block + (shape["vocab_size"] + shape["n_positions"]) * d + 2 * d


# LoRA's A (d_in x r) and B (r x d_out) per GPT-2 module, in units of r * n_embd; `c_proj` names two modules
_LORA_WIDTH = {"c_attn": 1 + 3, "c_proj": (1 + 1) + (4 + 1), "c_fc": 1 + 4}


def trainable(ctx: Context) -> int | None:
    """Parameters the run trains: every weight for full fine-tuning, the adapters for LoRA (GPT-2 modules)."""
    shape, method = ctx.shape, ctx.known("method")
    if method == "full":
        return parameters(shape)
    rank, targets = ctx.value("lora.rank"), ctx.value("lora.target_modules")
    if method != "lora" or not shape or shape.get("model_type") != "gpt2" or not set(targets) <= set(_LORA_WIDTH):
        return None
    return shape["n_layer"] * rank * shape["n_embd"] * sum(_LORA_WIDTH[t] for t in targets)


@dataclass(frozen=True)
class LrPrior:
    full: float  # the centre of full fine-tuning's range for this model
    basis: str  # where that centre comes from

    def centre(self, method: str) -> float:
        return self.full * (LORA_FACTOR if method == "lora" else 1)

    def describe(self, method: str) -> str:
        lo, hi = self.centre(method) / LR_BAND, self.centre(method) * LR_BAND
        if method == "lora":
            return (
                f"{fmt_lr(lo)} to {fmt_lr(hi)} for LoRA: {LORA_FACTOR}x full fine-tuning's {fmt_lr(self.full)} "
                f"(LoRA Without Regret), itself {self.basis}"
            )
        return f"{fmt_lr(lo)} to {fmt_lr(hi)} for full fine-tuning: {self.basis}"


def lr_prior(ctx: Context) -> LrPrior | None:
    """The full fine-tuning LR prior for the run's model, from its pretraining peak; None when the size is unknown."""
    model = ctx.model
    if model is None:
        return None
    if model in OWN_PRETRAINING_LR:
        peak, what = OWN_PRETRAINING_LR[model], "its own pretraining peak"
    else:
        n = parameters(ctx.shape)
        if n is None or n < GPT3_LR[0][0] / 2 or n > GPT3_LR[-1][0] * 2:
            return None  # outside the table: no prior to judge by
        size, peak = min(GPT3_LR, key=lambda row: abs(math.log(row[0] / n)))
        what = f"the pretraining peak of a {size / 1e6:,.0f}M model (GPT-3, Table 2.1)"
    if ctx.known("model.init") == "random":
        return LrPrior(peak, f"training from scratch at {what}, {fmt_lr(peak)}")
    return LrPrior(peak * FULL_FT_FRACTION, f"a tenth of {what}, {fmt_lr(peak)}")


def in_band(lr: float, centre: float) -> bool:
    """Whether ``lr`` is within LR_BAND of the prior's ``centre`` (the usual range), its edges included."""
    ratio = lr / centre
    return 1 / LR_BAND <= ratio * (1 + 1e-9) and ratio <= LR_BAND * (1 + 1e-9)


def fmt_lr(x: float) -> str:
    """A learning rate as people write it: 2e-4, 2.5e-4."""
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


# ------------------------------------------------------------------ the curve, with its noise


@dataclass
class Curve:
    """The val curve and what several rules need from it: its noise, its best point, what counts as a rise."""

    log: RunLog
    steps: list[int]
    val: np.ndarray
    sigma: float | None  # eval-to-eval noise (sd), when there are enough evaluations to measure it

    @classmethod
    def of(cls, log: RunLog) -> Curve:
        evals = log.evals
        val = np.asarray([p.val_loss for p in evals], dtype=float)
        steps = [p.step for p in evals]
        return cls(log, steps, val, _eval_noise(steps, val))

    @functools.cached_property
    def level(self) -> np.ndarray:
        """Val with its noise averaged out where it is measured (the mean of each evaluation and its neighbours), so
        that a lucky low evaluation is not taken for the best; raw where it is not."""
        if self.sigma is None:
            return self.val
        padded = np.concatenate([self.val[:1], self.val, self.val[-1:]])
        return np.convolve(padded, np.ones(3) / 3, mode="valid")

    @property
    def best(self) -> int:
        return int(np.argmin(self.level))

    def floor(self, i: int) -> float:
        """The best level before evaluation ``i``, from evaluations that do not include ``i`` itself."""
        if self.sigma is None:
            return float(np.min(self.val[:i]))
        return float(np.min(self.level[: max(1, i - 1)]))

    def threshold(self, level: float) -> tuple[float, str]:
        """How far above ``level`` an evaluation must be to be more than noise, and how that was decided."""
        if self.sigma is not None:
            thr = max(RISE_SIGMAS * math.sqrt(2) * self.sigma, 1e-3 * level)
            return (
                thr,
                f"> {thr:.3f} ({RISE_SIGMAS} sd of the difference of two evaluations; noise sd {self.sigma:.3f})",
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
        thr, how = self.threshold(self.level[since])
        tail = self.val[-2:] - self.level[since]
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


def _eval_noise(steps: list[int], val: np.ndarray) -> float | None:
    """The sd of val around its trend, from the later evaluations (the early drop is trend, not noise): the larger of
    two estimates, so that a chance low one does not make noise look like signal, each robust to one spike. One is
    the median absolute second difference, scaled to a normal sd; the other the residuals of a quadratic in
    log(step), without the furthest point when it is a spike (beyond 4 sd of the others)."""
    if len(val) < NOISE_EVALS:
        return None
    start = len(val) // 3 if len(val) - len(val) // 3 >= NOISE_EVALS else len(val) - NOISE_EVALS
    tail, x = val[start:], np.log(np.asarray(steps[start:], dtype=float) + max(1, steps[1] - steps[0]))
    d2 = np.diff(tail, 2)  # var(y[i+1] - 2 y[i] + y[i-1]) = 6 sigma^2 for independent noise
    robust = 1.4826 * float(np.median(np.abs(d2))) / math.sqrt(6)
    resid = tail - np.polyval(np.polyfit(x, tail, 2), x)
    spread = math.sqrt(float(np.sum(resid**2)) / (len(tail) - 3))
    keep = np.abs(resid) < np.max(np.abs(resid))
    others = tail[keep] - np.polyval(np.polyfit(x[keep], tail[keep], 2), x[keep])
    without = math.sqrt(float(np.sum(others**2)) / (len(others) - 3))
    if np.max(np.abs(resid)) > SPIKE_SIGMAS * without:  # a spike, not the tail of the noise: leave it out
        spread = without
    return max(robust, spread)


def _fit(steps: list[int], values: list[float]) -> tuple[float, float]:
    """(slope per step, standard error of the slope) of a least-squares line."""
    x, y = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    dof = len(x) - 2
    resid = y - (slope * x + intercept)
    sxx = float(np.sum((x - x.mean()) ** 2))
    se = math.sqrt(float(np.sum(resid**2)) / dof / sxx) if dof > 0 and sxx > 0 else math.inf
    return float(slope), se


def _half(steps: list[int], values: list[float]) -> tuple[list[int], list[float]]:
    """The last half of a series, at least 3 points."""
    k = max(3, len(steps) - len(steps) // 2)
    return steps[-k:], values[-k:]


def decline(steps: list[int], values: list[float]) -> tuple[float, float] | None:
    """(decline, its standard error from the residuals) over the last half of a series by a straight-line fit; None
    under 3 points."""
    if len(steps) < 3:
        return None
    s, v = _half(steps, values)
    slope, se = _fit(s, v)
    span = s[-1] - s[0]
    return -slope * span, se * span


def trend_gain(curve: Curve) -> float | None:
    """What doubling the steps would gain if val stays linear in log(step) (fitted over the last half)."""
    steps = [s for s in curve.steps if s > 0]
    values = [float(v) for s, v in zip(curve.steps, curve.val) if s > 0]
    if len(steps) < 3:
        return None
    s, v = _half(steps, values)
    slope, _ = _fit([math.log(x) for x in s], v)
    return max(0.0, -slope * math.log(2))


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


# ------------------------------------------------------------------ the rules


def diagnose(log: RunLog, ctx: Context) -> list[Finding]:
    """Every rule that fires on ``log``, most certain first (ties in ``RULES`` order)."""
    curve = Curve.of(log)
    found: list[Finding] = []
    for rule in (
        evidence,
        numerics,
        baseline,
        overfit,
        regression,
        noise,
        clipping,
        learning_rate,
        underfit,
        plateau,
        schedule,
        batch,
        context_length,
        lora_capacity,
    ):
        found += rule(curve, ctx, found)
    return sorted(found, key=lambda f: (CONFIDENCE.index(f.confidence), RULES.index(f.rule)))


def healthy(findings: list[Finding]) -> bool | None:
    """True, False, or None when the log cannot show it (rule ``evidence``)."""
    if any(f.rule == "evidence" for f in findings):
        return None
    return not any(f.problem for f in findings)


def rank_causes(findings: list[Finding]) -> list[tuple[Finding, list[str]]]:
    """The causes with direct evidence, surest first, each with its evidence and that of the findings it is the first
    to explain. A cause that a surer one explains (a clip engaged by too high an LR) is evidence, not a cause."""
    causes = sorted(
        (f for f in findings if f.rule in CAUSES and f.problem),
        key=lambda f: (CONFIDENCE.index(f.confidence), RULES.index(f.rule)),
    )
    claimed: set[str] = set()
    out = []
    for f in causes:
        if f.rule in claimed:
            continue
        explained = [
            g for g in findings if g.rule in f.data.get("explains", ()) and g.rule not in claimed and g.problem
        ]
        claimed.update(g.rule for g in explained)
        out.append((f, [f.evidence] + [g.evidence for g in explained]))
    return out


def _fired(found: list[Finding], rule: str) -> Finding | None:
    return next((f for f in found if f.rule == rule and f.problem), None)


def _spiked(found: list[Finding]) -> bool:
    return any(f.rule == "noise" and f.data.get("spikes") for f in found)


def _pct(a: float, b: float) -> str:
    return f"{(b - a) / a:+.1%}" if a else f"{b - a:+.4f}"


def evidence(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    reading = curve.log.reading
    if reading is None or not reading.too_few:
        return []
    left = "; ".join(f"{len(s.where):,} skipped: {s.reason}" for s in reading.skipped)
    return [
        Finding(
            "evidence",
            f"The log cannot show the run's health: {reading.points} point{'s' * (reading.points != 1)} read from "
            f"{reading.records:,} record{'s' * (reading.records != 1)}",
            f"{reading.trains} train loss{'es' * (reading.trains != 1)} and {reading.evals} evaluation"
            f"{'s' * (reading.evals != 1)} in the curve" + (f"; {left}" if left else "") + ". Log the train loss "
            "every few steps and evaluate on held-out data as often (eval_strategy='steps'), then diagnose again",
            f"fewer than {MIN_POINTS} points of the curve: two points fit any trend",
            "high",
        )
    ]


def numerics(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
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
            data={"checks": NUMERICS_CHECKS},
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


def baseline(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    log, model = curve.log, ctx.model
    first = log.evals[0] if log.evals else (log.trains[0] if log.trains else None)
    if first is None or model is None or ctx.known("model.init") == "random":
        return []
    tokenizer = ctx.known("model.tokenizer")
    ref = reference(model)
    if ref is None or (tokenizer is not None and tokenizer != model):
        return []  # no reference, or a loss per token of another tokenizer: nothing to compare with
    loss = first.val_loss if first.val_loss is not None else first.train_loss
    ratio = loss / ref.loss
    if ratio <= BASELINE_FAR:
        return []
    trained, _ = epochs_at(log, ctx, first.step)
    at = "before any training" if first.step == 0 else f"after {first.step:,} steps of training"
    evidence = (
        f"the first evaluation (step {first.step:,}, {at}) is {loss:.2f} nats/token, {ratio:.1f}x the {ref.loss:.2f} "
        f"that pretrained {model} scores on {ref.on} ({ref.source})"
    )
    vocab = (ctx.shape or {}).get("vocab_size")
    if vocab:
        evidence += f"; a uniform guess over its {vocab:,} tokens scores {math.log(vocab):.2f}"
    last = log.trains[-1] if log.trains else None
    seen, how = epochs_at(log, ctx, log.points[-1].step)
    if seen is not None and last is not None and seen >= 1:
        evidence += (
            f". By step {log.points[-1].step:,} the run has seen about {epochs(seen)} epochs ({how}) and train loss is "
            f"still {last.train_loss:.2f}: nothing is being learned"
        )
    if log.resumed:
        steps = ", ".join(f"step {s:,}" if s is not None else "an unnamed step" for s in log.resumed)
        evidence += f". The log resumes from a checkpoint at {steps}"
    sure = ratio >= 2 or (trained or 0) >= 1 or first.step > 0
    return [
        Finding(
            "baseline",
            "The starting point is wrong: the loss is far above what the pretrained model scores",
            evidence,
            f"first loss > {BASELINE_FAR}x the model's reference loss",
            "high" if sure else "medium",
            data={"checks": _checks(ctx, log), "explains": ("underfit", "plateau")},
        )
    ]


def _checks(ctx: Context, log: RunLog) -> list[str]:
    """What to verify in the training script before any sweep, most likely first."""
    model, ref = ctx.model, reference(ctx.model)
    out = [
        f"weights: the model comes from `from_pretrained({model!r})`, not from a config (a config builds random "
        f"weights, which start near ln(vocabulary)); before any step, the loss on English text should be within "
        f"{BASELINE_FAR}x of {ref.loss:.2f}",
        f"tokenizer: `AutoTokenizer.from_pretrained({model!r})`; ids from another tokenizer are noise to the model",
        "labels and padding: labels are the input ids (the model shifts them itself, so shifting them again predicts "
        "the token after next); padded positions are -100 in labels and 0 in attention_mask",
    ]
    n = trainable(ctx)
    if n is not None:
        total = parameters(ctx.shape)
        share = f" ({n / total:.2%} of {total:,})" if total and ctx.known("method") == "lora" else ""
        out.append(
            f"trainable parameters: this configuration trains {n:,}{share}; peft's `print_trainable_parameters()` "
            "should say the same, and no base weight should have requires_grad"
        )
    resumed = [s for s in log.resumed if s is not None]
    where = f"at step {resumed[0]:,}" if resumed else "if the run resumed"
    out.append(
        f"resume ({where}): the adapter weights and optimizer state are loaded, not only the step counter; the first "
        "loss after resuming should match the last before it"
    )
    return out


def overfit(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    if len(curve.val) < 2:
        return []
    log, b = curve.log, curve.best
    explains = {"explains": ("regression",)}
    if b < len(curve.val) - 1:
        risen, how, sure = curve.risen(b)
        best_step, last_step = curve.steps[b], curve.steps[-1]
        tb, tl = log.train_at(best_step), log.train_at(last_step)
        if risen and tb is not None and tl is not None and tl < tb * (1 - TRAIN_FALL):
            e_best, _ = epochs_at(log, ctx, best_step)
            e_last, _ = epochs_at(log, ctx, last_step)
            seen = f", epochs {e_best:.1f} → {e_last:.1f}" if e_best is not None and e_last is not None else ""
            checkpoint = log.checkpoints.get(best_step) or (
                log.best_checkpoint if log.best_checkpoint and str(best_step) in log.best_checkpoint else None
            )
            return [
                Finding(
                    "overfit",
                    f"Overfitting: val lowest at step {best_step:,}, train still falling",
                    f"val {curve.level[b]:.2f} at step {best_step:,} → {curve.val[-1]:.2f} at step {last_step:,} "
                    f"({_pct(curve.level[b], curve.val[-1])}) while train fell {tb:.2f} → {tl:.2f}{seen}",
                    f"val risen since its best ({how}) and train down by more than {TRAIN_FALL:.0%}",
                    sure,
                    data={"best_step": best_step, "checkpoint": checkpoint, "turned": True, **explains},
                )
            ]
    return _memorising(curve, ctx)


def _memorising(curve: Curve, ctx: Context) -> list[Finding]:
    """Val still at its best, but train pulling away from it on data seen several times: memorisation under way."""
    log = curve.log
    paired = [(s, v, log.train_at(s)) for s, v in zip(curve.steps, curve.val) if log.train_at(s) is not None]
    if len(paired) < 2:
        return []
    (s0, v0, t0), (s1, v1, t1) = paired[0], paired[-1]
    ratio, grew = (v1 - t1) / t1 if t1 > 0 else 0.0, (v1 - t1) - (v0 - t0)
    seen, _ = epochs_at(log, ctx, s1)
    n, tokens = trainable(ctx), ctx.corpus.train_tokens if ctx.corpus else None
    roomy = n is not None and tokens is not None and n > tokens
    if ratio <= OVERFIT_RATIO or grew <= 0 or not ((seen or 0) >= MEMORISE_EPOCHS or roomy):
        return []
    size = f"{tokens:,}-token corpus" if tokens else "corpus"
    why = [f"{seen:.1f} epochs of a {size}"] if seen is not None else []
    if roomy:
        why.append(f"{n:,} trainable parameters, {n / tokens:,.0f} per training token")
    return [
        Finding(
            "overfit",
            "Memorisation under way: train pulling away from val",
            f"at step {s1:,}: train {t1:.2f}, val {v1:.2f}, a gap of {v1 - t1:.2f} nats ({ratio:.0%} of train), up "
            f"from {v0 - t0:.2f} at step {s0:,}, after {', with '.join(why)}; val is still at its best, but the gain "
            "can reverse with more steps",
            f"(val - train) / train > {OVERFIT_RATIO} (SageMaker Debugger Overfit) and growing, after "
            f"{MEMORISE_EPOCHS}+ epochs or with more parameters than tokens",
            "medium",
            data={"best_step": curve.steps[curve.best], "checkpoint": None, "turned": False},
        )
    ]


def regression(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    if len(curve.val) < 2 or _fired(found, "overfit") or curve.best == len(curve.val) - 1:
        return []
    b, log = curve.best, curve.log
    risen, how, sure = curve.risen(b)
    if not risen:
        return []
    first, last = curve.steps[b], curve.steps[-1]
    tb, tl = log.train_at(first), log.train_at(last)
    train = f"; train {tb:.2f} → {tl:.2f}" if tb is not None and tl is not None else ""
    evals = len(curve.val) - 1 - b
    return [
        Finding(
            "regression",
            f"Loss increased at step {curve.steps[b + 1]:,}",
            f"val {curve.level[b]:.2f} → {curve.val[-1]:.2f} from step {first:,} to {last:,} "
            f"({_pct(curve.level[b], curve.val[-1])}, {evals} evaluation{'s' if evals > 1 else ''}), not back since"
            + train,
            f"val above its best beyond noise ({how}) while train did not fall",
            sure,
        )
    ]


def noise(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    trend = _fired(found, "regression") or _fired(found, "overfit")
    # a rise still up at the end is the trend those rules judged; one at the last evaluation alone is not yet either
    episodes = [e for e in curve.spikes() if e[2] is not None or (not trend and e[0] == len(curve.val) - 1)]
    if not episodes and curve.sigma is None:
        return []
    size = val_size(curve.log, ctx)
    small = size is not None and size[0] < SMALL_VAL_DOCUMENTS
    on = f" on {'only ' if small else ''}{size[0]:,} val documents ({size[1]:,} tokens)" if size else ""
    level = float(np.min(curve.level))
    measured = {"sigma": curve.sigma, "min_delta": curve.threshold(level)[0]} if curve.sigma is not None else {}
    if not episodes:
        return [
            Finding(
                "noise",
                "Eval noise measured: rises within it are not read as regressions",
                f"val moves by sd {curve.sigma:.3f} between evaluations around its trend{on}; rises under "
                f"{measured['min_delta']:.3f} are noise",
                "the larger of two estimates from the later evaluations, each robust to one spike: the median second "
                "difference, and the residuals of a quadratic in log(step)",
                "medium",
                problem=False,
                data=measured,
            )
        ]
    parts = []
    for i, peak, back in episodes:
        rose = (
            f"val rose {curve.val[peak] - curve.floor(i):+.2f} to {curve.val[peak]:.2f} at step {curve.steps[peak]:,}"
        )
        parts.append(
            f"{rose} and was back to {curve.val[back]:.2f} by step {curve.steps[back]:,}"
            if back is not None
            else f"{rose}, the last evaluation: the next one tells a spike from a trend"
        )
    tell = (
        "a larger val set (a few hundred documents), 2+ seeds, or per-document losses for a paired test (plateau-sweep "
        "records them) would tell"
    )
    _, how = curve.threshold(level)
    return [
        Finding(
            "noise",
            "A single rise: possibly noise" if len(parts) == 1 else f"{len(parts)} single rises: possibly noise",
            "; ".join(parts) + f"{on}. One evaluation cannot tell noise from a transient instability; " + tell,
            f"a rise above the best so far {how}, on one evaluation or undone by a later one",
            "low",
            problem=False,
            data={"spikes": len(parts), **measured},
        )
    ]


def learning_rate(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    log, method = curve.log, ctx.known("method")
    _, peak, _ = logged_schedule(log)
    stated = ctx.known("optim.lr")
    lr, where = (peak, "its logged peak") if peak is not None else (stated, "the configuration")
    prior = lr_prior(ctx) if method in ("lora", "full") else None
    shape = _straight(log)
    if lr is None or (prior is None and shape is None):
        return []
    norms = np.asarray(log.grad_norms, dtype=float)
    clip = ctx.known("optim.grad_clip")
    grads = (
        f"; pre-clip gradient norms p50 {np.percentile(norms, 50):.3g}, p90 {np.percentile(norms, 90):.3g}"
        + (f" against max_norm {clip:g}" if clip else "")
        if len(norms)
        else ""
    )
    if prior is None:
        if shape is None:
            return []
        return [
            Finding(
                "learning_rate",
                "Learning rate too low, by the shape of the curve",
                f"lr {lr:.2g} ({where}); {shape}{grads}; the model's size is unknown offline, so the rate is not "
                "judged against a prior",
                f"a straight decline (second half at {STRAIGHT:.0%}+ of the first half's rate) of under {SLOW:.0%}",
                "low",
                data={"direction": "low", "explains": ("underfit", "plateau")},
            )
        ]
    centre = prior.centre(method)
    ratio = lr / centre
    if in_band(lr, centre):
        return []
    low = ratio < 1
    far = ratio <= 1 / LR_FAR or ratio >= LR_FAR
    clipped = _fired(found, "clipping")
    unstable = bool(_fired(found, "regression") or _spiked(found) or clipped)
    sure = "high" if far or (shape if low else unstable) else "medium"
    times = f"{1 / ratio:.0f}x below" if low else f"{ratio:.0f}x above"
    evidence = (
        f"{'LoRA' if method == 'lora' else 'full fine-tuning'} at lr {fmt_lr(lr)} ({where}) is {times} the "
        f"{fmt_lr(centre)} centre of the prior for {ctx.model}, {prior.describe(method)}{grads}"
    )
    if low and shape:
        evidence += f"; the curve agrees: {shape}"
    if low and method == "lora" and ctx.model.removeprefix("openai-community/") in GPT2_REFERENCE:
        evidence += "; the LoRA paper fine-tuned GPT-2 Medium and Large at 2e-4"
    return [
        Finding(
            "learning_rate",
            f"Learning rate {'far ' if far else ''}{'below' if low else 'above'} the usual range",
            evidence,
            f"lr outside {LR_BAND}x of the prior's centre ({LR_FAR}x: far)",
            sure,
            data={
                "direction": "low" if low else "high",
                "lr": lr,
                "centre": centre,
                "times": times,
                "explains": ("underfit", "plateau") if low else ("regression", "plateau", "clipping"),
            },
        )
    ]


def _straight(log: RunLog) -> str | None:
    """'a slow, straight decline' when the curve (val, else train) falls slowly and has not bent, else None."""
    points = [(p.step, p.val_loss) for p in log.evals] or [(p.step, p.train_loss) for p in log.trains]
    points = [(s, v) for s, v in points if s > 0]
    if len(points) < NOISE_EVALS:
        return None
    mid = (points[0][0] + points[-1][0]) / 2
    first, second = [p for p in points if p[0] <= mid], [p for p in points if p[0] >= mid]
    if len(first) < 2 or len(second) < 2:
        return None
    r1, r2 = -_fit(*zip(*first))[0], -_fit(*zip(*second))[0]
    total = (points[0][1] - points[-1][1]) / points[0][1]
    if not (r1 > 0 and r2 >= STRAIGHT * r1 and total < SLOW):
        return None
    return (
        f"a slow, straight decline: {points[0][1]:.2f} → {points[-1][1]:.2f} ({-total:+.1%}) from step "
        f"{points[0][0]:,} to {points[-1][0]:,}, its second half falling at {r2 / r1:.0%} of the first half's rate"
    )


def underfit(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    log = curve.log
    last = next((p for p in reversed(log.evals) if log.train_at(p.step) is not None), None)
    if last is None or _fired(found, "overfit") or _fired(found, "regression"):
        return []  # a rising val is not a model that fails to fit
    train = log.train_at(last.step)
    ratio = (last.val_loss - train) / train if train > 0 else 0.0
    if abs(ratio) > OVERFIT_RATIO:
        return []
    seen, how = epochs_at(log, ctx, last.step)
    if seen is not None and seen >= UNDERFIT_EPOCHS:
        return [
            Finding(
                "underfit",
                "Underfitting: not even the training data is fit",
                f"after about {epochs(seen)} epochs ({how}), train {train:.2f} is within {abs(ratio):.0%} of val "
                f"{last.val_loss:.2f} at step {last.step:,}: a model that learns memorises a corpus seen this often",
                f"|val - train| / train <= {OVERFIT_RATIO} after {UNDERFIT_EPOCHS}+ epochs",
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
                f"|val - train| / train <= {OVERFIT_RATIO} with train flat (data size unknown: pass the data or "
                "--train-tokens to count epochs)",
                "low",
            )
        ]
    return []


def plateau(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    if _fired(found, "overfit") or _fired(found, "regression") or len(curve.val) < 3:
        return []
    s, v = _half(curve.steps, list(curve.val))
    fall, _ = decline(curve.steps, list(curve.val))
    level = float(np.mean(v))
    thr = PLATEAU_REL * level
    if curve.sigma is not None:
        # with noise measured, the fitted decline must be below the threshold by two standard errors: a curve that
        # falls is not called flat because noise bent one fit
        x = np.asarray(s, dtype=float)
        se = curve.sigma * (x[-1] - x[0]) / math.sqrt(float(np.sum((x - x.mean()) ** 2)))
        fires, sure, margin = fall + 2 * se < thr, "medium" if len(s) >= 6 else "low", f" (± {se:.3f}, from the noise)"
    else:
        fires, sure, margin = fall < thr, "low", f" (eval noise unmeasured: {len(curve.val)} evaluations in all)"
    if not fires:
        return []
    log = curve.log
    tf, tl = log.train_at(s[0]), log.train_at(s[-1])
    train = f"; train {tf:.2f} → {tl:.2f}" if tf is not None and tl is not None else ""
    spikes = ", with a spike between" if _spiked(found) else ""
    return [
        Finding(
            "plateau",
            f"Loss plateauing from step {s[0]:,} to {s[-1]:,}",
            f"val {v[0]:.2f} → {v[-1]:.2f} over {s[-1] - s[0]:,} steps ({len(s)} evaluations{spikes}); a line fitted "
            f"through them {_trend(fall)}{margin}{train}",
            f"fitted decline over the last half of the evaluations < {PLATEAU_REL:.0%} of the loss ({thr:.3f})"
            + (", by two standard errors" if curve.sigma is not None else ""),
            sure,
            data={"from": s[0], "to": s[-1]},
        )
    ]


def _trend(fall: float) -> str:
    """A fitted decline in words, at the precision it is printed."""
    shown = round(fall, 3)
    return f"falls {shown:.3f}" if shown > 0 else f"rises {-shown:.3f}" if shown < 0 else "is flat (0.000)"


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
    lr_finding = _fired(found, "learning_rate")
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
    stuck = _fired(found, "plateau")
    if stuck and not lr_finding and not _fired(found, "overfit"):
        return [
            Finding(
                "schedule",
                "Constant learning rate on a plateau",
                f"lr {lr:.2g} from the first step to the last, in range for the model, and val has stopped falling "
                "(the plateau above): a decay lets the last steps settle",
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
    stuck = _fired(found, "plateau") or _fired(found, "underfit")
    if share is None or share <= CONTEXT_SHARE or not stuck:
        return []
    if _fired(found, "baseline") or _fired(found, "learning_rate"):
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


def lora_capacity(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    if ctx.known("method") != "lora" or any(_fired(found, r) for r in ("baseline", "learning_rate", "overfit")):
        return []
    trains = curve.log.trains
    flat = decline([p.step for p in trains], [p.train_loss for p in trains])
    if flat is None or flat[0] >= PLATEAU_REL * trains[-1].train_loss:
        return []
    n, tokens = trainable(ctx), ctx.corpus.train_tokens if ctx.corpus else None
    if n is not None and tokens is not None and n >= tokens:
        return []  # an adapter with more parameters than the data has tokens is not short of capacity
    rank = ctx.known("lora.rank")
    sizes = f"; {n:,} adapter parameters for {tokens:,} training tokens" if n and tokens else ""
    return [
        Finding(
            "lora_capacity",
            "Train loss flat at a learning rate in range: LoRA capacity may be the limit",
            f"train fell only {flat[0]:.3f} over the last half of the run at LoRA rank {rank}{sizes}; a larger rank at "
            "the same LR (or full fine-tuning) tells",
            f"train's fitted decline < {PLATEAU_REL:.0%} of the loss with the LR in range and the start fine "
            "(LoRA Without Regret: low ranks fall behind full fine-tuning once the data outgrows them)",
            "low",
            data={"explains": ("plateau", "underfit")},
        )
    ]
