"""compute.compile: a compiled run, its loss compiled with the model, trains as the uncompiled one (docs/BENCHMARKS.md
§12 advises it on a GPU)."""

import pytest
from torch._dynamo.utils import counters

from jobs.train import train_in_process
from orchestrator.spec import load
from orchestrator.sweep.trial import job_configs


def test_a_compiled_run_trains_as_the_uncompiled_one():
    """The whole loop under torch.compile: the memory probe, the steps, the evaluations (other shapes, so
    other graphs). The compiled run takes the LM head's loss out of the model (compute.loss: chunked), so the model
    and the loss compile as one graph, against the model's own uncompiled loss: both levers at once, in one compile
    (each alone: tests/test_loss.py for the loss). Ray Train's local mode runs it here and has no storage, so it
    writes no checkpoints; what a checkpoint of a compiled model holds is the model under the wrappers
    (jobs.train._unwrap)."""
    sets = ["method=full", "lora=null", "run.steps=4", "run.eval_every=2", "run.checkpoint_every=2"]
    counters.clear()
    reports = {}
    for compiled in (False, True):
        levers = ["compute.compile=true", "compute.loss=chunked"] if compiled else ["compute.compile=false"]
        experiment, plan = load(None, [*sets, "control_seeds=1", *levers], ["current"])
        (job,) = job_configs(experiment, plan)
        reports[compiled] = train_in_process(job)
    assert reports[True].step == 4
    assert reports[True].train_loss == pytest.approx(reports[False].train_loss, abs=1e-4)
    assert reports[True].doc_nll == pytest.approx(reports[False].doc_nll, rel=1e-4)
    assert counters["stats"]["unique_graphs"] >= 2  # it did compile: the training step's graph and evaluation's
