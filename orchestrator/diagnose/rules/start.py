"""``baseline``: the starting point is wrong, judged before anything else is compared.

- The first loss (train or eval, whichever comes first; eval alone where train is on another scale) above
  ``BASELINE_FAR`` (1.5) times what the model scores on ordinary text. References: nanoGPT's README baselines, val loss
  on OpenWebText per GPT-2 BPE token: gpt2 3.12, gpt2-medium 2.84, gpt2-large 2.67, gpt2-xl 2.54; a local model's
  card (``pretraining.final_val_loss``: tiny-gpt2 3.49 on held-out Python docs). 1.5x is ours: another domain costs a
  pretrained model tenths of a nat (tiny-gpt2: 3.49 on its own text, 4.39 on the bundled Q&A corpus, 1.26x). No
  other family has a published figure on ordinary text in this table, so none is invented.
- Or, for any model, the first loss above a uniform guess over its vocabulary, ln V (the vocabularies in
  :mod:`.models`: ln 32000 = 10.37 Llama 2 and Mistral, ln 50257 = 10.82 GPT-2, ln 128256 = 11.76 Llama 3,
  ln 151936 = 11.93 Qwen2.5), or over the smallest of them when the model is unknown: a model that knows nothing
  scores ln V, so a start above it is worse than knowing nothing. A run from scratch starts there by design: a full
  (or unknown-method) run whose first loss, at its first steps, is within ``RANDOM_INIT`` of ln V (a random init's
  logits add a few tenths) is read as one and not judged; a LoRA run never is (its base is frozen and pretrained).

It is a problem that makes even a train-only log "not healthy" (``broken``) when the model is known to be pretrained
(LoRA, or a named model), and an observation (check it, it did no lasting harm) when three or more evaluations after
it are all below the uniform guess: the run recovered, as its val shows.
"""

from __future__ import annotations

import math

from orchestrator.diagnose.logs import RunLog
from orchestrator.diagnose.rules.base import Context, Finding, epochs, epochs_at, noted
from orchestrator.diagnose.rules.curve import Curve
from orchestrator.diagnose.rules.models import (
    LARGEST_VOCABULARY,
    SMALLEST_LARGE_VOCABULARY,
    parameters,
    reference,
    trainable,
    vocabulary,
)

BASELINE_FAR = 1.5
RANDOM_INIT = 0.5  # nats above or below ln V that a random init's first loss lands within (build-nanogpt: +0.13)
FIRST_STEPS = 10  # a from-scratch run's first loss is logged within its first steps


def from_scratch(log: RunLog, ctx: Context) -> str | None:
    """How the log shows a run from a random init (its first loss at a uniform guess, full or unknown method), or
    the configuration says so; None otherwise."""
    if ctx.known("model.init") == "random":
        return "the configuration trains from a random init"
    if ctx.known("method") == "lora" or not log.points:
        return None
    first = next((p for p in log.points if p.train_loss is not None or p.val_loss is not None), None)
    if first is None or first.step > FIRST_STEPS:
        return None
    loss = first.val_loss if first.val_loss is not None else first.train_loss
    vocab = vocabulary(ctx)
    guesses = [vocab.guess] if vocab else [math.log(SMALLEST_LARGE_VOCABULARY), math.log(LARGEST_VOCABULARY)]
    if min(guesses) - RANDOM_INIT <= loss <= max(guesses) + RANDOM_INIT:
        return f"its first loss, {loss:.2f} at step {first.step:,}, is a uniform guess over " + (
            f"its {vocab.size:,}-token vocabulary (ln = {vocab.guess:.2f})" if vocab else "a common LM vocabulary"
        )
    return None


def baseline(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    log, model = curve.log, ctx.model
    scratch = from_scratch(log, ctx)
    if scratch is not None:
        return []
    on_scale = noted(found, "scale") is None  # a train loss on another scale says nothing about the start
    candidates = [(p.step, 0, p.val_loss, "evaluation", p) for p in log.evals[:1]]
    candidates += [(p.step, 1, p.train_loss, "train loss", p) for p in log.trains[:1] if on_scale]
    if not candidates:
        return []
    _, _, loss, what, first = min(candidates, key=lambda c: c[:2])  # the earliest; an evaluation at the same step
    ref = reference(model) if model else None
    tokenizer = ctx.known("model.tokenizer")
    if ref is not None and tokenizer is not None and tokenizer != model:
        ref = None  # a loss per token of another tokenizer: nothing to compare with
    vocab = vocabulary(ctx)
    guess = vocab.guess if vocab else math.log(SMALLEST_LARGE_VOCABULARY)
    above_ref = ref is not None and loss / ref.loss > BASELINE_FAR
    if not above_ref and loss <= guess:
        return []
    at = "before any training" if first.step == 0 else f"after {first.step:,} steps of training"
    evidence = f"the first {what} (step {first.step:,}, {at}) is {loss:.2f} nats/token"
    if above_ref:
        evidence += (
            f", {loss / ref.loss:.1f}x the {ref.loss:.2f} that pretrained {model} scores on {ref.on} ({ref.source})"
        )
    if vocab:
        evidence += f"; a uniform guess over its {vocab.size:,} tokens scores {vocab.guess:.2f} ({vocab.source})"
    else:
        evidence += (
            f"; above a uniform guess over {SMALLEST_LARGE_VOCABULARY:,} tokens (ln = {guess:.2f}, the smallest common "
            "LM vocabulary: Llama 2's and Mistral's), so above any common LM's"
            if loss > guess
            else ""
        )
    last = log.trains[-1] if log.trains else None
    seen, how = epochs_at(log, ctx, log.points[-1].step)
    if above_ref and seen is not None and last is not None and seen >= 1:
        evidence += (
            f". By step {log.points[-1].step:,} the run has seen about {epochs(seen)} epochs ({how}) and train loss is "
            f"still {last.train_loss:.2f}: nothing is being learned"
        )
    if log.resumed:
        steps = ", ".join(f"step {s:,}" if s is not None else "an unnamed step" for s in log.resumed)
        evidence += f". The log resumes from a checkpoint at {steps}"
    later = [p.val_loss for p in log.evals if p.step > first.step or what == "train loss"]
    recovered = len(later) >= 3 and max(later) < guess and not above_ref
    if recovered:
        evidence += (
            f". It did no lasting harm: all {len(later)} evaluations after it are below the uniform guess "
            f"({min(later):.3g} to {max(later):.3g}); check the first steps all the same"
        )
    pretrained = ctx.known("method") == "lora" or model is not None
    trained, _ = epochs_at(log, ctx, first.step)
    sure = loss > guess or (ref is not None and loss / ref.loss >= 2) or (trained or 0) >= 1 or first.step > 0
    return [
        Finding(
            "baseline",
            "The starting point is wrong: "
            + ("the loss is far above what the pretrained model scores" if above_ref else "above a uniform guess")
            + (", and the run recovered" if recovered else ""),
            evidence,
            f"first loss > {BASELINE_FAR}x the model's reference loss"
            if above_ref
            else "first loss > ln(vocabulary size): worse than a model that knows nothing",
            "high" if sure and not recovered else "medium",
            problem=not recovered,
            data={
                "checks": _checks(ctx, log),
                "explains": ("underfit", "plateau"),
                "broken": pretrained and not recovered,
            },
        )
    ]


def _checks(ctx: Context, log: RunLog) -> list[str]:
    """What to verify in the training script before any sweep, most likely first."""
    model, ref = ctx.model, reference(ctx.model) if ctx.model else None
    named = f"{model!r}" if model else "the model"
    within = f"within {BASELINE_FAR}x of {ref.loss:.2f}" if ref else "a few nats, far below ln(vocabulary)"
    out = [
        f"weights: the model comes from `from_pretrained({named})`, not from a config (a config builds random "
        f"weights, which start near ln(vocabulary)); before any step, the loss on ordinary text should be {within}",
        f"tokenizer: `AutoTokenizer.from_pretrained({named})`; ids from another tokenizer are noise to the model",
        "labels and padding: labels are the input ids (the model shifts them itself, so shifting them again predicts "
        "the token after next); padded positions are -100 in labels and 0 in attention_mask (a model without a pad "
        "token that pads with EOS learns the padding)",
        "precision: fp16 overflows in the first steps show as a huge first loss that then recovers; bf16 avoids it",
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
