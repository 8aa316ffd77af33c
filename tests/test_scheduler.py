"""The early-stopping rule at exact evaluations."""

from orchestrator.sweep.scheduler import RegressionRule


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
