"""The scheduler's rules at exact evaluations: early stopping, and successive halving of an LR search's arms."""

from orchestrator.sweep.scheduler import RegressionRule, SuccessiveHalving


def test_the_seeds_step_2000_jump_is_stopped_with_its_reason():
    rule = RegressionRule(min_delta=0.05, patience=1, grace_evals=1)
    assert rule.observe(1000, 6.80) is None
    assert rule.observe(1500, 6.71) is None
    assert rule.observe(2000, 6.93) == "val 6.93 at step 2000 > best 6.71 at step 1500 (+3.3%, patience 1)"


def test_a_healthy_or_plateauing_run_is_not_stopped():
    rule = RegressionRule(min_delta=0.05, patience=1, grace_evals=1)
    for step, val in [(500, 7.0), (1000, 6.8), (1500, 6.71), (2000, 6.74), (2500, 6.72), (3000, 6.70)]:
        assert rule.observe(step, val) is None  # the seed's plateau wobble stays within min_delta


def test_patience_needs_consecutive_regressions_and_grace_ignores_the_start():
    rule = RegressionRule(min_delta=0.0, patience=2, grace_evals=2)
    assert rule.observe(1, 5.0) is None
    assert rule.observe(2, 9.0) is None  # still in grace
    assert rule.observe(3, 5.5) is None  # first regression
    assert rule.observe(4, 4.9) is None  # new best resets the streak
    assert rule.observe(5, 5.2) is None
    assert rule.observe(6, 5.3) is not None  # second in a row
    again = RegressionRule(min_delta=0.0, patience=1, grace_evals=0)
    again.observe(10, 5.0)
    assert again.observe(10, 9.0) is None  # a step reported twice (after a resume) counts once


def test_an_arm_goes_on_only_among_the_best_half_of_the_arms_at_its_rung_so_far():
    rule = SuccessiveHalving(rungs=[20, 40], eta=2)
    assert rule.observe("a", 20, 4.30) is None  # the first at a rung always goes on
    assert rule.observe("b", 20, 4.20) is None  # best of 2
    assert rule.observe("c", 20, 4.40) == (
        "pruned at rung 1 (step 20): val 4.4000 ranks 3 of the 3 arms there so far, and only the best 2 go on (eta 2)"
    )
    assert rule.observe("d", 20, 4.25) is None  # second of 4: the best 2 go on
    assert rule.observe("a", 40, 4.10) is None  # rung 2 starts afresh
    assert rule.observe("b", 40, 4.15) is not None  # worse than a, and only 1 of 2 goes on
    assert rule.observe("d", 30, 9.99) is None  # not a rung
    assert rule.observe("c", 20, 9.99) is None  # a step reported again (after a resume) counts once


class _Trial:
    def __init__(self, name):
        self.trial_id, self.config = name, {"job": {"run_name": name}}


def _result(step: int, val_loss: float) -> dict:
    """A Tune result: a run's report at ``step``, with Tune's own fields around it."""
    from contract.report import Report

    return {**Report(step=step, total_steps=20, val_loss=val_loss).model_dump(), "training_iteration": 1, "done": False}


def test_the_scheduler_prunes_arms_and_a_relaunched_one_resumes_the_rungs(tmp_path):
    from ray.tune.schedulers import TrialScheduler

    from contract.spec import StorageSpec
    from orchestrator.folder import ExperimentFolder
    from orchestrator.spec import EarlyStoppingSpec, Search
    from orchestrator.sweep.scheduler import SweepScheduler

    folder = ExperimentFolder(StorageSpec(path=str(tmp_path)), "x")
    (tmp_path / "x").mkdir()  # as folder.start() leaves it
    search = Search(
        name="lora", option="lora", lrs=[1e-3, 1e-2], runs=["lora[lr=0.001]", "lora[lr=0.01]"], rungs=[10], eta=2
    )
    off = EarlyStoppingSpec(enabled=False)
    first = SweepScheduler(off, [search], folder)
    assert first.on_trial_result(None, _Trial("lora[lr=0.001]"), _result(10, 4.0)) == TrialScheduler.CONTINUE
    assert first.on_trial_result(None, _Trial("control"), _result(10, 9.0)) == TrialScheduler.CONTINUE
    relaunched = SweepScheduler(off, [search], folder)  # a relaunch restores the scheduler, then reads the folder
    assert relaunched.on_trial_result(None, _Trial("lora[lr=0.01]"), _result(10, 4.5)) == TrialScheduler.STOP
    assert folder.lr_search()["pruned"]["lora[lr=0.01]"].startswith("pruned at rung 1 (step 10): val 4.5000 ranks 2")
