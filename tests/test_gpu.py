"""The GPU levers on a CUDA GPU (skipped without one; bench/gpu_run.sh runs them there): liger's fused loss is the
chunked one, CUDA graphs train as the eager step, and a compiled step syncs with the host nowhere."""

import pytest
import torch

from contract.spec import StorageSpec, TrainSpec
from jobs import loss as loss_lib
from jobs.model import load_model
from jobs.train import train_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _model(loss: str = "model", compile_mode: str | None = None):
    spec = TrainSpec.model_validate({"method": "full", "lora": None})
    torch.manual_seed(0)
    model = load_model(spec, StorageSpec()).cuda()
    wrapped = model if loss == "model" else loss_lib.LMWithLoss(model, loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    return (torch.compile(wrapped, mode=compile_mode) if compile_mode else wrapped), optimizer


def _losses(model, optimizer, steps: int = 6) -> list[float]:
    batches = torch.randint(0, 2048, (steps, 16, 128), generator=torch.Generator().manual_seed(0)).cuda()
    return [train_step(model, optimizer, [x], 1e-3, 1.0, bf16=True)[0].item() for x in batches]


def test_liger_trains_as_the_chunked_loss():
    pytest.importorskip("liger_kernel")
    assert _losses(*_model("liger")) == pytest.approx(_losses(*_model("chunked")), rel=2e-3)


def test_cuda_graphs_train_as_the_eager_step():
    """reduce-overhead replays the compiled step's kernels as CUDA graphs: the same losses, to bf16 rounding."""
    assert _losses(*_model("chunked", "reduce-overhead")) == pytest.approx(_losses(*_model()), rel=2e-3)


def test_a_compiled_step_never_syncs_with_the_host():
    model, optimizer = _model("chunked", "default")
    x = torch.randint(0, 2048, (16, 128)).cuda()
    for _ in range(3):  # compiled (and recompiled for the optimizer's first step) before the checked one
        train_step(model, optimizer, [x], 1e-3, 1.0, bf16=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_step(model, optimizer, [x], 1e-3, 1.0, bf16=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
