"""Which fix worked, and how sure that is: variants pooled over seeds, each compared with the control.

"Take X" needs all of:
- every run of X completed, or was early-stopped cleanly (failed, diverged and
  unfinished runs are never taken);
- X's difference from the control is significant after Holm's correction across the
  options (paired bootstrap over documents and seeds, :mod:`orchestrator.results.stats`), with
  a 95% interval entirely below 0;
- X's gain is larger than the control's seed-to-seed spread (the standard deviation of
  the control's compared losses over its seeds).

Otherwise no fix is distinguishable from the control, and the verdict estimates what
would decide it: more val documents, more seeds, or nothing (an effect smaller than
seed noise).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from orchestrator.results import stats
from orchestrator.results.records import OK_STATUSES, RunRecord


@dataclass
class VariantResult:
    variant: str
    option: str
    runs: list[RunRecord]
    is_control: bool
    compared_mean: float | None  # mean over seeds of the compared loss
    seed_std: float | None  # over seeds (None with one seed)
    delta: stats.Comparison | None = None
    p_holm: float | None = None
    eligible: bool = False  # every run completed or was stopped cleanly

    @property
    def finished(self) -> list[RunRecord]:
        """The runs that count: for the control, only seeds that completed or stopped cleanly."""
        return [r for r in self.runs if r.status in OK_STATUSES] if self.is_control else self.runs

    @property
    def status(self) -> str:
        statuses = sorted({r.status for r in self.runs})
        return statuses[0] if len(statuses) == 1 else "/".join(statuses)

    @property
    def beats_control(self) -> bool:
        """Lower loss than the control beyond noise: significant after Holm's correction, with the interval below 0."""
        d = self.delta
        return d is not None and self.p_holm is not None and self.p_holm < stats.ALPHA and d.ci95[1] < 0

    def delta_json(self) -> dict[str, Any] | None:
        if self.delta is None:
            return None
        return {"mean": self.delta.mean, "ci95": list(self.delta.ci95), "p": self.delta.p, "p_holm": self.p_holm}


@dataclass
class Verdict:
    take: str | None  # a variant (an option, or one grid point of it), or None
    reason: str
    candidates: list[str] = field(default_factory=list)  # every variant that passed, best first
    seeds_needed: int | None = None  # when undecided: the seeds per option that would tell, if the effect is real


@dataclass
class Comparisons:
    variants: list[VariantResult]  # control first, then by delta (best first)
    control: VariantResult | None
    verdict: Verdict

    @property
    def answered(self) -> bool:
        """Whether the sweep could answer its question: the control finished and so did at least one fix
        (a verdict either way). Without a control in the plan, whether any run finished cleanly."""
        others = [v for v in self.variants if v is not self.control]
        if self.control is None:
            return any(v.eligible for v in others)
        finished = self.control.compared_mean is not None
        return finished and (not others or any(v.eligible and v.delta is not None for v in others))

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": asdict(self.verdict),
            "answered": self.answered,
            "control_seed_std": self.control.seed_std if self.control else None,
            "variants": [
                {
                    "variant": v.variant,
                    "option": v.option,
                    "runs": [r.run for r in v.runs],
                    "status": v.status,
                    "compared_mean": v.compared_mean,
                    "seed_std": v.seed_std,
                    "delta_vs_control": v.delta_json(),
                }
                for v in self.variants
            ],
        }


def group(records: list[RunRecord], control: str | None) -> list[VariantResult]:
    """Runs pooled by variant, in first-seen order."""
    by: dict[str, list[RunRecord]] = {}
    for r in records:
        by.setdefault(r.variant, []).append(r)
    out = []
    for variant, runs in by.items():
        v = VariantResult(
            variant=variant,
            option=runs[0].option,
            runs=runs,
            is_control=runs[0].option == control,
            compared_mean=None,
            seed_std=None,
            eligible=all(r.status in OK_STATUSES for r in runs),
        )
        losses = [r.compared_loss for r in v.finished if r.compared_loss is not None]
        v.compared_mean = float(np.mean(losses)) if losses else None
        v.seed_std = float(np.std(losses, ddof=1)) if len(losses) > 1 else None
        out.append(v)
    return out


def _docs(v: VariantResult) -> np.ndarray | None:
    rows = [r.doc_nll for r in v.finished if r.doc_nll is not None]
    return np.asarray(rows, dtype=float) if rows else None


def compare(
    records: list[RunRecord], control: str | None, scoring: list[bool] | None = None, resamples: int = stats.RESAMPLES
) -> Comparisons:
    """Group, compare every variant with the control, correct for multiple comparisons, and decide.

    ``scoring`` marks the val documents that score (the rest chose the compared evaluation).
    """
    variants = group(records, control)
    base = next((v for v in variants if v.is_control), None)
    others = [v for v in variants if v is not base]
    base_docs = _docs(base) if base else None
    if base_docs is not None:
        tokens = np.asarray(next(r.doc_tokens for r in base.runs if r.doc_tokens is not None), dtype=float)
        keep = np.asarray(scoring if scoring is not None else [True] * len(tokens), dtype=bool)
        for v in others:
            docs = _docs(v)
            ended_badly = any(r.status in ("failed", "diverged") for r in v.runs)  # their last evaluation means nothing
            if docs is not None and not ended_badly:
                v.delta = stats.paired_bootstrap(docs[:, keep], base_docs[:, keep], tokens[keep], resamples=resamples)
        compared = [v for v in others if v.delta is not None]
        for v, p in zip(compared, stats.holm([v.delta.p for v in compared])):
            v.p_holm = p
    others.sort(key=lambda v: (v.delta is None, v.delta.mean if v.delta else 0.0))
    ordered = ([base] if base else []) + others
    verdict = decide(base, others, control, int(np.sum(keep)) if base_docs is not None else 0)
    dropped = len(base.runs) - len(base.finished) if base else 0
    if dropped:
        verdict.reason += f" ({dropped} control seed(s) that did not finish cleanly are left out.)"
    return Comparisons(variants=ordered, control=base, verdict=verdict)


def decide(base: VariantResult | None, others: list[VariantResult], control: str | None, n_docs: int) -> Verdict:
    """The verdict, given the control and the other variants (compared, best first); ``n_docs`` is the number of
    scoring documents."""
    if control is None:
        return Verdict(
            None,
            "No control is named, so no fix can be judged against the current configuration; set `control:` to the "
            "option you run today.",
        )
    if base is None:
        return Verdict(
            None,
            f"The control **{control}** is not among these runs (left out by --only?), so no fix is compared with it; "
            "include it to get a verdict.",
        )
    if not others:
        return Verdict(None, f"Only the control **{control}** ran; add the fixes to compare as options.")
    if base.compared_mean is None:
        reason = base.runs[0].reason or "it produced no evaluation"
        return Verdict(
            None,
            f"The control **{control}** has no finished run ({reason}), so nothing can be compared with it; fix it and "
            "relaunch to resume.",
        )
    spread = base.seed_std
    passed = [v for v in others if _passes(v, spread)]
    if passed:
        best = passed[0]
        d = best.delta
        noise = (
            f"larger than the control's seed-to-seed spread ({spread:.4f})"
            if spread is not None
            else "the control ran with one seed, so seed spread was not measured (control_seeds: 1)"
        )
        return Verdict(
            best.variant,
            (
                f"Take **{best.variant}**: its loss is {-d.mean:.4f} below the control **{base.variant}** "
                f"({best.compared_mean:.4f} vs {base.compared_mean:.4f}; Δ {d.mean:+.4f}, 95% CI [{d.ci95[0]:+.4f}, "
                f"{d.ci95[1]:+.4f}], "
                f"p {d.p:.4f}, Holm-corrected {best.p_holm:.4f}), {noise}."
                + (f" Also distinguishable: {', '.join(v.variant for v in passed[1:])}." if len(passed) > 1 else "")
            ),
            [v.variant for v in passed],
        )
    return _undecided(base, others, spread, n_docs)


def _passes(v: VariantResult, spread: float | None) -> bool:
    return v.eligible and v.beats_control and (spread is None or -v.delta.mean > spread)


def _undecided(base: VariantResult, others: list[VariantResult], spread: float | None, docs: int) -> Verdict:
    """No fix is distinguishable: say so, and what would decide it."""
    contenders = [v for v in others if v.delta is not None and v.eligible]
    if not contenders:
        unfinished = ", ".join(f"{v.variant} ({v.status})" for v in others)
        return Verdict(None, f"No fix can be taken: none finished cleanly ({unfinished}); see why each stopped below.")
    best = contenders[0]
    d = best.delta
    measured = f"Δ {d.mean:+.4f} (95% CI [{d.ci95[0]:+.4f}, {d.ci95[1]:+.4f}], Holm-corrected p {best.p_holm:.3f})"
    if d.mean >= 0:
        return Verdict(
            None,
            f"No fix lowered the loss below the control **{base.variant}**: the best, **{best.variant}**, differs by "
            f"{measured}. Try other fixes.",
        )
    head = (
        f"No fix is distinguishable from the control **{base.variant}**. "
        f"The closest, **{best.variant}**, differs by {measured}"
    )
    gain = -d.mean
    if spread is not None and gain <= spread:
        return Verdict(
            None,
            head
            + f", less than the control's seed-to-seed spread ({spread:.4f}): a difference this small is seed noise "
            "at this scale, and more evaluation would not make it worth taking.",
        )
    need_docs = math.ceil(docs * (d.half_width / gain) ** 2) if docs else None
    seeds = len(best.runs)
    std = spread if spread is not None else 0.0
    need_seeds = math.ceil(2 * (1.96 * std / gain) ** 2) if std else None
    ways = []
    if need_docs and need_docs > docs:
        ways.append(f"about {need_docs} scoring val documents (now {docs}; raise data.val_fraction or add data)")
    if need_seeds and need_seeds > seeds:
        ways.append(f"about {need_seeds} seeds per option (now {seeds}; list run.seed, and raise control_seeds)")
    reason = head + (". If the effect is real, it would take " + " or ".join(ways) + " to tell." if ways else ".")
    return Verdict(None, reason, seeds_needed=need_seeds if need_seeds and need_seeds > seeds else None)
