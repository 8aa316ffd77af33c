"""From findings to what to do: root causes ranked, options prioritised, a markdown diagnosis and a runnable spec.

The diagnosis has the seed document's structure: observed issues, root causes ranked
by the evidence for them, options with their expected effect and risk, and what to
monitor. Each option is an override of the current configuration, so the emitted spec
runs the current configuration as the control beside one option per fix.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from orchestrator.diagnose.rules import Context, Finding


@dataclass(frozen=True)
class Cause:
    title: str
    explanation: str


CAUSES = {
    "lora_capacity": Cause(
        "LoRA capacity too low",
        "A low rank limits how far the adapters can move the model; GPT-2 fine-tuning often needs rank 16-32.",
    ),
    "learning_rate": Cause(
        "Learning rate and schedule",
        "A constant rate without warmup can destabilise the start and cannot anneal at the end; too low a rate "
        "converges slowly.",
    ),
    "batch": Cause(
        "Batch smaller than intended",
        "A smaller batch at the same learning rate means noisier gradients, which shows as val loss jumping between "
        "evaluations.",
    ),
    "context": Cause(
        "Block size too small",
        "Documents longer than a block are cut, so the model trains without the context that predicts their later "
        "tokens.",
    ),
    "clipping": Cause(
        "Gradient clipping too aggressive",
        "A clip that engages on most steps scales every update down: in effect a lower, uneven learning rate.",
    ),
    "overfitting": Cause(
        "Overfitting", "The model fits the training documents better and better while held-out loss does not follow."
    ),
}


@dataclass
class Option:
    key: str  # the option's name in the emitted spec
    title: str
    why: str
    expected: str
    risk: str
    overrides: dict[str, Any]
    causes: tuple[str, ...]


def _get(config: dict[str, Any], path: str) -> Any:
    """The value a run of ``config`` uses at ``path``: the emitted spec leaves out what the configuration does not
    state."""
    return Context(config).value(path)


def _lora(config: dict[str, Any], findings: list[Finding]) -> Option | None:
    if _get(config, "method") != "lora":
        return None
    rank, alpha, lr = _get(config, "lora.rank"), _get(config, "lora.alpha"), _get(config, "optim.lr")
    return Option(
        "lora_capacity",
        "Increase LoRA capacity (easiest, low risk)",
        f"more trainable parameters (rank {rank} → {rank * 2}) for the adapters to fit the data",
        "better convergence, more stable training",
        "low: twice the adapter parameters, still a small fraction of the model",
        {"lora": {"rank": rank * 2, "alpha": alpha * 2}, "optim": {"lr": lr * 2}},
        ("lora_capacity", "learning_rate"),
    )


def _schedule(config: dict[str, Any], findings: list[Finding]) -> Option | None:
    if _get(config, "optim.schedule.kind") != "constant":
        return None
    return Option(
        "lr_schedule",
        "Add a conservative learning-rate schedule (medium risk)",
        "a 5% warmup avoids early instability; a linear decay to half the peak lets the model settle",
        "smoother start, lower final loss",
        "medium: the peak is reached later and the end of the run trains slower",
        {"optim": {"schedule": {"kind": "warmup_linear", "warmup_ratio": 0.05, "floor_ratio": 0.5}}},
        ("learning_rate",),
    )


def _divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is at most ``limit`` (at least 1)."""
    return next(d for d in range(max(1, min(n, limit)), 0, -1) if n % d == 0)


def _batch(config: dict[str, Any], findings: list[Finding]) -> Option | None:
    finding = next((f for f in findings if f.rule == "batch"), None)
    if finding is None:
        return None
    intended = finding.data["intended"]
    micro = _divisor_at_most(intended, finding.data["actual"])  # no more per forward than fits today
    return Option(
        "restore_batch",
        "Restore the intended batch with gradient accumulation (low risk)",
        f"batch {intended} as intended, in micro-batches of {micro} that fit in memory: the same memory as now",
        "less noisy gradients: fewer val jumps",
        f"low: each step takes {intended // micro}x the forward passes",
        {"data": {"batch_size": intended}, "compute": {"micro_batch_size": micro}},
        ("batch",),
    )


def _context(config: dict[str, Any], findings: list[Finding]) -> Option | None:
    from contract.presets import n_positions

    block, batch = _get(config, "data.block_size"), _get(config, "data.batch_size")
    longest = n_positions(_get(config, "model.name")) or block * 2
    if block >= longest:
        return None  # the block is already the model's whole context
    micro = _divisor_at_most(batch, batch // 2)
    return Option(
        "long_context",
        "Increase block size (if memory allows)",
        f"block {block} → {min(block * 2, longest)}: more context per sequence, for Q&A pairs longer than a block",
        "better use of long documents",
        f"memory: up to twice the activations per sequence; micro-batches of {micro} keep the batch",
        {"data": {"block_size": min(block * 2, longest)}, "compute": {"micro_batch_size": micro}},
        ("context",),
    )


def _clipping(config: dict[str, Any], findings: list[Finding]) -> Option | None:
    finding = next((f for f in findings if f.rule == "clipping"), None)
    if finding is not None and finding.data.get("rate") == 0:
        return None  # never clipped: loosening it cannot change anything (the finding says so)
    clip = _get(config, "optim.grad_clip")
    if clip is None:
        return None
    p90 = finding.data.get("p90") if finding else None
    values = sorted({round(p90, 2), clip * 5}) if p90 and p90 > clip else [clip * 2, clip * 5]
    return Option(
        "loose_clipping",
        "Loosen gradient clipping (low risk)",
        f"max_norm {clip:g} → {' or '.join(f'{v:g}' for v in values)}"
        + (" (the 90th percentile of unclipped norms, as the tuning playbook advises)" if p90 and p90 > clip else ""),
        "larger effective updates where the clip engaged",
        "low: instability comes back if the clip was what held it",
        {"optim": {"grad_clip": values}},
        ("clipping",),
    )


def _full(config: dict[str, Any], findings: list[Finding]) -> Option | None:
    if _get(config, "method") != "lora":
        return None
    return Option(
        "full_finetune",
        "Try full fine-tuning (if model size allows; last resort)",
        "for a small model every weight can adapt, not only low-rank adapters",
        "the lowest loss of the options when LoRA capacity is what limits",
        "high: optimizer memory for every weight, and forgetting",
        {"method": "full", "lora": None, "optim": {"lr": _get(config, "optim.lr")}},
        ("lora_capacity",),
    )


BUILDERS: list[Callable[[dict[str, Any], list[Finding]], Option | None]] = [
    _lora,
    _schedule,
    _batch,
    _context,
    _clipping,
    _full,
]


def rank_causes(findings: list[Finding]) -> list[tuple[str, list[Finding]]]:
    """Causes with the findings that support them, most supported first (ties in the seed's order)."""
    support = {key: [f for f in findings if key in f.causes] for key in CAUSES}
    order = list(CAUSES)
    return sorted(((k, v) for k, v in support.items() if v), key=lambda kv: (-len(kv[1]), order.index(kv[0])))


def options(config: dict[str, Any], findings: list[Finding], notes: list[str] | None = None) -> list[Option]:
    """Every applicable fix that makes a valid run of ``config``, those for the best-supported causes
    first; full fine-tuning always last. A fix that would not validate goes to ``notes`` instead."""
    from orchestrator.spec import ExperimentSpec, SpecError, resolve_runs

    ranked = [k for k, _ in rank_causes(findings)]
    built = []
    for option in (b(config, findings) for b in BUILDERS):
        if option is None:
            continue
        try:
            resolve_runs(ExperimentSpec(base=config, options={option.key: option.overrides}))
        except (SpecError, ValueError) as err:
            if notes is not None:
                notes.append(f"not proposed: {option.key}, which would not make a valid run here ({err})")
            continue
        built.append(option)

    def priority(o: Option) -> tuple[int, int]:
        best = min((ranked.index(c) for c in o.causes if c in ranked), default=len(CAUSES))
        return (o.key == "full_finetune", best)

    return sorted(built, key=priority)


def markdown(title: str, findings: list[Finding], ctx: Context, opts: list[Option], notes: list[str]) -> str:
    """The diagnosis, in the seed's structure."""
    parts = [f"# Training diagnosis: {title}", "", "## Current Issues Observed", ""]
    if not findings:
        parts += [
            "No rule fired: the loss decreases without regressions, plateaus or fit problems the rules can see.",
            "",
        ]
    for i, f in enumerate(findings, 1):
        parts += [f"{i}. **{f.title}**: {f.evidence}", f"   - rule `{f.rule}`: {f.threshold}"]
    parts += ["", f"{len(findings) + 1}. **Current configuration**:"]
    parts += [f"   - {line}" for line in describe_config(ctx)] + [""]
    if notes:
        parts += ["Notes on the inputs:", ""] + [f"- {n}" for n in notes] + [""]
    parts += ["## Root Causes (ranked by evidence)", ""]
    causes = rank_causes(findings)
    for i, (key, support) in enumerate(causes, 1):
        parts += [
            f"### {i}. {CAUSES[key].title}",
            f"- {CAUSES[key].explanation}",
            f"- Evidence: {'; '.join(f.title.lower() for f in support)}",
            "",
        ]
    if not causes:
        parts += ["None indicated by the rules.", ""]
    parts += ["## Recommended Solutions (Prioritized)", ""]
    for i, o in enumerate(opts, 1):
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
    never = next((f for f in findings if f.rule == "clipping" and f.data.get("rate") == 0), None)
    if never:
        parts += [f"Not recommended: loosening gradient clipping. {never.evidence}.", ""]
    parts += ["## Monitoring Strategy", ""] + [f"{i}. {m}" for i, m in enumerate(monitoring(findings), 1)] + [""]
    return "\n".join(parts)


def describe_config(ctx: Context) -> list[str]:
    c = ctx.config
    if not c:
        return ["not given (pass --command, or a spec or sweep as SOURCE)"]
    method = ctx.value("method")  # ctx.get: only what the configuration states; ctx.value: what a run of it uses
    lines = [
        f"Method: {method}"
        + (f", LoRA rank {ctx.value('lora.rank')}, alpha {ctx.value('lora.alpha')}" if method == "lora" else "")
    ]
    batch = ctx.get("data.batch_size")
    if batch is not None:
        lines.append(
            f"Batch size: {batch}"
            + (f" (intended {ctx.intended_batch})" if ctx.intended_batch and ctx.intended_batch != batch else "")
        )
    for label, path in (
        ("Block size", "data.block_size"),
        ("Learning rate", "optim.lr"),
        ("Steps", "run.steps"),
        ("Model", "model.name"),
    ):
        if ctx.get(path) is not None:
            lines.append(f"{label}: {ctx.get(path)}")
    kind = ctx.value("optim.schedule.kind")
    lines.append(f"Schedule: {kind}" + (" (no scheduler, no warmup)" if kind == "constant" else ""))
    clip = ctx.value("optim.grad_clip")
    lines.append(f"Gradient clipping: {clip if clip is not None else 'off'}")
    return lines


def monitoring(findings: list[Finding]) -> list[str]:
    rules = {f.rule for f in findings}
    out = [
        "**Watch for loss increases**: the sweep's early stopping stops a run whose val loss rises above its best by "
        "more than min_delta; the report says which and when."
    ]
    out.append(
        "**Compare train vs val**: a gap above 10% of the train loss is overfitting; both high is underfitting"
        + (" (both are high now)." if "underfit" in rules else ".")
    )
    out.append(
        "**Check gradient norms**: the report's clip column is the share of steps clipped; 0% means loosening the clip "
        "cannot matter, >50% means it acts as a learning-rate cut."
    )
    out.append(
        "**Verify the learning rate**: with a schedule, `optim/lr` in TensorBoard should ramp up over the warmup, then "
        "decay."
    )
    out.append(
        "**Trust only differences the verdict calls distinguishable**: it compares every option to the control on the "
        "same tokens, with a confidence interval and the control's seed-to-seed spread."
    )
    return out


def emit_spec(name: str, config: dict[str, Any], opts: list[Option], last_val: float | None, source: str) -> str:
    """An experiment spec: the current configuration as base and control, one option per fix, as YAML with comments.

    Early stopping's min_delta is the regression rule's threshold, 1% of the last val loss.
    """
    spec: dict[str, Any] = {
        "name": name,
        "control": "current",
        "early_stopping": {
            "min_delta": round(max(0.01, 0.01 * last_val), 3) if last_val else 0.05,
            "patience": 1,
            "grace_evals": 1,
        },
        "base": copy.deepcopy(config),
        "options": {"current": {}, **{o.key: o.overrides for o in opts}},
    }
    body = yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=120)
    for o in opts:  # a comment above each option, as in specs/best.yaml
        body = body.replace(f"\n  {o.key}:", f"\n  # {o.title}: {o.why}\n  {o.key}:", 1)
    return (
        "# yaml-language-server: $schema=schema.json\n#\n"
        f"# Written by `python -m orchestrator.diagnose` from {source}.\n"
        "# The base is the current configuration, which is also the control; each option is one recommended fix.\n"
        f"#\n#   python -m orchestrator.launch {name}.yaml --dry-run\n\n" + body
    )
