"""Diagnosis: logs written for each situation (nanoGPT text, trainer_state.json, CSV, JSONL), the seed's own and a
stored sweep, to findings with their confidence, ranked causes, options and a spec. Reading the logs people keep, real
ones included, is tests/test_readers.py."""

import json
import math
import shutil

import numpy as np
import pytest

from orchestrator.diagnose import advice
from orchestrator.diagnose.__main__ import main
from orchestrator.diagnose.command import import_command
from orchestrator.diagnose.corpus import Corpus, corpus
from orchestrator.diagnose.logs import Point, RunLog, parse
from orchestrator.diagnose.rules import CONFIDENCE, RULES, Context, diagnose
from orchestrator.spec import load
from tests.conftest import launch

SEED_LOG = "tests/fixtures/seed_log.txt"  # the seed's numbers, as a nanoGPT-style log
# The seed's current configuration, as a command in its training script's interface
SEED_CURRENT = (
    "TRAINING_DATA_SOURCE=sources/training_data_final_merged.md MODEL_TYPE=gpt2 USE_LORA=True LORA_RANK=8 "
    "LORA_ALPHA=16.0 "
    "TRAINING_STEPS=5000 LEARNING_RATE=1e-5 BLOCK_SIZE=128 BATCH_SIZE=16 ENABLE_CHECKPOINTS=True "
    "CHECKPOINT_INTERVAL=500 python3 training.py"
)
# Verbatim from the seed: "Recommended Training Command (Best Balance)" and Option 5
SEED_BEST = """TRAINING_DATA_SOURCE=sources/training_data_final_merged.md \\
MODEL_TYPE=gpt2 \\
USE_LORA=True \\
LORA_RANK=16 \\
LORA_ALPHA=32.0 \\
TRAINING_STEPS=5000 \\
LEARNING_RATE=2e-5 \\
BLOCK_SIZE=128 \\
BATCH_SIZE=16 \\
ENABLE_CHECKPOINTS=True \\
CHECKPOINT_INTERVAL=500 \\
python3 training.py"""
SEED_OPTION_5 = """USE_LORA=False \\
BATCH_SIZE=8 \\
BLOCK_SIZE=256 \\
LEARNING_RATE=1e-5 \\
python training.py"""


def test_the_seeds_commands_import_to_exactly_the_values_it_states():
    best = import_command(SEED_BEST)
    assert best.config == {
        "data": {"path": "sources/training_data_final_merged.md", "block_size": 128, "batch_size": 16},
        "model": {"name": "gpt2"},
        "method": "lora",
        "lora": {"rank": 16, "alpha": 32.0},
        "run": {"steps": 5000, "checkpoint_every": 500, "eval_every": 500},
        "optim": {"lr": 2e-5},
    }
    assert best.unknown == []
    option5 = import_command(SEED_OPTION_5)
    assert option5.config == {
        "method": "full",
        "lora": None,
        "data": {"batch_size": 8, "block_size": 256},
        "optim": {"lr": 1e-5},
    }


def test_an_unknown_variable_is_listed_not_dropped():
    imported = import_command("USE_LORA=True GRAD_ACCUM=4 LORA_RANK=8 python training.py")
    assert imported.unknown == ["GRAD_ACCUM=4"]
    assert imported.config == {"method": "lora", "lora": {"rank": 8}}


def test_what_the_command_leaves_out_is_described_as_the_run_will_use_it():
    nothing = RunLog("command", [], "command")
    lora = advice.describe_config(
        Context(import_command("USE_LORA=True LORA_RANK=8 python training.py").config), nothing
    )
    assert lora[0] == "Method: lora, LoRA rank 8, alpha 16.0"  # the spec's default alpha, as the emitted spec runs it
    full = advice.describe_config(
        Context(import_command("USE_LORA=False BLOCK_SIZE=256 python training.py").config), nothing
    )
    assert full[0] == "Method: full" and "Block size: 256" in full  # no LoRA line for full fine-tuning


LOGS = "tests/fixtures/logs/"
RULES_THAT_JUDGE_A_CONFIG = {"baseline", "learning_rate", "schedule", "batch", "context", "lora_capacity"}
# One log per situation, each written for it: (log, --command, other flags, rules that must fire, rules that must not).
CASES = {
    "the seed's plateau": (
        SEED_LOG,
        SEED_CURRENT,
        ["--intended-batch", "32"],
        {"baseline", "learning_rate", "underfit", "batch", "noise"},
        {"regression", "overfit", "clipping", "schedule", "context", "lora_capacity"},
    ),
    "a healthy LoRA run (trainer_state.json)": (
        LOGS + "healthy_trainer_state.json",
        "MODEL_TYPE=gpt2 USE_LORA=True LORA_RANK=8 LEARNING_RATE=2e-4 python train.py",
        [],
        set(),
        {"baseline", "learning_rate", "overfit", "underfit", "regression", "plateau", "schedule", "lora_capacity"},
    ),
    "overfitting (trainer_state.json, 2e-4 peak with warmup and decay)": (
        LOGS + "overfit_trainer_state.json",
        "MODEL_TYPE=gpt2 USE_LORA=True LORA_RANK=16 LEARNING_RATE=2e-4 python train.py",
        [],
        {"overfit"},
        {"regression", "plateau", "underfit", "schedule", "learning_rate", "lora_capacity", "baseline"},
    ),
    "LoRA at 1e-5: a slow straight decline (CSV)": (
        LOGS + "lr_too_low.csv",
        "MODEL_TYPE=gpt2 USE_LORA=True LORA_RANK=8 LEARNING_RATE=1e-5 python train.py",
        [],
        {"learning_rate"},
        {"plateau", "regression", "schedule", "lora_capacity", "baseline", "underfit"},
    ),
    "from scratch, still falling 0.11 nats over its last 1,250 steps (nanoGPT)": (
        LOGS + "from_scratch.txt",
        None,
        [],
        set(),
        {"plateau", "regression", "overfit", "underfit"} | RULES_THAT_JUDGE_A_CONFIG,
    ),
    "one +0.22 spike on a healthy curve (nanoGPT)": (
        LOGS + "noise_spike.txt",
        None,
        [],
        {"noise"},
        {"regression", "plateau", "overfit", "underfit"},
    ),
    "full fine-tuning at 1e-3: val and train rising (CSV)": (
        LOGS + "unstable.csv",
        "MODEL_TYPE=gpt2 USE_LORA=False LEARNING_RATE=1e-3 python train.py",
        [],
        {"learning_rate", "regression"},
        {"overfit", "underfit", "plateau", "schedule"},
    ),
    "LoRA rank 4 flat at a good LR on a large corpus (JSONL)": (
        LOGS + "capacity.jsonl",
        "MODEL_TYPE=gpt2-medium USE_LORA=True LORA_RANK=4 LEARNING_RATE=3e-4 BATCH_SIZE=16 BLOCK_SIZE=512 python t.py",
        ["--train-tokens", "50000000"],
        {"lora_capacity", "plateau"},
        {"learning_rate", "baseline", "overfit", "regression", "underfit"},
    ),
}
HEALTHY = {
    "a healthy LoRA run (trainer_state.json)",
    "from scratch, still falling 0.11 nats over its last 1,250 steps (nanoGPT)",
    "one +0.22 spike on a healthy curve (nanoGPT)",
}


def _diagnosis(tmp_path, log, command=None, *flags):
    """(exit code, the printed diagnosis, the --json diagnosis) of one run of the CLI."""
    out = tmp_path / "diagnosis.json"
    args = [log, *(["--command", command] if command else []), *flags, "--json", str(out)]
    code = main(args)
    return code, json.loads(out.read_text())


@pytest.mark.parametrize("case", list(CASES))
def test_each_log_fires_the_rules_its_numbers_show_and_no_others(tmp_path, capsys, case):
    log, command, flags, must, must_not = CASES[case]
    code, diagnosis = _diagnosis(tmp_path, log, command, *flags)
    assert code == 0
    fired = {f["rule"] for f in diagnosis["findings"]}
    assert must <= fired, f"missing {must - fired}"
    assert not fired & must_not, f"should not fire: {fired & must_not}"
    assert diagnosis["healthy"] == (case in HEALTHY)
    if case in HEALTHY:
        assert diagnosis["options"] == [] and diagnosis["causes"] == []
        assert "The run is healthy." in capsys.readouterr().out


def test_the_json_is_the_documented_shape_with_causes_in_rank_order(tmp_path):
    _, diagnosis = _diagnosis(tmp_path, SEED_LOG, SEED_CURRENT, "--intended-batch", "32")
    assert set(diagnosis) == {"healthy", "findings", "causes", "options", "reading", "curve"}
    # the curve as logged: the lowest val and the last, raw (the seed's log: 6.71 at step 500 ... 6.67 at step 2,500)
    log = parse(SEED_LOG)
    lowest = min(log.evals, key=lambda p: p.val_loss)
    assert (diagnosis["curve"]["best_val_step"], diagnosis["curve"]["best_val"]) == (lowest.step, lowest.val_loss)
    assert diagnosis["curve"]["last_val"] == log.evals[-1].val_loss
    assert diagnosis["curve"]["evaluations"] == len(log.evals)
    assert diagnosis["reading"]["mapping"] == {"step": "step", "train_loss": "train_loss", "val_loss": "val_loss"}
    assert all(set(f) == {"rule", "title", "evidence", "threshold", "confidence"} for f in diagnosis["findings"])
    assert {f["rule"] for f in diagnosis["findings"]} <= set(RULES)
    order = [CONFIDENCE.index(c["confidence"]) for c in diagnosis["findings"]]
    assert order == sorted(order)  # surest first
    assert [c["rule"] for c in diagnosis["causes"]] == ["baseline", "learning_rate"]  # the batch is a fix, not a cause
    assert all(isinstance(c["evidence"], list) and c["evidence"] for c in diagnosis["causes"])
    assert all("." in path for o in diagnosis["options"] for path in o["changes"])


def test_the_seeds_diagnosis_leads_with_its_starting_point_and_searches_the_lr_alone(tmp_path, capsys):
    _, diagnosis = _diagnosis(tmp_path, SEED_LOG, SEED_CURRENT, "--intended-batch", "32")
    first = diagnosis["findings"][0]
    assert first["rule"] == "baseline" and first["confidence"] == "high"
    assert "6.71 nats/token, 2.2x the 3.12 that pretrained gpt2 scores" in first["evidence"]
    data = corpus(import_command(SEED_CURRENT).config)  # the bundled corpus, measured as a run reads it
    epochs = 2_500 * 16 * 128 / data.train_tokens  # more than a hundred: a model that learns would have memorised it
    assert f"about {epochs:,.0f} epochs" in first["evidence"] and epochs > 100
    assert "resumes from a checkpoint at step 1,000" in first["evidence"]
    printed = capsys.readouterr().out
    assert printed.index("## Before any sweep: check the starting point") < printed.index("## Root Causes")
    assert "trains 294,912" in printed  # LoRA r8 on GPT-2's c_attn: what print_trainable_parameters should say
    lr = next(f for f in diagnosis["findings"] if f["rule"] == "learning_rate")
    assert "60x below" in lr["evidence"]
    spike = next(f for f in diagnosis["findings"] if f["rule"] == "noise")
    assert "possibly noise" in spike["title"] and f"only {data.val_documents} val documents" in spike["evidence"]
    (option,) = diagnosis["options"]  # no capacity without evidence, no clip without gradient norms, no schedule
    assert option["name"] == "lr_range" and set(option["changes"]) == {"optim.lr"}  # one change: the LR
    assert all(lr >= 10 * 1e-5 for lr in option["changes"]["optim.lr"])


def test_an_overfitting_log_is_answered_with_regularisation_never_capacity_or_a_looser_clip(tmp_path, capsys):
    _, diagnosis = _diagnosis(tmp_path, LOGS + "overfit_trainer_state.json")
    printed = capsys.readouterr().out
    (overfit,) = diagnosis["findings"][:1]
    assert overfit["title"] == "Overfitting: val lowest at step 1,200, train still falling"
    assert "`out/checkpoint-1200`" in printed  # the trainer's best checkpoint, named
    assert "peak 2e-4, warmup to step 100, decaying to 0 by step 3000" in printed  # the logged LR, not "constant"
    names = {o["name"] for o in diagnosis["options"]}
    assert names == {"weight_decay", "lora_dropout", "fewer_steps"}
    # even when the clip engages on most steps and the rank is low, overfitting gets neither fix
    log = parse(LOGS + "overfit_trainer_state.json")
    config = {"model": {"name": "gpt2"}, "method": "lora", "lora": {"rank": 4}, "optim": {"lr": 2e-4, "grad_clip": 0.5}}
    ctx = Context(config)
    findings = diagnose(log, ctx)
    assert {"overfit", "clipping"} <= {f.rule for f in findings if f.problem}
    changes = {path for o in advice.advise(ctx, log, findings).options for path in o.to_json()["changes"]}
    assert not changes & {"lora.rank", "optim.grad_clip", "method", "data.block_size"}


def test_an_overfitting_log_on_a_tiny_corpus_keeps_its_arms_past_the_step_where_val_turned():
    """20 epochs of this corpus end before step 1,200, where the log's val was lowest: the arms run past it, and
    the option that ends the run there is still the shorter one."""
    log = parse(LOGS + "overfit_trainer_state.json")
    config = {
        "model": {"name": "gpt2"},
        "method": "lora",
        "data": {"path": "qa.md", "block_size": 128, "batch_size": 8},
        "optim": {"lr": 2e-4, "schedule": {"kind": "warmup_linear", "warmup_ratio": 0.05, "floor_ratio": 0.0}},
        "run": {"steps": 3000, "eval_every": 200, "checkpoint_every": 200},
    }
    ctx = Context(
        config, corpus=Corpus(train_tokens=30 * 8 * 128, val_documents=20, val_tokens=4000, longer_than_block=0.5)
    )
    advised = advice.advise(ctx, log, diagnose(log, ctx))
    run = advised.base["run"]
    assert 1200 < run["steps"] < 3000 and run["steps"] - 1200 >= 2 * run["eval_every"]  # sees val turn
    (fewer,) = [o for o in advised.options if o.key == "fewer_steps"]
    assert fewer.overrides["run"]["steps"] < run["steps"]


def _healthy_curve(seed: int, sd: float = 0.03) -> RunLog:
    """A fine-tune still falling 2-3% over the last half of its 24 evaluations, with eval noise of ``sd``."""
    rng = np.random.default_rng(seed)
    points = []
    for i in range(1, 25):
        step = 125 * i
        val = 2.9 + 0.8 * (1 + step / 300) ** -0.5
        points.append(Point(step, val - 0.05, val + rng.normal(0, sd)))
    return RunLog("synthetic", points, "test")


def test_noise_alone_is_never_a_regression_or_a_plateau():
    fired = [{f.rule for f in diagnose(_healthy_curve(seed), Context({}))} for seed in range(200)]
    assert not any(rules & {"regression", "overfit"} for rules in fired)
    # a plateau needs the fitted decline under 1% of the loss by two standard errors: a 1-in-1,000 draw at most
    assert sum("plateau" in rules for rules in fired) <= 1
    # the same rules do see a real turn: val up 0.4 over the last third while train falls
    log = _healthy_curve(0)
    for p in log.points[16:]:
        p.val_loss += 0.4 * (p.step - 2000) / 1000
        p.train_loss -= 0.2 * (p.step - 2000) / 1000
    assert "overfit" in {f.rule for f in diagnose(log, Context({}))}


def test_one_rise_is_a_regression_only_when_per_document_losses_show_it_beyond_noise():
    """Our sweeps record each val document's loss, so one evaluation can be tested against the best (paired)."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(100, 400, size=19)
    before = tokens * rng.uniform(4.0, 4.8, size=19)
    log = RunLog("hot_lr", [Point(0, None, 4.39), Point(10, 5.1, 4.61)], "plateau-sweep run", doc_tokens=list(tokens))
    log.doc_losses = [(0, list(before)), (10, list(before + 0.22 * tokens + rng.normal(0, 5, 19)))]
    (rise,) = [f for f in diagnose(log, Context({})) if f.rule == "regression"]
    assert rise.title == "Loss increased at step 10" and rise.evidence.startswith(
        "val 4.39 → 4.61 from step 0 (its lowest)"
    )
    assert "paired bootstrap over val documents" in rise.threshold
    same = before + rng.normal(0, 5, 19)  # the same model, scored again: no rise beyond noise
    log.doc_losses[1] = (10, list(same))
    assert "regression" not in {f.rule for f in diagnose(log, Context({}))}


def test_the_seeds_spec_restores_the_batch_everywhere_and_tolerates_its_spike(tmp_path, hub_cache):
    out = tmp_path / "fixes.yaml"
    assert main([SEED_LOG, "--command", SEED_CURRENT, "--intended-batch", "32", "--emit-spec", str(out)]) == 0
    experiment, plan = load(str(out))
    assert experiment.control == "current"
    assert experiment.early_stopping.patience >= 2  # the seed's one +0.22 spike does not stop the control
    control = next(r for r in plan.runs if r.option == "current").spec
    assert (control.lora.rank, control.optim.lr, control.model.name) == (8, 1e-5, "gpt2")
    for run in plan.runs:  # every arm at the intended tokens per step, in micro-batches that fit
        assert (run.spec.data.batch_size, run.spec.micro_batch, run.spec.accumulation_steps) == (32, 16, 2)
        assert run.spec.run.eval_every == run.spec.run.checkpoint_every < 500  # about once an epoch, not 66
        # not the log's 5,000 steps (some 650 epochs of this corpus at batch 32), yet ten evaluations at least
        assert 10 * run.spec.run.eval_every <= run.spec.run.steps < 5000 / 10
    arms = [r.spec for r in plan.runs if r.option == "lr_range"]
    assert sorted({s.optim.lr for s in arms}) == [2e-4, 6e-4, 2e-3] and {s.lora.rank for s in arms} == {8}
    dry = launch(out, "--dry-run", env={"HF_HUB_CACHE": str(hub_cache)}, timeout=120)
    assert dry.returncode == 0, dry.stderr


def test_no_spec_without_a_configuration_or_for_a_healthy_run_and_the_json_still_comes(tmp_path, capsys):
    spec, diagnosis = tmp_path / "fixes.yaml", tmp_path / "d.json"
    assert main([SEED_LOG, "--emit-spec", str(spec)]) == 2
    assert "there is no configuration to run: pass --command" in capsys.readouterr().err
    partial = "USE_LORA=True LORA_RANK=8 LEARNING_RATE=1e-5 python training.py"
    assert main([SEED_LOG, "--command", partial, "--emit-spec", str(spec)]) == 2
    assert "does not name the model or the data" in capsys.readouterr().err  # never the default tiny-gpt2
    healthy = "MODEL_TYPE=gpt2 USE_LORA=True LEARNING_RATE=2e-4 TRAINING_DATA_SOURCE=x.md python train.py"
    args = ["--command", healthy, "--emit-spec", str(spec), "--json", str(diagnosis)]
    assert main([LOGS + "healthy_trainer_state.json", *args]) == 2
    assert "the run is healthy" in capsys.readouterr().err
    assert not spec.exists() and json.loads(diagnosis.read_text())["healthy"] is True


def test_a_memorising_winner_is_named_and_its_confirm_run_keeps_the_best_checkpoint(tmp_path, monkeypatch):
    """The default job's sweep (specs/smoke.yaml, current and full_finetune), as it stored its runs."""
    from contract.spec import StorageSpec
    from orchestrator.diagnose.sweep import follow_up_spec, sweep_diagnosis
    from orchestrator.folder import ExperimentFolder
    from orchestrator.results import seed_prior
    from orchestrator.results.records import collect
    from orchestrator.results.report import build
    from orchestrator.results.stats import SeedPrior

    shutil.copytree("tests/fixtures/sweep/smoke", tmp_path / "smoke")
    folder = ExperimentFolder(StorageSpec(path=str(tmp_path)), "smoke")
    experiment, plan = folder.plan()
    records = collect(folder, plan)
    # its control ran 2 seeds (1 degree of freedom), on an earlier copy of the corpus (19 val documents): the stand-in
    # is that copy's calibration, docs/BENCHMARKS.md section 8 (16 seeds: sd 0.0075, 26% of it the residual)
    tokens = records[0].doc_tokens
    monkeypatch.setattr(seed_prior, "STORE", tmp_path / "priors.json")
    sd2 = 0.0075**2
    seed_prior.store(plan.runs[0], plan.evaluation, tokens, SeedPrior(0.74 * sd2, 0.26 * sd2 * sum(tokens), 15, "§8"))
    results = build(folder, experiment, plan, records)
    assert results.comparisons.verdict.take == "full_finetune"
    why = next(line for line in sweep_diagnosis(results).splitlines() if line.startswith("- **full_finetune**"))
    tokens = corpus(plan.runs[0].spec.model_dump(mode="json")).train_tokens
    assert "memorisation under way" in why and "a gap of 0.82 nats" in why and f"{tokens:,}-token corpus" in why
    assert "the winner is memorising" in why
    control = next(line for line in sweep_diagnosis(results).splitlines() if line.startswith("- **current**"))
    assert "memoris" not in control  # LoRA r8 at train 4.28, val 4.26: no gap
    # full fine-tuning at 2e-3 is 10x the prior's centre for tiny-gpt2 (a tenth of its pretraining peak)
    assert "the follow-up also runs it at 2e-4, the prior's centre" in why
    assert "the follow-up also runs" not in control  # the control's own learning rate is not what is confirmed
    text = follow_up_spec(results).text
    assert f"#   python -m orchestrator.launch {tmp_path / 'smoke' / 'smoke-confirm.yaml'} --dry-run\n" in text
    confirm, _ = load_spec_text(text, tmp_path)
    assert confirm.early_stopping.patience >= 2
    # runs stopped past their best at different steps are compared at their best, chosen apart from the scoring
    assert confirm.evaluation.selection_fraction == 0.5
    runs = _runs(confirm)
    for run in runs:
        assert run.spec.run.steps == 120
        assert run.spec.run.eval_every == run.spec.run.checkpoint_every == 20  # as often as the sweep, not 40
    seeds = {}
    for run in runs:
        seeds.setdefault((run.option, run.spec.method, run.spec.optim.lr), set()).add(run.spec.run.seed)
    assert seeds == {  # 3 seeds each, every variant its own
        ("current", "lora", 2e-3): {0, 1, 2},  # the control as it ran
        ("full_finetune", "full", 2e-3): {3, 4, 5},  # the winner as it ran
        ("full_finetune", "full", 2e-4): {6, 7, 8},  # and at the usual learning rate
        # the fix is full fine-tuning with twice the context: each change set back to the control's in turn
        # (at both rates where the arm keeps full fine-tuning: the ablation must hold at whichever rate is taken)
        ("full_finetune-without-data", "full", 2e-3): {9, 10, 11},
        ("full_finetune-without-data", "full", 2e-4): {12, 13, 14},
        ("full_finetune-without-method", "lora", 2e-3): {15, 16, 17},
    }
    assert confirm.follows.take == "full_finetune" and confirm.follows.option == "full_finetune"
    blocks = {(r.option, r.spec.data.block_size, r.spec.data.batch_size) for r in runs}
    assert ("full_finetune-without-data", 128, 16) in blocks and ("full_finetune-without-method", 256, 8) in blocks
    assert "it makes 2 changes at once (data, method)" in why


def load_spec_text(text: str, where):
    path = where / "confirm.yaml"
    path.write_text(text)
    return load(str(path))


def _runs(experiment):
    from orchestrator.spec import resolve_runs

    return resolve_runs(experiment).runs


def test_a_spec_cannot_be_written_where_there_is_no_folder(capsys):
    assert main([SEED_LOG, "--command", SEED_CURRENT, "--emit-spec", "/nonexistent/folder/fixes.yaml"]) == 2
    assert "error: --emit-spec /nonexistent/folder/fixes.yaml: cannot write it" in capsys.readouterr().err


# ------------------------------------------------------------------ issue 31: the cases real logs brought


def _state(tmp_path, history, **state):
    """A trainer_state.json of ``history`` (log_history entries) and top-level ``state``."""
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"log_history": history, **state}))
    return str(path)


def test_a_flat_curve_with_one_spike_is_a_plateau_and_a_spike_not_noise_from_its_shape(tmp_path):
    """The issue's log: exact evaluations that fall steeply, then sit at 3.10 from step 2,000 to 4,000 with one +0.21
    spike at 3,200, back by 3,600. The noise of a smooth decay that flattens is nil, so the spike is beyond it and named
    apart from the plateau; a noise estimate from a fitted curve's misfit (sd 0.075) hid both."""
    steps = list(range(200, 4001, 200))
    val = [3.10 + 2.0 * math.exp(-s / 400) for s in steps]
    val = [v + (0.21 if s in (3200, 3400) else 0.0) for s, v in zip(steps, val)]
    history = [{"step": s, "loss": v - 0.05, "epoch": s / 4000} for s, v in zip(steps, val)]  # one epoch
    history += [{"step": s, "eval_loss": round(v, 4), "epoch": s / 4000} for s, v in zip(steps, val)]
    code, diagnosis = _diagnosis(tmp_path, _state(tmp_path, history))
    fired = {f["rule"]: f for f in diagnosis["findings"]}
    assert diagnosis["curve"]["eval_noise_sd_estimate"] < 0.01
    assert "a spike that recovered" in fired["noise"]["evidence"] and "step 3,600" in fired["noise"]["evidence"]
    assert "plateau" in fired and "regression" not in fired and "overfit" not in fired
    assert diagnosis["healthy"] is True


def test_train_and_val_on_accumulation_scales_are_named_and_never_compared(tmp_path):
    """The issue's QLoRA log: gradient accumulation 16, train 5.02 against val 0.30 at every evaluation (the Trainer's
    summed train loss, transformers#35204), and a first evaluation of 15.4 nats/token, above any uniform guess."""
    history = [{"step": 0, "eval_loss": 15.4}]
    for i, s in enumerate(range(50, 501, 50)):
        val = 0.30 + 0.02 * math.exp(-i)
        history += [{"step": s, "loss": round(16 * val, 4)}, {"step": s, "eval_loss": val}]
    state = _state(tmp_path, history)
    code, diagnosis = _diagnosis(tmp_path, state, "MODEL_TYPE=meta-llama/Llama-2-7b-hf USE_LORA=True python qlora.py")
    fired = {f["rule"]: f for f in diagnosis["findings"]}
    assert "transformers#35204" in fired["scale"]["evidence"] and "near 16" in fired["scale"]["evidence"]
    assert (
        "the first evaluation (step 0" in fired["baseline"]["evidence"]
        and "32,000 tokens" in fired["baseline"]["evidence"]
    )
    assert not {"underfit", "overfit", "lora_capacity"} & set(fired)
    assert diagnosis["healthy"] is False and diagnosis["curve"]["best_val"] < 0.31


def test_losses_summed_over_a_batch_are_named_as_sums_and_never_compared(tmp_path):
    """A speech recogniser's CTC loss summed over each batch (huggingsound's wav2vec2: train 3,000 falling to 1,000,
    val 2,000 to 600, train 1.5-2x val throughout): no mean per token reaches 12.5 nats, so train and val are sums over
    batches of their own, and their ratio is no gap. Judged per token, the same run would be 'underfitting'."""
    history = []
    for i, s in enumerate(range(250, 2001, 250)):
        val = 600 + 1400 * math.exp(-i / 2)
        history += [{"step": s, "loss": round(val * (1.5 + 0.05 * (i % 3)), 1)}]
        history += [{"step": s, "eval_loss": val, "eval_wer": 0.3 + 0.7 * math.exp(-i / 2)}]
    command = "MODEL_TYPE=facebook/wav2vec2-large-xlsr-53 LEARNING_RATE=3e-4 BATCH_SIZE=12 python train.py"
    code, diagnosis = _diagnosis(tmp_path, _state(tmp_path, history), command)
    fired = {f["rule"]: f for f in diagnosis["findings"]}
    assert fired["scale"]["title"] == "Train and val are sums, not means: they are not on one scale"
    assert "train 1.5 to 1.6x val" in fired["scale"]["evidence"]
    assert "task" in fired and not {"underfit", "overfit", "baseline", "numerics"} & set(fired)
    # with a mean per token the same ratio is no scale: train 1.5x val is a gap other rules may read
    means = [{**h, **{k: h[k] / 1000 for k in ("loss", "eval_loss") if k in h}} for h in history]
    assert "scale" not in {f["rule"] for f in _diagnosis(tmp_path, _state(tmp_path, means), command)[1]["findings"]}


def test_a_train_only_log_is_neither_healthy_nor_projected_and_is_told_what_to_log(tmp_path, capsys):
    history = [{"step": s, "loss": 2.0 * (1 + s / 100) ** -0.3, "epoch": s / 1000} for s in range(10, 1001, 10)]
    code, diagnosis = _diagnosis(tmp_path, _state(tmp_path, history, global_step=1000, max_steps=1000))
    printed = capsys.readouterr().out
    (evidence,) = [f for f in diagnosis["findings"] if f["rule"] == "evidence"]
    assert diagnosis["healthy"] is None and diagnosis["options"] == []
    assert "no evaluation" in evidence["title"] and "eval_steps=100" in evidence["evidence"]
    assert "Keep training" not in printed and "The run is healthy" not in printed
    assert diagnosis["curve"] == {**diagnosis["curve"], "best_val_step": None, "evaluations": 0}


def test_the_best_step_follows_the_runs_own_selection_metric(tmp_path):
    """The issue's DistilRoBERTa: best checkpoint by macro-F1 at a later step than the lowest eval loss. The log's
    best_metric and best_model_checkpoint name the metric; the diagnosis keeps that step, not the lowest loss's."""
    history = []
    for i, s in enumerate(range(1380, 13801, 1380)):
        loss = 0.45 + 0.02 * (i - 2) ** 2  # lowest at the third evaluation
        f1 = 0.70 + 0.02 * min(i, 5) - 0.01 * max(0, i - 5)  # highest at the sixth
        history += [{"step": s, "loss": 0.5 / (i + 1), "epoch": i + 1}]
        history += [{"step": s, "eval_loss": loss, "eval_macro_f1": f1, "eval_accuracy": f1 + 0.05, "epoch": i + 1}]
    best = {"best_metric": 0.8, "best_model_checkpoint": "out/checkpoint-8280"}
    code, diagnosis = _diagnosis(tmp_path, _state(tmp_path, history, **best))
    curve, fired = diagnosis["curve"], {f["rule"]: f for f in diagnosis["findings"]}
    assert (curve["metric"], curve["best_val_step"], curve["greater_is_better"]) == ("eval_macro_f1", 8280, True)
    assert "task" in fired and not {"baseline", "learning_rate", "lora_capacity", "underfit"} & set(fired)
    assert "best is 0.8 at step 8,280" in fired["overfit"]["evidence"]  # the loss's lowest is step 4,140


def test_lr_priors_beyond_gpt2_name_their_source_and_say_when_none_applies():
    from orchestrator.diagnose.rules import lr_prior, not_judged

    def prior(model, method="lora"):
        return lr_prior(Context({"model": {"name": model}, "method": method}))

    llama = prior("meta-llama/Meta-Llama-3.1-8B")
    assert llama.centre("lora") == 2e-4 and "QLoRA" in llama.describe("lora")
    assert llama.contains(5e-5, "lora") and not llama.contains(2e-5, "lora")  # Unsloth's range starts at 5e-5
    assert prior("huggyllama/llama-65b").centre("lora") == 1e-4
    assert prior("Qwen/Qwen2.5-7B", "full").centre("full") == 2e-5 and "Alpaca" in prior("x/Llama-2-13b").basis
    assert prior("x/Llama-2-13b", "full").centre("full") == 1e-5
    assert prior("gpt2").centre("lora") == 6e-4  # GPT-3 Table 2.1's 125M peak 6e-4, a tenth, times LoRA's 10
    mystery = Context({"model": {"name": "acme/house-model"}, "method": "lora", "optim": {"lr": 3e-4}})
    assert lr_prior(mystery) is None
    assert not_judged(mystery, RunLog("x", [], "test")) == (
        "the LR (3e-4) is not judged against a prior: no published figure covers acme/house-model (size unknown)"
    )


def test_a_causal_lm_scored_by_token_accuracy_is_still_a_causal_lm(tmp_path):
    """run_clm.py logs a causal LM's token accuracy as eval_accuracy: beside an eval loss that never falls under ln 10
    it is no classifier's, and a model the vocabulary table knows as a causal LM is one whatever its eval keys."""
    history = []
    for i, s in enumerate(range(100, 1001, 100)):
        history += [
            {"step": s, "loss": 3.3 - 0.02 * i},
            {"step": s, "eval_loss": 3.4 - 0.02 * i, "eval_accuracy": 0.35},
        ]
    code, diagnosis = _diagnosis(tmp_path, _state(tmp_path, history))
    assert "task" not in {f["rule"] for f in diagnosis["findings"]}
    for entry in history:
        if "eval_loss" in entry:
            entry["eval_loss"] -= 2.5  # a loss a classifier could have: now the accuracy is a classifier's
    code, diagnosis = _diagnosis(tmp_path, _state(tmp_path, history))
    assert "task" in {f["rule"] for f in diagnosis["findings"]}
    code, diagnosis = _diagnosis(tmp_path, _state(tmp_path, history), "MODEL_TYPE=gpt2 USE_LORA=True python t.py")
    assert "task" not in {f["rule"] for f in diagnosis["findings"]}  # GPT-2 is a causal LM, whatever it is scored by


def test_a_summed_loss_in_the_thousands_is_judged_not_a_crash(tmp_path):
    """A CTC recogniser logs its loss summed over frames (a first loss of 1,500): no rule may take exp() of it, as
    the classifier check's ln k once did (OverflowError) on a held-out wav2vec2 log."""
    history = [{"step": s, "loss": 1500.0 / (1 + s / 100), "epoch": s / 1000} for s in range(10, 1001, 10)]
    history += [{"step": s, "eval_loss": 900.0 / (1 + s / 200), "eval_wer": 0.9 - s / 2000} for s in (250, 500, 1000)]
    code, diagnosis = _diagnosis(tmp_path, _state(tmp_path, history))
    assert code == 0 and "task" in {f["rule"] for f in diagnosis["findings"]}
