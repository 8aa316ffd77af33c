"""The learning-rate schedule: a pure function of the step, like nanoGPT's get_lr.

Being pure is what makes resume exact: the step alone restores the learning rate.
"""

from __future__ import annotations


def lr_at(
    step: int, *, lr: float, total_steps: int, kind: str, warmup_steps: int = 0, floor_ratio: float = 0.0
) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``.

    - ``constant``: ``lr`` throughout.
    - ``warmup_constant``: linear warmup over ``warmup_steps`` (reaching ``lr`` at step
      ``warmup_steps``), then ``lr``.
    - ``warmup_linear``: the same warmup, then linear decay to ``floor_ratio * lr`` at the
      last step.
    """
    if kind == "constant":
        return lr
    # 1) warmup: (step + 1) / (warmup + 1) so the very first step is small but never zero
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if kind == "warmup_constant":
        return lr
    if kind != "warmup_linear":
        raise ValueError(f"unknown schedule kind {kind!r}")
    # 2) linear decay from lr (at the end of warmup) to the floor (at the last step)
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return lr * (1.0 - progress * (1.0 - floor_ratio))
