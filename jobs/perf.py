"""Model FLOPs utilisation, nanoGPT style: achieved FLOP/s over the GPU's peak for the precision in use."""

from __future__ import annotations

import re

import torch

# Dense (no sparsity) datasheet peaks in FLOP/s, by the precision our runs compute in:
# `fp32` is the plain FP32 pipe (PyTorch leaves TF32 matmuls off by default), `bf16` the
# tensor cores under autocast. A GPU without bf16 (V100) has no bf16 entry, and a figure
# we could not confirm from the vendor (A10G's FP32) is left out: no MFU beats a wrong one.
# Most specific names first: "A10" is a prefix of "A100" and "A10G", "L4" of "L40S".
PEAKS: list[tuple[str, dict[str, float]]] = [
    (r"H100.*PCIe", {"fp32": 51e12, "bf16": 756e12}),
    (r"H100", {"fp32": 67e12, "bf16": 989e12}),  # SXM
    (r"H200", {"fp32": 67e12, "bf16": 989e12}),
    (r"A100", {"fp32": 19.5e12, "bf16": 312e12}),
    (r"A10G", {"bf16": 70e12}),  # AWS g5; FP32 figures disagree (31.2 vs 35 TFLOP/s)
    (r"A10\b", {"fp32": 31.2e12, "bf16": 125e12}),
    (r"L40S", {"fp32": 91.6e12, "bf16": 362e12}),
    (r"L4\b", {"fp32": 30.3e12, "bf16": 121e12}),
    (r"V100", {"fp32": 15.7e12}),  # SXM2; Volta has no bf16
]


def flops_per_token(model: torch.nn.Module, block_size: int) -> float:
    """6N + 12·L·H·Q·T (nanoGPT's estimate): N non-embedding parameters, L layers, H heads,
    Q head size, T tokens of context. Counts weight gradients of every weight, so for LoRA
    it is the full-fine-tune equivalent, an upper bound on the work done."""
    config = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "wpe" not in name and "lora_" not in name)
    layers, heads, width = config.n_layer, config.n_head, config.n_embd
    return 6 * n + 12 * layers * heads * (width // heads) * block_size


def peak_for(device_name: str, precision: str) -> float | None:
    """The datasheet peak of the GPU called ``device_name`` at ``precision``, or None when not known."""
    for pattern, peaks in PEAKS:
        if re.search(pattern, device_name):
            return peaks.get(precision)
    return None


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The peak of ``device`` at ``precision`` when it is a GPU we know, else None (no MFU on CPU)."""
    if device.type != "cuda":
        return None
    return peak_for(torch.cuda.get_device_name(device), precision)
