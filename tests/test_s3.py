"""Against a real S3 server (SeaweedFS on 127.0.0.1): results, checkpoints, model and data in a bucket;
credentials only from the environment; a storage outage mid-run."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.launch import main
from tests.seaweed import SECRET_KEY

pytestmark = [pytest.mark.ray, pytest.mark.s3]


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="sweeps", Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _upload_folder(client, folder: Path, prefix: str) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            client.upload_file(str(file), "sweeps", f"{prefix}/{file.relative_to(folder).as_posix()}")


@pytest.fixture(scope="module")
def s3_sweep(s3_server, tmp_path_factory):
    """A two-option sweep reading its model and data from the bucket and writing everything there."""
    from tests.seaweed import ACCESS_KEY

    client = s3_server.client()
    _upload_folder(client, Path("contract/assets/tiny-gpt2"), "models/tiny-gpt2")
    client.upload_file("sources/training_data_final_merged.md", "sweeps", "data/qa.md")
    spec = yaml.safe_load(Path("specs/smoke.yaml").read_text())
    spec["name"] = "s3smoke"
    spec["storage"] = {"path": "s3://sweeps/experiments", "endpoint_url": s3_server.endpoint}
    spec["base"]["model"] = {"name": "s3://sweeps/models/tiny-gpt2"}
    spec["base"]["data"]["path"] = "s3://sweeps/data/qa.md"
    path = tmp_path_factory.mktemp("spec") / "s3.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    # A Ray temp folder of this test's own (short: Ray's socket paths must fit 107 characters), so the
    # secret check reads the logs of the Ray instance this sweep started, not whichever ran last.
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "us-east-1",
        "RAY_DEDUP_LOGS": "0",
        "RAY_TMPDIR": str(ray_tmp),
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.launch",
            str(path),
            "--local",
            "--only",
            "current",
            "--only",
            "lora_capacity",
            "--set",
            "run.steps=20",
            "--set",
            "control_seeds=1",
            "--set",
            "option_seeds=1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    yield client, out.stdout + out.stderr, path, ray_tmp
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_checkpoints_and_results_land_in_the_bucket(s3_sweep):
    client, log, spec, _ = s3_sweep
    keys = _keys(client, "experiments/s3smoke/")
    for name in ("summary.json", "report.md", "loss_curves.png", "plan.json", "current/history.json"):
        assert f"experiments/s3smoke/{name}" in keys
    summary = json.loads(client.get_object(Bucket="sweeps", Key="experiments/s3smoke/summary.json")["Body"].read())
    for run in summary["runs"]:
        assert run["status"] == "completed"
        assert run["best_checkpoint"].startswith("s3://sweeps/experiments/s3smoke/")
    assert any(k.endswith("step_000020/adapter_model.safetensors") for k in keys)
    assert not any(
        k.endswith("model.safetensors") and "adapter" not in k and "experiments/" in k for k in keys
    )  # no frozen base
    assert "results: s3://sweeps/experiments/s3smoke/summary.json" in log
    follow = summary["follow_up_spec"]  # the next experiment, beside the report, and how to fetch and run it
    assert f"experiments/s3smoke/{follow}" in keys
    report = client.get_object(Bucket="sweeps", Key="experiments/s3smoke/report.md")["Body"].read().decode()
    endpoint = yaml.safe_load(spec.read_text())["storage"]["endpoint_url"]
    assert (
        f"    aws s3 cp s3://sweeps/experiments/s3smoke/{follow} . --endpoint-url {endpoint} && python -m "
        f"orchestrator.launch {follow}\n" in report
    )


def test_the_best_adapter_in_the_bucket_loads_with_peft_alone(s3_sweep, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    client = s3_sweep[0]
    summary = json.loads(client.get_object(Bucket="sweeps", Key="experiments/s3smoke/summary.json")["Body"].read())
    best = summary["runs"][0]
    prefix = best["best_checkpoint"].removeprefix("s3://sweeps/")
    for key in _keys(client, prefix + "/"):
        if key.endswith("/"):  # folder marker objects
            continue
        target = tmp_path / key.removeprefix(prefix + "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file("sweeps", key, str(target))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("contract/assets/tiny-gpt2"), str(tmp_path))
    assert model.peft_config["default"].r == best["overrides"].get("lora", {}).get("rank", 16)


def test_the_secret_appears_in_no_output(s3_sweep):
    client, log, spec, ray_tmp = s3_sweep
    assert SECRET_KEY not in log
    assert SECRET_KEY not in spec.read_text()
    for key in _keys(client, "experiments/"):  # specs, checkpoints, tuner.pkl, reports, Tune state
        assert SECRET_KEY.encode() not in client.get_object(Bucket="sweeps", Key=key)["Body"].read(), key
    logs = [f for f in ray_tmp.glob("ray/session_*/logs/**/*") if f.is_file()]
    assert any(f.name.startswith("runtime_env") for f in logs)  # Ray's runtime-env agent, which logs runtime_envs
    for file in logs:
        assert SECRET_KEY.encode() not in file.read_bytes(), file


def test_a_missing_bucket_fails_before_anything_starts(s3_env):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.launch",
            "specs/smoke.yaml",
            "--local",
            "--set",
            "storage.path=s3://no-such-bucket/x",
            "--set",
            f"storage.endpoint_url={s3_env.endpoint}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "bucket 'no-such-bucket' does not exist" in out.stderr and "aws s3 mb" in out.stderr
    assert "starting a local Ray instance" not in out.stdout  # the launcher says so just before it starts Ray


def _registered(client, prefix: str, checkpoint: str) -> bool:
    snapshots = [k for k in _keys(client, prefix) if k.endswith("checkpoint_manager_snapshot.json")]
    return any(checkpoint in client.get_object(Bucket="sweeps", Key=k)["Body"].read().decode() for k in snapshots)


def test_a_storage_outage_mid_run_loses_nothing(s3_env, reference_run):
    """Crash the S3 server for 20 s after the first checkpoint; uploads wait it out and the run
    ends exactly where the uninterrupted run did."""
    from tests.conftest import REFERENCE_ARGS, summary

    storage = [
        "--set",
        "storage.path=s3://sweeps/outage",
        "--set",
        f"storage.endpoint_url={s3_env.endpoint}",
        "--set",
        "run.checkpoint_every=10",
    ]
    result: dict = {}
    launch = threading.Thread(
        target=lambda: result.update(
            code=main(["specs/smoke.yaml", "--local", "--only", "lr_schedule", *REFERENCE_ARGS, *storage])
        )
    )
    launch.start()
    client = s3_env.client()
    try:
        while not _registered(client, "outage/", "step_000010"):
            assert launch.is_alive(), "the run ended before the outage"
            time.sleep(0.2)
    finally:
        s3_env.stop(crash=True)
    time.sleep(20)
    s3_env.start()
    launch.join(timeout=600)
    assert result["code"] == 0
    run = json.loads(client.get_object(Bucket="sweeps", Key="outage/smoke/summary.json")["Body"].read())["runs"][0]
    assert (run["status"], run["steps"]) == ("completed", 40)
    assert run["final_val_loss"] == pytest.approx(summary(reference_run)["runs"][0]["final_val_loss"], abs=1e-4)
