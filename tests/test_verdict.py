"""The verdict's statistics on synthetic per-document losses: coverage, Holm, and when "Take X" is said."""

import numpy as np
import pytest
import yaml

from orchestrator.results.records import RunRecord
from orchestrator.results.stats import (
    SeedNoise,
    SeedPrior,
    chi2_quantile,
    decompose,
    holm,
    paired_bootstrap,
    seed_noise,
    t_quantile,
)
from orchestrator.results.verdict import compare, read_with_sweep


def _docs(rng, n_docs=40):
    tokens = rng.integers(100, 400, n_docs).astype(float)
    per_token = rng.normal(4.0, 0.4, n_docs)  # documents differ a lot in difficulty
    return tokens, per_token


def test_the_interval_covers_a_known_difference_at_the_stated_rate():
    """Simulate many sweeps with a true Δ of -0.05 nats/token and count how often the 95% interval covers it."""
    rng = np.random.default_rng(0)
    covered, trials = 0, 200
    for _ in range(trials):
        tokens, difficulty = _docs(rng)
        control = (difficulty + rng.normal(0, 0.05, len(tokens))) * tokens
        option = (difficulty - 0.05 + rng.normal(0, 0.05, len(tokens))) * tokens
        c = paired_bootstrap(option[None], control[None], tokens, resamples=2000, seed=int(rng.integers(1 << 30)))
        covered += c.ci95[0] <= -0.05 <= c.ci95[1]
    assert 0.90 <= covered / trials <= 0.99


def test_pairing_removes_the_document_difficulty_from_the_noise():
    rng = np.random.default_rng(1)
    tokens, difficulty = _docs(rng)
    control = difficulty * tokens
    option = (difficulty - 0.02) * tokens  # better on every document by the same small amount
    c = paired_bootstrap(option[None], control[None], tokens)
    assert c.mean == pytest.approx(-0.02)
    assert c.ci95[1] < 0 and c.p < 0.01  # clear, though 0.02 is tiny beside the 0.4 spread across documents


def test_an_identical_run_has_a_p_value_of_one():
    rng = np.random.default_rng(2)
    tokens, difficulty = _docs(rng)
    c = paired_bootstrap((difficulty * tokens)[None], (difficulty * tokens)[None], tokens, resamples=1000)
    assert c.mean == 0 and c.ci95 == (0.0, 0.0) and c.p == 1.0


def test_seed_noise_widens_the_interval_by_the_seeds_on_each_side():
    """The document bootstrap cannot see a shift shared by every document; the seed noise term adds it, shrinking
    as 1/seeds on each side, t x sd x sqrt(ratio/n_o + 1/n_c), with a wider t the fewer seeds measured the sd."""
    rng = np.random.default_rng(3)
    tokens, difficulty = _docs(rng)
    control, option = difficulty * tokens, (difficulty - 0.02) * tokens  # the documents alone: no spread at all
    assert paired_bootstrap(option[None], control[None], tokens).half_width == pytest.approx(0, abs=1e-12)
    many = SeedNoise(sd=0.03, df=10_000, variants=["control"])  # an sd known exactly: a normal
    one = paired_bootstrap(option[None], control[None], tokens, many)
    two = paired_bootstrap(np.stack([option] * 2), np.stack([control] * 2), tokens, many)
    assert one.half_width == pytest.approx(1.96 * 0.03 * np.sqrt(2), rel=0.05)
    assert two.half_width == pytest.approx(1.96 * 0.03 * np.sqrt(1), rel=0.05)
    assert one.mean == two.mean == pytest.approx(-0.02)
    few = paired_bootstrap(option[None], control[None], tokens, SeedNoise(sd=0.03, df=3, variants=["control"]))
    assert few.half_width == pytest.approx(3.182 * 0.03 * np.sqrt(2), rel=0.05)  # the t's 97.5% point at 3 df
    noisier = paired_bootstrap(option[None], control[None], tokens, many, ratio=2.0)  # the option's variance 2x
    assert noisier.half_width == pytest.approx(1.96 * 0.03 * np.sqrt(3), rel=0.05)


def test_every_interval_is_the_one_alpha_says(monkeypatch):
    """The bootstrap's percentiles and the seed sd's interval both come from ALPHA: at 0.10, a known normal's interval
    is +-1.645 sd, not the 95% one's 1.96."""
    from orchestrator.results import stats

    rng = np.random.default_rng(3)
    tokens, difficulty = _docs(rng)
    noise = SeedNoise(sd=0.03, df=10_000, variants=["control"])
    monkeypatch.setattr(stats, "ALPHA", 0.10)
    c = paired_bootstrap((difficulty * tokens)[None], (difficulty * tokens)[None], tokens, noise)
    assert c.half_width == pytest.approx(1.645 * 0.03 * np.sqrt(2), rel=0.03)
    low, high = SeedNoise(sd=1.0, df=10, variants=["c"]).sd_ci95
    # chi-squared with 10 df: 3.940 and 18.307 at 5% and 95%
    assert (low, high) == (pytest.approx(np.sqrt(10 / 18.307), rel=0.01), pytest.approx(np.sqrt(10 / 3.940), rel=0.01))


def test_quantiles_are_the_tables():
    assert [round(t_quantile(df), 1) for df in (1, 3, 7)] == [12.7, 3.2, 2.4]
    assert chi2_quantile(10, 0.025) == pytest.approx(3.247, rel=0.01)
    assert chi2_quantile(10, 0.975) == pytest.approx(20.483, rel=0.01)
    low, high = SeedNoise(sd=1.0, df=10, variants=["c"]).sd_ci95  # the 95% interval of an sd on 10 df
    assert (low, high) == (pytest.approx(np.sqrt(10 / 20.483), rel=0.01), pytest.approx(np.sqrt(10 / 3.247), rel=0.01))


def _seeded(shifts, tokens, difficulty, residual=None):
    """Per-document NLL sums [seeds, docs]: each seed's loss is the documents' difficulty plus its shift, on every
    token; ``residual`` [seeds, docs] adds a document-by-seed part."""
    y = (difficulty[None] + np.asarray(shifts, dtype=float)[:, None]) * tokens[None]
    return y + (0 if residual is None else residual)


def test_seed_noise_pools_the_variants_that_ran_several_seeds():
    """Shifts alone (no residual): each variant's loss is exactly its shift apart, so the pooled sd is known."""
    tokens, difficulty = _docs(np.random.default_rng(0))
    losses = {
        "a": _seeded([0.01, 0.02], tokens, difficulty),  # squares 0.5e-4 over 1 df
        "b": _seeded([0.0, 0.0, 0.03], tokens, difficulty),  # squares 6e-4 over 2 df
        "c": _seeded([0.05], tokens, difficulty),  # one seed: nothing to pool
    }
    noise = seed_noise(losses, tokens)
    assert (noise.sd, noise.df, noise.variants) == (pytest.approx(np.sqrt(6.5e-4 / 3)), 3, ["a", "b"])
    assert noise.residual_sd == pytest.approx(0, abs=1e-12) and not noise.floored
    assert not seed_noise({"a": losses["a"], "c": losses["c"]}, tokens).measured  # 1 degree of freedom: too few


def test_the_residual_and_the_shift_are_told_apart():
    """400 seeds of a known model: shift sd 0.004 shared by every token, and a residual of variance 0.1 x tokens on
    each document (a run's loss then varies by 0.1 / T from it): both come back, and so does the total."""
    rng = np.random.default_rng(1)
    tokens, difficulty = _docs(rng)
    shifts = rng.normal(0, 0.004, 400)
    residual = rng.normal(0, 1, (400, len(tokens))) * np.sqrt(0.1 * tokens)
    y = _seeded(shifts, tokens, difficulty, residual)
    prior = decompose(y, tokens, "known")
    assert np.sqrt(prior.shift_var) == pytest.approx(0.004, rel=0.1)
    assert prior.residual_rate == pytest.approx(0.1, rel=0.05)
    assert prior.variance(tokens.sum()) == pytest.approx(np.var(y.sum(1) / tokens.sum(), ddof=1))  # the two parts


def test_a_stored_calibration_is_pooled_in_and_stands_in_for_unmeasured_noise():
    tokens, difficulty = _docs(np.random.default_rng(2))
    prior = SeedPrior(shift_var=1e-4, residual_rate=0.0, df=20, source="test")
    alone = seed_noise({"c": _seeded([0.0], tokens, difficulty)}, tokens, prior)  # one seed: the calibration alone
    assert (alone.sd, alone.df, alone.measured_df) == (pytest.approx(0.01), 20, 0)
    four = _seeded([0.0, 0.0, 0.0, 0.006], tokens, difficulty)  # squares 2.7e-5 on 3 df
    pooled = seed_noise({"c": four}, tokens, prior)
    assert (pooled.sd, pooled.df) == (pytest.approx(np.sqrt((20 * 1e-4 + 2.7e-5) / 23)), 23)
    assert pooled.measured_sd == pytest.approx(np.sqrt(2.7e-5 / 3))  # the draw's own, for the report


def test_a_quiet_draw_of_seeds_is_floored_at_their_residual():
    """Three seeds whose losses are equal (no spread at all between them), though every document moves from seed to
    seed: the spread between seeds is at least the residual's, so that is the sd counted."""
    rng = np.random.default_rng(4)
    tokens, difficulty = _docs(rng)
    residual = rng.normal(0, 1, (3, len(tokens))) * np.sqrt(0.1 * tokens)
    residual -= residual.sum(1, keepdims=True) * tokens / tokens.sum()  # every seed's loss exactly the same
    noise = seed_noise({"c": _seeded([0.0, 0.0, 0.0], tokens, difficulty, residual)}, tokens)
    assert noise.measured_sd == pytest.approx(0, abs=1e-9)
    assert noise.floored and noise.sd == noise.residual_sd > 0
    assert noise.residual_df == 2 * (len(tokens) - 1)


def test_holm_matches_the_step_down_formula():
    # sorted p: 0.01 x3, 0.02 x2, 0.03 x1 -> 0.03, 0.04, 0.04 (monotone), back in input order
    assert holm([0.03, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 2 x 0.5 capped at 1, and never below an earlier step


def _record(run, option, seed, doc_nll, tokens, status="completed"):
    return RunRecord(
        run=run,
        option=option,
        variant=option,
        seed=seed,
        overrides={},
        status=status,
        reason=None if status == "completed" else "stopped",
        steps=10,
        total_steps=10,
        first_val_loss=5.0,
        final_val_loss=None,
        best_val_loss=None,
        best_step=None,
        compared_step=10,
        compared_loss=float(np.sum(doc_nll) / np.sum(tokens)),
        final_train_loss=None,
        tokens_per_s=None,
        clip_rate=None,
        grad_norm_p50=None,
        grad_norm_p90=None,
        mfu=None,
        micro_batch_size=16,
        accumulation_steps=1,
        memory_fallback=None,
        eval_tokens=int(np.sum(tokens)),
        best_checkpoint=None,
        compared_checkpoint=None,
        doc_nll=list(doc_nll),
        doc_tokens=[int(t) for t in tokens],
    )


def _sweep(rng, option_shift, status="completed", control_seeds=(0.0, 0.01, 0.005)):
    """Three control seeds (each shifted by its seed effect) and one option on a seed of its own, with per-document
    noise."""
    tokens, difficulty = _docs(rng)
    tokens = tokens.round()

    def run(shift):
        return (difficulty + shift + rng.normal(0, 0.01, len(tokens))) * tokens

    control = [_record(f"current[seed={s}]", "current", s, run(shift), tokens) for s, shift in enumerate(control_seeds)]
    fix = run(float(np.mean(control_seeds)) + option_shift)
    return control + [_record("fix", "fix", len(control_seeds), fix, tokens, status)]


def test_a_clearly_better_option_is_taken():
    result = compare(_sweep(np.random.default_rng(4), -0.2), "current", resamples=2000)
    assert result.verdict.take == "fix" and not result.verdict.provisional
    fix = result.variants[1]
    assert fix.delta.ci95[1] < 0 and fix.p_holm < 0.05
    reason = result.verdict.reason
    assert reason.startswith("Take **fix**") and "for this comparison alone" in reason
    # one seed of fix: the take says so, and that it holds with fix's seed variance twice the control's
    assert "(fix's own seed noise is not measured: the take still holds with fix's seed variance at 2x" in reason
    assert "the intervals count seed noise of sd " in reason and "(95% CI [" in reason


def test_an_option_like_the_control_but_for_its_seed_is_not_taken():
    result = compare(_sweep(np.random.default_rng(5), 0.0), "current", resamples=2000)
    assert result.verdict.take is None and result.verdict.candidates == []
    assert "the best, **fix**, differs by Δ +0.0023" in result.verdict.reason  # it came out a little worse


def test_a_gain_inside_the_seed_noise_of_the_difference_is_not_taken():
    # 0.02 better than the control's mean on every document, but the control's seeds spread by sd 0.05
    result = compare(_sweep(np.random.default_rng(6), -0.02, control_seeds=(0.0, 0.1, 0.05)), "current", resamples=2000)
    assert result.verdict.take is None
    assert "less than the seed noise of the difference (sd 0.05" in result.verdict.reason  # 0.05 x sqrt(1 + 1/3)


def test_a_gain_beyond_the_difference_of_means_is_taken_though_inside_one_runs_seed_noise():
    """20 seeds a side, no residual: the difference of the means varies by sd x sqrt(2/20) = 0.32 sd, so a gain of
    0.8 sd is clear, though one run alone varies by more than it."""
    tokens, difficulty = _docs(np.random.default_rng(15))
    shifts = np.resize([-0.01, 0.01], 20)  # sd 0.01026 over 20 seeds
    records = [
        _record(f"current[seed={s}]", "current", s, (difficulty + x) * tokens, tokens) for s, x in enumerate(shifts)
    ]
    records += [
        _record(f"fix[seed={20 + s}]", "fix", 20 + s, (difficulty + x - 0.008) * tokens, tokens)
        for s, x in enumerate(shifts)
    ]
    for r in records[20:]:
        r.variant = "fix"
    result = compare(records, "current", resamples=2000)
    assert result.noise.sd == pytest.approx(0.01026, rel=0.01)
    assert result.verdict.take == "fix"
    assert "larger than the seed noise of the difference (sd 0.0032)" in result.verdict.reason


def test_without_two_degrees_of_freedom_of_seed_noise_no_fix_is_taken():
    """Two control seeds and one per option: a gain of 0.2, clear on the documents, is not taken on the documents
    alone, and the verdict names the control seeds that would give it a verdict (the dry run warns the same)."""
    result = compare(_sweep(np.random.default_rng(14), -0.2, control_seeds=(0.0, 0.01)), "current", resamples=2000)
    assert result.verdict.take is None and not result.noise.measured and result.noise.measured_df == 1
    reason = result.verdict.reason
    assert reason.startswith("No fix can be taken on unmeasured seed noise: the closest to the control **current**")
    assert "Raise control_seeds to 3 (or run 1 more seed of any variant) for a verdict." in reason
    # a stored calibration of the configuration stands in: the same runs, a take
    prior = SeedPrior(shift_var=1e-4, residual_rate=0.0, df=20, source="a test calibration")
    records = _sweep(np.random.default_rng(14), -0.2, control_seeds=(0.0, 0.01))
    stood_in = compare(records, "current", resamples=2000, prior=prior)
    assert stood_in.verdict.take == "fix"
    assert "21 degrees of freedom, a Student's t: 1 from the seeds of current, 20 from the stored calibration" in (
        stood_in.verdict.reason
    )


def _one_seed_fix(gain):
    """Four control seeds with no spread and one seed of fix, ``gain`` better, on documents with no residual; the
    seed noise (sd 0.01 on 1,000 degrees of freedom) is a stored calibration's."""
    tokens, difficulty = _docs(np.random.default_rng(16))
    records = [_record(f"current[seed={s}]", "current", s, difficulty * tokens, tokens) for s in range(4)]
    records.append(_record("fix", "fix", 4, (difficulty - gain) * tokens, tokens))
    prior = SeedPrior(shift_var=1e-4, residual_rate=0.0, df=1000, source="test")
    return compare(records, "current", resamples=4000, prior=prior)


def test_a_take_on_one_seed_that_fails_at_twice_the_variance_is_provisional():
    """The interval's seed part is 1.96 x 0.01 x sqrt(1/1 + 1/4) = 0.022 at equal variances, and 0.029 with fix's
    variance twice the control's: a gain of 0.025 is taken provisionally, one of 0.04 outright."""
    provisional = _one_seed_fix(0.025)
    assert (provisional.verdict.take, provisional.verdict.provisional) == ("fix", True)
    fix = provisional.variants[1]
    assert fix.noisier.half_width == pytest.approx(1.96 * 0.01 * np.sqrt(2.25), rel=0.05)
    assert provisional.verdict.reason.startswith("Provisional take **fix**")
    assert "the take does not hold with fix's seed variance at 2x the control's" in provisional.verdict.reason
    assert "it is provisional until its confirm spec, 3 seeds of it, agrees" in provisional.verdict.reason
    firm = _one_seed_fix(0.04)
    assert (firm.verdict.take, firm.verdict.provisional) == ("fix", False)
    assert firm.verdict.reason.startswith("Take **fix**")


def test_a_control_seed_that_did_not_finish_is_left_out_of_the_control():
    records = _sweep(np.random.default_rng(9), -0.2, control_seeds=(0.0, 0.5, 0.01, 0.0))  # seed 1 failed half-way
    records[1].status, records[1].reason = "failed", "a worker died"
    result = compare(records, "current", resamples=1000)
    control = result.control
    kept = [records[i].compared_loss for i in (0, 2, 3)]
    assert control.compared_mean == pytest.approx(np.mean(kept)) and control.seed_std == pytest.approx(
        np.std(kept, ddof=1)
    )
    assert result.verdict.reason.endswith("(1 control seed(s) that did not finish cleanly are left out.)")


@pytest.mark.parametrize("status", ["failed", "diverged", "incomplete"])
def test_a_run_that_did_not_finish_cleanly_is_never_taken(status):
    result = compare(_sweep(np.random.default_rng(7), -0.3, status=status), "current", resamples=1000)
    assert result.verdict.take is None


def test_the_report_shows_the_control_first_then_each_option_with_its_interval(tmp_path):
    from contract.spec import EvalProtocol
    from orchestrator.folder import ExperimentFolder
    from orchestrator.results import report
    from orchestrator.spec import ExperimentSpec, Plan

    records = _sweep(np.random.default_rng(8), -0.2)
    records[-1].memory_fallback = "micro-batch 16 → 8 at step 0 after an out-of-memory error; effective batch unchanged"
    experiment = ExperimentSpec(
        name="t", control="current", options={"current": {}, "fix": {}}, storage={"path": str(tmp_path)}
    )
    results = report.Results(
        ExperimentFolder(experiment.storage, "t"),
        experiment,
        Plan(runs=[], evaluation=EvalProtocol(context=64, stride=32)),
        records,
        compare(records, "current", resamples=1000),
    )
    rows = report.table(results).splitlines()[2:]
    assert [r.split("|")[2].strip() for r in rows] == ["current", "fix"]
    assert "| 0, 1, 2 |" in rows[0] and "control (seed sd " in rows[0]
    d = results.comparisons.variants[1].delta
    assert f"| {d.mean:+.4f} [{d.ci95[0]:+.4f}, {d.ci95[1]:+.4f}] |" in rows[1]
    assert (
        "## Memory\n\n- **fix**: micro-batch 16 → 8 at step 0 after an out-of-memory error; effective batch unchanged"
        in report.markdown(results)
    )
    assert report.plot(results)[:8] == b"\x89PNG\r\n\x1a\n"


def test_with_a_selection_share_one_half_chooses_the_evaluation_and_the_other_scores_it():
    from contract.report import Report
    from contract.spec import EvalProtocol, TrainSpec
    from orchestrator.results.records import record
    from orchestrator.spec import Run

    protocol = EvalProtocol(context=64, stride=32, selection_fraction=0.5)
    tokens = [100, 100, 100, 100]
    assert protocol.share(4, "choose") == [False, True, False, True]
    # step 10 looks best on the choosing documents (1 and 3), step 20 on the scoring ones (0 and 2)
    by_step = {0: [500, 500, 500, 500], 10: [450, 300, 450, 300], 20: [300, 400, 300, 400]}
    rows = [
        Report(
            step=s, total_steps=20, val_loss=protocol.mean_nll(nll, tokens, "choose"), doc_nll=nll, doc_tokens=tokens
        )
        for s, nll in by_step.items()
    ]
    run = Run(
        name="a",
        option="a",
        variant="a",
        overrides={},
        spec=TrainSpec.model_validate({"run": {"steps": 20, "eval_every": 10, "checkpoint_every": 10}}),
    )
    r = record(run, rows, None, None, protocol)
    assert r.compared_step == 10  # chosen on documents 1 and 3 ...
    assert r.compared_loss == pytest.approx(4.5)  # ... and scored on 0 and 2, never on the tokens that chose it
    final = record(run, rows, None, None, protocol.model_copy(update={"selection_fraction": None}))
    assert (final.compared_step, final.compared_loss) == (
        20,
        pytest.approx(3.5),
    )  # without a share: the final evaluation, all documents


def test_the_launcher_exits_3_when_the_sweep_could_not_answer(tmp_path, capsys):
    """A recorded sweep (tests/fixtures/sweep/smoke: the control with two seeds, and full_finetune), its report
    rebuilt with --report: exit 0 with a verdict; with the control failed, exit 3, the report still written."""
    import json
    import shutil

    from orchestrator.launch import EXIT_ANSWERED, EXIT_UNANSWERED, main

    shutil.copytree("tests/fixtures/sweep/smoke", tmp_path / "smoke")
    report = ["specs/smoke.yaml", "--report", "--set", f"storage.path={tmp_path}"]
    assert main(report) == EXIT_ANSWERED
    for seed in (0, 1):
        state = tmp_path / "smoke" / f"current-seed_{seed}" / "state.json"
        state.write_text(json.dumps({"state": "failed", "error": "RuntimeError: CUDA error", "since": 0.0}))
    (tmp_path / "smoke" / "report.md").unlink()
    assert main(report) == EXIT_UNANSWERED
    err = capsys.readouterr().err
    assert err.startswith("\nno answer: The control **current** has no finished run (RuntimeError: CUDA error)")
    assert (tmp_path / "smoke" / "report.md").is_file()


def _searched(rng, searches, statuses=None, selection=None):
    """A control of four seeds, and for each search (option -> {lr: shift}) one arm per lr, on the same documents.
    Arms are chosen on ``selection`` (their val loss on the selection documents, by lr), by default their shift."""
    tokens, difficulty = _docs(rng)
    tokens = tokens.round()

    def run(shift):
        return (difficulty + shift + rng.normal(0, 0.01, len(tokens))) * tokens

    # four control seeds: the arms run one each, and the seed noise needs degrees of freedom from somewhere
    records = [_record(f"current[seed={s}]", "current", s, run(0.005 * s), tokens) for s in range(4)]
    for option, shifts in searches.items():
        for lr, shift in shifts.items():
            name = f"{option}[lr={lr}]"
            arm = _record(name, option, 0, run(shift), tokens, (statuses or {}).get(lr, "completed"))
            arm.variant, arm.search, arm.lr = name, option, lr
            arm.selection_loss = 4.0 + (selection or {}).get(lr, shift)
            records.append(arm)
    return records


def test_a_search_is_its_arm_best_on_the_selection_documents_and_never_a_pruned_one():
    arms = {"fix": {0.001: 0.0, 0.01: -0.1, 0.1: -0.3}}
    result = compare(_searched(np.random.default_rng(10), arms, statuses={0.1: "pruned"}), "current", resamples=1000)
    fix = result.variants[1]
    assert (fix.variant, fix.search.chosen.lr, fix.search.at_edge) == ("fix[lr=0.01]", 0.01, False)
    assert fix.search.pruned_at == {10: 1}
    assert [r.run for r in fix.runs] == ["fix[lr=0.01]"]  # compared on the chosen arm alone
    # the scoring documents never choose: the arm best on the selection share is chosen, whatever it scores
    records = _searched(np.random.default_rng(10), arms, selection={0.001: 0.0, 0.01: 0.1, 0.1: -0.1})
    search = compare(records, "current", resamples=1000).variants[1].search
    assert (search.chosen.lr, search.at_edge) == (0.1, True)
    # a one-seed pick at the edge asks for seeds before a new range
    assert search.edge_check.startswith("run lr 0.1 on 2 seeds (an option with optim.lr: 0.1, option_seeds: 2) before ")


def test_when_the_control_at_its_best_lr_does_as_well_the_verdict_takes_the_learning_rate():
    arms = {"current": {0.001: 0.0, 0.01: -0.2}, "fix": {0.001: 0.0, 0.01: -0.2}}  # the fix: no better at its best
    result = compare(_searched(np.random.default_rng(11), arms), "current", resamples=2000)
    assert result.tuned_control.variant == "current[lr=0.01]"
    assert result.verdict.take == "current[lr=0.01]"
    assert "no fix at its own best LR beats it: it was the learning rate" in result.verdict.reason
    fix = next(v for v in result.variants if v.option == "fix")
    assert fix.beats_control and not fix.beats_tuned_control


def test_a_fix_that_beats_the_control_at_its_best_lr_is_more_than_the_learning_rate():
    arms = {"current": {0.001: 0.0, 0.01: -0.2}, "fix": {0.001: 0.0, 0.01: -0.5}}
    result = compare(_searched(np.random.default_rng(12), arms), "current", resamples=2000)
    assert result.verdict.take == "fix[lr=0.01]"
    reason = result.verdict.reason
    assert reason.startswith("Take **fix[lr=0.01]** (at its best LR, 0.01 of 2 tried, at the edge of the range tried)")
    assert "it also beats the control at its best LR, **current[lr=0.01]**" in reason
    assert "It rests on 1 seed of fix[lr=0.01] and 4 of the control (fix[lr=0.01]'s own seed noise is not measured" in (
        reason
    )
    assert "on 3 degrees of freedom, a Student's t: 3 from the seeds of current (no stored calibration" in reason


def test_the_report_shows_each_search_its_chosen_lr_pruned_arms_and_cost(tmp_path):
    from orchestrator.diagnose.sweep import follow_up_spec, sweep_diagnosis
    from orchestrator.folder import ExperimentFolder
    from orchestrator.results import report
    from orchestrator.spec import load

    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ncontrol: current\ncontrol_seeds: 4\nevaluation: {selection_fraction: 0.5}\n"
        "lr_search: {factors: null, lrs: {current: [0.001, 0.01], fix: [0.001, 0.01, 0.1]}}\n"
        "base: {run: {steps: 20, eval_every: 10, checkpoint_every: 10}}\n"
        "options: {current: {}, fix: {lora: {rank: 16, alpha: 32}}}\n"
    )
    experiment, plan = load(str(spec))
    arms = {"current": {0.001: 0.0, 0.01: -0.2}, "fix": {0.001: 0.0, 0.01: -0.5, 0.1: 0.3}}
    records = _searched(np.random.default_rng(13), arms, statuses={0.1: "pruned"})
    for r in records:
        r.steps = 20 if r.status == "completed" else 10  # the pruned arm stopped at the first rung
    results = report.Results(
        ExperimentFolder(experiment.storage, "s"), experiment, plan, records, compare(records, "current", resamples=500)
    )
    rows = {r.split("|")[2].strip(): r for r in report.table(results).splitlines()[2:]}
    assert "| LR (chosen of arms) | Δ vs control at best LR [95% CI], p (Holm) |" in report.table(results)
    assert "| 0.01 of 3 |" in rows["fix[lr=0.01]"] and "| 0.01 of 2 (edge) |" in rows["current[lr=0.01]"]
    text = report.markdown(results)
    assert (
        "- **fix**: chose lr 0.01 (fix[lr=0.01]) of 0.001, 0.01, 0.1, on the selection documents; 1 pruned at " in text
    )
    assert "1 pruned at rung 1 (step 10).\n" in text
    assert "- **current** (the control at its best LR): chose lr 0.01" in text
    assert "**at the edge of its range**: run lr 0.01 on 2 seeds (an option with optim.lr: 0.01, option_seeds: 2) " in (
        text
    )
    # 4 control seeds + 2 + 2 arms of 20 steps and one of 10, against 4 control seeds + one fix run of 20 steps
    assert "1.70x the" in text
    summary = report.summary(results)
    fix = next(v for v in summary["variants"] if v["option"] == "fix")
    assert (fix["lr_search"]["chosen_lr"], fix["lr_search"]["at_edge"]) == (0.01, False)
    assert [(a["lr"], a["status"]) for a in fix["lr_search"]["arms"]] == [
        (0.001, "completed"),
        (0.01, "completed"),
        (0.1, "pruned"),
    ]
    assert {r["run"]: r["status"] for r in summary["runs"]}["fix[lr=0.1]"] == "pruned"
    assert summary["seed_noise"]["df"] == 3
    # the search chose 1e-2 for fix, above the prior's band for LoRA, over 1e-3 inside it: the search is the evidence,
    # so the confirm runs fix at the rate it chose and nowhere else (a winner that ran at one rate is also run at the
    # prior's centre)
    why = sweep_diagnosis(results)
    assert "learning rate above the usual range: LoRA at lr 1e-2" in why and "prior's centre" not in why
    confirm = yaml.safe_load(follow_up_spec(results).text)
    assert confirm["base"]["optim"]["lr"] == 0.01 and "optim" not in confirm["options"]["fix_lr_0_01"]
    # its rate was chosen by the search, so more capacity is its one change: no arm sets the rate back
    assert [o for o in confirm["options"] if "-without-" in o] == []
    assert report.plot(results)[:8] == b"\x89PNG\r\n\x1a\n"


def _spec(tmp_path, base: dict, options: dict):
    """The experiment and plan of a spec: a control ``current`` of 3 seeds and one seed of every other option."""
    from orchestrator.spec import deep_merge, load

    run = {"run": {"steps": 10, "eval_every": 10, "checkpoint_every": 10}}
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "s",
                "control": "current",
                "control_seeds": 3,
                "option_seeds": 1,
                "base": deep_merge(base, run),
                "options": {"current": {}, **options},
            }
        )
    )
    return load(str(spec))


def _results(experiment, plan, records):
    from orchestrator.folder import ExperimentFolder
    from orchestrator.results import report

    comparisons = compare(records, "current", resamples=500)
    return report.Results(ExperimentFolder(experiment.storage, "s"), experiment, plan, records, comparisons)


def _fix_that_wins(tmp_path, base: str, fix: str):
    """The results of a sweep of ``current`` (3 seeds) and ``fix`` (1 seed, clearly better), from their spec's
    ``base`` and ``fix`` (YAML flow mappings) and synthetic per-document losses."""
    experiment, plan = _spec(tmp_path, yaml.safe_load(base), {"fix": yaml.safe_load(fix)})
    results = _results(experiment, plan, _sweep(np.random.default_rng(4), -0.2))
    assert results.comparisons.verdict.take == "fix"
    return results


def test_a_fix_that_is_only_a_hotter_rate_is_not_confirmed_again_at_the_controls(tmp_path):
    """The fix is the learning rate itself (10x the prior's centre), and the control already ran at the centre: an
    arm there would repeat the control, so the confirm runs the fix as it won."""
    from orchestrator.diagnose.sweep import follow_up_spec, sweep_diagnosis

    results = _fix_that_wins(tmp_path, base="{optim: {lr: 0.002}}", fix="{optim: {lr: 0.02}}")
    why = sweep_diagnosis(results)
    assert "learning rate far above the usual range: LoRA at lr 2e-2" in why and "prior's centre" not in why
    confirm = yaml.safe_load(follow_up_spec(results).text)
    assert confirm["options"] == {"current": {"optim": {"lr": 0.002}}, "fix": {}}
    assert (confirm["control_seeds"], confirm["option_seeds"]) == (3, 3)  # each variant on 3 seeds of its own
    fix = results.comparisons.variants[1].delta
    assert confirm["follows"] == {
        "experiment": "s",
        "take": "fix",
        "option": "fix",
        "delta": [
            pytest.approx(fix.mean, abs=1e-6),
            pytest.approx(fix.ci95[0], abs=1e-6),
            pytest.approx(fix.ci95[1], abs=1e-6),
        ],
        "seeds": 1,
        "provisional": False,
    }


def test_a_fix_that_bundles_changes_is_confirmed_with_each_set_back_in_turn(tmp_path):
    """More LoRA capacity and a doubled rate at once, both in the usual range: the confirm runs the fix as it won, and
    with each change undone, so it says which one carries the gain; the control's seeds are the same."""
    from orchestrator.diagnose.sweep import follow_up_spec, sweep_diagnosis
    from orchestrator.spec import load, resolve_runs

    results = _fix_that_wins(
        tmp_path,
        base="{lora: {rank: 8, alpha: 16}, optim: {lr: 0.002}}",
        fix="{lora: {rank: 16, alpha: 32}, optim: {lr: 0.004}}",
    )
    why = next(line for line in sweep_diagnosis(results).splitlines() if line.startswith("- **fix**"))
    assert "it makes 2 changes at once (lora, lr)" in why
    text = follow_up_spec(results).text
    assert "2 changes at once (lora, lr), so it also runs with each set back to the control's in turn" in text
    confirm_path = tmp_path / "confirm.yaml"
    confirm_path.write_text(text)
    arms = {}
    for run in resolve_runs(load(str(confirm_path))[0]).runs:
        arms.setdefault(run.option, set()).add((run.spec.lora.rank, run.spec.lora.alpha, run.spec.optim.lr))
        assert run.spec.run.steps == 20
    assert arms == {
        "current": {(8, 16, 2e-3)},
        "fix": {(16, 32, 4e-3)},
        "fix-without-lora": {(8, 16, 4e-3)},  # the rate alone
        "fix-without-lr": {(16, 32, 2e-3)},  # the capacity alone
    }
    seeds = {}
    for run in resolve_runs(load(str(confirm_path))[0]).runs:
        seeds.setdefault(run.option, []).append(run.spec.run.seed)
    assert seeds == {
        "current": [0, 1, 2],
        "fix": [3, 4, 5],
        "fix-without-lora": [6, 7, 8],
        "fix-without-lr": [9, 10, 11],
    }


def test_each_change_is_weighed_against_the_variant_that_sets_it_back(tmp_path):
    """``both`` is ``capacity`` with more context, and ``context`` with more capacity: each pair says what the change
    it does not share is worth. Here the context carries the whole gain and the capacity none. ``full`` (no LoRA
    block) is no arm of anything: its LoRA is not the control's r8, and capacity's r16 is not the control's either;
    nor is ``faster``, which changes only how its runs execute."""
    from orchestrator.folder import ExperimentFolder
    from orchestrator.results import report

    more_context = {"data": {"block_size": 256, "batch_size": 8}}
    options = {
        "capacity": {"lora": {"rank": 16, "alpha": 32}},
        "context": more_context,
        "full": {"method": "full", "lora": None},
        "faster": {"lora": {"rank": 16, "alpha": 32}, "compute": {"micro_batch_size": 8}},
    }
    experiment, plan = _spec(tmp_path, {}, {**options, "both": {**options["capacity"], **more_context}})
    rng = np.random.default_rng(7)
    tokens, difficulty = _docs(rng)
    tokens = tokens.round()
    shifts = {"current[seed=0]": 0.0, "current[seed=1]": 0.005, "current[seed=2]": 0.0025}
    shifts |= {"capacity": 0.0, "context": -0.2, "both": -0.2}
    shifts |= {"full": -0.3, "faster": 0.0}
    records = [
        _record(run.name, run.option, run.spec.run.seed, (difficulty + shifts[run.name]) * tokens, tokens)
        for run in plan.runs
    ]
    results = report.build(ExperimentFolder(experiment.storage, "s"), experiment, plan, records)
    rows = {(x.variant, x.without): x for x in results.comparisons.ablations}
    # capacity and context are no arm of each other; faster is capacity, and both is capacity and faster with context
    assert set(rows) == {("both", "capacity"), ("both", "faster"), ("both", "context")}
    assert rows["both", "capacity"].changes == ["data.batch_size", "data.block_size"]
    assert rows["both", "capacity"].delta.mean == pytest.approx(-0.2)
    assert rows["both", "capacity"].effect == "they lower the loss"
    assert rows["both", "context"].changes == ["lora.alpha", "lora.rank"]
    assert rows["both", "context"].delta.mean == pytest.approx(0.0, abs=1e-9)
    assert rows["both", "context"].effect == "not distinguishable"
    section = "\n".join(report.ablation_section(results.comparisons))
    assert "| both | capacity | data.batch_size, data.block_size | -0.2000 [" in section
    assert "| both | context | lora.alpha, lora.rank | +0.0000 [" in section
    assert sorted(a["without"] for a in report.summary(results)["ablations"]) == ["capacity", "context", "faster"]


def test_an_early_stopped_run_is_compared_at_its_best_evaluation_not_the_one_that_stopped_it():
    """Without a selection share a completed run is compared at its last evaluation; an early-stopped one at its best,
    never at the regressed evaluation that stopped it."""
    from contract.report import Report
    from contract.spec import EvalProtocol, TrainSpec
    from orchestrator.results.records import record
    from orchestrator.spec import Run

    protocol = EvalProtocol(context=64, stride=32)
    tokens = [100, 100]
    by_step = {0: [500, 500], 10: [400, 420], 20: [480, 470]}  # best at step 10, stopped at 20 (+0.65)
    rows = [
        Report(step=s, total_steps=40, val_loss=sum(nll) / 200, doc_nll=nll, doc_tokens=tokens)
        for s, nll in by_step.items()
    ]
    spec = TrainSpec.model_validate({"run": {"steps": 40, "eval_every": 10, "checkpoint_every": 10}})
    run = Run(name="a", option="a", variant="a", overrides={}, spec=spec)
    stopped = record(run, rows, None, "val 4.75 at step 20 > best 4.10 at step 10", protocol)
    assert stopped.status == "early_stopped"
    assert (stopped.compared_step, stopped.compared_loss, stopped.doc_nll) == (10, pytest.approx(4.1), [400, 420])
    finished = run.model_copy(
        update={"spec": spec.model_copy(update={"run": spec.run.model_copy(update={"steps": 20})})}
    )
    completed = record(finished, rows, None, None, protocol)
    assert (completed.status, completed.compared_step) == ("completed", 20)


def _confirm(gain):
    """A confirm run of fix (3 seeds a side), ``gain`` better than the control, read with the sweep that took it."""
    from orchestrator.spec.experiment import FollowsSpec

    rng = np.random.default_rng(17)
    tokens, difficulty = _docs(rng)
    records = [_record(f"current[seed={s}]", "current", s, (difficulty + 0.002 * s) * tokens, tokens) for s in range(3)]
    for s in range(3, 6):
        records.append(_record(f"fix[seed={s}]", "fix", s, (difficulty + 0.002 * s - 0.006 - gain) * tokens, tokens))
    result = compare(records, "current", resamples=2000)
    follows = FollowsSpec(
        experiment="default", take="fix", option="fix", delta=(-0.3, -0.4, -0.2), seeds=1, provisional=True
    )
    read_with_sweep(result, follows)
    return result.verdict


def test_a_confirm_run_reads_its_verdict_with_the_sweep_it_confirms():
    agrees = _confirm(0.2)
    assert agrees.take == "fix" and agrees.confirms == {"experiment": "default", "take": "fix", "agrees": True}
    assert (
        "Read with the sweep it confirms: the sweep `default` took **fix** on 1 seed (Δ -0.3000, 95% CI [-0.4000, "
        "-0.2000], provisionally); here fix, on 3 seeds, beats the control too (Δ -0.2000" in agrees.reason
    )
    assert agrees.reason.endswith("the take stands.")
    withdrawn = _confirm(0.0)
    assert withdrawn.take is None and withdrawn.confirms["agrees"] is False
    assert "here no variant of fix beats the control (the closest, fix, differs by Δ +0.0000" in withdrawn.reason
    assert withdrawn.reason.endswith("the sweep's take is withdrawn.")
