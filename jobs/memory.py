"""Fitting the micro-batch into memory without changing the experiment.

The seed's trouble began when an out-of-memory error made the user halve the batch,
which changed what was being compared. Here only the micro-batch shrinks: gradient
accumulation makes up the difference, so the effective batch, the learning rate and
the step count stay as the spec says.

Every step has the same shapes (full blocks), so one trial step at the start shows
whether a micro-batch fits; it runs on every worker, without gradient communication,
and the workers agree on the outcome before training starts. A single worker whose
batch is one micro-batch tries the first step's own forward and backward, and keeps
them when they fit (jobs.train.fit_micro_batch): its probe costs no extra step. An
out-of-memory error later (fragmentation) fails the worker, and Ray Train restarts it
from its last checkpoint, where the trial runs again.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import torch
import torch.distributed as dist


def is_out_of_memory(err: BaseException) -> bool:
    """A CUDA out-of-memory error, or a failed CPU allocation (torch raises both as RuntimeError)."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(err)
    )


def next_smaller(micro: int, share: int) -> int | None:
    """The largest divisor of ``share`` that is at most half of ``micro`` (None below 1)."""
    return next((d for d in range(micro // 2, 0, -1) if share % d == 0), None)


def fit_micro_batch(
    try_step: Callable[[int], None], micro: int, share: int, world: int, device: torch.device
) -> tuple[int, list[int]]:
    """The largest micro-batch, from ``micro`` down, for which ``try_step`` fits on every worker.

    ``try_step(m)`` runs one forward and backward of ``m`` sequences and raises on
    out-of-memory. Returns the fitted size and the sizes tried before it. Raises the
    last out-of-memory error when even one sequence does not fit.
    """
    tried: list[int] = []
    while True:
        error: BaseException | None = None
        try:
            try_step(micro)
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            error = err
        _release(device, failed=error is not None)
        failed = torch.tensor([0.0 if error is None else 1.0], device=device)
        if world > 1:  # every worker must train with the same micro-batch
            dist.all_reduce(failed, op=dist.ReduceOp.MAX)
        if not failed.item():
            return micro, tried
        smaller = next_smaller(micro, share)
        if smaller is None:
            raise error or RuntimeError("another worker ran out of memory with a micro-batch of 1 sequence")
        tried.append(micro)
        micro = smaller


def _release(device: torch.device, failed: bool) -> None:
    """Free what a try left: on a GPU, the allocator's cache; after an out-of-memory error, the cycles the failed
    try left. (After a try that fit on the CPU there is nothing to free: a full collection of a heap that holds
    torch and transformers costs a quarter of a second of each run's start-up.)"""
    if failed or device.type == "cuda":
        gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fallback_note(tried: list[int], fitted: int, step: int) -> str | None:
    """The line the report shows when the micro-batch had to shrink, else None."""
    if not tried:
        return None
    return f"micro-batch {tried[0]} → {fitted} at step {step} after an out-of-memory error; effective batch unchanged"
