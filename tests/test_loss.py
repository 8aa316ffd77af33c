"""compute.loss: the LM head's cross-entropy a chunk at a time trains as the model's own; liger says what it needs."""

import sys

import pytest
import torch
from pydantic import ValidationError

from contract.spec import StorageSpec, TrainSpec
from jobs import data as data_lib
from jobs import loss as loss_lib
from jobs.model import load_model, load_tokenizer
from jobs.train import _forward, train_step


def _train(overrides: dict, wrap: bool, bf16: bool = False, steps: int = 2):
    """(losses, the first step's gradients) of ``steps`` steps with two micro-batches each, the head's loss chunked if
    ``wrap``."""
    spec = TrainSpec.model_validate(overrides)
    data = data_lib.load(spec.data, StorageSpec(), load_tokenizer(spec, StorageSpec()))
    order = data_lib.BatchOrder(len(data.train), 16, seed=0)
    torch.manual_seed(0)
    model = load_model(spec, StorageSpec())
    if wrap:
        model = loss_lib.LMWithLoss(model, "chunked")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.optim.lr)
    first = data.train[order.indices(0)]
    _forward(model, first, bf16).backward()
    grads = [p.grad.clone() for p in params]
    optimizer.zero_grad()
    losses = [
        train_step(model, optimizer, list(data.train[order.indices(s)].split(8)), spec.optim.lr, 1.0, bf16)[0].item()
        for s in range(steps)
    ]
    return losses, grads


@pytest.mark.parametrize(
    "overrides",
    [
        {"method": "full", "lora": None, "optim": {"lr": 2e-3}},
        {"lora": {"rank": 8, "alpha": 16.0, "dropout": 0.0}, "optim": {"lr": 4e-3}},
    ],
    ids=["full", "lora"],
)
def test_the_chunked_loss_trains_as_the_models_own(overrides, monkeypatch):
    """Chunks smaller than a micro-batch (1,024 tokens in chunks of 400: the last one partial) give the model's own
    gradients and losses, to float32 rounding: only the order of the sums differs."""
    monkeypatch.setattr(loss_lib, "CHUNK_TOKENS", 400)
    own, own_grads = _train(overrides, wrap=False)
    chunked, chunked_grads = _train(overrides, wrap=True)
    assert sum(g.abs().sum() for g in own_grads) > 0  # (LoRA's A gets none before B leaves zero)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(own_grads, chunked_grads))
    assert chunked == pytest.approx(own, rel=1e-5)


def test_under_bf16_autocast_the_chunked_loss_is_the_models_own_to_bf16_rounding():
    """Both compute the head's product in bf16 and the softmax in fp32; the chunked loss accumulates the head's
    gradient in fp32 where autocast's backward rounds it to bf16, so the runs part by bf16 rounding only."""
    full = {"method": "full", "lora": None, "optim": {"lr": 2e-3}}
    own, _ = _train(full, wrap=False, bf16=True, steps=2)
    chunked, _ = _train(full, wrap=True, bf16=True, steps=2)
    assert chunked == pytest.approx(own, rel=2e-3)


def test_evaluation_through_the_wrapper_is_the_models_own_forward():
    spec = TrainSpec()
    torch.manual_seed(0)
    model = load_model(spec, StorageSpec()).eval()
    x = torch.randint(0, 2048, (2, 32))
    wrapped = loss_lib.LMWithLoss(model, "chunked")
    assert torch.equal(wrapped(input_ids=x, use_cache=False).logits, model(input_ids=x, use_cache=False).logits)
    assert _forward(wrapped, x, False).item() == pytest.approx(_forward(model, x, False).item(), rel=1e-6)


def test_liger_without_its_extra_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # an import of it now fails, as when it is not installed
    with pytest.raises(loss_lib.ExtraMissing, match=r"pip install 'plateau-sweep\[gpu\]'"):
        loss_lib.liger_loss()


def test_liger_on_a_run_without_a_gpu_is_refused_before_it_starts():
    with pytest.raises(ValidationError, match="compute.loss: 'liger' runs Triton kernels on a GPU only"):
        TrainSpec.model_validate({"compute": {"loss": "liger"}})
