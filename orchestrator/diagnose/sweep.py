"""Diagnosis after a sweep of ours: why each run won or lost, in numbers, and the next experiment to run.

Read from what the sweep stored (each run's history, per-document losses and gradient
norms), so it runs at the end of every sweep and from ``python -m orchestrator.diagnose``
on a finished or running experiment. Each run's curve goes through the same rules as a
training log (:mod:`.rules`), with its data measured as the run read it (:mod:`.corpus`):
a winner that is memorising a small corpus is named, and its confirm run evaluates often
and keeps its best checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from orchestrator.diagnose.corpus import Corpus, corpus
from orchestrator.diagnose.logs import Point, RunLog
from orchestrator.diagnose.rules import Context, Finding, diagnose, fmt_lr, in_band
from orchestrator.results.records import RunRecord, val_documents
from orchestrator.results.stats import ALPHA
from orchestrator.results.verdict import CONFIRM_SEEDS, VariantResult
from orchestrator.spec import Run, deep_merge, differences, set_path


def run_log(record: RunRecord) -> RunLog:
    """A run of ours as a RunLog, with its per-document losses and per-step gradient norms."""
    points = [Point(r.step, r.train_loss, r.val_loss, r.lr, r.grad_norm) for r in record.reports]
    log = RunLog(
        name=record.run,
        points=points,
        source="plateau-sweep run",
        clip_rate=record.clip_rate,
        doc_tokens=record.doc_tokens,
    )
    for report in record.reports:
        log.grad_norms += [n for n in report.grad_norms if n is not None]
        if report.doc_nll and report.val_loss is not None:
            log.doc_losses.append((report.step, report.doc_nll))
        if report.data_longer_than_block is not None:
            log.longer_than_block = report.data_longer_than_block
    return log


def spec_dict(run: Run) -> dict[str, Any]:
    """A run's spec as a compact dict: what differs from the defaults (it validates back to the same spec)."""
    return run.spec.model_dump(mode="json", exclude_defaults=True)


def _value(v: Any) -> str:
    return "null" if v is None else "{...}" if isinstance(v, dict) else str(v)


def _change(diff: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {_value(v[1])} → {_value(v[0])}" for k, v in diff.items()) or "nothing (another seed)"


def _same_losses(a: VariantResult, b: VariantResult) -> bool:
    docs_a = [r.doc_nll for r in a.runs if r.doc_nll is not None]
    docs_b = [r.doc_nll for r in b.runs if r.doc_nll is not None]
    if not docs_a or len(docs_a) != len(docs_b):
        return False
    return all(np.allclose(x, y, rtol=0, atol=1e-6) for x, y in zip(docs_a, docs_b))


# What a run's "why" reports: its curve and its step size; hypotheses about its configuration (schedule, context,
# capacity) are the next sweep's question, not an explanation of this one
_WHY = ("baseline", "learning_rate", "overfit", "underfit", "regression", "plateau", "clipping")


def run_findings(results, record: RunRecord) -> list[Finding]:
    """The rules on one run's own curve, with the sweep's data measured as its runs read it."""
    run = results.run(record.run)
    return diagnose(run_log(record), Context(spec_dict(run), corpus=_corpus(run), ours=True))


def _corpus(run: Run) -> Corpus | None:
    return corpus(run.spec.model_dump(mode="json"))  # whole: the data path may be the default, left out of spec_dict


def sweep_diagnosis(results) -> str:
    """Markdown for report.md, one bullet per variant: what it changed, how it compared, and the rules that fired on
    its curve. A winner that is memorising is named as such."""
    runs = {r.name: r for r in results.plan.runs}
    comparisons = results.comparisons
    base = comparisons.control
    take = comparisons.verdict.take
    lines = []
    for v in comparisons.variants:
        first = runs[v.runs[0].run]
        if v.is_control:
            lead = f"**{v.variant}** (control)"
            spread = (
                f"seed-to-seed sd {v.seed_std:.4f} over {len(v.runs)} seeds" if v.seed_std is not None else "one seed"
            )
            body = [f"compared loss {v.compared_mean:.4f} ({spread})" if v.compared_mean is not None else "no result"]
            mention_unclipped = False
        else:
            diff = differences(first, runs[base.runs[0].run]) if base else {}
            lead = f"**{v.variant}** changes {_change(diff)}"
            body = [_outcome(v, base)]
            mention_unclipped = (
                "optim.grad_clip" in diff
            )  # "never clipped" matters only where the clip is what the run changes
            twin = next(
                (w for w in comparisons.variants if w is not v and not w.is_control and _same_losses(v, w)), None
            )
            if twin is not None:
                body.append(_twin_reason(v, twin, runs))
                mention_unclipped = False  # the twin's reason already says what the clip did
        r = v.runs[0]  # the curve of its first seed
        findings = [
            f
            for f in run_findings(results, r)
            if f.rule in _WHY and (f.problem or (f.rule == "clipping" and mention_unclipped))
        ]
        body += [f"{f.title[0].lower()}{f.title[1:]}: {f.evidence}" for f in findings]
        memorising = next((f for f in findings if f.rule == "overfit"), None)
        if v.variant == take and memorising is not None:
            body.append(
                f"the winner is memorising: its gain may not hold at more steps, so the follow-up evaluates every "
                f"{_confirm_cadence(runs[r.run])} steps, stops when val turns and keeps the best checkpoint"
            )
        usual = _usual_lr(findings, runs[r.run], results.plan.runs) if v.variant == take else None
        if usual is not None:
            body.append(
                f"its learning rate is outside the usual range, so the follow-up also runs it at {fmt_lr(usual)}, the "
                "prior's centre: a win that holds there does not rest on its unusual rate"
            )
        bundle = _bundle(runs[r.run], runs[base.runs[0].run], usual, v) if v.variant == take and base else {}
        if bundle:
            body.append(
                f"it makes {len(bundle)} changes at once ({', '.join(bundle)}), so the follow-up also runs it with "
                "each set back to the control's in turn: the confirm says which change carries the gain"
            )
        if r.memory_fallback:
            body.append(r.memory_fallback)
        lines.append(f"- {lead}: " + "; ".join(body) + ".")
    return "\n".join(lines)


def _usual_lr(findings: list[Finding], winner: Run, runs: list[Run]) -> float | None:
    """The learning rate a winner outside the usual range is confirmed at too: the prior's centre, else None.

    None also when the sweep already ran the winner's configuration within the usual range, differing only in its
    learning rate (an LR search's arms, a list of rates, or the control when the fix is the rate itself): what it
    measured there is better evidence than the prior, and an arm there would repeat it."""
    lr = next((f for f in findings if f.rule == "learning_rate" and f.problem and "centre" in f.data), None)
    if lr is None:
        return None
    centre = lr.data["centre"]
    if any(set(differences(r, winner)) <= {"optim.lr"} and in_band(r.spec.optim.lr, centre) for r in runs):
        return None
    return float(f"{centre:.2g}")


def _bundle(winner: Run, control: Run, usual: float | None, variant: VariantResult) -> dict[str, dict[str, Any]]:
    """The separate changes a winner makes to the control, when it makes more than one: change -> the override that
    sets it back to the control's (a leave-one-out ablation), else {}.

    A change is a section of the spec (``data``, ``lora``, ``model``), or one setting of ``optim`` (``lr``,
    ``schedule``, ``grad_clip``). A change of method takes its adapter and its learning rate with it: LoRA and full
    fine-tuning train at rates some 10x apart, so LoRA at a full fine-tune's rate would test neither. The learning
    rate is no change of its own when it is settled otherwise (the follow-up also runs the winner at the ``usual``
    rate, or an LR search chose the ``variant``'s), and ``run`` settings never are: they are the follow-up's to set.
    """
    rate_settled = usual is not None or variant.search is not None
    diff = differences(winner, control)
    changes: dict[str, dict[str, Any]] = {}
    for path, (_, value) in diff.items():
        section, _, rest = path.partition(".")
        if section == "run":
            continue
        if "method" in diff and (section == "lora" or path == "optim.lr"):
            change = "method"
        elif section == "optim":
            change = rest.split(".")[0]
            if change == "lr" and rate_settled:
                continue
        else:
            change = section
        set_path(changes.setdefault(change, {}), path.split("."), value)
    return changes if len(changes) > 1 else {}


# Below this many val documents a confirm does not split them into choosing and scoring halves: a few documents
# per half would make both the choice and the document bootstrap of the comparison noise.
SELECT_MIN_DOCUMENTS = 10
# The share of the val documents that chooses a memorising winner's best evaluation in its confirm: half, so that the
# choosing and the scoring halves have as many documents each (README, "Which evaluation is compared").
SELECTION_FRACTION = 0.5
# A confirm trains twice the steps: a gain that holds at twice the length is more than where the sweep stopped (the
# question a plateau asks), and early stopping still ends it where it turns.
CONFIRM_STEPS_FACTOR = 2
# A more-seeds spec runs the seeds the verdict estimated, at least CONFIRM_SEEDS; with no estimate (the seed noise
# was not measured) MORE_SEEDS, 4 degrees of freedom per variant, where the t's 97.5% point is 2.78 (4.30 at 2); and
# at most MAX_SEEDS: past 10, one more seed narrows the seed noise's share of an interval by under 5%.
MORE_SEEDS = 5
MAX_SEEDS = 10
# Patience of a memorising winner's confirm: one noisy evaluation never stops it (as the diagnosis advises for a
# log's own early stopping, orchestrator.diagnose.advice).
MEMORISING_PATIENCE = 2


def _confirm_cadence(run: Run) -> int:
    """How often a memorising winner's confirm run evaluates: as often as in the sweep, over twice the steps."""
    return run.spec.run.eval_every


def _outcome(v: VariantResult, base: VariantResult | None) -> str:
    r = v.runs[0]
    if v.status in ("failed", "diverged", "incomplete") or (r.reason and not v.eligible):
        return f"{v.status}: {r.reason}"
    prefix = f"early-stopped ({r.reason}); " if v.status == "early_stopped" else ""
    if v.delta is None or base is None:
        return prefix + "not compared (no control result)"
    d = v.delta
    interval = f"Δ {d.mean:+.4f} (95% CI [{d.ci95[0]:+.4f}, {d.ci95[1]:+.4f}], Holm p {v.p_holm:.4f})"
    if v.beats_control:
        return prefix + f"{interval}: lower loss than the control, beyond noise"
    if d.ci95[0] > 0 and v.p_holm is not None and v.p_holm < ALPHA:
        return prefix + f"{interval}: worse than the control"
    return (
        prefix
        + f"{interval}: not distinguishable from the control"
        + (f" (control seed sd {base.seed_std:.4f})" if base.seed_std is not None else "")
    )


def _twin_reason(v: VariantResult, twin: VariantResult, runs: dict[str, Run]) -> str:
    diff = differences(runs[v.runs[0].run], runs[twin.runs[0].run])
    if set(diff) == {"optim.grad_clip"}:
        rate = (
            min(r.clip_rate for r in v.runs + twin.runs if r.clip_rate is not None)
            if any(r.clip_rate is not None for r in v.runs + twin.runs)
            else None
        )
        p90 = max((r.grad_norm_p90 for r in v.runs + twin.runs if r.grad_norm_p90 is not None), default=None)
        if rate == 0:
            norms = f" (pre-clip norms p90 {p90:.3f}, below both thresholds)" if p90 is not None else ""
            return f"equals {twin.variant} exactly: clip rate 0%, so the clip never engaged{norms}"
    return f"equals {twin.variant} exactly: the setting it changes ({', '.join(diff)}) had no effect"


@dataclass
class FollowUp:
    name: str  # the file name, beside the report
    text: str


def follow_up_spec(results) -> FollowUp | None:
    """The next experiment: the winner confirmed with more steps and seeds; or, when nothing was
    distinguishable, the closest candidates with the seeds the verdict estimated. None without a control."""
    comparisons, experiment = results.comparisons, results.experiment
    base = comparisons.control
    if base is None or base.compared_mean is None:
        return None
    verdict = comparisons.verdict
    candidates = [v for v in comparisons.variants if not v.is_control and v.delta is not None and v.eligible]
    if verdict.take is not None:
        chosen = [next(v for v in candidates if v.variant == verdict.take)]
        seeds, steps_factor = CONFIRM_SEEDS, CONFIRM_STEPS_FACTOR
        why = f"confirm {verdict.take} with {steps_factor}x the steps and {seeds} seeds each"
        name = f"{experiment.name}-confirm"
    else:
        chosen = [v for v in candidates if v.delta.mean < 0][:2]
        if not chosen:
            return None
        seeds = min(max(verdict.seeds_needed or MORE_SEEDS, CONFIRM_SEEDS), MAX_SEEDS)
        steps_factor, why = 1, f"tell {', '.join(v.variant for v in chosen)} from the control with {seeds} seeds each"
        name = f"{experiment.name}-more-seeds"
    top = results.run(chosen[0].runs[0].run)
    control_run = results.run(base.runs[0].run)
    base_spec = spec_dict(top)
    base_spec.setdefault("run", {})["steps"] = top.spec.run.steps * steps_factor
    found = run_findings(results, chosen[0].runs[0]) if verdict.take is not None else []
    memorising = any(f.rule == "overfit" and f.problem for f in found)
    usual = _usual_lr(found, top, results.plan.runs)
    # a memorising winner keeps its evaluation interval over twice the steps, with a checkpoint at each, so early
    # stopping sees val turn and the best checkpoint is kept; otherwise both scale with the steps
    every = _confirm_cadence(top) if memorising else top.spec.run.eval_every * steps_factor
    base_spec["run"]["eval_every"] = every
    base_spec["run"]["checkpoint_every"] = every if memorising else top.spec.run.checkpoint_every * steps_factor
    base_spec["run"].pop("seed", None)
    early_stopping = experiment.early_stopping.model_dump()
    settings = {
        section: getattr(experiment, section).model_dump(exclude_defaults=True)
        for section in ("evaluation", "storage", "tracking")
    }
    if memorising:
        early_stopping.update(enabled=True, patience=max(MEMORISING_PATIENCE, early_stopping["patience"]))
        why += "; it is memorising, so every evaluation is checkpointed and early stopping keeps the best"
        # runs stopped at different steps, each past its best: scoring their last evaluations would compare
        # overfit points, and count the spread of the stopping steps as seed noise
        documents = val_documents(results.records)
        evaluation = settings["evaluation"]
        if evaluation.get("selection_fraction") is None and documents >= SELECT_MIN_DOCUMENTS:
            evaluation["selection_fraction"] = SELECTION_FRACTION
        if evaluation.get("selection_fraction") is not None:
            why += (
                f"; each run is compared at its best evaluation (chosen on {evaluation['selection_fraction']:.0%} of "
                "the val documents, scored on the rest)"
            )
        else:
            why += (
                f"; with {documents} val documents, too few to choose the best evaluation on some and score it on "
                "the others, each run is still compared at its last evaluation"
            )
    if usual is not None:
        why += (
            f"; its learning rate, {fmt_lr(top.spec.optim.lr)}, is outside the usual range, so it also runs at "
            f"{fmt_lr(usual)}, the prior's centre"
        )
    bundle = _bundle(top, control_run, usual, chosen[0]) if verdict.take else {}
    if bundle:
        why += (
            f"; it makes {len(bundle)} changes at once ({', '.join(bundle)}), so it also runs with each set back to "
            "the control's in turn, to say which change carries the gain"
            + (" (at both rates where it keeps its method)" if usual is not None else "")
        )
    control = base.variant  # the same name as in the sweep it follows, so the two reports read alike
    options: dict[str, Any] = {control: _overrides(control_run, top)}

    def rates(both_rates: bool) -> dict[str, Any]:
        """With a usual rate, two variants: the winner's rate, and the usual one (each on seeds of its own)."""
        return {"optim": {"lr": [top.spec.optim.lr, usual]}} if both_rates and usual is not None else {}

    for v in chosen:
        options[_option_name(v.variant)] = deep_merge(_overrides(results.run(v.runs[0].run), top), rates(True))
    for change, reverted in bundle.items():  # an arm that sets the method back takes the control's rate
        options[f"{_option_name(chosen[0].variant)}-without-{change}"] = deep_merge(
            reverted, rates("method" not in reverted)
        )
    spec = {
        "name": name,
        "control": control,
        "control_seeds": seeds,
        "option_seeds": seeds,
        **({"follows": _follows(results, chosen[0])} if verdict.take is not None else {}),
        "early_stopping": early_stopping,
        **{section: values for section, values in settings.items() if values},
        "base": base_spec,
        "options": options,
    }
    header = (
        f"# Follow-up to `{experiment.name}`, written with its report: {why}.\n"
        f"# The control is {base.variant} from that sweep; the base is {chosen[0].variant}.\n"
        f"#\n#   python -m orchestrator.launch {results.folder.as_argument(f'{name}.yaml')} --dry-run\n\n"
    )
    return FollowUp(f"{name}.yaml", header + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=120))


def _follows(results, taken: VariantResult) -> dict[str, Any]:
    """What the sweep took, for the confirm's verdict to read with its own (ExperimentSpec.follows)."""
    d = taken.delta
    return {
        "experiment": results.experiment.name,
        "take": taken.variant,
        "option": _option_name(taken.variant),
        "delta": [round(d.mean, 6), round(d.ci95[0], 6), round(d.ci95[1], 6)],
        "seeds": len(taken.finished),
        "provisional": results.comparisons.verdict.provisional,
    }


def _option_name(variant: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in variant).strip("_")


def _overrides(run: Run, base: Run) -> dict[str, Any]:
    """The nested override that turns ``base``'s spec into ``run``'s (seed excluded)."""
    out: dict[str, Any] = {}
    for path, (value, _) in differences(run, base).items():
        set_path(out, path.split("."), value)
    return out
