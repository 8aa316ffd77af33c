"""The result: summary.json, report.md and loss_curves.png beside the checkpoints, and the verdict.

Rendered from run records (:mod:`orchestrator.results.records`) and their comparison with
the control (:mod:`orchestrator.results.verdict`), so a finished sweep, a partly failed one
and one rebuilt from storage (``--report``) read the same.
"""

from __future__ import annotations

import io
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from contract.report import Report
from contract.spec import EvalProtocol
from contract.storage import is_s3
from orchestrator.folder import SUMMARY, ExperimentFolder
from orchestrator.results import seed_prior
from orchestrator.results.records import RunRecord, val_documents
from orchestrator.results.verdict import Comparisons, VariantResult, compare, read_with_sweep
from orchestrator.spec import ExperimentSpec, Plan, Run, differences, dir_name, value_at


@dataclass
class Results:
    folder: ExperimentFolder
    experiment: ExperimentSpec
    plan: Plan
    records: list[RunRecord]  # in the plan's order
    comparisons: Comparisons
    diagnosis: str = ""  # markdown: why each run won or lost (orchestrator.diagnose)
    follow_up: str | None = None  # file name of the next experiment's spec, written beside the report

    @property
    def protocol(self) -> EvalProtocol:
        return self.plan.evaluation

    @property
    def eval_tokens(self) -> int | None:
        """The val tokens every run is scored on; None before any run reported."""
        return next((r.eval_tokens for r in self.records if r.eval_tokens), None)

    def run(self, name: str) -> Run:
        return next(r for r in self.plan.runs if r.name == name)


def build(folder: ExperimentFolder, experiment: ExperimentSpec, plan: Plan, records: list[RunRecord]) -> Results:
    """Compare every variant with the control on the protocol's scoring documents, and each with its leave-one-out
    arms."""
    n_docs = val_documents(records)
    scoring = plan.evaluation.share(n_docs, "score") if n_docs else None
    doc_tokens = next((r.doc_tokens for r in records if r.doc_tokens), None)
    prior = seed_prior.prior(plan, experiment.control, doc_tokens)
    results = Results(folder, experiment, plan, records, compare(records, experiment.control, scoring, prior=prior))
    results.comparisons.ablate(leave_one_out(results))
    if experiment.follows is not None:
        read_with_sweep(results.comparisons, experiment.follows)
    return results


def leave_one_out(results: Results) -> list[tuple[VariantResult, VariantResult, list[str]]]:
    """Every (variant, another, the fields set back) where the other differs from the variant only in fields it sets
    back to the control's values: a leave-one-out arm, written by a confirm spec or built into a sweep whose
    options share a base (``long_context`` is ``lora_capacity`` with more context). An LR search's variants are
    left out: each is at its own chosen rate, so no other variant sets a change of its back alone."""
    control = results.comparisons.control
    if control is None:
        return []
    first = {v.variant: results.run(v.runs[0].run) for v in results.comparisons.variants}
    reference = first[control.variant]
    others = [v for v in results.comparisons.variants if not v.is_control and v.search is None and v.delta is not None]
    arms = [w for w in others if differences(first[w.variant], reference)]  # a variant that is the control is none
    pairs = []
    for v in others:
        for w in arms:
            if w is v:
                continue
            changes = differences(first[v.variant], first[w.variant])
            if changes and all(value_at(first[w.variant], p) == value_at(reference, p) for p in changes):
                pairs.append((v, w, list(changes)))
    return pairs


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _seeds(v: VariantResult) -> str:
    return ", ".join(str(r.seed) for r in v.runs)


def _mean(values: list[float | None]) -> float | None:
    kept = [x for x in values if x is not None]
    return float(np.mean(kept)) if kept else None


def _delta(v: VariantResult) -> str:
    if v.is_control:
        return "control" + (f" (seed sd {v.seed_std:.4f})" if v.seed_std is not None else "")
    if v.delta is None:
        return "-"
    d = v.delta
    return f"{d.mean:+.4f} [{d.ci95[0]:+.4f}, {d.ci95[1]:+.4f}]"


def _searched(v: VariantResult) -> str:
    """The LR search's columns: the chosen LR, and Δ against the control at its best LR."""
    s = v.search
    if s is None:
        return f"{_fmt(v.runs[0].lr, 'g')} | - |"
    lr = f"{s.chosen.lr:g} of {len(s.arms)}{' (edge)' if s.at_edge else ''}" if s.chosen else f"none of {len(s.arms)}"
    t = v.vs_tuned
    vs = "-" if t is None else f"{t.mean:+.4f} [{t.ci95[0]:+.4f}, {t.ci95[1]:+.4f}], p {v.vs_tuned_p_holm:.4f}"
    return f"{lr} | {vs} |"


def table(results: Results) -> str:
    """Markdown table of the variants: the control first, then by Δ (best first). With an LR search, each searched
    variant's chosen LR and its Δ against the control at its best LR."""
    searched = bool(results.plan.searches)
    head = (
        "| # | option | seeds | status | val at step 0 → compared | Δ vs control [95% CI, unadjusted] | p (Holm) | "
        + ("LR (chosen of arms) | Δ vs control at best LR [95% CI], p (Holm) | " if searched else "")
        + "compared at | clipped | grad-norm p90 | tok/s | MFU |"
    )
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for i, v in enumerate(results.comparisons.variants, 1):
        first = _mean([r.first_val_loss for r in v.runs])
        spread = f" ± {v.seed_std:.4f}" if v.seed_std is not None else ""
        steps = sorted({r.compared_step for r in v.runs if r.compared_step is not None})
        lines.append(
            f"| {i} | {v.variant} | {_seeds(v)} | {v.status} | {_fmt(first)} → {_fmt(v.compared_mean)}{spread} | "
            f"{_delta(v)} | "
            f"{'-' if v.p_holm is None else format(v.p_holm, '.4f')} | "
            + (f"{_searched(v)} " if searched else "")
            + f"{'/'.join(map(str, steps)) or '-'} | "
            f"{_fmt(_mean([r.clip_rate for r in v.runs]), '.0%')} | "
            f"{_fmt(_mean([r.grad_norm_p90 for r in v.runs]), '.3f')} | "
            f"{_fmt(_mean([r.tokens_per_s for r in v.runs]), ',.0f')} | {_fmt(_mean([r.mfu for r in v.runs]), '.1%')} |"
        )
    return "\n".join(lines)


def _tokens(run: Run, steps: int) -> int:
    return run.spec.data.batch_size * run.spec.data.block_size * steps


def search_cost(results: Results) -> dict[str, Any] | None:
    """Training tokens the sweep spent (pruned arms up to their rung), against the same sweep with one run per
    searched variant at its own full length (and no search of the control)."""
    plan = results.plan
    if not plan.searches:
        return None
    steps = {r.run: r.steps for r in results.records}
    spent = sum(_tokens(run, steps.get(run.name, 0)) for run in plan.runs)
    plain = sum(_tokens(run, run.spec.run.steps) for run in plan.runs if run.search is None) + sum(
        _tokens(results.run(s.runs[0]), results.run(s.runs[0]).spec.run.steps)
        for s in plan.searches
        if s.option != results.experiment.control
    )
    arms = sum(len(s.runs) for s in plan.searches)
    return {"tokens": spent, "plain_tokens": plain, "ratio": spent / plain if plain else None, "arms": arms}


def search_section(results: Results) -> list[str]:
    """report.md's account of each LR search: what it chose, what it pruned where, what to try next, what it cost."""
    rungs = {s.name: s.rungs for s in results.plan.searches}
    lines = ["## Learning-rate search", ""]
    for v in results.comparisons.variants:
        s = v.search
        if s is None:
            continue
        tried = ", ".join(f"{lr:g}" for lr in s.lrs)
        chosen = (
            f"chose lr {s.chosen.lr:g} ({s.chosen.run}) of {tried}, on the selection documents"
            if s.chosen
            else f"no arm of {tried} finished cleanly"
        )
        pruned = "; ".join(
            f"{n} pruned at rung {rungs[s.name].index(step) + 1 if step in rungs[s.name] else '?'} (step {step})"
            for step, n in s.pruned_at.items()
        )
        edge = f"; **at the edge of its range**: {s.edge_check}" if s.at_edge else ""
        lines.append(
            f"- **{s.name}**{' (the control at its best LR)' if v.option == results.experiment.control else ''}"
            f": {chosen}; {pruned or 'none pruned'}{edge}."
        )
    cost = search_cost(results)
    lines += [
        "",
        f"The search trained {cost['tokens']:,} tokens over {cost['arms']} arms and the other runs: "
        f"{cost['ratio']:.2f}x the {cost['plain_tokens']:,} of one run per option at its own LR.",
        "",
    ]
    return lines


def runs_table(records: list[RunRecord]) -> str:
    """Every run, seed by seed."""
    head = (
        "| run | status | steps | val first → final | best val (step) | compared (step) | final train "
        "| micro-batch × accumulation |"
    )
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in records:
        lines.append(
            f"| {r.run} | {r.status} | {r.steps}/{r.total_steps} | {_fmt(r.first_val_loss)} → {_fmt(r.final_val_loss)} "
            "| "
            f"{_fmt(r.best_val_loss)} ({r.best_step if r.best_step is not None else '-'}) | "
            f"{_fmt(r.compared_loss)} ({r.compared_step if r.compared_step is not None else '-'}) | "
            f"{_fmt(r.final_train_loss)} | "
            f"{r.micro_batch_size or '-'} × {r.accumulation_steps or '-'} |"
        )
    return "\n".join(lines)


def protocol_line(protocol: EvalProtocol, records: list[RunRecord]) -> str:
    tokens = next((r.eval_tokens for r in records if r.eval_tokens), None)
    docs = val_documents(records)
    compared = (
        "the final evaluation of each run, on all of them"
        if protocol.selection_fraction is None
        else f"each run's best evaluation, chosen on {protocol.selection_fraction:.0%} of them and scored on the rest"
    )
    return (
        f"Every run is scored on the same {f'{tokens:,}' if tokens else '?'} tokens of {docs or '?'} val documents, "
        "with a sliding window of "
        f"{protocol.context} tokens every {protocol.stride} (at least {protocol.context - protocol.stride} tokens of "
        "context). "
        f"Compared: {compared}. Δ is the option's loss minus the control's (below 0 is better), with a 95% "
        "paired-bootstrap interval over documents and seeds, for that comparison alone; p is Holm-corrected over "
        "all of them, and an option counts as distinguishable from the control only when both say so. A compared "
        "loss's ± is the sd of that variant's own seeds; the intervals count the seed noise pooled over every "
        "variant that ran several seeds, and a stored calibration of the control's configuration where there is one "
        "(the verdict gives it, with its interval)."
    )


def _fields(paths: list[str]) -> str:
    """Spec fields, a nested block's named once (optim.schedule for its kind, warmup_ratio and floor_ratio)."""
    return ", ".join(dict.fromkeys(".".join(p.split(".")[:2]) for p in paths))


def ablation_section(comparisons: Comparisons) -> list[str]:
    """What each change is worth: each option against its leave-one-out arms."""
    lines = [
        "## What each change is worth",
        "",
        "Each row compares an option with a variant that differs from it only in some of its changes, set back to "
        "the control's: Δ is what those changes are worth on top of the rest (below 0: they lower the loss), on the "
        "same documents and with the same seed noise as above; p is Holm-corrected over these rows.",
        "",
        "| option | against | changes set back | Δ [95% CI] | p (Holm) | |",
        "|---|---|---|---|---|---|",
    ]
    for x in comparisons.ablations:
        d = x.delta
        lines.append(
            f"| {x.variant} | {x.without} | {_fields(x.changes)} | {d.mean:+.4f} [{d.ci95[0]:+.4f}, "
            f"{d.ci95[1]:+.4f}] | {x.p_holm:.4f} | {x.effect} |"
        )
    return lines + [""]


def markdown(results: Results) -> str:
    experiment, records = results.experiment, results.records
    parts = [
        f"# Sweep `{experiment.name}`: which fix worked",
        "",
        results.comparisons.verdict.reason,
        "",
        table(results),
        "",
        protocol_line(results.protocol, records),
        "",
        "![val loss per option, and relative to the control](loss_curves.png)",
        "",
    ]
    if results.comparisons.ablations:
        parts += ablation_section(results.comparisons)
    if results.plan.searches:
        parts += search_section(results)
    if results.diagnosis:
        parts += ["## Why each run won or lost", "", results.diagnosis, ""]
    if results.follow_up:
        parts += [
            "## Next experiment",
            "",
            f"`{results.follow_up}` (beside this report) is the next sweep. Run it with:",
            "",
            f"    {follow_up_command(results)}",
            "",
        ]
    parts += ["## Every run", "", runs_table(records), ""]
    stopped = [r for r in records if r.reason]
    if stopped:
        parts += (
            ["## Runs that did not finish", ""] + [f"- **{r.run}** ({r.status}): {r.reason}" for r in stopped] + [""]
        )
    restarted = [r for r in records if r.restarts]
    if restarted:
        parts += [
            "## Restarts",
            "",
            "A restart resumes a run from its latest checkpoint (a lost worker or node, or a relaunch):",
            "",
        ]
        parts += [
            f"- **{r.run}** restarted at step {x['at_step']}: "
            f"node {(x['from_node'] or '?')[:8]} → {(x['to_node'] or '?')[:8]}"
            for r in restarted
            for x in r.restarts
        ] + [""]
    memory = [r for r in records if r.memory_fallback]
    if memory:
        parts += ["## Memory", ""] + [f"- **{r.run}**: {r.memory_fallback}" for r in memory] + [""]
    parts += ["## What each run changed", ""]
    parts += [f"- **{r.run}**: `{json.dumps(r.overrides)}`" for r in records]
    parts += ["", "## Best checkpoints", ""] + [f"- **{r.run}**: `{r.best_checkpoint or '-'}`" for r in records]
    take = results.comparisons.verdict.take
    parts += [
        "",
        "## Export",
        "",
        f"Export **{take}** as a standalone model (LoRA merged into the base, its tokenizer, a model card) that "
        "loads with `AutoModelForCausalLM.from_pretrained` alone:"
        if take
        else "Nothing was taken. To export a variant anyway as a standalone model, name it:",
        "",
        f"    {export_command(results)}",
    ]
    return "\n".join(parts) + "\n"


def summary(results: Results) -> dict[str, Any]:
    by_run = {r.run: v for v in results.comparisons.variants for r in v.runs}  # a search's other arms: not compared
    runs = []
    for r in results.records:
        v = by_run.get(r.run)
        runs.append({**r.summary(), "delta_vs_control": None if v is None or v.is_control else v.delta_json()})
    p = results.protocol
    return {
        "experiment": results.experiment.name,
        "control": results.experiment.control,
        "evaluation": {**p.model_dump(), "eval_tokens": results.eval_tokens},
        **results.comparisons.to_json(),
        "search_cost": search_cost(results),
        "follow_up_spec": results.follow_up,
        "runs": runs,
    }


def _val(report: Report) -> float | None:
    return report.val_loss


def _train(report: Report) -> float | None:
    return report.train_loss


def _mark(ax, point: tuple[float, float], status: str, color) -> None:
    ax.plot(*point, marker="X", markersize=12, color=color, markeredgecolor="black")
    ax.annotate(status.replace("_", " "), point, textcoords="offset points", xytext=(6, 6), fontsize=8, color=color)


def _curve(
    runs: list[RunRecord], of: Callable[[Report], float | None]
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) of one figure of the reports over the runs' evaluations at steps every run has."""
    series = [{h.step: value for h in r.reports if (value := of(h)) is not None} for r in runs]
    series = [s for s in series if s]
    if not series:
        return [], np.array([]), np.array([]), np.array([])
    steps = sorted(set.intersection(*(set(s) for s in series)))
    values = np.array([[s[t] for t in steps] for s in series])
    return steps, values.mean(0), values.min(0), values.max(0)


def plot(results: Results) -> bytes:
    """PNG: val loss per option (mean over seeds, band = min to max), train dashed; and Δ vs the control per
    step, with the compared evaluation's 95% interval as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = results.comparisons.variants
    base = results.comparisons.control
    panels = 1 + bool(base) + bool(results.plan.searches)
    fig, axes = plt.subplots(1, panels, figsize=(8 * panels if panels > 1 else 10, 6), dpi=110, squeeze=False)
    loss_ax = axes[0][0]
    colors = plt.get_cmap("tab10")
    base_steps, base_mean, _, _ = _curve(base.runs, _val) if base else ([], None, None, None)
    base_at = dict(zip(base_steps, base_mean)) if base else {}
    for i, v in enumerate(variants):
        color = "black" if v.is_control else colors(i % 10)
        steps, mean, low, high = _curve(v.runs, _val)
        t_steps, t_mean, _, _ = _curve(v.runs, _train)
        if len(t_steps):
            loss_ax.plot(t_steps, t_mean, linestyle="--", color=color, alpha=0.5, linewidth=1)
        if not len(steps):
            continue
        seeds = f", {len(v.runs)} seeds" if len(v.runs) > 1 else ""
        label = f"{v.variant} ({v.status}{seeds})"
        loss_ax.plot(steps, mean, marker="o", markersize=3, color=color, linewidth=1.8, label=label)
        if len(v.runs) > 1:
            loss_ax.fill_between(steps, low, high, color=color, alpha=0.15)
        if base and not v.is_control:
            rel = [(t, m - base_at[t]) for t, m in zip(steps, mean) if t in base_at]
            if rel:
                axes[0][1].plot(*zip(*rel), marker="o", markersize=3, color=color, linewidth=1.5, label=v.variant)
            compared = [r.compared_step for r in v.runs if r.compared_step is not None]
            if v.delta is not None and compared:
                d = v.delta
                axes[0][1].errorbar(
                    [np.mean(compared)],
                    [d.mean],
                    yerr=[[d.mean - d.ci95[0]], [d.ci95[1] - d.mean]],
                    fmt="s",
                    color=color,
                    capsize=5,
                    markersize=7,
                    markeredgecolor="black",
                )
        if v.status in ("early_stopped", "diverged", "failed"):
            _mark(loss_ax, (steps[-1], mean[-1]), v.status, color)
    loss_ax.set(
        xlabel="step",
        ylabel="loss (nats/token)",
        title=f"{results.experiment.name}: val (solid; band = seeds' range), train (dashed)",
    )
    loss_ax.grid(alpha=0.3)
    if loss_ax.get_legend_handles_labels()[0]:
        loss_ax.legend(fontsize=8)
    if base:
        ax = axes[0][1]
        ax.axhline(0, color="black", linewidth=0.8)
        noise = results.comparisons.noise
        if noise.measured:  # the seed noise the intervals count (a run's), as a band around 0
            ax.axhspan(-noise.sd, noise.sd, color="grey", alpha=0.2, label=f"seed noise counted, sd ±{noise.sd:.4f}")
        ax.set(
            xlabel="step",
            ylabel=f"val loss - {base.variant}",
            title="Δ vs the control (below 0 = better); squares: compared step, 95% CI",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if results.plan.searches:
        _lr_panel(axes[0][-1], variants, colors)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _lr_panel(ax, variants: list[VariantResult], colors) -> None:
    """Each search's arms: val loss on the selection documents at the arm's last evaluation, against its LR.
    Hollow: pruned at a rung (annotated with its step); a star: the arm chosen."""
    for i, v in enumerate(variants):
        s = v.search
        if s is None:
            continue
        color = colors(i % 10)
        points = [(a.lr, _last_val(a), a) for a in s.arms if _last_val(a) is not None]
        if not points:
            continue
        ax.plot([p[0] for p in points], [p[1] for p in points], color=color, linewidth=1, alpha=0.6, label=s.name)
        for lr, val, arm in points:
            pruned = arm.status == "pruned"
            ax.plot(lr, val, marker="o", markersize=6, color=color, markerfacecolor="none" if pruned else color)
            if pruned:
                ax.annotate(f"{arm.steps}", (lr, val), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if s.chosen is not None and _last_val(s.chosen) is not None:
            ax.plot(s.chosen.lr, _last_val(s.chosen), marker="*", markersize=16, color=color, markeredgecolor="black")
    ax.set_xscale("log")
    ax.set(
        xlabel="learning rate",
        ylabel="val loss (selection documents)",
        title="LR search: each arm at its last evaluation (hollow: pruned at that step; star: chosen)",
    )
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _last_val(r: RunRecord) -> float | None:
    vals = [h.val_loss for h in r.reports if h.val_loss is not None]
    return vals[-1] if vals else None


def follow_up_command(results: Results) -> str:
    """The command that runs the follow-up spec, from where the sweep was launched (a spec in a bucket is copied down
    first)."""
    folder = results.folder
    launch = f"python -m orchestrator.launch {folder.as_argument(results.follow_up)}"
    if not is_s3(folder.uri):
        return launch
    endpoint = f" --endpoint-url {folder.storage.endpoint_url}" if folder.storage.endpoint_url else ""
    return f"aws s3 cp {shlex.quote(folder.file(results.follow_up))} .{endpoint} && {launch}"


def export_command(results: Results) -> str:
    """The command that exports the verdict's take as a standalone model; ``--variant NAME`` when nothing was taken."""
    folder, take = results.folder, results.comparisons.verdict.take
    endpoint = f"AWS_ENDPOINT_URL={folder.storage.endpoint_url} " if folder.storage.endpoint_url else ""
    chosen = f"--out ./{dir_name(take)}-model" if take else "--variant NAME --out ./NAME-model"
    return f"{endpoint}python -m orchestrator.export {shlex.quote(folder.uri)} {chosen}"


def write(results: Results, extra: dict[str, bytes] | None = None) -> None:
    """Write summary.json, report.md, loss_curves.png (and ``extra`` files) into the experiment's folder."""
    results.folder.write_results(
        {
            SUMMARY: json.dumps(summary(results), indent=2).encode(),
            "report.md": markdown(results).encode(),
            "loss_curves.png": plot(results),
            **(extra or {}),
        }
    )
