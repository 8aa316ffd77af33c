"""Model FLOPs utilisation, nanoGPT style: achieved FLOP/s over the GPU's bf16 peak."""

from __future__ import annotations

import torch

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from the vendors' datasheets.
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A10G": 125e12, "L4": 121e12, "L40S": 362e12, "V100": 125e12}


def flops_per_token(model: torch.nn.Module, block_size: int) -> float:
    """6N + 12·L·H·Q·T (nanoGPT's estimate): N non-embedding parameters, L layers, H heads,
    Q head size, T tokens of context. Counts weight gradients of every weight, so for LoRA
    it is the full-fine-tune equivalent, an upper bound on the work done."""
    config = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "wpe" not in name and "lora_" not in name)
    layers, heads, width = config.n_layer, config.n_head, config.n_embd
    return 6 * n + 12 * layers * heads * (width // heads) * block_size


def peak_flops(device: torch.device) -> float | None:
    """The bf16 peak of ``device`` when it is a GPU we know, else None (no MFU on CPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK.items() if key in name), None)
