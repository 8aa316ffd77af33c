"""compute.compile: a compiled run trains as the uncompiled one (docs/BENCHMARKS.md §12 advises it on a GPU)."""

import pytest
from torch._dynamo.utils import counters

from jobs.train import train_in_process
from orchestrator.spec import load
from orchestrator.sweep.trial import job_configs


def test_a_compiled_run_trains_as_the_uncompiled_one():
    """The whole loop under torch.compile: the memory probe, the steps, the evaluations (other shapes, so
    other graphs). Ray Train's local mode runs it here and has no storage, so it writes no checkpoints;
    what a checkpoint of a compiled model holds is the model under the wrapper (jobs.train._unwrap)."""
    sets = ["method=full", "lora=null", "run.steps=4", "run.eval_every=2", "run.checkpoint_every=2"]
    counters.clear()
    reports = {}
    for compiled in (False, True):
        experiment, plan = load(
            None, [*sets, "control_seeds=1", f"compute.compile={str(compiled).lower()}"], ["current"]
        )
        (job,) = job_configs(experiment, plan)
        reports[compiled] = train_in_process(job)
    assert reports[True].step == 4
    assert reports[True].train_loss == pytest.approx(reports[False].train_loss, abs=1e-4)
    assert reports[True].doc_nll == pytest.approx(reports[False].doc_nll, rel=1e-4)
    assert counters["stats"]["unique_graphs"] >= 2  # it did compile: the training step's graph and evaluation's
