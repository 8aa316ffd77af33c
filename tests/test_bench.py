"""Each benchmark script still runs end to end (tiny settings; the figures are not checked here)."""

import subprocess
import sys

import pytest

TINY_RUN = [
    *["--set", "run.steps=10", "--set", "run.eval_every=5", "--set", "run.checkpoint_every=10"],
    *["--set", "option_seeds=1"],
]


def _bench(module, *args):
    out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    return out.stdout


def test_step_throughput_compares_three_loops():
    out = _bench("bench.step_throughput", "--method", "lora", "--steps", "2", "--warmup", "1", "--rounds", "1")
    for line in ("ours", "bare", "hf_trainer", "ratio ours/bare"):
        assert line in out


@pytest.mark.ray
def test_orchestration_breaks_down_a_sweep():
    out = _bench("bench.orchestration", "--only", "lora_capacity", *TINY_RUN)
    assert "launch to first step" in out and "training-step share after the first step" in out


@pytest.mark.ray
def test_sweep_time_runs_parallel_and_sequential():
    out = _bench("bench.sweep_time", "--only", "current", "--only", "lora_capacity", *TINY_RUN)
    assert "sequential / parallel wall time" in out
