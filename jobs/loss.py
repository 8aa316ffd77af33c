"""The LM head and its cross-entropy, taken out of the model when ``compute.loss`` says so.

GPT-2's head is a 50,257-way product for every token. The model's own loss (``model``)
makes the full logits, upcasts them to fp32 and keeps them for the backward pass: at
block 1024, batch 16, 3.3 GB, and as much again for their gradient. ``chunked`` computes
the same loss a chunk of tokens at a time and each chunk's gradient right away, in the
forward pass, so the full logits never exist (the algorithm of Liger's fused linear
cross-entropy, in plain PyTorch: any device, and torch.compile fuses it with the model).
``liger`` is liger-kernel's Triton kernel for the same, on a GPU (the ``gpu`` extra).

:class:`LMWithLoss` wraps the model so that DDP and torch.compile see one module: a
forward with ``labels`` returns the loss through the chosen head; one without (the
evaluation) is the model's own forward, logits and all.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

IGNORE_INDEX = -100  # the label that scores nothing, as in Hugging Face and torch.nn.functional.cross_entropy
# Tokens a chunk of logits covers: 4,096 x 50,257 logits in fp32 are 823 MB, a quarter of the full logits at block
# 1024, batch 16; the seed's 2,048 tokens a step are one chunk.
CHUNK_TOKENS = 4096


class ExtraMissing(ImportError):
    """An optional dependency a spec asked for is not installed; the message says which extra brings it."""


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets``, a chunk of rows at a time.

    The forward pass computes each chunk's logits, its loss and its gradients with respect
    to ``hidden`` and ``weight``, then drops the logits; backward only scales the saved
    gradients. The products run in ``dtype`` (bf16 under autocast, as the model's own
    head would) and the softmax in fp32, as the model's own loss upcasts its logits.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, dtype: torch.dtype, chunk: int):
        h_all, w = hidden.to(dtype), weight.to(dtype)
        valid_all = targets != IGNORE_INDEX
        count = valid_all.sum().clamp_min(1).float()  # a tensor: no host sync
        loss = hidden.new_zeros((), dtype=torch.float32)
        grad_hidden = torch.empty_like(hidden) if hidden.requires_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        for start in range(0, len(hidden), chunk):
            h, t = h_all[start : start + chunk], targets[start : start + chunk]
            valid = valid_all[start : start + chunk]
            logits = (h @ w.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, t.clamp_min(0).unsqueeze(1)).squeeze(1)
            loss = loss + ((lse - picked) * valid).sum()
            # d(mean loss)/d(logits) = (softmax - one_hot(target)) / count, zero on ignored rows
            grad = torch.exp(logits - lse.unsqueeze(1))
            grad.scatter_add_(1, t.clamp_min(0).unsqueeze(1), -torch.ones_like(picked).unsqueeze(1))
            grad = (grad * (valid.unsqueeze(1) / count)).to(dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk] = grad @ w
            if grad_weight is not None:
                grad_weight += (grad.T @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss / count

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            None if grad_hidden is None else grad_hidden * grad_output,
            None if grad_weight is None else (grad_weight * grad_output).to(ctx.weight_dtype),
            None,
            None,
            None,
        )


def chunked_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the head ``weight`` over ``hidden`` (tokens x width) against ``targets``."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    with torch.autocast(device_type=device, enabled=False):
        return ChunkedLinearCrossEntropy.apply(hidden, weight, targets, dtype, CHUNK_TOKENS)


def liger_loss():
    """liger-kernel's fused linear cross-entropy, as ``fn(hidden, weight, targets)``; raises :class:`ExtraMissing`
    without it."""
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError as err:
        raise ExtraMissing(
            f"compute.loss: 'liger' needs liger-kernel, which is not installed here ({err}); install the `gpu` extra "
            "(pip install 'plateau-sweep[gpu]') on the workers, or use loss: chunked (the same algorithm in plain "
            "PyTorch)"
        ) from None
    # fp32 accumulation of the head's gradient, as autocast's own backward does
    fused = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, accum_dtype=torch.float32)

    @torch.compiler.disable  # Triton kernels of its own, and a host sync (it counts the targets with .item())
    def fn(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return fused(weight, hidden, targets)

    return fn


def _hf_model(lm: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (LoRA's layers are in it, in place)."""
    get_base = getattr(lm, "get_base_model", None)
    return get_base() if callable(get_base) else lm


class LMWithLoss(nn.Module):
    """A causal LM whose training loss goes through ``loss_fn(hidden, head_weight, targets)``."""

    def __init__(self, lm: nn.Module, loss: str):
        super().__init__()
        self.lm = lm
        self.loss_fn = liger_loss() if loss == "liger" else chunked_loss

    @property
    def config(self):
        return self.lm.config

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **kwargs):
        if labels is None:  # evaluation: the model's own logits
            return self.lm(input_ids=input_ids, **kwargs)
        hf = _hf_model(self.lm)
        hidden = hf.base_model(input_ids=input_ids, **kwargs).last_hidden_state
        # position i predicts token i + 1; the last position of each sequence predicts nothing (as the model's loss)
        targets = torch.cat([labels[:, 1:], labels.new_full((len(labels), 1), IGNORE_INDEX)], dim=1)
        weight = hf.get_output_embeddings().weight
        return CausalLMOutput(loss=self.loss_fn(hidden.flatten(0, 1), weight, targets.flatten()))
