"""``task``: the run is not a causal LM's next-token fine-tune, so the language-model rules do not apply to it.

Fires on any of: eval keys of a classifier or a recogniser (accuracy, F1, precision, recall, MCC, AUC; WER, CER),
keys of a preference or RL objective (DPO's ``rewards/*``, ``logps/*``; GRPO's ``reward``, ``kl``), a model whose name
is an encoder, a vision or a speech model (BERT, RoBERTa, ConvNeXt, Whisper, ...), or a loss that starts at ln 2 (what
a binary or a preference objective scores before it learns: DPO's -log sigmoid(0)). A loss starting near ln k for a few
classes (k <= 10) is named as support, never alone: a causal LM's first loss lands near some ln k as often as not.
Generation metrics (BLEU, ROUGE, a token accuracy) are a causal LM's own and do not count, nor do a classifier's keys
on a model the vocabulary table knows as a causal LM, or an accuracy alone beside an eval loss that never falls under
ln 10 (run_clm.py logs a causal LM's token accuracy as ``eval_accuracy``).

The rules that read a loss as nats per token of a vocabulary, or judge an LM fine-tune's settings, then stay silent
(``LM_ONLY``): the start against a vocabulary or a reference, the LR priors, LoRA capacity, memorisation read from the
train loss, underfitting by the train/val gap, and context. Overfitting by a rising val, regressions, plateaus, noise,
scale and the numbers still apply, and the best step follows the run's own metric_for_best_model.
"""

from __future__ import annotations

import math
import re

from orchestrator.diagnose.rules.base import Context, Finding
from orchestrator.diagnose.rules.curve import Curve, selection_metric
from orchestrator.diagnose.rules.models import NOT_CAUSAL, vocabulary

LM_ONLY = ("baseline", "learning_rate", "lora_capacity", "underfit", "context")
CLASSIFIER_METRIC = re.compile(
    r"^(eval_|eval/)(overall_)?(accuracy|acc|balanced_accuracy|f1|precision|recall|matthews_correlation|mcc|auc|"
    r"roc_auc|(macro|micro|weighted)_f1|f1_(macro|micro|weighted)|(macro|micro|weighted)_(precision|recall))"
    r"(_score)?$"
)
RECOGNITION_METRIC = re.compile(r"^(eval_|eval/)(wer|cer)$")
PREFERENCE_KEY = re.compile(r"(^|/)(rewards/|logps/|logits/chosen|reward$|reward_std$|kl$|completion_length$)")
BINARY_START = 0.015  # |first loss - ln 2| under this: a binary objective's start (ln 2 = 0.693)
FEW_CLASSES = 10
START_SHARE = 0.05  # the first train loss counts as the start within the first 5% of the run


def task(curve: Curve, ctx: Context, found: list[Finding]) -> list[Finding]:
    log = curve.log
    keys = set(log.metrics) | set(log.reading.unread if log.reading else ())
    signals, kinds, strong = [], [], False
    scores = sorted(k for k in keys if CLASSIFIER_METRIC.match(k))
    causal = vocabulary(ctx) is not None and not NOT_CAUSAL.search((ctx.model or "").rpartition("/")[2])
    if causal or (scores and _token_accuracy(curve, scores)):
        scores = []  # a causal LM scored by accuracy (run_clm.py logs its token accuracy as eval_accuracy) is still one
    if scores:
        signals.append(f"eval keys of a classifier: {', '.join(f'`{k}`' for k in scores)}")
        kinds.append("a classifier")
        strong = True
    recognition = sorted(k for k in keys if RECOGNITION_METRIC.match(k))
    if recognition:
        signals.append(f"eval keys of speech recognition: {', '.join(f'`{k}`' for k in recognition)}")
        kinds.append("a speech recogniser")
        strong = True
    preference = sorted(k for k in keys if PREFERENCE_KEY.search(k))
    if preference:
        shown = ", ".join(f"`{k}`" for k in preference[:4]) + (" ..." if len(preference) > 4 else "")
        signals.append(f"keys of a preference or RL objective: {shown}")
        kinds.append("a preference (DPO) or RL objective")
        strong = True
    model = ctx.model or ""
    if NOT_CAUSAL.search(model.rpartition("/")[2]):
        signals.append(f"the model {model} is an encoder, a vision or a speech model, not a causal LM")
        kinds.append("an encoder or a non-text model")
        strong = True
    start = _start(curve)
    if start is not None:
        k, loss, step = start
        if k == 2:
            signals.append(f"the loss starts at {loss:.3f} (step {step:,}), ln 2 = 0.693: a binary or preference loss")
            kinds.append("a binary or preference objective")
        elif signals:
            signals.append(
                f"the loss starts at {loss:.3f} (step {step:,}), near ln {k} = {math.log(k):.3f}: {k} classes"
            )
    chosen = selection_metric(log)
    if chosen is not None and signals and not chosen[0].endswith("loss"):
        signals.append(f"the best checkpoint is chosen by `{chosen[0]}`")
    if not signals or not (strong or (start is not None and start[0] == 2)):
        return []
    return [
        Finding(
            "task",
            f"Not a causal LM's fine-tune: {kinds[0]}",
            "; ".join(signals) + ". The language-model rules (the start against a vocabulary or a reference, the LR "
            "priors for LM fine-tuning, LoRA capacity, memorisation read from the train loss, underfitting by the "
            "train/val gap) do not apply and stay silent; a rising val, regressions, plateaus, noise, scale and the "
            "numbers are still judged, and the best step follows the run's own selection metric",
            "eval keys, objective keys or a model name that only non-causal-LM runs have, or a loss starting at ln 2",
            "high" if strong else "low",
            problem=False,
            data={"kind": kinds[0]},
        )
    ]


def _token_accuracy(curve: Curve, scores: list[str]) -> bool:
    """An accuracy alone, beside an eval loss that never falls under ln 10: a causal LM's token accuracy, not a
    classifier's (a classifier scoring above a 10-class guess at every evaluation would be one in name only)."""
    alone = all(k.rpartition("_")[2].rpartition("/")[2] in ("accuracy", "acc") for k in scores)
    return alone and len(curve.val) > 0 and float(min(curve.val)) > math.log(FEW_CLASSES)


def _start(curve: Curve) -> tuple[int, float, int] | None:
    """(k, loss, step) when the first train loss is logged at the start of the run and sits near ln k, k <= 10."""
    trains = curve.log.trains
    if not trains:
        return None
    first, last = trains[0], curve.log.points[-1].step
    # a loss above ln 11 is no k <= 10 (and a summed loss of hundreds would overflow exp)
    if first.step > max(10, START_SHARE * last) or first.train_loss > math.log(FEW_CLASSES + 1):
        return None
    k = round(math.exp(first.train_loss))
    if k < 2 or k > FEW_CLASSES:
        return None
    near = abs(first.train_loss - math.log(k))
    return (k, first.train_loss, first.step) if near < (BINARY_START if k == 2 else 0.01 * math.log(k)) else None
