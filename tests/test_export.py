"""Export: a finished sweep's take as a standalone model folder that transformers loads alone and that scores the
run's compared loss under the experiment's protocol; from a local folder or s3://, without Ray."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from contract.layout import step_folder
from orchestrator.export import main
from orchestrator.spec import dir_name
from tests.conftest import ROOT
from tests.conftest import summary as _summary

pytestmark = pytest.mark.ray  # the finished sweep is run on a local Ray; the exports never import it

CHECK = re.compile(
    r"val loss under the protocol: (\d+\.\d{6}) loaded back from .*, (\d+\.\d{6}) the run's compared loss"
)


@pytest.fixture(scope="session")
def finished(behaviour) -> tuple[Path, str]:
    """(experiment folder, the launcher's stdout) of the shared sweep: a full fine-tune taken over a LoRA control with
    two seeds, each run compared at its best evaluation on half of the val documents and scored on the other half
    (evaluation.selection_fraction), with a checkpoint at every evaluation. The tests read every name from its
    summary.json, so any such sweep serves."""
    return behaviour[1], behaviour[4]


def _sweep(folder: Path) -> dict:
    return _summary(folder.parent, folder.name)


def _runs(folder: Path) -> dict:
    return {r["run"]: r for r in _sweep(folder)["runs"]}


def _take(folder: Path) -> str:
    return _sweep(folder)["verdict"]["take"]


def _export_in_a_fresh_process(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run an export command line as a user would, and report whether the process imported Ray."""
    args = shlex.split(command)
    assert args[:3] == ["python", "-m", "orchestrator.export"], command
    probe = (
        "import runpy, sys\n"
        "try:\n"
        "    runpy.run_module('orchestrator.export', run_name='__main__')\n"
        "finally:\n"
        "    print('ray imported:', 'ray' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-c", probe, *args[3:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def take(finished, tmp_path_factory) -> tuple[Path, str]:
    """(exported folder, output) of the export command that the report's last line gives, run where it says."""
    folder, _ = finished
    command = (folder / "report.md").read_text().rstrip().splitlines()[-1].strip()
    cwd = tmp_path_factory.mktemp("take")
    out = _export_in_a_fresh_process(command, cwd)
    assert out.returncode == 0, out.stdout + out.stderr
    return cwd / f"{dir_name(_take(folder))}-model", out.stdout


def test_the_report_and_the_launcher_end_with_how_to_export_the_take(finished):
    folder, console = finished
    take = _take(folder)
    command = f"python -m orchestrator.export {folder} --out ./{dir_name(take)}-model"
    assert (folder / "report.md").read_text().rstrip().splitlines()[-3:] == [
        f"Export **{take}** as a standalone model (LoRA merged into the base, its tokenizer, a model card) that "
        "loads with `AutoModelForCausalLM.from_pretrained` alone:",
        "",
        f"    {command}",
    ]
    assert console.rstrip().splitlines()[-1] == f"export: {command}"


def test_the_take_exports_without_ray_and_scores_the_runs_compared_loss(finished, take):
    folder, _ = finished
    out, console = take
    run = _runs(folder)[_take(folder)]
    assert "ray imported: False" in console
    assert f"checkpoint {folder}/{dir_name(run['run'])}/train-" in console
    assert f"/{step_folder(run['compared_step'])}" in console  # the compared evaluation's checkpoint
    exported, compared = map(float, CHECK.search(console).groups())
    assert compared == pytest.approx(run["compared_loss"], abs=1e-6)
    assert exported == pytest.approx(compared, abs=1e-4)


def test_the_take_loads_with_transformers_alone_and_generates(take):
    from transformers import AutoModelForCausalLM, pipeline

    out, _ = take
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= files
    assert not files & {"adapter_config.json", "training_state.pt", "manifest.json"}  # a model, not a checkpoint
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "GPT2LMHeadModel"
    generate = pipeline("text-generation", model=str(out))
    text = generate("Q: How do I open a file?", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert text.startswith("Q: How do I open a file?") and len(text) > len("Q: How do I open a file?")
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # the staging folder became the model


def test_the_model_card_carries_the_verdict_the_figures_with_their_interval_and_the_spec(finished, take):
    folder, _ = finished
    out, _ = take
    summary = _sweep(folder)
    card = (out / "README.md").read_text()
    delta = next(v for v in summary["variants"] if v["variant"] == summary["verdict"]["take"])["delta_vs_control"]
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-generation\n")
    assert summary["verdict"]["reason"] in card
    assert f"`{summary['follow_up_spec']}`, beside it, is the sweep that would confirm it" in card
    assert f"{delta['mean']:+.4f} [{delta['ci95'][0]:+.4f}, {delta['ci95'][1]:+.4f}]" in card
    control = next(v for v in summary["variants"] if v["variant"] == summary["control"])
    assert f"control `{summary['control']}`: mean over {len(control['runs'])} seed(s)" in card
    # the shared sweep compares each run at its best evaluation, chosen on half of the val documents
    assert summary["evaluation"]["selection_fraction"] == 0.5
    assert "Compared: the mean NLL on the 50% of val documents that did not choose each run's best evaluation" in card
    assert "## Spec\n" in card and "\nmethod: full\nmodel:\n" in card  # the resolved spec, as YAML
    assert 'AutoModelForCausalLM.from_pretrained("<this folder>")' in card


def test_a_lora_variant_is_merged_and_scores_its_chosen_seeds_compared_loss(finished, tmp_path, capsys):
    """The control is LoRA with several seeds: the one with the lower choosing loss is exported, merged, and the folder,
    loaded by transformers alone, scores that run's compared loss under the protocol (recomputed here as well)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jobs import data, evaluate
    from orchestrator.folder import locate

    folder, _ = finished
    control = _sweep(folder)["control"]
    runs = [r for r in _runs(folder).values() if r["variant"] == control]
    by_choice = min(runs, key=lambda r: next(h["val_loss"] for h in r["history"] if h["step"] == r["compared_step"]))
    assert main([str(folder), "--variant", control, "--out", str(tmp_path / "current")]) == 0
    console = capsys.readouterr().out
    assert f"this is seed {by_choice['seed']}, the one with the lowest val loss" in console
    exported, compared = map(float, CHECK.search(console).groups())
    assert compared == pytest.approx(by_choice["compared_loss"], abs=1e-6)
    assert exported == pytest.approx(compared, abs=1e-4)

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "current")
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert not any("lora" in name for name, _ in model.named_parameters())
    _, plan = locate(str(folder)).plan()
    spec = next(r.spec for r in plan.runs if r.name == by_choice["run"])
    val = data.load(spec.data, locate(str(folder)).storage, AutoTokenizer.from_pretrained(tmp_path / "current"))
    evalset = evaluate.eval_set(val.val_docs, plan.evaluation)
    nll = evaluate.per_document_nll(model, evalset, 3, torch.device("cpu"))
    assert plan.evaluation.mean_nll(nll.tolist(), evalset.doc_tokens, "score") == pytest.approx(compared, abs=1e-4)
    card = (tmp_path / "current" / "README.md").read_text()
    assert (
        f"Exported on request (`--variant {control}`)" in card and "LoRA (rank 8, alpha 16, on c_attn) merged" in card
    )


def _copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs" / folder.name
    shutil.copytree(folder, copy)
    return copy


def test_nothing_taken_exits_2_and_says_so_unless_a_variant_is_named(finished, tmp_path, capsys):
    """In a copy, the control's runs are recorded as failed: the verdict, rebuilt from the runs' records as the
    report builds it, takes nothing (what the verdict decides is test_verdict's)."""
    folder = _copy(finished[0], tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    take = summary["verdict"]["take"]
    for run in summary["runs"]:
        if run["option"] == summary["control"]:
            failed = {"state": "failed", "error": "RuntimeError: CUDA error", "since": 0.0, "started": 0.0}
            (folder / dir_name(run["run"]) / "state.json").write_text(json.dumps(failed))
    out = tmp_path / "model"
    assert main([str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: nothing to export: the verdict took no fix (The control **{summary['control']}** has no " in err
    listed = err.split("pass --variant NAME, one of: ", 1)[1].strip()
    assert set(listed.split(", ")) == {v["variant"] for v in summary["variants"]}
    assert not out.exists()

    assert main([str(folder), "--variant", "nope", "--out", str(out)]) == 2
    assert "--variant 'nope': no such variant" in capsys.readouterr().err
    assert main([str(folder), "--variant", take, "--out", str(out), "--no-check"]) == 0
    assert "not checked (--no-check)" in (out / "README.md").read_text()
    assert main([str(folder), "--variant", take, "--out", str(out)]) == 2  # never over an export
    assert f"--out {out}: exists and is not an empty folder" in capsys.readouterr().err


def test_a_compared_checkpoint_that_was_not_kept_exits_2_with_the_fix(finished, tmp_path, capsys):
    folder = _copy(finished[0], tmp_path)
    take = _take(folder)
    recorded = Path(_runs(folder)[take]["compared_checkpoint"])
    shutil.rmtree(folder / dir_name(take) / recorded.parent.name / recorded.name)  # as Ray deletes one not kept
    assert main([str(folder), "--out", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert f"{take}: the checkpoint of its compared evaluation" in err
    assert "relaunch with --fresh and a higher run.keep_checkpoints" in err
    assert not (tmp_path / "model").exists() and not list(tmp_path.glob(".model.partial-*"))


@pytest.mark.s3
def test_an_experiment_in_s3_exports_and_no_credential_reaches_the_folder(
    finished, s3_env, monkeypatch, tmp_path, capsys
):
    """The finished folder is uploaded to the bucket; the export reads it, checkpoint included, from s3:// only."""
    from devtools.seaweed import ACCESS_KEY, SECRET_KEY

    folder, _ = finished
    client = s3_env.client()
    uri = f"s3://sweeps/uploaded/{folder.name}"
    for file in folder.rglob("*"):
        if file.is_file():
            client.upload_file(str(file), "sweeps", f"uploaded/{folder.name}/{file.relative_to(folder).as_posix()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)  # where the AWS CLI reads it from too
    assert main([uri, "--out", str(tmp_path / "model")]) == 0
    console = capsys.readouterr().out
    take = _take(folder)
    assert f"checkpoint {uri}/{dir_name(take)}/train-" in console  # read from the bucket, not the local original
    exported, compared = map(float, CHECK.search(console).groups())
    assert compared == pytest.approx(_runs(folder)[take]["compared_loss"], abs=1e-6)
    assert exported == pytest.approx(compared, abs=1e-4)
    for file in (tmp_path / "model").iterdir():
        payload = file.read_bytes()
        assert SECRET_KEY.encode() not in payload and ACCESS_KEY.encode() not in payload, file.name
