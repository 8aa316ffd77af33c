"""compute's `auto` levers: on where they pay (a GPU, a long run, a shared GPU), and nothing changes on the CPU."""

import pytest
from pydantic import ValidationError

from contract.spec import COMPILE_PAYS_AFTER_STEPS, TrainSpec
from orchestrator.launch import localize
from orchestrator.spec import load
from orchestrator.spec.plan import describe


def _levers(gpus: float, steps: int, **compute):
    spec = {"run": {"steps": steps}, "resources": {"gpus_per_worker": gpus}, "compute": compute}
    return TrainSpec.model_validate(spec).levers()


def test_compile_is_on_for_long_gpu_runs_and_what_the_spec_says_wins():
    assert _levers(1, COMPILE_PAYS_AFTER_STEPS).compile
    assert not _levers(1, COMPILE_PAYS_AFTER_STEPS - 1).compile  # too short to pay back the compile
    assert not _levers(0, 10 * COMPILE_PAYS_AFTER_STEPS).compile  # the CPU
    assert not _levers(1, 10 * COMPILE_PAYS_AFTER_STEPS, compile=False).compile
    assert _levers(0, 100, compile=True).compile


def test_the_micro_batch_is_sized_to_the_runs_share_of_a_shared_gpu():
    assert _levers(0.2, 100).memory_share == 0.2
    assert _levers(1, 100).memory_share is None  # the GPU to itself
    assert _levers(0.2, 100, micro_batch_size=4).memory_share is None  # a size the user chose
    assert _levers(0.2, 100, micro_batch_size=None).memory_share is None  # the whole share, against the whole GPU


def test_cuda_graphs_need_compile():
    with pytest.raises(ValidationError, match="compute.compile_mode: 'reduce-overhead' is a mode of torch.compile"):
        TrainSpec.model_validate({"compute": {"compile": False, "compile_mode": "reduce-overhead"}})


def test_the_default_job_here_turns_no_lever_on_and_the_dry_run_says_why():
    """The default job on this CPU-only machine computes as it always has; its plan, run on one GPU, compiles
    nothing (a short run) but sizes each run's micro-batch to its share of the GPU."""
    experiment, plan = load(None, [], None)
    here = localize(experiment, plan, gpus=0, cores=2).plan
    for run in here.runs:
        levers = run.spec.levers()
        assert (levers.compile, levers.loss, levers.memory_share) == (False, "model", None)
    text = describe(experiment, here)
    assert "-> compute              compile off: auto, and the run is on the CPU" in text
    gpu = plan.model_copy(
        update={
            "runs": [
                r.model_copy(
                    update={
                        "spec": r.spec.model_copy(
                            update={"resources": r.spec.resources.model_copy(update={"gpus_per_worker": 1})}
                        )
                    }
                )
                for r in plan.runs
            ]
        }
    )
    shared = localize(experiment, gpu, gpus=1, cores=16).plan
    share = shared.runs[0].spec.resources.gpus_per_worker
    assert f"micro-batch sized to {share:g} of the GPU's memory" in describe(experiment, shared)
    assert "compile off: auto:" in describe(experiment, shared)
