"""How sure the verdict is: a paired bootstrap over val documents, seed noise added, and Holm's correction.

The statistic is the difference in token-weighted mean NLL between an option and the
control, on the same scored documents, each side averaged over its seeds. Each resample
draws the documents once for both sides (paired, as in Koehn 2004 and sacrebleu's
``paired_bs``) and adds one draw of seed noise: the run-to-run sd of the compared loss,
pooled over the variants that ran several seeds, times ``sqrt(1/n_option + 1/n_control)``,
times a Student's t draw with the pooled degrees of freedom (with a few seeds, the sd is
itself an estimate; the t counts that). The document bootstrap cannot see that noise on
its own: on the default job it saw 26% of the seed variance, the rest being a shift
shared by every document. docs/BENCHMARKS.md ("Calibration") has the measurements behind
this choice. The p-value follows sacrebleu: the resampled differences are centred on zero
(the null hypothesis of no difference) and ``p = (count(|centred| >= |observed|) + 1) / (B + 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    mean: float  # option minus control; below 0 means the option's loss is lower
    ci95: tuple[float, float]
    p: float

    @property
    def half_width(self) -> float:
        """Of the 95% interval: what more documents or seeds would shrink."""
        return (self.ci95[1] - self.ci95[0]) / 2


@dataclass(frozen=True)
class SeedNoise:
    """The run-to-run spread of the compared loss on fixed documents, pooled over the variants that ran several
    seeds (their sample variances, weighted by degrees of freedom)."""

    sd: float | None  # None when no variant ran two seeds that finished
    df: int  # degrees of freedom: the seeds beyond the first, summed over those variants
    variants: list[str]  # the variants it pools


def seed_noise(losses: dict[str, list[float]]) -> SeedNoise:
    """Pool the seed variance of each variant's compared losses (one per finished seed)."""
    several = {name: values for name, values in losses.items() if len(values) > 1}
    df = sum(len(values) - 1 for values in several.values())
    if not df:
        return SeedNoise(None, 0, [])
    squares = sum(float(np.sum((np.asarray(v) - np.mean(v)) ** 2)) for v in several.values())
    return SeedNoise(float(np.sqrt(squares / df)), df, list(several))


def paired_bootstrap(
    option: np.ndarray,
    control: np.ndarray,
    tokens: np.ndarray,
    noise: SeedNoise | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Compare per-document NLL sums, ``option`` [seeds_o, docs] against ``control`` [seeds_c, docs].

    ``tokens`` [docs] is the scored token count of each document (the same for both sides:
    one evaluation protocol). The observed difference is the mean over seeds of each side's
    token-weighted mean NLL. ``noise`` is the pooled run-to-run spread of one seed's loss
    (:func:`seed_noise`); each resample adds ``noise.sd * sqrt(1/seeds_o + 1/seeds_c)``
    times a Student's t draw with ``noise.df`` degrees of freedom. None, or a noise that
    was not measured, adds none: the interval then counts the documents only.
    """
    option, control, tokens = (
        np.atleast_2d(option).astype(float),
        np.atleast_2d(control).astype(float),
        np.asarray(tokens, dtype=float),
    )
    per_doc = option.mean(0) - control.mean(0)  # [docs]: each side averaged over its seeds
    observed = float(per_doc.sum() / tokens.sum())
    measured = noise is not None and noise.sd is not None
    spread = noise.sd * np.sqrt(1 / len(option) + 1 / len(control)) if measured else 0.0
    rng = np.random.default_rng(seed)
    n_docs = len(tokens)
    deltas = np.empty(resamples)
    for lo in range(0, resamples, 1000):  # chunks bound the [B, docs] count matrix
        b = min(1000, resamples - lo)
        counts = rng.multinomial(n_docs, np.full(n_docs, 1.0 / n_docs), size=b).astype(float)  # same docs, both sides
        deltas[lo : lo + b] = (counts @ per_doc) / (counts @ tokens)
        if measured:
            deltas[lo : lo + b] += rng.standard_t(noise.df, b) * spread
    lo95, hi95 = np.percentile(deltas, [2.5, 97.5])
    centred = deltas - deltas.mean()
    p = (int(np.sum(np.abs(centred) >= abs(observed))) + 1) / (resamples + 1)
    return Comparison(mean=observed, ci95=(float(lo95), float(hi95)), p=p)


def t_quantile(df: int, q: float = 0.975) -> float:
    """Student's t quantile with ``df`` degrees of freedom (by simulation, to 2 decimals: numpy has no inverse)."""
    return float(np.quantile(np.random.default_rng(0).standard_t(df, 400_000), q))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order (as statsmodels' ``multipletests(method="holm")``)."""
    order = np.argsort(pvalues, kind="stable")
    m = len(pvalues)
    adjusted = np.maximum.accumulate(np.asarray(pvalues, dtype=float)[order] * np.arange(m, 0, -1))
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()
