"""From findings to what to do: causes ranked, one option per cause, the diagnosis as markdown and JSON, and a spec.

Each option changes one thing against the current configuration (an LR range at the
current rank, a rank at the current LR, ...), so the emitted spec runs the current
configuration as the control beside one arm per fix. Fixes that are not hypotheses
(restoring the intended batch, evaluating often enough to see val turn) go into the base,
so every arm, the control included, gets them and all compare at the same tokens per step.
A healthy run gets no option.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from orchestrator.diagnose.logs import RunLog
from orchestrator.diagnose.rules import (
    BASELINE_FAR,
    LORA_FACTOR,
    LR_BAND,
    Context,
    Curve,
    Finding,
    epochs,
    epochs_at,
    fmt_lr,
    healthy,
    logged_schedule,
    lr_prior,
    noted,
    rank_causes,
    reference,
    summary,
    trend_gain,
    val_size,
)
from orchestrator.spec import ExperimentSpec, SpecError, deep_merge, flatten, resolve_runs

WEIGHT_DECAY = 0.1  # GPT-3 and nanoGPT train with AdamW weight decay 0.1
LORA_DROPOUT = 0.1  # the LoRA paper's GPT-2 runs; QLoRA for models up to 13B
PATIENCE = 2  # one spike never stops a run
# A sweep's arms on a corpus this small separate within a few epochs; past 20, more steps mostly memorise it
# (common fine-tuning recipes run 1 to 5 epochs), and early stopping ends an arm that turns before that.
MAX_EPOCHS = 20
FEW_EPOCHS = 3  # fine-tuning recipes run 1 to 3 epochs (Stanford Alpaca 3; Unsloth's LoRA guide: 1-3)


@dataclass
class Option:
    key: str  # the option's name in the emitted spec
    title: str
    why: str
    expected: str
    risk: str
    overrides: dict[str, Any]
    cause: str  # the rule it answers

    def to_json(self) -> dict[str, Any]:
        return {"name": self.key, "changes": flatten(self.overrides), "why": self.why}


@dataclass
class Advice:
    options: list[Option]
    base: dict[str, Any] = field(default_factory=dict)  # applied to every arm, the control included
    base_why: list[str] = field(default_factory=list)
    early_stopping: dict[str, Any] = field(default_factory=dict)
    not_advised: list[str] = field(default_factory=list)


def _round(x: float) -> float:
    """One significant figure: learning rates are searched on a log scale."""
    return float(f"{x:.0e}")


def _divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is at most ``limit`` (at least 1)."""
    return next(d for d in range(max(1, min(n, limit)), 0, -1) if n % d == 0)


def _lr_range(f: Finding, ctx: Context, log: RunLog) -> list[Option]:
    method, prior = ctx.known("method"), lr_prior(ctx)
    lr = f.data.get("lr") or ctx.value("optim.lr")
    centre = prior.centre(method) if prior else lr * 10  # by the curve alone: upwards from where it is
    grid = sorted({_round(centre / LR_BAND), _round(centre), _round(centre * LR_BAND)})
    rank = f" at the current LoRA rank {ctx.value('lora.rank')}" if method == "lora" else ""
    against = (
        f"the prior's {fmt_lr(centre)} for {'LoRA' if method == 'lora' else 'full fine-tuning'} on {ctx.model}"
        if prior
        else "10x the current rate"
    )
    said = f"{f.data['times']} the prior" if "times" in f.data else "too low by the shape of its curve"
    return [
        Option(
            "lr_range",
            f"Search the learning rate{rank}",
            f"lr {fmt_lr(lr)} is {said}; {', '.join(fmt_lr(x) for x in grid)} span {LR_BAND}x either side of {against}"
            f"{rank}, with nothing else changed",
            "the rate at which this configuration learns; the best of the three brackets the optimum",
            "low: the top of the range may spike; early stopping ends a run that does",
            {"optim": {"lr": grid}},
            "learning_rate",
        )
    ]


def _overfit(f: Finding, ctx: Context, log: RunLog) -> list[Option]:
    out = []
    method, decay = ctx.known("method"), ctx.known("optim.weight_decay")  # None: the log does not say
    if decay is None or decay < WEIGHT_DECAY:
        out.append(
            Option(
                "weight_decay",
                f"Weight decay {WEIGHT_DECAY}",
                f"AdamW weight decay {decay if decay is not None else 'unknown (the log does not say)'} → "
                f"{WEIGHT_DECAY} (GPT-3's and nanoGPT's): "
                + (
                    "it shrinks the adapters, so the update stays closer to the pretrained model"
                    if method == "lora"
                    else "it shrinks the trained weights towards zero, the standard regulariser of AdamW training"
                ),
                "a later, lower val minimum",
                "low: too much slows learning",
                {"optim": {"weight_decay": WEIGHT_DECAY}},
                "overfit",
            )
        )
    dropout = ctx.known("lora.dropout") if method == "lora" else None
    if method in ("lora", None) and (dropout is None or dropout < LORA_DROPOUT):
        out.append(
            Option(
                "lora_dropout",
                f"LoRA dropout {LORA_DROPOUT}",
                f"dropout on the adapters' input {dropout if dropout is not None else 'unknown'} → {LORA_DROPOUT} (the "
                "LoRA paper's GPT-2 setting)"
                + ("; for full fine-tuning, raise the model's own dropout instead" if method is None else ""),
                "a smaller train-val gap",
                "low",
                {"lora": {"dropout": LORA_DROPOUT}},
                "overfit",
            )
        )
    kind, _, _ = logged_schedule(log)
    decays = (kind or "").endswith("decay") or ctx.known("optim.schedule.kind") == "warmup_linear"
    best = f.data["best_step"]
    per_epoch = _steps_per_epoch(log)
    if f.data.get("train_only") and per_epoch is not None:
        steps = math.ceil(FEW_EPOCHS * per_epoch)
        out.append(
            Option(
                "fewer_steps",
                f"Fewer epochs: {FEW_EPOCHS} (step {steps:,})",
                f"{FEW_EPOCHS} epochs, the most fine-tuning recipes run (Stanford Alpaca; Unsloth's guide: 1-3), not "
                f"the log's {log.points[-1].step / per_epoch:.0f}: past them the model learns its training answers",
                "the same generalisation, or better, for a fraction of the steps; evaluate to see which epoch wins",
                "low",
                {"run": {"steps": steps}},
                "overfit",
            )
        )
    elif decays and f.data["turned"]:  # with a constant LR, stopping at the best step is what early stopping does
        out.append(
            Option(
                "fewer_steps",
                f"Fewer epochs: end the run at step {best:,}",
                f"val was lowest at step {best:,}; a run that ends there also finishes its LR decay there, which early "
                "stopping alone does not give",
                "the best val of the run, with the schedule completed",
                "low",
                {"run": {"steps": best}},
                "overfit",
            )
        )
    return out


def _steps_per_epoch(log: RunLog) -> float | None:
    """Optimizer steps per epoch, from the log's own epoch count."""
    counted = [p for p in log.points if p.epoch]
    return counted[-1].step / counted[-1].epoch if counted else None


def _clipping(f: Finding, ctx: Context, log: RunLog) -> list[Option]:
    clip, p90 = ctx.value("optim.grad_clip"), f.data.get("p90")
    values = sorted({round(p90, 2), clip * 5}) if p90 and p90 > clip else [clip * 2, clip * 5]
    return [
        Option(
            "loose_clipping",
            "Loosen gradient clipping",
            f"max_norm {clip:g} clips {f.data['rate']:.0%} of steps → {' or '.join(f'{v:g}' for v in values)}"
            + (" (the 90th percentile of norms, as the tuning playbook advises)" if p90 and p90 > clip else ""),
            "the step size the LR asks for, where the clip cut it",
            "low: instability comes back if the clip was what held it",
            {"optim": {"grad_clip": values}},
            "clipping",
        )
    ]


def _schedule(f: Finding, ctx: Context, log: RunLog) -> list[Option]:
    if f.data["fix"] == "warmup":
        return [
            Option(
                "warmup",
                "Warm up over the first 5% of steps",
                "the early jump came at full LR from step 0; a warmup reaches the same LR after 5% of the run",
                "no early jump; the same LR after it",
                "low: the first 5% of steps train slower",
                {"optim": {"schedule": {"kind": "warmup_constant", "warmup_ratio": 0.05}}},
                "schedule",
            )
        ]
    return [
        Option(
            "lr_decay",
            "Decay the learning rate to a tenth",
            "a constant LR in range has stopped making progress; decaying to a tenth (nanoGPT, GPT-3) lets it settle",
            "a lower final loss",
            "low: the last steps move less",
            {"optim": {"schedule": {"kind": "warmup_linear", "warmup_ratio": 0.05, "floor_ratio": 0.1}}},
            "schedule",
        )
    ]


def _context(f: Finding, ctx: Context, log: RunLog) -> list[Option]:
    from contract.presets import n_positions

    block, batch = ctx.value("data.block_size"), ctx.value("data.batch_size")
    longest = n_positions(ctx.value("model.name")) or block * 2
    if block >= longest:
        return []  # the block is already the model's whole context
    micro = _divisor_at_most(batch, batch // 2)
    return [
        Option(
            "long_context",
            "Double the block size",
            f"block {block} → {min(block * 2, longest)}: {f.data['share']:.0%} of documents are cut now",
            "a few tenths of a nat at most: context is worth that much here",
            f"memory: twice the activations per sequence; micro-batches of {micro} keep the batch",
            {"data": {"block_size": min(block * 2, longest)}, "compute": {"micro_batch_size": micro}},
            "context",
        )
    ]


def _capacity(f: Finding, ctx: Context, log: RunLog) -> list[Option]:
    rank, lr, prior = ctx.value("lora.rank"), ctx.value("optim.lr"), lr_prior(ctx)
    full_lr = _round(prior.full if prior else lr / LORA_FACTOR)
    where = "full fine-tuning's prior for this model" if prior else f"LoRA's lr / {LORA_FACTOR} (LoRA Without Regret)"
    return [
        Option(
            "lora_rank",
            f"LoRA rank {rank * 2} at the same LR (one change: the rank)",
            f"rank {rank} → {rank * 2} with alpha unchanged: under alpha/r scaling the best LR barely moves with rank "
            "(LoRA Without Regret), so this arm tests capacity alone",
            "lower train loss if capacity is what limits",
            "low: twice the adapter parameters",
            {"lora": {"rank": rank * 2}},
            "lora_capacity",
        ),
        Option(
            "full_finetune",
            "Full fine-tuning at its own learning rate",
            f"every weight trains, at lr {full_lr:g} ({where}), not LoRA's",
            "the ceiling LoRA is measured against",
            "high: optimizer memory for every weight, and forgetting",
            {"method": "full", "lora": None, "optim": {"lr": full_lr}},
            "lora_capacity",
        ),
    ]


BUILDERS = {
    "learning_rate": _lr_range,
    "overfit": _overfit,
    "clipping": _clipping,
    "schedule": _schedule,
    "context": _context,
    "lora_capacity": _capacity,
}
# What overfitting must never be answered with: more capacity or bigger steps
NEVER_FOR_OVERFIT = ("lora_capacity", "clipping", "context")


def advise(ctx: Context, log: RunLog, findings: list[Finding], notes: list[str] | None = None) -> Advice:
    """Options for the ranked causes, the fixes every arm gets, and early stopping that tolerates the log's noise.

    An option that would not make a valid run of the configuration goes to ``notes`` instead."""
    advice = Advice(options=[], early_stopping=_early_stopping(log, findings))
    if healthy(findings):
        return advice
    overfitting = any(f.rule == "overfit" for f in findings)
    _base_fixes(advice, ctx, log, findings)
    base = deep_merge(ctx.config, advice.base)
    for cause, _ in rank_causes(findings):
        if overfitting and cause.rule in NEVER_FOR_OVERFIT:
            continue
        if cause.rule == "clipping" and any(
            f.rule == "learning_rate" and f.data["direction"] == "high" for f in findings
        ):
            continue  # the clip is what holds a too-high LR; the LR range comes first
        for option in BUILDERS.get(cause.rule, lambda *_: [])(cause, ctx, log):
            if ctx.config:
                try:
                    resolve_runs(ExperimentSpec(base=base, options={option.key: option.overrides}))
                except (SpecError, ValueError) as err:
                    if notes is not None:
                        notes.append(f"not proposed: {option.key}, which would not make a valid run here ({err})")
                    continue
            advice.options.append(option)
    if overfitting:
        advice.not_advised.append(
            "more LoRA rank, full fine-tuning or a looser clip: they add capacity or step size to a run that already "
            "fits its training data too well"
        )
    return advice


def _base_fixes(advice: Advice, ctx: Context, log: RunLog, findings: list[Finding]) -> None:
    """What every arm gets: the intended batch, evaluations frequent enough to see val turn, and no more epochs of
    a small corpus than the arms need to separate."""
    short = next((f for f in findings if f.rule == "batch"), None)
    if short is not None:
        intended, actual = short.data["intended"], short.data["actual"]
        micro = _divisor_at_most(intended, actual)  # no more per forward than fits today
        advice.base = deep_merge(
            advice.base, {"data": {"batch_size": intended}, "compute": {"micro_batch_size": micro}}
        )
        advice.base_why.append(
            f"batch {intended} as intended, in {intended // micro} micro-batches of {micro} (what fits today): a "
            "hardware fix, not a hypothesis, so every arm, the control included, trains at the intended tokens per step"
        )
    if not ctx.config or ctx.corpus is None or not ctx.corpus.train_tokens:
        return
    batch = ctx.value("data.batch_size") if short is None else short.data["intended"]
    per_epoch = ctx.corpus.train_tokens / (batch * ctx.value("data.block_size"))
    every = cadence = ctx.value("run.eval_every")
    if every > per_epoch and every > 1:
        cadence = max(1, math.floor(per_epoch))
        advice.base = deep_merge(advice.base, {"run": {"eval_every": cadence, "checkpoint_every": cadence}})
        advice.base_why.append(
            f"evaluate and checkpoint every {cadence} steps, about once an epoch ({ctx.corpus.train_tokens:,} training "
            f"tokens at {batch} x {ctx.value('data.block_size')} a step), not every {every} ({every / per_epoch:,.0f} "
            "epochs): so early stopping sees val turn, and the best checkpoint is kept"
        )
    steps = ctx.value("run.steps")
    # Never end the arms before an overfitting log's lowest val, and go a few evaluations past it: there the
    # sweep sees val turn, and the option that ends the run at that step stays the shorter one.
    turned = next((f.data["best_step"] for f in findings if f.rule == "overfit"), None)
    past_turn = turned + (PATIENCE + 1) * cadence if turned is not None else 0
    capped = max(math.ceil(MAX_EPOCHS * per_epoch), past_turn)
    if steps > capped:
        advice.base = deep_merge(advice.base, {"run": {"steps": capped}})
        advice.base_why.append(
            f"{capped:,} steps, about {capped / per_epoch:,.0f} epochs, not {steps:,} ({steps / per_epoch:,.0f} epochs "
            "of this corpus): "
            + (
                f"{PATIENCE + 1} evaluations past step {turned:,}, where val was lowest, so the sweep sees it turn"
                if capped == past_turn
                else "the arms separate within a few epochs, early stopping ends the ones that turn, and a winner's "
                "confirm run doubles the steps"
            )
        )


def _early_stopping(log: RunLog, findings: list[Finding]) -> dict[str, Any]:
    """Patience 2, so one spike never stops a run; min_delta above the eval noise the log shows (1% of the loss
    when it cannot be measured)."""
    last = log.evals[-1].val_loss if log.evals else None
    curve = Curve.of(log)
    measured = curve.threshold(float(min(curve.val)))[0] if curve.sigma is not None else 0.0
    floor = 0.01 * last if last else 0.05
    return {"min_delta": round(max(floor, measured), 3), "patience": PATIENCE, "grace_evals": 1}


# ------------------------------------------------------------------ the diagnosis, as markdown and JSON


def to_json(findings: list[Finding], advice: Advice, log: RunLog) -> dict[str, Any]:
    """The machine-readable diagnosis: healthy, findings, causes in rank order, options with dotted changes, and the
    curve's raw best and last evaluations."""
    return {
        "healthy": healthy(findings),
        "findings": [f.to_json() for f in findings],
        "causes": [{"rule": f.rule, "evidence": evidence} for f, evidence in rank_causes(findings)],
        "options": [o.to_json() for o in advice.options],
        "curve": summary(log),
    }


def _curve_lines(log: RunLog) -> list[str]:
    """The curve as logged: its best and last evaluations (raw), and the one estimate, named as one."""
    c = summary(log)
    if c["best_val_step"] is None:
        return [f"- {c['evaluations']} evaluation{'s' * (c['evaluations'] != 1)} of a loss or a selection metric."]
    lines = [
        f"- Best evaluation: `{c['metric']}` {c['best_val']:.6g} at step {c['best_val_step']:,}, as logged "
        f"({c['chosen_by']}); the last: {c['last_val']:.6g}; {c['evaluations']} evaluations."
    ]
    if c["eval_noise_sd_estimate"] is not None:
        lines.append(
            f"- Eval noise, estimated (not logged): sd {c['eval_noise_sd_estimate']:.4g} between evaluations around "
            "the trend; rises within 3 sd of the difference of two evaluations are not read as regressions."
        )
    return lines


def markdown(title: str, log: RunLog, findings: list[Finding], ctx: Context, advice: Advice, notes: list[str]) -> str:
    """The diagnosis, in the seed's structure: issues, causes, solutions, monitoring."""
    parts = [f"# Training diagnosis: {title}", ""]
    if log.reading is not None:
        parts += ["## What was read", "", *log.reading.markdown(), ""]
    parts += ["## The curve", "", *_curve_lines(log), ""]
    parts += ["## Current Issues Observed", ""]
    ok = healthy(findings)
    if ok:
        parts += [f"**The run is healthy.** {_keep_training(log, findings)}", ""]
    elif ok is None:
        parts += ["**The log cannot show whether the run is healthy**: see `evidence` below for what to log.", ""]
    for i, f in enumerate(findings, 1):
        parts += [
            f"{i}. **{f.title}**: {f.evidence}",
            f"   - rule `{f.rule}`, {f.confidence} confidence: {f.threshold}",
        ]
    parts += ["", f"{len(findings) + 1}. **Current configuration**:"]
    parts += [f"   - {line}" for line in describe_config(ctx, log)] + [""]
    if notes:
        parts += ["Notes on the inputs:", ""] + [f"- {n}" for n in notes] + [""]
    nonfinite = next((f for f in findings if f.rule == "numerics"), None)
    if nonfinite is not None:
        parts += ["## Before any sweep: make the numbers finite", ""]
        parts += [f"- {check}" for check in nonfinite.data["checks"]] + [""]
    start = next((f for f in findings if f.rule == "baseline"), None)
    if start is not None:
        parts += ["## Before any sweep: check the starting point", ""]
        parts += [f"- {check}" for check in start.data["checks"]]
        parts += [
            "- Every run of the emitted spec evaluates at step 0, before any training: if the control starts near the "
            "reference there, the model and data load correctly in plateau-sweep and the fault is in the script that "
            "wrote this log.",
            "",
        ]
    parts += ["## Root Causes (ranked by evidence)", ""]
    causes = rank_causes(findings)
    for i, (f, evidence) in enumerate(causes, 1):
        parts += [f"### {i}. {f.title} ({f.confidence} confidence)"] + [f"- {e}" for e in evidence] + [""]
    first = [what for what, f in (("make the numbers finite", nonfinite), ("check the starting point", start)) if f]
    if not causes and first:  # a cause ranked against others would be read from numbers these sections distrust
        parts += [f"None to rank until you {' and '.join(first)}: the sections above say how.", ""]
    elif not causes:
        parts += ["None: no rule found direct evidence of a cause." if not ok else "None: the run is healthy.", ""]
    parts += ["## Recommended Solutions (Prioritized)", ""]
    if ok:
        parts += [
            f"None: the run is healthy, and a sweep would compare fixes for nothing. {_keep_training(log, findings)}",
            "",
        ]
    elif ok is None and not advice.options:
        parts += ["None yet: log what `evidence` names, so the next log can show the run's health.", ""]
    elif not advice.options:
        parts += ["No option to compare: fix what the sections above name first.", ""]
    if advice.base_why:
        parts += ["Applied to every arm (the control included):", ""] + [f"- {w}" for w in advice.base_why] + [""]
    for i, o in enumerate(advice.options, 1):
        parts += [
            f"### Option {i}: {o.title}",
            f"**Why**: {o.why}",
            "",
            f"**Expected**: {o.expected}",
            "",
            f"**Risk**: {o.risk}",
            "",
            f"Spec option `{o.key}`: `{json.dumps(o.overrides)}`",
            "",
        ]
    overfit = next((f for f in findings if f.rule == "overfit"), None)
    if overfit is not None:
        best, where = overfit.data["best_step"], overfit.data.get("checkpoint")
        last = log.evals[-1].step if log.evals else None
        if overfit.data["turned"]:
            keep = f"keep the weights of step {best:,}" + (f" (`{where}`)" if where else "") + ", not the last"
        elif best is None:
            keep = (
                "the log has no eval loss, so evaluate on held-out data every epoch and keep the lowest-val checkpoint"
            )
        elif best == last:
            keep = f"val is still at its lowest (step {best:,}, the last evaluation), so evaluate often to see it turn"
        else:
            keep = f"val's lowest is at step {best:,}, not risen beyond noise since, so evaluate often to see it turn"
        parts += [
            f"**Early stopping at the best checkpoint**: {keep}; with --emit-spec, every arm stops when val turns and "
            "keeps its best checkpoint. More data is the other fix: the same epochs over more documents.",
            "",
        ]
    for line in advice.not_advised:
        parts += [f"Not recommended: {line}.", ""]
    never = next((f for f in findings if f.rule == "clipping" and not f.problem), None)
    if never and not ok:
        parts += [f"Not recommended: loosening gradient clipping. {never.evidence}.", ""]
    parts += ["## Monitoring Strategy", ""]
    parts += [f"{i}. {m}" for i, m in enumerate(monitoring(log, findings, ctx, advice), 1)] + [""]
    return "\n".join(parts)


def _keep_training(log: RunLog, findings: list[Finding]) -> str:
    flat = noted(findings, "plateau")
    if flat is not None:
        return (
            f"Val has converged (flat from step {flat.data['from']:,} to {flat.data['to']:,}): more steps of this "
            "configuration gain nothing measurable; keep the best checkpoint. Lower val needs more or better data, or "
            "another configuration."
        )
    gain = trend_gain(Curve.of(log))
    last = log.evals[-1].step if log.evals else None
    if gain is None or not last:
        return "Keep training."
    if gain < 0.001:
        return "Val has flattened: doubling the steps would gain nothing measurable if it stays linear in log(step)."
    kind, peak, _ = logged_schedule(log)
    stretch = (
        " (a new run with its schedule stretched to that length: this one's LR has decayed)"
        if kind is not None and kind.endswith("decay")
        else ""
    )
    return (
        f"Keep training: if val stays linear in log(step) as over the last half of the run, doubling to {2 * last:,} "
        f"steps{stretch} lowers it by about {gain:.3f} nats."
    )


def describe_config(ctx: Context, log: RunLog) -> list[str]:
    c = ctx.config
    lines = []
    if not c:
        lines.append("not given (pass --command, or a spec or sweep as SOURCE)")
    else:
        method = ctx.value("method")  # ctx.get: only what the configuration states; ctx.value: what a run of it uses
        lines.append(
            f"Method: {method}"
            + (f", LoRA rank {ctx.value('lora.rank')}, alpha {ctx.value('lora.alpha')}" if method == "lora" else "")
        )
        batch = ctx.get("data.batch_size")
        if batch is not None:
            lines.append(
                f"Batch size: {batch}"
                + (f" (intended {ctx.intended_batch})" if ctx.intended_batch and ctx.intended_batch != batch else "")
            )
        for label, path in (("Block size", "data.block_size"), ("Steps", "run.steps")):
            if ctx.get(path) is not None:
                lines.append(f"{label}: {ctx.get(path)}")
        model = ctx.get("model.name")
        if model is not None:
            ref = reference(model)
            lines.append(
                f"Model: {model}"
                + (
                    f" (reference loss {ref.loss:.2f} on {ref.on}, {ref.source})"
                    if ref
                    else " (no reference loss known)"
                )
            )
    _, _, logged = logged_schedule(log)
    if logged:
        lines.append(f"Learning rate (from the log): {logged}")
    elif c:
        kind = ctx.value("optim.schedule.kind")
        lines.append(
            f"Learning rate: {ctx.value('optim.lr'):g}, {kind}"
            + (" (no warmup, no decay)" if kind == "constant" else "")
        )
    if c:
        clip = ctx.value("optim.grad_clip")
        lines.append(
            f"Gradient clipping: {clip if clip is not None else 'off'}"
            + (
                ""
                if ctx.ours or ctx.get("optim.grad_clip") is not None
                else " (not stated; the emitted spec's default)"
            )
        )
    if ctx.corpus is not None:
        seen, _ = epochs_at(log, ctx, log.points[-1].step) if log.points else (None, "")
        lines.append(
            f"Data: {ctx.corpus.train_tokens:,} training tokens, {ctx.corpus.val_documents} val documents "
            f"({ctx.corpus.val_tokens:,} tokens)" + (f"; about {epochs(seen)} epochs by the last step" if seen else "")
        )
    return lines


def monitoring(log: RunLog, findings: list[Finding], ctx: Context, advice: Advice) -> list[str]:
    rules = {f.rule for f in findings}
    out = []
    if "baseline" in rules:
        ref = reference(ctx.model) if ctx.model else None
        out.append(
            "**Check the step-0 evaluation first**: the control's val loss before any step is the pretrained model's "
            f"on this data; within {BASELINE_FAR}x of {ref.loss:.2f} means the start is right, and nothing else in "
            "the report means much until it is."
            if ref
            else "**Check the step-0 evaluation first**."
        )
    if advice.options:
        es = advice.early_stopping
        out.append(
            f"**Watch for loss increases**: early stopping (patience {es['patience']}, min_delta {es['min_delta']}) "
            "stops a run whose val stays above its best by more than min_delta for two evaluations, so a single spike "
            "does not stop it; the report says which and when."
        )
    if "scale" in rules:
        out.append(
            "**Put train and val on one scale** before comparing them: see `scale` for the factor and its cause."
        )
    elif log.evals:
        out.append(
            "**Compare train vs val**: a gap above 10% of the train loss that grows is memorisation; train close to "
            "val after several epochs is underfitting."
        )
    if not log.grad_norms and log.clip_rate is None:
        out.append(
            "**Log gradient norms** (pre-clip, every step): this log has none, so clipping cannot be judged from it; "
            "the sweep's report has a clip column."
        )
    else:
        out.append(
            "**Check gradient norms**: the report's clip column is the share of steps clipped; 0% means loosening the "
            "clip cannot matter, >50% means it acts as a learning-rate cut."
        )
    if not any(p.lr is not None for p in log.points):
        out.append("**Log the learning rate** every step: this log has none, so only the configuration says what ran.")
    size = val_size(log, ctx)
    if size is not None:
        out.append(
            f"**Val set size**: {size[0]} documents ({size[1]:,} tokens); a few documents can move the mean by tenths "
            "of a nat, so read single-evaluation jumps as noise until a second evaluation agrees."
        )
    out.append(
        "**Trust only differences the verdict calls distinguishable**: it compares every option to the control on the "
        "same tokens, with a confidence interval and the control's seed-to-seed spread."
    )
    return out


def emit_spec(name: str, config: dict[str, Any], advice: Advice, source: str) -> str:
    """An experiment spec: the current configuration (with the fixes every arm gets) as base and control, one option
    per fix, as YAML with comments."""
    spec: dict[str, Any] = {
        "name": name,
        "control": "current",
        "early_stopping": advice.early_stopping,
        "base": deep_merge(config, advice.base),
        "options": {"current": {}, **{o.key: o.overrides for o in advice.options}},
    }
    body = yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=120)
    for o in advice.options:  # a comment above each option, as in specs/best.yaml
        body = body.replace(f"\n  {o.key}:", f"\n  # {o.title}: {o.why}\n  {o.key}:", 1)
    base = "".join(f"#   - {w}\n" for w in advice.base_why)
    return (
        "# yaml-language-server: $schema=schema.json\n#\n"
        f"# Written by `python -m orchestrator.diagnose` from {source}.\n"
        "# The base is the current configuration, which is also the control; each option changes one thing.\n"
        + (f"# Every arm, the control included, also gets:\n{base}" if base else "")
        + "# Every run evaluates at step 0, before training: the control's first val loss is the pretrained model's.\n"
        f"# Early stopping: patience {advice.early_stopping['patience']}, so one spike does not stop a run.\n"
        f"#\n#   python -m orchestrator.launch {name}.yaml --dry-run\n\n" + body
    )
