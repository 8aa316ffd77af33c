"""The verdict's statistics on synthetic per-document losses: coverage, Holm, and when "Take X" is said."""

import numpy as np
import pytest
import yaml

from orchestrator.results.records import RunRecord
from orchestrator.results.stats import SeedNoise, holm, paired_bootstrap, seed_noise, t_quantile
from orchestrator.results.verdict import compare


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
    as 1/seeds on each side, t x sd x sqrt(1/n_o + 1/n_c), with a wider t the fewer seeds measured the sd."""
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


def test_t_quantiles_are_the_tables():
    assert [round(t_quantile(df), 1) for df in (1, 3, 7)] == [12.7, 3.2, 2.4]


def test_seed_noise_pools_the_variants_that_ran_several_seeds():
    noise = seed_noise({"a": [1.0, 2.0], "b": [0.0, 0.0, 3.0], "c": [5.0]})  # squares 0.5 and 6 over 1 + 2 df
    assert (noise.sd, noise.df, noise.variants) == (pytest.approx(np.sqrt(6.5 / 3)), 3, ["a", "b"])
    assert seed_noise({"a": [1.0], "b": [2.0]}).sd is None


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


def _sweep(rng, option_shift, status="completed", control_seeds=(0.0, 0.01)):
    """Two control seeds (each shifted by its seed effect) and one option, with per-document noise."""
    tokens, difficulty = _docs(rng)
    tokens = tokens.round()

    def run(shift):
        return (difficulty + shift + rng.normal(0, 0.01, len(tokens))) * tokens

    return [
        _record("current[seed=0]", "current", 0, run(control_seeds[0]), tokens),
        _record("current[seed=1]", "current", 1, run(control_seeds[1]), tokens),
        _record("fix", "fix", 0, run(sum(control_seeds) / 2 + option_shift), tokens, status),
    ]


def test_a_clearly_better_option_is_taken():
    result = compare(_sweep(np.random.default_rng(4), -0.2), "current", resamples=2000)
    assert result.verdict.take == "fix"
    fix = result.variants[1]
    assert fix.delta.ci95[1] < 0 and fix.p_holm < 0.05
    assert result.verdict.reason.startswith("Take **fix**")


def test_an_option_like_the_control_but_for_its_seed_is_not_taken():
    result = compare(_sweep(np.random.default_rng(5), 0.0), "current", resamples=2000)
    assert result.verdict.take is None
    assert result.verdict.reason.startswith("No fix is distinguishable from the control **current**")


def test_a_gain_inside_the_control_seed_spread_is_not_taken():
    # 0.02 better than the control's mean on every document, but the control's two seeds are 0.1 apart
    result = compare(_sweep(np.random.default_rng(6), -0.02, control_seeds=(0.0, 0.1)), "current", resamples=2000)
    assert result.verdict.take is None
    assert "less than the seed noise (sd 0.07" in result.verdict.reason  # sd of two seeds 0.1 apart: 0.1/sqrt(2)


def test_with_seed_noise_on_one_degree_of_freedom_the_verdict_asks_for_seeds():
    """Two control seeds and one per option: a clear gain is not distinguishable, and the verdict says why."""
    result = compare(_sweep(np.random.default_rng(14), -0.05), "current", resamples=2000)
    assert result.verdict.take is None and result.noise.df == 1
    assert (
        "it would take more seeds per variant (option_seeds, control_seeds; the seed noise rests on 1 degree of freedom"
        in result.verdict.reason
    )


def test_a_control_seed_that_did_not_finish_is_left_out_of_the_control():
    records = _sweep(np.random.default_rng(9), -0.2, control_seeds=(0.0, 0.5))  # seed 1 far off: it failed half-way
    records[1].status, records[1].reason = "failed", "a worker died"
    result = compare(records, "current", resamples=1000)
    control = result.control
    assert control.compared_mean == pytest.approx(records[0].compared_loss) and control.seed_std is None
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
    records[2].memory_fallback = "micro-batch 16 → 8 at step 0 after an out-of-memory error; effective batch unchanged"
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
    assert "| 0, 1 |" in rows[0] and "control (seed sd " in rows[0]
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
    assert (search.chosen.lr, search.at_edge, search.next_lrs) == (0.1, True, [0.01, 0.1, 1.0])


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
    assert (
        "It rests on 1 seed of fix[lr=0.01] and 4 of the control (fix[lr=0.01]'s own seed noise is unmeasured" in reason
    )
    assert "pooled over the seeds of current (3 degrees of freedom, a Student's t)" in reason


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
    assert "**at the edge of its range**: try `lr_search.lrs.current: [0.00316, 0.0316]`" in text
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
    """The experiment and plan of a spec: a control ``current`` of 2 seeds and one seed of every other option."""
    from orchestrator.spec import deep_merge, load

    run = {"run": {"steps": 10, "eval_every": 10, "checkpoint_every": 10}}
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "s",
                "control": "current",
                "control_seeds": 2,
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
    """The results of a sweep of ``current`` (2 seeds) and ``fix`` (1 seed, clearly better), from their spec's
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
    assert confirm["options"] == {"current": {"optim": {"lr": 0.002}}, "fix": {"run": {"seed": [0, 1, 2]}}}


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
    assert yaml.safe_load(text)["options"]["fix-without-lr"]["run"]["seed"] == [0, 1, 2]


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
    shifts = {"current[seed=0]": 0.0, "current[seed=1]": 0.005, "capacity": 0.0, "context": -0.2, "both": -0.2}
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
