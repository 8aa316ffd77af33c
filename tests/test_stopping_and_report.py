"""The early-stopping rule at exact evaluations, and the verdict/table on hand-made records."""

from orchestrator.report import RunRecord, plot, table, verdict
from orchestrator.scheduler import RegressionRule


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


def _record(run, best, status="completed", option=None):
    return RunRecord(run=run, option=option or run, overrides={}, status=status, reason=None, steps=10, total_steps=10,
                     best_val_loss=best, best_step=10 if best else None, final_val_loss=best, final_train_loss=best,
                     tokens_per_s=1000.0, clip_rate=0.5, mfu=None, best_checkpoint=None,
                     history=[{"step": 5, "train_loss": 7.0, "val_loss": 7.0}, {"step": 10, "train_loss": best, "val_loss": best}] if best else [])


def test_verdict_in_plain_words():
    control = _record("current", 6.71)
    assert verdict([control, _record("lr_schedule", 6.41)], "current", 0.05).startswith("Take **lr_schedule**: best validation loss 6.4100 at step 10, 0.3000 (4.5%) below the control **current**")
    assert verdict([control, _record("a", 6.70)], "current", 0.05).startswith("No fix clearly beats the control")
    assert verdict([control, _record("a", 6.90)], "current", 0.05).startswith("None of the fixes beat the control **current**")
    assert verdict([_record("a", None, "failed")], "current", 0.05).startswith("No run produced a validation loss")


def test_table_sorts_by_best_val_and_shows_the_delta():
    text = table([_record("current", 6.71), _record("b", 6.41), _record("c", None, "failed")], "current")
    rows = text.splitlines()[2:]
    assert [row.split("|")[2].strip() for row in rows] == ["b", "current", "c"]
    assert "| -0.3000 |" in rows[0] and "| control |" in rows[1]
    assert plot([_record("current", 6.71), _record("b", 6.41)], "t", "current")[:4] == b"\x89PNG"
