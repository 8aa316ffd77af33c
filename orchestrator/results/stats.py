"""How sure the verdict is: a paired bootstrap over val documents, seed noise added, and Holm's correction.

The statistic is the difference in token-weighted mean NLL between an option and the
control, on the same scored documents, each side averaged over its seeds. Each resample
draws the documents once for both sides (paired, as in Koehn 2004 and sacrebleu's
``paired_bs``) and adds one draw of seed noise.

Why the seed noise is added, and how it is measured. A run's NLL sum on document d, on
seed s, is ``y[s, d] = m[d] + a[s] * t[d] + e[s, d]`` (t: the document's tokens): a shift
``a[s]`` shared by every token of the seed, and a document-by-seed residual ``e``. The
bootstrap over documents sees the residual (it differs from document to document) but
not the shift (on the default job, about half of the variance between two seeds). So each
resample adds ``sd * sqrt(ratio / n_option + 1 / n_control)`` times a Student's t draw,
where ``sd`` is the run-to-run spread of the compared loss (:class:`SeedNoise`):

- pooled over every variant that ran several seeds, its degrees of freedom the seeds
  beyond the first, summed (the t counts that the sd is itself an estimate);
- pooled with a stored calibration of this model and data where there is one
  (:class:`SeedPrior`, the empirical-Bayes moderated variance of Smyth 2004, limma): a quiet
  draw of four seeds cannot shrink it, and with fewer than 2 degrees of freedom of its own
  the calibration stands in;
- never below the residual's share, which the runs measure on ``(seeds - 1) x (documents - 1)``
  degrees of freedom: the spread between seeds is at least the residual's, so a draw of
  seeds quieter than that is a quiet draw, not a quiet model.

The sd counts the residual twice (the bootstrap sees it too): conservative by the
residual's share, which is what keeps a quiet draw of the shift covered where no
calibration exists. The p-value follows sacrebleu: the resampled differences are centred
on zero (the null hypothesis of no difference) and
``p = (count(|centred| >= |observed|) + 1) / (B + 1)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

RESAMPLES = 10_000
ALPHA = 0.05  # every interval is the (1 - ALPHA) one: its name, ci95, assumes 0.05
# Fewer degrees of freedom than this and the seed noise is not measured: the t's 97.5% point is 12.7 at 1 df and
# 4.3 at 2, and one seed sd from two seeds is under a third of the true one in 20% of draws; the verdict takes no fix
# on it (docs/BENCHMARKS.md, section 8: a one-seed control took an A/A option 9-12% of the time)
MIN_DF = 2


def control_seeds_for(control_seeds: int, df: int) -> int:
    """The control seeds that give seed noise of ``df`` degrees of freedom (the other variants unchanged) MIN_DF."""
    return control_seeds + max(MIN_DF - df, 0)


def z_quantile(q: float) -> float:
    """The standard normal's quantile (exact)."""
    return NormalDist().inv_cdf(q)


@functools.lru_cache
def t_quantile(df: int, q: float = 1 - ALPHA / 2) -> float:
    """Student's t quantile with ``df`` degrees of freedom (by simulation, to 2 decimals: numpy has no inverse)."""
    return float(np.quantile(np.random.default_rng(0).standard_t(df, 400_000), q))


@functools.lru_cache
def chi2_quantile(df: int, q: float) -> float:
    """The chi-squared quantile with ``df`` degrees of freedom (by simulation, to about 3 significant digits)."""
    return float(np.quantile(np.random.default_rng(0).chisquare(df, 400_000), q))


@dataclass(frozen=True)
class Comparison:
    mean: float  # option minus control; below 0 means the option's loss is lower
    ci95: tuple[float, float]  # the (1 - ALPHA) percentile interval, for this comparison alone (not adjusted)
    p: float

    @property
    def half_width(self) -> float:
        """Of the interval: what more documents or seeds would shrink."""
        return (self.ci95[1] - self.ci95[0]) / 2


@dataclass(frozen=True)
class SeedPrior:
    """A stored calibration of one configuration's seed noise (``python -m bench.calibration --store``): the
    variance of a run's compared loss, split into the shift shared by every document and the residual, from many
    seeds of that configuration on these val documents."""

    shift_var: float  # variance of the per-token shift a[s]
    residual_rate: float  # kappa: a document's residual variance per scored token (the residual of a loss over T
    # scored tokens has variance kappa / T)
    df: int  # the seeds it was measured on, less one
    source: str  # what measured it: the bench, its seeds, the commit

    def variance(self, scored_tokens: float) -> float:
        """Of a run's loss scored on ``scored_tokens`` tokens of these documents."""
        return self.shift_var + self.residual_rate / scored_tokens


@dataclass(frozen=True)
class SeedNoise:
    """The run-to-run spread of the compared loss on fixed documents: what the bootstrap adds to every resample."""

    sd: float | None  # per run; None: not measured (fewer than MIN_DF degrees of freedom and no calibration)
    df: int  # of sd: the seeds beyond the first of each variant, summed, plus the calibration's
    variants: list[str]  # the variants whose seeds it pools
    measured_sd: float | None = None  # these runs' own pooled sd (None with no variant of two seeds)
    measured_df: int = 0
    residual_sd: float | None = None  # the document-by-seed residual's share of a run's sd, the floor of sd
    residual_df: int = 0
    prior: SeedPrior | None = None  # the stored calibration pooled in, if one matched
    floored: bool = False  # the residual floor set sd: these seeds spread less than their residual alone

    @property
    def measured(self) -> bool:
        return self.sd is not None

    @property
    def sd_ci95(self) -> tuple[float, float] | None:
        """The (1 - ALPHA) interval of sd, from the chi-squared on its degrees of freedom."""
        if self.sd is None:
            return None
        nu = self.df
        return (
            float(self.sd * np.sqrt(nu / chi2_quantile(nu, 1 - ALPHA / 2))),
            float(self.sd * np.sqrt(nu / chi2_quantile(nu, ALPHA / 2))),
        )

    def of_difference(self, option_seeds: int, control_seeds: int, ratio: float = 1.0) -> float:
        """The sd that seed noise gives a difference of two variants' means over their seeds (0 when unmeasured);
        ``ratio``: the option's seed variance over the control's."""
        return (self.sd or 0.0) * float(np.sqrt(ratio / option_seeds + 1 / control_seeds))


def seed_noise(doc_nll: dict[str, np.ndarray], tokens: np.ndarray, prior: SeedPrior | None = None) -> SeedNoise:
    """The seed noise of the compared loss, from each variant's per-document NLL sums [seeds, docs] (its finished
    seeds; a variant of one seed adds nothing), on documents of ``tokens`` scored tokens each, pooled with
    ``prior`` when one is given (module docstring)."""
    tokens = np.asarray(tokens, dtype=float)
    total = tokens.sum()
    several = {name: np.atleast_2d(np.asarray(y, dtype=float)) for name, y in doc_nll.items() if len(y) > 1}
    df = sum(len(y) - 1 for y in several.values())
    squares = residual = 0.0
    for y in several.values():
        losses = y.sum(1) / total
        squares += float(np.sum((losses - losses.mean()) ** 2))
        centred = y - y.mean(0)
        shift = centred.sum(1) / total  # each seed's token-weighted shift (its loss minus the variant's mean)
        residual += float(np.sum((centred - shift[:, None] * tokens) ** 2))
    measured_sd = float(np.sqrt(squares / df)) if df else None
    # the residual of each document's NLL has variance kappa x its tokens (independent tokens); over a seed's
    # documents, with its shift taken out, the squares' expectation is (seeds - 1) x kappa x (T - sum(t^2) / T)
    kappa = residual / (df * (total - float(np.sum(tokens**2)) / total)) if df else None
    residual_df = df * (len(tokens) - 1)
    pooled_df = df + (prior.df if prior else 0)
    if pooled_df < MIN_DF:
        return SeedNoise(None, pooled_df, list(several), measured_sd, df, None, residual_df, prior)
    prior_squares = prior.df * prior.variance(total) if prior else 0.0
    variance = (prior_squares + squares) / pooled_df
    floor = kappa / total if kappa is not None else 0.0
    return SeedNoise(
        sd=float(np.sqrt(max(variance, floor))),
        df=pooled_df,
        variants=list(several),
        measured_sd=measured_sd,
        measured_df=df,
        residual_sd=float(np.sqrt(floor)) if kappa is not None else None,
        residual_df=residual_df,
        prior=prior,
        floored=bool(floor > variance),
    )


def decompose(doc_nll: np.ndarray, tokens: np.ndarray, source: str) -> SeedPrior:
    """A calibration from many seeds of one configuration, [seeds, docs]: its shift variance (the spread of the
    seeds' losses less the residual's share) and its residual rate, for :class:`SeedPrior`."""
    noise = seed_noise({"calibrated": doc_nll}, tokens)
    tokens_total = float(np.sum(tokens))
    kappa = noise.residual_sd**2 * tokens_total
    return SeedPrior(
        shift_var=max(noise.measured_sd**2 - noise.residual_sd**2, 0.0),
        residual_rate=kappa,
        df=noise.measured_df,
        source=source,
    )


def paired_bootstrap(
    option: np.ndarray,
    control: np.ndarray,
    tokens: np.ndarray,
    noise: SeedNoise | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    ratio: float = 1.0,
) -> Comparison:
    """Compare per-document NLL sums, ``option`` [seeds_o, docs] against ``control`` [seeds_c, docs].

    ``tokens`` [docs] is the scored token count of each document (the same for both sides:
    one evaluation protocol). The observed difference is the mean over seeds of each side's
    token-weighted mean NLL. ``noise`` is the run-to-run spread of one seed's loss
    (:func:`seed_noise`); each resample adds ``noise.sd * sqrt(ratio/seeds_o + 1/seeds_c)``
    times a Student's t draw with ``noise.df`` degrees of freedom (``ratio``: the option's
    seed variance over the control's). None, or a noise that was not measured, adds none:
    the interval then counts the documents only.
    """
    option, control, tokens = (
        np.atleast_2d(option).astype(float),
        np.atleast_2d(control).astype(float),
        np.asarray(tokens, dtype=float),
    )
    per_doc = option.mean(0) - control.mean(0)  # [docs]: each side averaged over its seeds
    observed = float(per_doc.sum() / tokens.sum())
    measured = noise is not None and noise.measured
    spread = noise.of_difference(len(option), len(control), ratio) if measured else 0.0
    rng = np.random.default_rng(seed)
    n_docs = len(tokens)
    deltas = np.empty(resamples)
    for lo in range(0, resamples, 1000):  # chunks bound the [B, docs] count matrix
        b = min(1000, resamples - lo)
        counts = rng.multinomial(n_docs, np.full(n_docs, 1.0 / n_docs), size=b).astype(float)  # same docs, both sides
        deltas[lo : lo + b] = (counts @ per_doc) / (counts @ tokens)
        if measured:
            deltas[lo : lo + b] += rng.standard_t(noise.df, b) * spread
    low, high = np.percentile(deltas, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    centred = deltas - deltas.mean()
    p = (int(np.sum(np.abs(centred) >= abs(observed))) + 1) / (resamples + 1)
    return Comparison(mean=observed, ci95=(float(low), float(high)), p=p)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order (as statsmodels' ``multipletests(method="holm")``)."""
    order = np.argsort(pvalues, kind="stable")
    m = len(pvalues)
    adjusted = np.maximum.accumulate(np.asarray(pvalues, dtype=float)[order] * np.arange(m, 0, -1))
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()
