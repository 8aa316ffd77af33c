"""How sure the verdict is: a paired bootstrap over val documents and seeds, with Holm's correction.

The statistic is the difference in token-weighted mean NLL between an option and the
control, on the same scored documents. Each resample draws the documents once for
both sides (paired, as in Koehn 2004 and sacrebleu's ``paired_bs``), and, when a side
ran with several seeds, draws its seeds with replacement too (the stratified bootstrap
over runs of rliable), so the interval covers seed-to-seed variation as well as the
choice of documents. The p-value follows sacrebleu: the resampled differences are
centred on zero (the null hypothesis of no difference) and
``p = (count(|centred| >= |observed|) + 1) / (B + 1)``.
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


def token_means(nll: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Token-weighted mean NLL of each seed: ``nll`` is [seeds, docs], ``tokens`` [docs]."""
    return nll.sum(axis=1) / tokens.sum()


def paired_bootstrap(
    option: np.ndarray, control: np.ndarray, tokens: np.ndarray, resamples: int = RESAMPLES, seed: int = 0
) -> Comparison:
    """Compare per-document NLL sums, ``option`` [seeds_o, docs] against ``control`` [seeds_c, docs].

    ``tokens`` [docs] is the scored token count of each document (the same for both sides:
    one evaluation protocol). The observed difference is the mean over seeds of each side's
    token-weighted mean NLL.
    """
    option, control, tokens = (
        np.atleast_2d(option).astype(float),
        np.atleast_2d(control).astype(float),
        np.asarray(tokens, dtype=float),
    )
    observed = float(token_means(option, tokens).mean() - token_means(control, tokens).mean())
    rng = np.random.default_rng(seed)
    n_docs = len(tokens)
    deltas = np.empty(resamples)
    for lo in range(0, resamples, 1000):  # chunks bound the [B, docs] count matrix
        b = min(1000, resamples - lo)
        counts = rng.multinomial(n_docs, np.full(n_docs, 1.0 / n_docs), size=b).astype(
            float
        )  # the same documents for both sides
        weight = counts @ tokens  # [b]
        per_seed_o = (counts @ option.T) / weight[:, None]  # [b, seeds_o]
        per_seed_c = (counts @ control.T) / weight[:, None]
        deltas[lo : lo + b] = _resample_seeds(per_seed_o, rng).mean(1) - _resample_seeds(per_seed_c, rng).mean(1)
    lo95, hi95 = np.percentile(deltas, [2.5, 97.5])
    centred = deltas - deltas.mean()
    p = (int(np.sum(np.abs(centred) >= abs(observed))) + 1) / (resamples + 1)
    return Comparison(mean=observed, ci95=(float(lo95), float(hi95)), p=p)


def _resample_seeds(per_seed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each row's seeds drawn with replacement (one seed: nothing to draw)."""
    b, seeds = per_seed.shape
    if seeds == 1:
        return per_seed
    picks = rng.integers(0, seeds, size=(b, seeds))
    return np.take_along_axis(per_seed, picks, axis=1)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order (as statsmodels' ``multipletests(method="holm")``)."""
    order = np.argsort(pvalues, kind="stable")
    m = len(pvalues)
    adjusted = np.maximum.accumulate(np.asarray(pvalues, dtype=float)[order] * np.arange(m, 0, -1))
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()
