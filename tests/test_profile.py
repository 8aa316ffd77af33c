"""compute.profile: the job's own steps profiled, and a CPU trace broken down by what each operator does."""

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bench.calibration import seeded_jobs, train_in_process
from jobs.profile import DATA, LM_HEAD, OPTIMIZER, breakdown
from orchestrator.spec import load


def test_a_cpu_trace_is_broken_down_by_what_each_operator_does():
    """One operator of each kind, each alone in a trace: each lands in its category, and nothing else does."""
    vocab = 1000
    hidden, head, targets = torch.randn(64, 32), torch.randn(vocab, 32), torch.randint(0, vocab, (64,))
    q, a, b = torch.randn(2, 4, 16, 8), torch.randn(64, 32), torch.randn(32, 32)
    table, total = torch.arange(100), a.sum()

    def data():
        with torch.profiler.record_function(DATA):
            table[torch.tensor([1, 2, 3])]

    def optimizer():
        with torch.profiler.record_function(OPTIMIZER):
            a.add_(1.0)

    cases = {
        "matmul": lambda: a @ b,
        LM_HEAD: lambda: F.cross_entropy(hidden @ head.T, targets),  # the product has an input of the vocab's size
        "attention": lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True),
        "elementwise": lambda: a.relu(),
        "host sync": lambda: total.item(),
        "optimizer": optimizer,
        "data": data,
    }
    for expected, work in cases.items():
        work()  # once before, so that first-call allocations stay out of the trace
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            work()
        totals, syncs = breakdown(prof.events(), cuda=False, vocab=vocab)
        assert max(totals, key=totals.get) == expected, totals
        assert syncs == (expected == "host sync")


def test_the_job_profiles_its_own_steps():
    """Through the job's own loop: the trace and the table land in the profile folder the run's note names, and
    every part of a step shows. The one value a step reads back is transformers' own: its eager GPT-2 forward
    checks the position ids for packed sequences (masking_utils.find_packed_sequence_indices; torch.compile traces
    the check away); test_train_step checks that nothing of ours reads one."""
    # batch 8 x block 128: a micro-batch of 1,024 tokens, not the vocabulary's 2,048 (jobs.profile._last_dim_is)
    sets = ["data.batch_size=8", "run.steps=3", "run.eval_every=3", "run.checkpoint_every=3"]
    experiment, plan = load(None, [*sets, "compute.profile.start_step=1", "compute.profile.steps=2"], ["current"])
    metrics = train_in_process(seeded_jobs(experiment, plan, "current", [0])[0])
    note = next(n for n in metrics["notes"] if n.startswith("profile of steps 1-2"))
    folder = Path(re.search(r"trace and table in (\S+)\)$", note).group(1))
    figures = json.loads((folder / "summary.json").read_text())
    assert (folder / "trace.pt.trace.json.gz").stat().st_size > 0
    assert (folder / "summary.txt").read_text().startswith("profile of steps 1-2 on cpu")
    for part in ("matmul", "attention", LM_HEAD, "elementwise", "optimizer", "data"):
        assert figures["ms_per_step"][part] > 0, part
    assert sum(figures["share"].values()) == pytest.approx(1)
    assert figures["host_syncs_per_step"] == 1
