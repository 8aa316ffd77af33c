"""The evaluation protocol: every run scored on the same tokens with the same context, per document."""

import pytest
import torch

from contract.spec import EvalProtocol, StorageSpec, TrainSpec
from jobs import data as data_lib
from jobs import evaluate
from jobs.model import load_model, load_tokenizer


@pytest.mark.parametrize("n,context,stride", [(10, 4, 2), (10, 4, 3), (3, 8, 4), (1000, 256, 128), (1000, 256, 255)])
def test_every_token_after_the_first_is_scored_once_with_at_least_context_minus_stride_before_it(n, context, stride):
    windows = evaluate.windows(n, context, stride)
    scored = [p for w in windows for p in range(w.first_target, w.end)]
    assert scored == list(range(1, n))
    for w in windows[1:]:
        assert w.first_target - w.begin >= context - stride and w.end - w.begin <= context


def _val_docs(block_size):
    spec = TrainSpec.model_validate({"data": {"block_size": block_size}})
    tokenizer = load_tokenizer(spec, StorageSpec())
    return data_lib.load(spec.data, StorageSpec(), tokenizer).val_docs


def _targets(data: evaluate.EvalSet) -> list[tuple[int, int, int]]:
    """Every scored (document, position in the stream, token id): the protocol's fingerprint."""
    return [(int(data.doc_of[p]), p, int(data.stream[p])) for w in data.windows for p in range(w.first_target, w.end)]


def test_runs_with_different_block_sizes_score_the_identical_targets():
    protocol = EvalProtocol(context=256, stride=128)
    short, long = evaluate.eval_set(_val_docs(128), protocol), evaluate.eval_set(_val_docs(256), protocol)
    assert short.eval_tokens == long.eval_tokens == sum(short.doc_tokens)
    assert _targets(short) == _targets(long)


def test_per_document_sums_add_up_to_the_mean_and_shares_split_the_documents():
    protocol = EvalProtocol(context=64, stride=32, max_documents=6, selection_fraction=0.5)
    data = evaluate.eval_set(_val_docs(128), protocol)
    model = load_model(TrainSpec.model_validate({"method": "full", "lora": None}), StorageSpec())
    nll = evaluate.per_document_nll(model, data, batch_size=4, device=torch.device("cpu"))
    assert data.n_docs == 6 and nll.shape == (6,)
    # the same sums, one window at a time: batching does not change what is scored
    assert torch.allclose(
        nll, evaluate.per_document_nll(model, data, batch_size=1, device=torch.device("cpu")), rtol=1e-4
    )
    choose, score = protocol.share(6, "choose"), protocol.share(6, "score")
    assert sum(choose) == 3 and all(
        c != s for c, s in zip(choose, score)
    )  # disjoint: choosing never uses scoring tokens
    total = float(nll.sum() / sum(data.doc_tokens))
    parts = [protocol.mean_nll(nll.tolist(), data.doc_tokens, role) for role in ("choose", "score")]
    assert min(parts) <= total <= max(parts)


def test_the_demo_model_uses_context():
    """On the same scored tokens of the bundled corpus, 256 tokens of context beat 32."""
    model = load_model(TrainSpec.model_validate({"method": "full", "lora": None}), StorageSpec())
    docs = _val_docs(128)
    losses = {}
    for context in (32, 256):
        data = evaluate.eval_set(docs, EvalProtocol(context=context, stride=context // 2))
        losses[context] = float(evaluate.per_document_nll(model, data, 8, torch.device("cpu")).sum() / data.eval_tokens)
    assert losses[256] < losses[32]
