"""Which fix worked, and how sure that is: variants pooled over seeds, each compared with the control.

"Take X" needs all of:
- every run of X completed, or was early-stopped cleanly (failed, diverged, pruned and
  unfinished runs are never taken);
- X's difference from the control is significant after Holm's correction across every
  comparison made (paired bootstrap over documents, with seed noise added,
  :mod:`orchestrator.results.stats`), with a 95% interval entirely below 0;
- X's gain is larger than the seed noise (the run-to-run sd of the compared loss, pooled
  over the variants that ran several seeds);
- with an LR search of the control, X also beats "the control at its best LR" the same way,
  unless X is that row: a fix must be more than a better learning rate.

With an LR search, each searched variant is represented by its chosen arm: the one with
the lowest val loss on the selection documents (``evaluation.selection_fraction``), which
is then scored on the rest, so choosing and scoring never use the same tokens.

Otherwise no fix is distinguishable from the control, and the verdict estimates what
would decide it: more val documents, more seeds, or nothing (an effect smaller than
seed noise).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from orchestrator.results import stats
from orchestrator.results.records import OK_STATUSES, RunRecord

# At 3 degrees of freedom or fewer, the t draw's tail dominates the interval: on the default job's
# calibration, 3 df took lr_schedule among 6 options in 19% of configurations, 7 df in 57%.
FEW_DF = 3


@dataclass
class SearchResult:
    """One variant's LR search: its arms, and the one chosen on the selection documents."""

    name: str  # the variant searched: "current", "loose_clipping[grad_clip=2.0]"
    arms: list[RunRecord]  # by learning rate
    chosen: RunRecord | None  # None when no arm finished cleanly

    @property
    def lrs(self) -> list[float]:
        return [a.lr for a in self.arms]

    @property
    def at_edge(self) -> bool:
        """The chosen LR is the smallest or the largest tried: the best may lie outside the range."""
        return self.chosen is not None and self.chosen.lr in (min(self.lrs), max(self.lrs))

    @property
    def next_lrs(self) -> list[float] | None:
        """At the edge: the same ratios, centred (geometrically) on the chosen LR; the range to try next."""
        if not self.at_edge:
            return None
        centre = math.sqrt(min(self.lrs) * max(self.lrs))
        return [float(f"{self.chosen.lr * lr / centre:.3g}") for lr in self.lrs]

    @property
    def pruned_at(self) -> dict[int, int]:
        """Step of each rung -> arms pruned there."""
        return dict(sorted(Counter(a.steps for a in self.arms if a.status == "pruned").items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "chosen_lr": self.chosen.lr if self.chosen else None,
            "chosen_run": self.chosen.run if self.chosen else None,
            "at_edge": self.at_edge,
            "next_lrs": self.next_lrs,
            "pruned_at": {str(step): n for step, n in self.pruned_at.items()},
            "arms": [
                {
                    "run": a.run,
                    "lr": a.lr,
                    "status": a.status,
                    "steps": a.steps,
                    "selection_loss": a.selection_loss,
                    "compared_loss": a.compared_loss,
                }
                for a in self.arms
            ],
        }


@dataclass
class VariantResult:
    variant: str  # with an LR search, its chosen arm ("lora_capacity[lr=0.008]")
    option: str
    runs: list[RunRecord]
    is_control: bool
    compared_mean: float | None  # mean over seeds of the compared loss
    seed_std: float | None  # over seeds (None with one seed)
    delta: stats.Comparison | None = None
    p_holm: float | None = None
    eligible: bool = False  # every run completed or was stopped cleanly
    search: SearchResult | None = None  # the LR search it won; None when it was not searched
    vs_tuned: stats.Comparison | None = None  # against the control at its best LR (a searched fix)
    vs_tuned_p_holm: float | None = None

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
        return _beats(self.delta, self.p_holm)

    @property
    def beats_tuned_control(self) -> bool:
        return _beats(self.vs_tuned, self.vs_tuned_p_holm)

    def delta_json(self) -> dict[str, Any] | None:
        return _comparison_json(self.delta, self.p_holm)


def _beats(c: stats.Comparison | None, p_holm: float | None) -> bool:
    return c is not None and p_holm is not None and p_holm < stats.ALPHA and c.ci95[1] < 0


def _comparison_json(c: stats.Comparison | None, p_holm: float | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"mean": c.mean, "ci95": list(c.ci95), "p": c.p, "p_holm": p_holm}


@dataclass
class Verdict:
    take: str | None  # a variant (an option, one grid point of it, or a search's chosen arm), or None
    reason: str
    candidates: list[str] = field(default_factory=list)  # every variant that passed, best first
    seeds_needed: int | None = None  # when undecided: the seeds per option that would tell, if the effect is real


@dataclass
class Ablation:
    """An option against one that differs from it only in some of its changes set back to the control's (a
    leave-one-out arm): what those changes are worth on top of the rest."""

    variant: str
    without: str  # the variant with ``changes`` set back to the control's
    changes: list[str]  # the spec fields set back
    delta: stats.Comparison  # ``variant`` minus ``without``: below 0, the changes lower the loss
    p_holm: float | None = None

    @property
    def effect(self) -> str:
        """In words, judged as an option against the control is."""
        if _beats(self.delta, self.p_holm):
            return "they lower the loss"
        if self.p_holm is not None and self.p_holm < stats.ALPHA and self.delta.ci95[0] > 0:
            return "they raise it"
        return "not distinguishable"

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "without": self.without,
            "changes": self.changes,
            "delta": _comparison_json(self.delta, self.p_holm),
            "effect": self.effect,
        }


@dataclass
class Comparisons:
    variants: list[VariantResult]  # control first, then by delta (best first)
    control: VariantResult | None
    verdict: Verdict
    noise: stats.SeedNoise = field(default_factory=lambda: stats.SeedNoise(None, 0, []))
    scoring: np.ndarray | None = None  # [docs] bool: the val documents every comparison scores (None: no control)
    tokens: np.ndarray | None = None  # [docs]: each document's scored tokens
    ablations: list[Ablation] = field(default_factory=list)

    def between(self, a: VariantResult, b: VariantResult, resamples: int = stats.RESAMPLES) -> stats.Comparison | None:
        """``a`` against ``b`` as every variant is against the control: the same documents and seed noise."""
        if self.scoring is None or _ended_badly(b):
            return None
        return _bootstrap(a, _docs(b), self.scoring, self.tokens, self.noise, resamples)

    def ablate(self, pairs: list[tuple[VariantResult, VariantResult, list[str]]], resamples: int = stats.RESAMPLES):
        """Compare each (variant, the variant with ``changes`` set back, changes); p Holm-corrected over these."""
        found = [(a.variant, b.variant, changes, self.between(a, b, resamples)) for a, b, changes in pairs]
        self.ablations = [Ablation(a, b, changes, c) for a, b, changes, c in found if c is not None]
        for ablation, p in zip(self.ablations, stats.holm([x.delta.p for x in self.ablations])):
            ablation.p_holm = p

    @property
    def tuned_control(self) -> VariantResult | None:
        """The control at its best LR: its LR search's chosen arm (None without one)."""
        return next((v for v in self.variants if v.search is not None and v.option == _option(self.control)), None)

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
            "seed_noise": asdict(self.noise),
            "ablations": [x.to_json() for x in self.ablations],
            "variants": [
                {
                    "variant": v.variant,
                    "option": v.option,
                    "runs": [r.run for r in v.runs],
                    "status": v.status,
                    "compared_mean": v.compared_mean,
                    "seed_std": v.seed_std,
                    "delta_vs_control": v.delta_json(),
                    "delta_vs_tuned_control": _comparison_json(v.vs_tuned, v.vs_tuned_p_holm),
                    "lr_search": v.search.to_json() if v.search else None,
                }
                for v in self.variants
            ],
        }


def _option(v: VariantResult | None) -> str | None:
    return v.option if v is not None else None


def group(records: list[RunRecord], control: str | None) -> list[VariantResult]:
    """Runs pooled by variant, and an LR search's arms by search (represented by the chosen arm), in first-seen
    order."""
    by: dict[tuple[bool, str], list[RunRecord]] = {}
    for r in records:
        by.setdefault((r.search is not None, r.search or r.variant), []).append(r)
    out = []
    for (searched, key), runs in by.items():
        search = None
        if searched:
            arms = sorted(runs, key=lambda a: a.lr)
            ok = [a for a in arms if a.status in OK_STATUSES and a.selection_loss is not None]
            chosen = min(ok, key=lambda a: (a.selection_loss, a.lr)) if ok else None  # on the selection documents
            search = SearchResult(key, arms, chosen)
            runs = [chosen] if chosen else arms
        v = VariantResult(
            variant=search.chosen.variant if search and search.chosen else key,
            option=runs[0].option,
            runs=runs,
            is_control=runs[0].option == control and search is None,
            compared_mean=None,
            seed_std=None,
            eligible=all(r.status in OK_STATUSES for r in runs),
            search=search,
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
    """Group, compare every variant with the control (and every searched fix with the control at its best LR),
    correct for multiple comparisons, and decide.

    ``scoring`` marks the val documents that score (the rest chose the compared evaluation, and a search's arm).
    """
    variants = group(records, control)
    base = next((v for v in variants if v.is_control), None)
    others = [v for v in variants if v is not base]
    noise = stats.seed_noise(
        {
            v.variant: [r.compared_loss for r in v.runs if r.status in OK_STATUSES and r.compared_loss is not None]
            for v in variants
            if v.search is None
        }
    )
    tuned = next((v for v in others if v.search is not None and v.option == control), None)
    base_docs = _docs(base) if base else None
    keep = tokens = None
    if base_docs is not None:
        tokens = np.asarray(next(r.doc_tokens for r in base.runs if r.doc_tokens is not None), dtype=float)
        keep = np.asarray(scoring if scoring is not None else [True] * len(tokens), dtype=bool)
        for v in others:
            v.delta = _bootstrap(v, base_docs, keep, tokens, noise, resamples)
        if tuned is not None and tuned.delta is not None:
            for v in others:
                if v.search is not None and v is not tuned and v.delta is not None:
                    v.vs_tuned = _bootstrap(v, _docs(tuned), keep, tokens, noise, resamples)
        family = [(v, "p_holm", v.delta) for v in others if v.delta] + [
            (v, "vs_tuned_p_holm", v.vs_tuned) for v in others if v.vs_tuned
        ]
        for (v, attr, _), p in zip(family, stats.holm([c.p for _, _, c in family])):
            setattr(v, attr, p)
    others.sort(key=lambda v: (v.delta is None, v.delta.mean if v.delta else 0.0))
    ordered = ([base] if base else []) + others
    n_docs = int(np.sum(keep)) if keep is not None else 0
    verdict = decide(base, others, control, n_docs, noise, tuned)
    dropped = len(base.runs) - len(base.finished) if base else 0
    if dropped:
        verdict.reason += f" ({dropped} control seed(s) that did not finish cleanly are left out.)"
    return Comparisons(ordered, base, verdict, noise, keep, tokens)


def _ended_badly(v: VariantResult) -> bool:
    """A run of it failed or diverged: its last evaluation means nothing."""
    return any(r.status in ("failed", "diverged") for r in v.runs)


def _bootstrap(
    v: VariantResult,
    reference: np.ndarray | None,
    keep: np.ndarray,
    tokens: np.ndarray,
    noise: stats.SeedNoise,
    resamples: int,
) -> stats.Comparison | None:
    """``v``'s per-document losses against ``reference``'s [seeds, docs], on the ``keep`` documents."""
    docs = _docs(v)
    if docs is None or reference is None or _ended_badly(v) or (v.search is not None and v.search.chosen is None):
        return None
    return stats.paired_bootstrap(docs[:, keep], reference[:, keep], tokens[keep], noise, resamples)


def noise_text(noise: stats.SeedNoise) -> str:
    """The seed noise the intervals count, in words."""
    if noise.sd is None:
        return (
            "no variant ran two seeds that finished, so seed noise is not measured and the intervals count "
            "documents only: they are too narrow (raise control_seeds)"
        )
    return (
        f"the intervals count seed noise of sd {noise.sd:.4f} per run, pooled over the seeds of "
        f"{', '.join(noise.variants)} ({noise.df} degree{'s' if noise.df > 1 else ''} of freedom, a Student's t)"
    )


def _rests_on(v: VariantResult, base: VariantResult) -> str:
    n, m = len(v.finished), len(base.finished)
    alone = f" ({v.variant}'s own seed noise is unmeasured: the pooled one stands in)" if n == 1 else ""
    return f"It rests on {n} seed{'s' if n > 1 else ''} of {v.variant} and {m} of the control{alone}"


def _searched(v: VariantResult) -> str:
    if v.search is None:
        return ""
    s = v.search
    edge = ", at the edge of the range tried" if s.at_edge else ""
    return f" (at its best LR, {s.chosen.lr:g} of {len(s.arms)} tried{edge})"


def decide(
    base: VariantResult | None,
    others: list[VariantResult],
    control: str | None,
    n_docs: int,
    noise: stats.SeedNoise | None = None,
    tuned: VariantResult | None = None,
) -> Verdict:
    """The verdict, given the control and the other variants (compared, best first); ``n_docs`` is the number of
    scoring documents, ``noise`` the pooled seed noise and ``tuned`` the control at its best LR, if searched."""
    noise = noise or stats.SeedNoise(None, 0, [])
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
    tuned_compared = tuned is not None and tuned.delta is not None
    passed = [v for v in others if _passes(v, noise) and (not tuned_compared or v is tuned or v.beats_tuned_control)]
    if passed:
        best = passed[0]
        d = best.delta
        noise_rule = (
            f"larger than the seed noise (sd {noise.sd:.4f})"
            if noise.sd is not None
            else "with seed noise unmeasured (control_seeds: 1)"
        )
        reason = (
            f"Take **{best.variant}**{_searched(best)}: its loss is {-d.mean:.4f} below the control **{base.variant}** "
            f"({best.compared_mean:.4f} vs {base.compared_mean:.4f}; Δ {d.mean:+.4f}, 95% CI [{d.ci95[0]:+.4f}, "
            f"{d.ci95[1]:+.4f}], p {d.p:.4f}, Holm-corrected {best.p_holm:.4f}), {noise_rule}"
        )
        if tuned_compared and best is tuned:
            reason += (
                "; it is the control at its best LR, and no fix at its own best LR beats it: it was the learning rate"
            )
        elif tuned_compared:
            t = best.vs_tuned
            reason += (
                f"; it also beats the control at its best LR, **{tuned.variant}** (Δ {t.mean:+.4f}, 95% CI "
                f"[{t.ci95[0]:+.4f}, {t.ci95[1]:+.4f}], Holm-corrected p {best.vs_tuned_p_holm:.4f}), so it is more "
                "than a better learning rate"
            )
        reason += f". {_rests_on(best, base)}; {noise_text(noise)}."
        if len(passed) > 1:
            reason += f" Also distinguishable: {', '.join(v.variant for v in passed[1:])}."
        return Verdict(best.variant, reason, [v.variant for v in passed])
    return _undecided(base, others, noise, n_docs, tuned if tuned_compared else None)


def _passes(v: VariantResult, noise: stats.SeedNoise) -> bool:
    return v.eligible and v.beats_control and (noise.sd is None or -v.delta.mean > noise.sd)


def _undecided(
    base: VariantResult, others: list[VariantResult], noise: stats.SeedNoise, docs: int, tuned: VariantResult | None
) -> Verdict:
    """No fix is distinguishable: say so, and what would decide it."""
    contenders = [v for v in others if v.delta is not None and v.eligible]
    if not contenders:
        unfinished = ", ".join(f"{v.variant} ({v.status})" for v in others)
        return Verdict(None, f"No fix can be taken: none finished cleanly ({unfinished}); see why each stopped below.")
    best = contenders[0]
    d = best.delta
    measured = f"Δ {d.mean:+.4f} (95% CI [{d.ci95[0]:+.4f}, {d.ci95[1]:+.4f}], Holm-corrected p {best.p_holm:.3f})"
    tail = f" {_rests_on(best, base)}; {noise_text(noise)}."
    if d.mean >= 0:
        return Verdict(
            None,
            f"No fix lowered the loss below the control **{base.variant}**: the best, **{best.variant}**, differs by "
            f"{measured}. Try other fixes." + tail,
        )
    spread = noise.sd
    if tuned is not None and _passes(best, noise) and best is not tuned:
        t = best.vs_tuned
        return Verdict(
            None,
            f"**{best.variant}**{_searched(best)} beats the control **{base.variant}** by {measured}, but not the "
            f"control at its best LR, **{tuned.variant}** (Δ {t.mean:+.4f}, 95% CI [{t.ci95[0]:+.4f}, "
            f"{t.ci95[1]:+.4f}]), which is not distinguishable from the control either: no fix is more than a better "
            "learning rate, and the better learning rate is not yet distinguishable." + tail,
        )
    head = (
        f"No fix is distinguishable from the control **{base.variant}**. "
        f"The closest, **{best.variant}**, differs by {measured}"
    )
    gain = -d.mean
    if spread is not None and gain <= spread:
        return Verdict(
            None,
            head + f", less than the seed noise (sd {spread:.4f}): a difference this small is seed noise at this "
            "scale, and more evaluation would not make it worth taking." + tail,
        )
    seeds = len(best.runs)
    std = spread if spread is not None else 0.0
    # More documents shrink only the documents' share of the interval: the seed noise's stays.
    seed_half = stats.t_quantile(noise.df) * std * math.sqrt(1 / seeds + 1 / len(base.finished)) if std else 0.0
    doc_half = math.sqrt(max(d.half_width**2 - seed_half**2, 0.0))
    need_docs = (
        math.ceil(docs * (doc_half / math.sqrt(gain**2 - seed_half**2)) ** 2) if docs and gain > seed_half else None
    )
    need_seeds = math.ceil(2 * (1.96 * std / gain) ** 2) if std else None
    ways = []
    if need_docs and need_docs > docs:
        ways.append(f"about {need_docs} scoring val documents (now {docs}; raise data.val_fraction or add data)")
    if need_seeds and need_seeds > seeds:
        ways.append(f"about {need_seeds} seeds per option (now {seeds}; list run.seed, and raise control_seeds)")
    if noise.sd is not None and noise.df <= FEW_DF:
        ways.append(
            f"more seeds per variant (option_seeds, control_seeds; the seed noise rests on {noise.df} degree"
            f"{'s' if noise.df > 1 else ''} of freedom, and its own uncertainty widens every interval)"
        )
    reason = head + (". If the effect is real, it would take " + " or ".join(ways) + " to tell." if ways else ".")
    return Verdict(None, reason + tail, seeds_needed=need_seeds if need_seeds and need_seeds > seeds else None)
