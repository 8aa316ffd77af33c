"""The rules a diagnosis applies to a training log: each reads the evidence, says how sure it is, and cites its source.

A finding states what the numbers show, the threshold that made it fire and how sure it is
(high, medium, low). Some findings are causes (``CAUSES``), listed only when the log or the
configuration holds direct evidence for them and ranked by how sure that evidence is, never by
how many findings mention them; the others are symptoms (a rise) or observations (a spike that
recovered, a converged run, the task, a clip that never engages). Rule ids are stable
(``RULES``); the README's rule table says the same. One module per family, each threshold with
its source beside it:

- :mod:`.numerics`: ``evidence`` (what the log cannot show) and ``numerics`` (NaN, inf, impossible numbers);
- :mod:`.task`: ``task`` (not a causal LM: the LM rules, ``LM_ONLY``, stay silent);
- :mod:`.scale`: ``scale`` (train and val not on one scale);
- :mod:`.start`: ``baseline`` (the starting point);
- :mod:`.learning_rate`: ``learning_rate`` (priors by size and method);
- :mod:`.fit`: ``overfit`` (and memorisation), ``underfit``, ``lora_capacity``;
- :mod:`.noise`: ``regression``, ``noise`` (a spike), ``plateau``;
- :mod:`.setup`: ``clipping``, ``schedule``, ``batch``, ``context``;
- :mod:`.curve` (the val curve, its noise and its raw best) and :mod:`.models` (vocabularies, sizes, references).
"""

from __future__ import annotations

from orchestrator.diagnose.logs import RunLog
from orchestrator.diagnose.rules.base import (
    CAUSES,
    CONFIDENCE,
    RULES,
    Context,
    Finding,
    epochs,
    epochs_at,
    fmt_lr,
    logged_schedule,
    noted,
    val_size,
)
from orchestrator.diagnose.rules.curve import Curve, summary, trend_gain
from orchestrator.diagnose.rules.fit import lora_capacity, overfit, underfit
from orchestrator.diagnose.rules.learning_rate import LORA_FACTOR, LR_BAND, in_band, learning_rate, lr_prior, not_judged
from orchestrator.diagnose.rules.models import reference
from orchestrator.diagnose.rules.noise import noise, plateau, regression
from orchestrator.diagnose.rules.numerics import evidence, numerics
from orchestrator.diagnose.rules.scale import scale
from orchestrator.diagnose.rules.setup import batch, clipping, context_length, schedule
from orchestrator.diagnose.rules.start import BASELINE_FAR, baseline
from orchestrator.diagnose.rules.task import LM_ONLY, task

__all__ = [
    "BASELINE_FAR",
    "CAUSES",
    "CONFIDENCE",
    "LORA_FACTOR",
    "LR_BAND",
    "RULES",
    "Context",
    "Curve",
    "Finding",
    "diagnose",
    "epochs",
    "epochs_at",
    "fmt_lr",
    "healthy",
    "in_band",
    "logged_schedule",
    "lr_prior",
    "not_judged",
    "rank_causes",
    "reference",
    "summary",
    "trend_gain",
    "val_size",
]

# In the order they run: each may read what the ones before it found
ORDER = (
    evidence,
    task,
    numerics,
    scale,
    baseline,
    overfit,
    regression,
    noise,
    clipping,
    learning_rate,
    underfit,
    plateau,
    schedule,
    batch,
    context_length,
    lora_capacity,
)
_IDS = {context_length: "context"}


def diagnose(log: RunLog, ctx: Context) -> list[Finding]:
    """Every rule that fires on ``log``, most certain first (ties in ``RULES`` order). A run that is not a causal LM
    (rule ``task``) gets no language-model rule."""
    curve = Curve.of(log)
    found: list[Finding] = []
    for rule in ORDER:
        if _IDS.get(rule, rule.__name__) in LM_ONLY and noted(found, "task"):
            continue
        found += rule(curve, ctx, found)
    return sorted(found, key=lambda f: (CONFIDENCE.index(f.confidence), RULES.index(f.rule)))


def healthy(findings: list[Finding]) -> bool | None:
    """True; False; or None when the log cannot show it (rule ``evidence``), unless the train curve alone shows a
    broken run (a finding's ``broken``)."""
    if any(f.rule == "evidence" for f in findings):
        return False if any(f.data.get("broken") for f in findings) else None
    return not any(f.problem for f in findings)


def rank_causes(findings: list[Finding]) -> list[tuple[Finding, list[str]]]:
    """The causes with direct evidence, surest first, each with its evidence and that of the findings it is the first
    to explain. A cause that a surer one explains (a clip engaged by too high an LR) is evidence, not a cause."""
    causes = sorted(
        (f for f in findings if f.rule in CAUSES and f.problem),
        key=lambda f: (CONFIDENCE.index(f.confidence), RULES.index(f.rule)),
    )
    claimed: set[str] = set()
    out = []
    for f in causes:
        if f.rule in claimed:
            continue
        explained = [
            g for g in findings if g.rule in f.data.get("explains", ()) and g.rule not in claimed and g.problem
        ]
        claimed.update(g.rule for g in explained)
        out.append((f, [f.evidence] + [g.evidence for g in explained]))
    return out
