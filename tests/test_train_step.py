"""The training step on the demo model, without Ray: what loosening the clip can and cannot change, and what it reads
back to the host."""

import os
import traceback
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from contract.spec import StorageSpec, TrainSpec
from jobs import data as data_lib
from jobs.loss import LMWithLoss
from jobs.model import load_model, load_tokenizer
from jobs.train import fit_micro_batch, train_step


def _run(overrides: dict, clip: float, steps: int = 12) -> tuple[list[float], float]:
    """(losses, clip rate) of ``steps`` steps on the bundled corpus, seeded."""
    spec = TrainSpec.model_validate(overrides)
    torch.manual_seed(0)
    data = data_lib.load(spec.data, StorageSpec(), load_tokenizer(spec, StorageSpec()))
    model = load_model(spec, StorageSpec())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.optim.lr)
    order = data_lib.BatchOrder(len(data.train), 16, seed=0)
    losses, clipped = [], 0
    for step in range(steps):
        loss, norm = train_step(model, optimizer, [data.train[order.indices(step)]], spec.optim.lr, clip)
        losses.append(loss.item())
        clipped += norm.item() > clip
    return losses, clipped / steps


def test_loosening_a_clip_that_never_engages_changes_nothing():
    lora = {"lora": {"rank": 16, "alpha": 32.0, "dropout": 0.0}, "optim": {"lr": 4e-3}}
    tight, rate = _run(lora, clip=1.0)
    loose, _ = _run(lora, clip=5.0)
    assert rate == 0  # LoRA's gradient norm stays below 1.0 here
    assert tight == loose


def test_loosening_a_clip_that_engages_changes_the_run():
    full = {"method": "full", "lora": None, "optim": {"lr": 2e-3}}
    tight, rate = _run(full, clip=1.0)
    loose, _ = _run(full, clip=5.0)
    assert rate > 0  # full fine-tuning's norm is above 1.0
    assert tight[0] == loose[0] and tight[-1] != loose[-1]  # the same first loss (before any update), then apart


def test_a_single_workers_memory_probe_is_its_first_step():
    """A worker alone whose whole batch fits in one micro-batch keeps the probe's forward and backward as its
    first step's: it trains exactly as with no probe at all (losses, weights, and the dropout masks after)."""
    spec = TrainSpec.model_validate({"lora": {"rank": 8, "alpha": 16.0, "dropout": 0.1}, "optim": {"lr": 4e-3}})
    data = data_lib.load(spec.data, StorageSpec(), load_tokenizer(spec, StorageSpec()))
    order = data_lib.BatchOrder(len(data.train), 16, seed=0)

    def run(probe: bool):
        torch.manual_seed(0)
        model = load_model(spec, StorageSpec())
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.optim.lr)
        computed = None
        if probe:
            x = data.train[order.indices(0)]
            micro, tried, (computed, seconds) = fit_micro_batch(model, optimizer, x, len(x), 1, False)
            assert (micro, tried) == (len(x), []) and seconds > 0
        losses = [
            train_step(
                model, optimizer, [data.train[order.indices(step)]], 4e-3, 1.0, computed=computed if step == 0 else None
            )[0].item()
            for step in range(3)
        ]
        return losses, [p.detach().clone() for p in model.parameters()], torch.get_rng_state()

    folded, unprobed = run(probe=True), run(probe=False)
    assert folded[0] == unprobed[0]
    assert all(torch.equal(a, b) for a, b in zip(folded[1], unprobed[1]))
    assert torch.equal(folded[2], unprobed[2])


class _HostReads(TorchDispatchMode):
    """Where each read of a tensor's value into Python (.item(), bool(t), float(t)) comes from: the innermost frame's
    file and function outside torch. On a GPU each such read is a host sync."""

    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            stack = traceback.extract_stack()[:-1]  # less this frame
            frame = next(f for f in reversed(stack) if f"{os.sep}torch{os.sep}" not in f.filename)
            self.sources.append(f"{Path(frame.filename).name}:{frame.name}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("loss", ["model", "chunked"])
def test_a_step_reads_nothing_back_to_the_host(loss):
    """train_step, with accumulation over two micro-batches and clipping, returns its loss and gradient norm as
    tensors and reads no value back on the way: on a GPU, no host sync of ours. (Fused AdamW, as on a GPU: the
    unfused one reads its step counters, which are CPU tensors there.) transformers' eager GPT-2 forward reads one,
    checking the position ids for packed sequences; torch.compile traces that check away."""
    spec = TrainSpec.model_validate({"method": "full", "lora": None})
    torch.manual_seed(0)
    model = load_model(spec, StorageSpec())
    if loss == "chunked":
        model = LMWithLoss(model, "chunked")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x = torch.randint(0, 2048, (8, 64))
    with _HostReads() as reads:
        mean, norm = train_step(model, optimizer, list(x.split(4)), 1e-3, 1.0)
    assert isinstance(mean, torch.Tensor) and isinstance(norm, torch.Tensor)
    assert [s for s in reads.sources if s != "masking_utils.py:find_packed_sequence_indices"] == []
    assert len(reads.sources) == 2  # transformers' check, once a micro-batch: the mode sees every read
