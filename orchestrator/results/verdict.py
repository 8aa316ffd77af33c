"""Which fix worked, and how sure that is: variants pooled over seeds, each compared with the control.

"Take X" needs all of:
- every run of X completed, or was early-stopped cleanly (failed, diverged, pruned and
  unfinished runs are never taken);
- seed noise that is measured: at least ``stats.MIN_DF`` degrees of freedom, from the runs'
  own seeds or a stored calibration of the control's configuration that stands in
  (:mod:`orchestrator.results.seed_prior`); the document bootstrap alone never takes;
- X's difference from the control is significant after Holm's correction across every
  comparison made (paired bootstrap over documents, with seed noise added,
  :mod:`orchestrator.results.stats`), with its interval entirely below 0;
- X's gain is larger than the seed noise of the difference, the sd that seed noise gives
  X's mean over its seeds minus the control's over its own;
- with an LR search of the control, X also beats "the control at its best LR" the same way,
  unless X is that row: a fix must be more than a better learning rate.

A take that rests on one seed of X assumes X's seed noise is the control's. It is checked
with X's seed variance at ``VARIANCE_RATIO`` times the control's: if it still holds the
verdict says so; if not, the take is provisional until its confirm spec (3 seeds of X)
agrees, and that confirm's verdict reads the two together (:func:`read_with_sweep`).

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
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestrator.results import stats
from orchestrator.results.records import OK_STATUSES, RunRecord

if TYPE_CHECKING:
    from orchestrator.spec.experiment import FollowsSpec

# At 3 degrees of freedom or fewer, the t draw's tail dominates the interval: on the default job's
# calibration, 3 df took lr_schedule among 6 options in 19% of configurations, 7 df in 57%.
FEW_DF = 3
# A one-seed option's seed variance, against the control's, that its take must survive to be more than provisional.
# The real options of the default job spread by 1.0-1.5x the control's sd over 4 seeds (issue 33's review), and at 2x
# the sd the one-seed interval covered 0 in 92.4% of A/A configurations: a variance ratio of 2 (sd 1.41x) is the
# spread those options showed, not the worst case.
VARIANCE_RATIO = 2.0
# Seeds of each variant in a confirm spec (orchestrator.diagnose.sweep): the fewest with which a variant measures its
# own seed noise on stats.MIN_DF degrees of freedom, so that a take that rested on one seed meets its own spread.
CONFIRM_SEEDS = stats.MIN_DF + 1
# Seeds of an LR search's edge arm before a new range is worth recommending: with 4 equal arms a one-seed pick lands
# on an edge half the time (2 edges of 4), so an edge on one seed is as likely chance as a sign (issue 33's review).
EDGE_SEEDS = 2


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
    def edge_check(self) -> str | None:
        """At the edge: what to run before moving the range (the chosen arm ran one seed)."""
        if not self.at_edge:
            return None
        side = "higher" if self.chosen.lr == max(self.lrs) else "lower"
        return (
            f"run lr {self.chosen.lr:g} on {EDGE_SEEDS} seeds (an option with optim.lr: {self.chosen.lr:g}, "
            f"option_seeds: {EDGE_SEEDS}) before searching {side}: under equal learning rates a one-seed pick lands "
            "on an edge half the time"
        )

    @property
    def pruned_at(self) -> dict[int, int]:
        """Step of each rung -> arms pruned there."""
        return dict(sorted(Counter(a.steps for a in self.arms if a.status == "pruned").items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "chosen_lr": self.chosen.lr if self.chosen else None,
            "chosen_run": self.chosen.run if self.chosen else None,
            "at_edge": self.at_edge,
            "edge_check": self.edge_check,
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
    # a one-seed variant that beats the control: the same comparison with its seed variance VARIANCE_RATIO times the
    # control's, and its p Holm-corrected in the same family
    noisier: stats.Comparison | None = None
    noisier_p_holm: float | None = None

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

    @property
    def one_seed(self) -> bool:
        return len(self.finished) == 1

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
    # the take rests on one seed of it and does not hold at VARIANCE_RATIO: its confirm spec decides
    provisional: bool = False
    # a confirm run read with the sweep it confirms: {"experiment", "take", "agrees"} (None: not a confirm)
    confirms: dict[str, Any] | None = None


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
            "seed_noise": {**asdict(self.noise), "sd_ci95": self.noise.sd_ci95},
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
                    "delta_at_variance_ratio": _comparison_json(v.noisier, v.noisier_p_holm),
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
    records: list[RunRecord],
    control: str | None,
    scoring: list[bool] | None = None,
    resamples: int = stats.RESAMPLES,
    prior: stats.SeedPrior | None = None,
) -> Comparisons:
    """Group, compare every variant with the control (and every searched fix with the control at its best LR),
    correct for multiple comparisons, and decide.

    ``scoring`` marks the val documents that score (the rest chose the compared evaluation, and a search's arm).
    ``prior`` is a stored calibration of the control's configuration (:mod:`orchestrator.results.seed_prior`),
    pooled into the seed noise.
    """
    variants = group(records, control)
    base = next((v for v in variants if v.is_control), None)
    others = [v for v in variants if v is not base]
    tuned = next((v for v in others if v.search is not None and v.option == control), None)
    base_docs = _docs(base) if base else None
    keep = tokens = None
    noise = stats.SeedNoise(None, 0, [])
    if base_docs is not None:
        tokens = np.asarray(next(r.doc_tokens for r in base.runs if r.doc_tokens is not None), dtype=float)
        keep = np.asarray(scoring if scoring is not None else [True] * len(tokens), dtype=bool)
        noise = stats.seed_noise(_seeded(variants, keep), tokens[keep], prior)
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
        _check_noisier(others, family, base_docs, keep, tokens, noise, resamples)
    others.sort(key=lambda v: (v.delta is None, v.delta.mean if v.delta else 0.0))
    ordered = ([base] if base else []) + others
    n_docs = int(np.sum(keep)) if keep is not None else 0
    verdict = decide(base, others, control, n_docs, noise, tuned)
    dropped = len(base.runs) - len(base.finished) if base else 0
    if dropped:
        verdict.reason += f" ({dropped} control seed(s) that did not finish cleanly are left out.)"
    return Comparisons(ordered, base, verdict, noise, keep, tokens)


def _seeded(variants: list[VariantResult], keep: np.ndarray) -> dict[str, np.ndarray]:
    """Each variant's per-document losses over its cleanly finished seeds, on the scoring documents: what the seed
    noise is measured from (a search's arms run one seed each and add nothing)."""
    out = {}
    for v in variants:
        rows = [r.doc_nll for r in v.runs if r.status in OK_STATUSES and r.doc_nll is not None]
        if v.search is None and rows:
            out[v.variant] = np.asarray(rows, dtype=float)[:, keep]
    return out


def _check_noisier(
    others: list[VariantResult],
    family: list[tuple[VariantResult, str, stats.Comparison]],
    reference: np.ndarray,
    keep: np.ndarray,
    tokens: np.ndarray,
    noise: stats.SeedNoise,
    resamples: int,
) -> None:
    """For each one-seed variant that beats the control: the comparison again with its seed variance VARIANCE_RATIO
    times the control's, its p Holm-corrected in the same family (the others' p as they were)."""
    ps = [c.p for _, _, c in family]
    for v in others:
        if not (v.one_seed and v.beats_control and noise.measured):
            continue
        v.noisier = _bootstrap(v, reference, keep, tokens, noise, resamples, ratio=VARIANCE_RATIO)
        at = next(i for i, (w, attr, _) in enumerate(family) if w is v and attr == "p_holm")
        v.noisier_p_holm = stats.holm(ps[:at] + [v.noisier.p] + ps[at + 1 :])[at]


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
    ratio: float = 1.0,
) -> stats.Comparison | None:
    """``v``'s per-document losses against ``reference``'s [seeds, docs], on the ``keep`` documents."""
    docs = _docs(v)
    if docs is None or reference is None or _ended_badly(v) or (v.search is not None and v.search.chosen is None):
        return None
    return stats.paired_bootstrap(docs[:, keep], reference[:, keep], tokens[keep], noise, resamples, ratio=ratio)


def noise_text(noise: stats.SeedNoise) -> str:
    """The seed noise the intervals count, in words: its sd with its interval, and what it rests on."""
    if not noise.measured:
        own = f"{noise.measured_df} degree{'s' if noise.measured_df != 1 else ''} of freedom"
        return (
            f"seed noise is not measured (the runs' seeds give it {own}, fewer than {stats.MIN_DF}, and no stored "
            "calibration of the control's configuration stands in), so the intervals count documents only: too "
            "narrow to take a fix on"
        )
    low, high = noise.sd_ci95
    own = (
        f"{noise.measured_df} from the seeds of {', '.join(noise.variants)}"
        if noise.measured_df
        else "none from these runs"
    )
    text = (
        f"the intervals count seed noise of sd {noise.sd:.4f} per run (95% CI [{low:.4f}, {high:.4f}]), on "
        f"{noise.df} degree{'s' if noise.df > 1 else ''} of freedom, a Student's t: {own}"
    )
    if noise.prior is not None:
        text += f", {noise.prior.df} from the stored calibration of the control's configuration ({noise.prior.source})"
    else:
        text += " (no stored calibration of the control's configuration)"
    if noise.floored:
        text += (
            f"; the seeds spread by {noise.measured_sd:.4f}, less than their document-by-seed residual alone "
            f"({noise.residual_sd:.4f}, on {noise.residual_df} degrees of freedom), which is the floor it is held at"
        )
    return text


def _rests_on(v: VariantResult, base: VariantResult) -> str:
    n, m = len(v.finished), len(base.finished)
    return f"It rests on {n} seed{'s' if n > 1 else ''} of {v.variant} and {m} of the control"


def _one_seed(v: VariantResult) -> str:
    """What a take on one seed of ``v`` assumes, and whether it holds without the assumption."""
    if not v.one_seed or v.noisier is None:
        return ""
    c = v.noisier
    check = (
        f"with {v.variant}'s seed variance at {VARIANCE_RATIO:g}x the control's (Δ 95% CI [{c.ci95[0]:+.4f}, "
        f"{c.ci95[1]:+.4f}], Holm-corrected p {v.noisier_p_holm:.4f})"
    )
    if _beats(c, v.noisier_p_holm):
        return f" ({v.variant}'s own seed noise is not measured: the take still holds {check})"
    return (
        f" ({v.variant}'s own seed noise is not measured, and the take does not hold {check}: it is provisional "
        f"until its confirm spec, {CONFIRM_SEEDS} seeds of it, agrees)"
    )


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
    scoring documents, ``noise`` the seed noise and ``tuned`` the control at its best LR, if searched."""
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
    passed = [
        v for v in others if _passes(v, base, noise) and (not tuned_compared or v is tuned or v.beats_tuned_control)
    ]
    if not passed:
        return _undecided(base, others, noise, n_docs, tuned if tuned_compared else None)
    best = passed[0]
    d = best.delta
    provisional = best.one_seed and not _beats(best.noisier, best.noisier_p_holm)
    reason = (
        f"{'Provisional take' if provisional else 'Take'} **{best.variant}**{_searched(best)}: its loss is "
        f"{-d.mean:.4f} below the control **{base.variant}** ({best.compared_mean:.4f} vs {base.compared_mean:.4f}; "
        f"Δ {d.mean:+.4f}, 95% CI [{d.ci95[0]:+.4f}, {d.ci95[1]:+.4f}] for this comparison alone, p {d.p:.4f}, "
        f"Holm-corrected {best.p_holm:.4f}), larger than the seed noise of the difference (sd "
        f"{noise.of_difference(len(best.finished), len(base.finished)):.4f})"
    )
    if tuned_compared and best is tuned:
        reason += "; it is the control at its best LR, and no fix at its own best LR beats it: it was the learning rate"
    elif tuned_compared:
        t = best.vs_tuned
        reason += (
            f"; it also beats the control at its best LR, **{tuned.variant}** (Δ {t.mean:+.4f}, 95% CI "
            f"[{t.ci95[0]:+.4f}, {t.ci95[1]:+.4f}], Holm-corrected p {best.vs_tuned_p_holm:.4f}), so it is more "
            "than a better learning rate"
        )
    reason += f". {_rests_on(best, base)}{_one_seed(best)}; {noise_text(noise)}."
    if len(passed) > 1:
        reason += f" Also distinguishable: {', '.join(v.variant for v in passed[1:])}."
    return Verdict(best.variant, reason, [v.variant for v in passed], provisional=provisional)


def _passes(v: VariantResult, base: VariantResult, noise: stats.SeedNoise) -> bool:
    """Beats the control, by more than the sd seed noise gives the difference, on measured seed noise."""
    return (
        noise.measured
        and v.eligible
        and v.beats_control
        and -v.delta.mean > noise.of_difference(len(v.finished), len(base.finished))
    )


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
    measured = f"Δ {d.mean:+.4f} (95% CI [{d.ci95[0]:+.4f}, {d.ci95[1]:+.4f}], Holm-corrected p {best.p_holm:.4f})"
    tail = f" {_rests_on(best, base)}; {noise_text(noise)}."
    if not noise.measured:
        more = stats.control_seeds_for(len(base.finished), noise.measured_df)
        extra = more - len(base.finished)
        return Verdict(
            None,
            f"No fix can be taken on unmeasured seed noise: the closest to the control **{base.variant}**, "
            f"**{best.variant}**, differs by {measured}, but a bootstrap over documents cannot see the shift a seed "
            f"gives every document. Raise control_seeds to {more} (or run {extra} more seed{'s' if extra > 1 else ''} "
            "of any variant) for a verdict." + tail,
        )
    if d.mean >= 0:
        return Verdict(
            None,
            f"No fix lowered the loss below the control **{base.variant}**: the best, **{best.variant}**, differs by "
            f"{measured}. Try other fixes." + tail,
        )
    seeds = len(best.finished)
    if tuned is not None and _passes(best, base, noise) and best is not tuned:
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
    difference_sd = noise.of_difference(seeds, len(base.finished))
    if gain <= difference_sd:
        return Verdict(
            None,
            head + f", less than the seed noise of the difference (sd {difference_sd:.4f}): at these seeds a "
            "difference this small is seed noise; only many more seeds could tell it apart." + tail,
            seeds_needed=_seeds_needed(noise, gain, seeds),
        )
    # More documents shrink only the documents' share of the interval: the seed noise's stays.
    seed_half = stats.t_quantile(noise.df) * difference_sd
    doc_half = math.sqrt(max(d.half_width**2 - seed_half**2, 0.0))
    need_docs = (
        math.ceil(docs * (doc_half / math.sqrt(gain**2 - seed_half**2)) ** 2) if docs and gain > seed_half else None
    )
    need_seeds = _seeds_needed(noise, gain, seeds)
    ways = []
    if need_docs and need_docs > docs:
        ways.append(f"about {need_docs} scoring val documents (now {docs}; raise data.val_fraction or add data)")
    if need_seeds:
        ways.append(f"about {need_seeds} seeds per option (now {seeds}; raise option_seeds and control_seeds)")
    if noise.df <= FEW_DF:
        ways.append(
            f"more seeds per variant (option_seeds, control_seeds; the seed noise rests on {noise.df} degree"
            f"{'s' if noise.df > 1 else ''} of freedom, and its own uncertainty widens every interval)"
        )
    reason = head + (". If the effect is real, it would take " + " or ".join(ways) + " to tell." if ways else ".")
    return Verdict(None, reason + tail, seeds_needed=need_seeds)


def _seeds_needed(noise: stats.SeedNoise, gain: float, seeds: int) -> int | None:
    """Seeds per variant for the seed noise's share of the interval alone to reach the gain, z x sd x sqrt(2 / n) =
    gain; None when the variants run that many already."""
    need = math.ceil(2 * (stats.z_quantile(1 - stats.ALPHA / 2) * noise.sd / gain) ** 2)
    return need if need > seeds else None


def read_with_sweep(comparisons: Comparisons, follows: FollowsSpec) -> None:
    """A confirm run's verdict, read with the sweep it confirms: does a variant of the confirmed option beat the
    control here too? The verdict's reason says so, and ``confirms`` records it."""
    verdict = comparisons.verdict
    sweep = (
        f"the sweep `{follows.experiment}` took **{follows.take}** on {follows.seeds} seed"
        f"{'s' if follows.seeds > 1 else ''} (Δ {follows.delta[0]:+.4f}, 95% CI [{follows.delta[1]:+.4f}, "
        f"{follows.delta[2]:+.4f}]{', provisionally' if follows.provisional else ''})"
    )
    here = [v for v in comparisons.variants if v.option == follows.option and not v.is_control and v.delta]
    agreeing = [v for v in here if v.eligible and v.beats_control]
    if agreeing:
        v = agreeing[0]
        d = v.delta
        verdict.reason += (
            f" Read with the sweep it confirms: {sweep}; here {v.variant}, on {len(v.finished)} seeds, beats the "
            f"control too (Δ {d.mean:+.4f}, 95% CI [{d.ci95[0]:+.4f}, {d.ci95[1]:+.4f}], Holm-corrected p "
            f"{v.p_holm:.4f}): the take stands."
        )
    else:
        closest = (
            f"the closest, {here[0].variant}, differs by Δ {here[0].delta.mean:+.4f} (95% CI "
            f"[{here[0].delta.ci95[0]:+.4f}, {here[0].delta.ci95[1]:+.4f}])"
            if here
            else "none of its runs finished"
        )
        verdict.reason += (
            f" Read with the sweep it confirms: {sweep}; here no variant of {follows.option} beats the control "
            f"({closest}): the sweep's take is withdrawn."
        )
    verdict.confirms = {"experiment": follows.experiment, "take": follows.take, "agrees": bool(agreeing)}
