import pytest

from jobs.schedule import lr_at


def test_constant_is_flat():
    assert [lr_at(s, lr=1e-3, total_steps=10, kind="constant") for s in (0, 5, 9)] == [1e-3] * 3


def test_warmup_then_constant_exact_steps():
    lr = lambda s: lr_at(s, lr=1.0, total_steps=100, kind="warmup_constant", warmup_steps=4)  # noqa: E731
    assert [lr(s) for s in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert lr(99) == 1.0


def test_warmup_then_linear_decay_to_floor():
    # the seed's Option 2: 5% warmup of 100 steps, decay to 50% at the last step
    lr = lambda s: lr_at(s, lr=2e-5, total_steps=100, kind="warmup_linear", warmup_steps=5, floor_ratio=0.5)  # noqa: E731
    assert lr(0) == pytest.approx(2e-5 / 6)
    assert lr(5) == pytest.approx(2e-5)  # peak right after warmup
    assert lr(99) == pytest.approx(1e-5)  # floor at the last step
    assert lr(52) == pytest.approx(2e-5 * (1 - 0.5 * 47 / 94))  # halfway down the decay
    values = [lr(s) for s in range(5, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))
