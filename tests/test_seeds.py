"""Seeds: every variant on seed numbers of its own, and what the dry run says about the seed noise they will measure."""

import json

import pytest

from orchestrator.results import seed_prior
from orchestrator.results.stats import SeedPrior
from orchestrator.spec import load
from orchestrator.spec.plan import seeds_line, shared_seeds


def _seeds(plan) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for run in plan.runs:
        out.setdefault(run.variant, []).append(run.spec.run.seed)
    return out


def test_every_variant_of_the_default_job_runs_seeds_of_its_own():
    """The control takes the first seeds, then each variant its own in the spec's order: no seed number twice, so the
    interval's independent seeds are what ran."""
    experiment, plan = load(None)
    assert _seeds(plan) == {
        "current": [0, 1, 2, 3],
        "lora_capacity": [4],
        "lr_schedule": [5],
        "long_context": [6],
        "loose_clipping[grad_clip=2.0]": [7],
        "loose_clipping[grad_clip=5.0]": [8],
        "full_finetune": [9],
    }
    assert shared_seeds(plan) is None
    assert seeds_line(experiment, plan).startswith("control 4 (0-3), other variants 1 each (4-9): ")
    _, alone = load(None, only=["full_finetune"])  # --only never moves a run to another seed
    assert _seeds(alone) == {"full_finetune": [9]}
    _, later = load(None, ["run.seed=100", "option_seeds=2"], only=["current", "lr_schedule"])
    assert _seeds(later) == {"current": [100, 101, 102, 103], "lr_schedule": [106, 107]}
    # an option --only leaves out takes its seeds but is not validated: 4 steps are too few for lr_schedule's warmup,
    # and refusing them would refuse a run of the control alone
    _, short = load(None, ["run.steps=4", "run.eval_every=2", "run.checkpoint_every=2"], only=["current"])
    assert _seeds(short) == {"current": [0, 1, 2, 3]}


def test_seeds_an_option_lists_are_kept_and_shared_ones_are_named(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("control: a\ncontrol_seeds: 2\noption_seeds: 1\noptions: {a: {}, b: {run: {seed: 1}}, c: {}}\n")
    _, plan = load(str(spec))
    assert _seeds(plan) == {"a": [0, 1], "b": [1], "c": [2]}
    assert shared_seeds(plan) == (
        "a, b share seed 1: their runs start alike, a correlation the intervals do not count; drop run.seed from the "
        "options to give each variant seeds of its own"
    )


def test_the_dry_run_warns_when_the_verdict_could_take_no_fix_and_names_the_seeds_that_would(tmp_path):
    store = tmp_path / "priors.json"
    spec = tmp_path / "s.yaml"
    spec.write_text("control: a\ncontrol_seeds: 1\noption_seeds: 1\noptions: {a: {}, b: {optim: {lr: 0.01}}}\n")
    _, plan = load(str(spec))
    assert seed_prior.seed_notes(plan, "a", store) == [
        (
            "warning",
            "the seed noise rests on 0 degrees of freedom, fewer than 2, and no stored calibration matches the "
            "control's configuration: the verdict will take no fix; control_seeds: 3 fixes it",
        )
    ]
    _, enough = load(str(spec), ["control_seeds=3"])
    assert seed_prior.seed_notes(enough, "a", store) == []
    # a stored calibration of the control's configuration stands in, and the dry run says so
    seed_prior.store(plan.runs[0], plan.evaluation, [10, 20], SeedPrior(1e-5, 0.1, 23, "the test's seeds"), store)
    (label, text) = seed_prior.seed_notes(plan, "a", store)[0]
    assert label == "" and text.startswith("pooled with the stored calibration of the control's configuration: 23 ")


def test_a_stored_calibration_applies_to_its_configuration_on_its_documents_only(tmp_path):
    store = tmp_path / "priors.json"
    _, plan = load(None)
    control = plan.runs[0]
    seed_prior.store(control, plan.evaluation, [10, 20, 30], SeedPrior(1e-5, 0.1, 23, "the test's seeds"), store)
    assert seed_prior.prior(plan, "current", [10, 20, 30], store) == SeedPrior(1e-5, 0.1, 23, "the test's seeds")
    assert seed_prior.prior(plan, "current", [10, 20, 31], store) is None  # other val documents
    _, longer = load(None, ["run.steps=120"])  # another training length: another configuration
    assert seed_prior.prior(longer, "current", [10, 20, 30], store) is None
    _, elsewhere = load(None, ["data.path=/elsewhere/training_data_final_merged.md"])  # where the data lives: the same
    assert seed_prior.prior(elsewhere, "current", [10, 20, 30], store) is not None
    assert len(json.loads(store.read_text())["calibrations"]) == 1


def test_the_shipped_calibration_is_the_default_jobs():
    """The default job's control has a stored calibration, measured on seeds the verdict's calibration never uses."""
    _, plan = load(None)
    found = seed_prior.entry(plan, "current")
    assert found is not None and found["df"] >= 15
    assert "seeds 0-" in found["source"] and len(found["doc_tokens"]) == 18
    assert found["shift_var"] > 0 and found["residual_rate"] > 0


@pytest.mark.parametrize("only", [["current"], None])
def test_a_plan_of_the_control_alone_still_gets_its_calibration(only):
    _, plan = load(None, only=only)
    assert seed_prior.entry(plan, "current") is not None
