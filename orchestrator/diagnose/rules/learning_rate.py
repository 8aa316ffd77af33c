"""``learning_rate``: the LR that ran, judged against a prior for the model's size and the method, each prior with its
source; where none applies, the LR is not judged, and the diagnosis says so.

The LR judged: the configuration's, when the log's peak agrees with it within 2x (a log samples the schedule, so its
highest logged value sits a little under the set peak); else the log's peak (the log is what ran); else the
configuration's.

Priors, by size (:func:`.models.size`) and method:

- up to 1.5B parameters: a tenth of the model's pretraining peak for full fine-tuning (GPT-3 paper, Table 2.1, by size:
  6e-4 at 125M ... 2e-4 at 1.3B; Hugging Face Trainer's default 5e-5 for GPT-2 124M and nanoGPT's finetune_shakespeare
  3e-5 for gpt2-xl agree), and 10x that for LoRA (LoRA Without Regret, Thinking Machines 2025: LoRA's best LR is about
  10x full fine-tuning's, nearly independent of rank; the LoRA paper fine-tuned GPT-2 Medium and Large at 2e-4). A run
  from scratch is judged against the pretraining peak itself.
- 1.5B to 20B: LoRA and QLoRA 2e-4 (QLoRA paper, Dettmers et al. 2023, Appendix B: 2e-4 for 7B and 13B; alpaca-lora
  3e-4 for LLaMA-7B); full fine-tuning 2e-5 below 10B (Stanford Alpaca: 2e-5 for LLaMA-7B; Tulu 2, Ivison et al. 2023:
  2e-5 for 7B) and 1e-5 from 10B (Stanford Alpaca: 1e-5 for LLaMA-13B).
- above 20B: LoRA 1e-4 (QLoRA paper: 33B and 65B); full fine-tuning 1e-5 (Tulu 2: 70B).

The usual range is 3x either side of the centre; for the recipe priors (above 1.5B) it reaches down to a quarter
(Unsloth's LoRA hyperparameters guide: a typical range from 5e-5 up to its 2e-4 default). Outside it the rule fires;
10x outside is far. Or, with no prior, a slow (< 5%), straight (second half at 70%+ of the first half's rate) decline
fires it by the curve's shape alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from orchestrator.diagnose.logs import RunLog
from orchestrator.diagnose.rules.base import Context, Finding, fired, fit, fmt_lr, logged_schedule, spiked
from orchestrator.diagnose.rules.curve import NOISE_EVALS, Curve
from orchestrator.diagnose.rules.models import GPT2_REFERENCE, size
from orchestrator.diagnose.rules.start import from_scratch

# GPT-3 paper (Brown et al. 2020), Table 2.1: pretraining peak learning rate by model size
GPT3_LR = ((125e6, 6.0e-4), (350e6, 3.0e-4), (760e6, 2.5e-4), (1.3e9, 2.0e-4), (2.7e9, 1.6e-4), (6.7e9, 1.2e-4))
# Models whose own pretraining peak is known: tiny-gpt2 was built by scripts/build_tiny_preset.py at its --lr default
OWN_PRETRAINING_LR = {"tiny-gpt2": 2e-3}
FULL_FT_FRACTION = 0.1  # full fine-tuning's LR as a share of the pretraining peak
LORA_FACTOR = 10  # LoRA's best LR over full fine-tuning's (LoRA Without Regret)
LR_BAND, LR_FAR = 3, 10
RECIPE_BELOW = 4  # the recipe priors' range reaches down to a quarter of the centre (Unsloth's guide: 5e-5 to 2e-4)
TABLE_UP_TO = 1.5e9  # the GPT-3 table's rule up to its 1.3B row; published fine-tuning recipes above
STRAIGHT = 0.7  # a second half declining at 70%+ of the first half's rate has not bent
SLOW = 0.05  # and less than 5% over the whole run is slow
AGREE = 2  # the configuration's LR is what ran when the log's peak is within 2x of it


@dataclass(frozen=True)
class LrPrior:
    full: float  # the centre of full fine-tuning's range for this model
    basis: str  # where that centre comes from
    lora: float | None = None  # LoRA's centre where a recipe gives it; else LORA_FACTOR x full
    below: float = LR_BAND  # how far below the centre the usual range reaches

    def centre(self, method: str) -> float:
        if method != "lora":
            return self.full
        return self.lora if self.lora is not None else self.full * LORA_FACTOR

    def contains(self, lr: float, method: str) -> bool:
        ratio = lr / self.centre(method)
        return 1 / self.below <= ratio * (1 + 1e-9) and ratio <= LR_BAND * (1 + 1e-9)

    def describe(self, method: str) -> str:
        lo, hi = self.centre(method) / self.below, self.centre(method) * LR_BAND
        if method == "lora" and self.lora is None:
            return (
                f"{fmt_lr(lo)} to {fmt_lr(hi)} for LoRA: {LORA_FACTOR}x full fine-tuning's {fmt_lr(self.full)} "
                f"(LoRA Without Regret), itself {self.basis}"
            )
        return f"{fmt_lr(lo)} to {fmt_lr(hi)} for {'LoRA' if method == 'lora' else 'full fine-tuning'}: {self.basis}"


def lr_prior(ctx: Context, log: RunLog | None = None) -> LrPrior | None:
    """The LR prior for the run's model and method; None when its size is unknown or no source covers it."""
    model = ctx.model
    if model is None:
        return None
    scratch = ctx.known("model.init") == "random" or (log is not None and from_scratch(log, ctx) is not None)
    if model in OWN_PRETRAINING_LR:
        peak, what = OWN_PRETRAINING_LR[model], "its own pretraining peak"
    else:
        n = size(ctx)
        if n is None or n < GPT3_LR[0][0] / 2:
            return None  # no size, or smaller than any source: no prior to judge by
        if n > TABLE_UP_TO:
            return None if scratch else _recipe(n)
        row, peak = min(GPT3_LR, key=lambda r: abs(math.log(r[0] / n)))
        what = f"the pretraining peak of a {row / 1e6:,.0f}M model (GPT-3, Table 2.1)"
    if scratch:
        return LrPrior(peak, f"training from scratch at {what}, {fmt_lr(peak)}")
    return LrPrior(peak * FULL_FT_FRACTION, f"a tenth of {what}, {fmt_lr(peak)}")


def _recipe(n: float) -> LrPrior:
    """Published fine-tuning recipes for models above the GPT-3 table's rule (1.5B+)."""
    billions = f"{n / 1e9:.3g}B"
    if n <= 20e9:
        lora, lora_src = 2e-4, "the QLoRA paper's 2e-4 for 7B and 13B (alpaca-lora: 3e-4 for LLaMA-7B)"
    else:
        lora, lora_src = 1e-4, "the QLoRA paper's 1e-4 for 33B and 65B"
    if n < 10e9:
        full, full_src = 2e-5, "Stanford Alpaca's and Tulu 2's 2e-5 for 7B"
    else:
        full, full_src = 1e-5, "Stanford Alpaca's 1e-5 for LLaMA-13B and Tulu 2's for 70B"
    basis = f"for a {billions} model, LoRA {fmt_lr(lora)} ({lora_src}), full fine-tuning {fmt_lr(full)} ({full_src})"
    return LrPrior(full, basis, lora=lora, below=RECIPE_BELOW)


def in_band(lr: float, centre: float) -> bool:
    """Whether ``lr`` is within LR_BAND of the prior's ``centre`` (the usual range), its edges included."""
    ratio = lr / centre
    return 1 / LR_BAND <= ratio * (1 + 1e-9) and ratio <= LR_BAND * (1 + 1e-9)


def lr_that_ran(log: RunLog, ctx: Context) -> tuple[float | None, str]:
    """(lr, where it was read): the configuration's when the log agrees with it, else the log's peak."""
    _, peak, _ = logged_schedule(log)
    stated = ctx.known("optim.lr")
    if stated is not None and peak is not None and 1 / AGREE <= peak / stated <= AGREE:
        return stated, f"the configuration; the log's highest logged value is {fmt_lr(peak)}"
    if peak is not None:
        return peak, "its logged peak"
    return stated, "the configuration"


def not_judged(ctx: Context, log: RunLog) -> str | None:
    """Why the LR is not judged against a prior, when it is not (for the diagnosis's notes)."""
    lr, _ = lr_that_ran(log, ctx)
    if lr is None or ctx.known("method") not in ("lora", "full", None) or lr_prior(ctx, log) is not None:
        return None
    if ctx.model is None:
        return f"the LR ({fmt_lr(lr)}) is not judged against a prior: the model is not named (MODEL_TYPE)"
    return f"the LR ({fmt_lr(lr)}) is not judged against a prior: no published figure covers {ctx.model} (size unknown)"


def learning_rate(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    log, method = curve.log, ctx.known("method")
    lr, where = lr_that_ran(log, ctx)
    prior = lr_prior(ctx, log) if method in ("lora", "full") else None
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
        return [
            Finding(
                "learning_rate",
                "Learning rate too low, by the shape of the curve",
                f"lr {lr:.2g} ({where}); {shape}{grads}; no prior covers this model, so the rate is not judged "
                "against one",
                f"a straight decline (second half at {STRAIGHT:.0%}+ of the first half's rate) of under {SLOW:.0%}",
                "low",
                data={"direction": "low", "explains": ("underfit", "plateau")},
            )
        ]
    centre = prior.centre(method)
    ratio = lr / centre
    if prior.contains(lr, method):
        return []
    low = ratio < 1
    far = ratio <= 1 / LR_FAR or ratio >= LR_FAR
    blown = any(f.rule == "numerics" and f.data.get("broken") for f in found)
    unstable = bool(fired(found, "regression") or spiked(found) or fired(found, "clipping") or blown)
    sure = "high" if far or (shape if low else unstable) else "medium"
    times = f"{1 / ratio:.0f}x below" if low else f"{ratio:.0f}x above"
    evidence = (
        f"{'LoRA' if method == 'lora' else 'full fine-tuning'} at lr {fmt_lr(lr)} ({where}) is {times} the "
        f"{fmt_lr(centre)} centre of the prior for {ctx.model}, {prior.describe(method)}{grads}"
    )
    if low and shape:
        evidence += f"; the curve agrees: {shape}"
    if not low and blown:
        evidence += "; the curve agrees: the loss blew up (numerics)"
    if low and method == "lora" and ctx.model.removeprefix("openai-community/") in GPT2_REFERENCE:
        evidence += "; the LoRA paper fine-tuned GPT-2 Medium and Large at 2e-4"
    return [
        Finding(
            "learning_rate",
            f"Learning rate {'far ' if far else ''}{'below' if low else 'above'} the usual range",
            evidence,
            f"lr outside the prior's usual range ({prior.describe(method).split(':')[0]}; {LR_FAR}x from its centre: "
            "far)",
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
    if len(points) < NOISE_EVALS or points[0][1] <= 0:
        return None
    mid = (points[0][0] + points[-1][0]) / 2
    first, second = [p for p in points if p[0] <= mid], [p for p in points if p[0] >= mid]
    if len(first) < 2 or len(second) < 2:
        return None
    r1, r2 = -fit(*zip(*first))[0], -fit(*zip(*second))[0]
    total = (points[0][1] - points[-1][1]) / points[0][1]
    if not (r1 > 0 and r2 >= STRAIGHT * r1 and total < SLOW):
        return None
    return (
        f"a slow, straight decline: {points[0][1]:.2f} → {points[-1][1]:.2f} ({-total:+.1%}) from step "
        f"{points[0][0]:,} to {points[-1][0]:,}, its second half falling at {r2 / r1:.0%} of the first half's rate"
    )
