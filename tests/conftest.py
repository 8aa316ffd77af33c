"""Shared fixtures. Tests run from the repo root so relative spec paths resolve as for a user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from contract.layout import step_folder
from devtools.seaweed import ACCESS_KEY, SECRET_KEY
from tests.raynodes import LocalCluster

ROOT = Path(__file__).resolve().parent.parent


def launch(*args, env: dict | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python -m orchestrator.launch ARGS` in a fresh process, as a user runs it (Ray reads its console
    settings when it is first imported); ``env`` is added to this environment."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.launch", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
        **kwargs,
    )


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups from the markers
def pytest_collection_modifyitems(config, items):
    """Each of the two sweeps' tests run in one process (pytest-xdist's loadgroup), so each sweep runs once."""
    for item in items:
        for fixture, group in (("behaviour", "behaviour"), ("multinode", "cluster"), ("local_cluster", "cluster")):
            if fixture in item.fixturenames:
                item.add_marker(pytest.mark.xdist_group(group))
                break


def _xdist_cannot_group() -> bool:
    """pytest-xdist 3.8 (the latest) groups tests by appending @group to a private node id that pytest 9.2 no longer
    reads: the groups are then ignored without a word."""
    from importlib.metadata import version

    from packaging.version import Version

    return Version(version("pytest")) >= Version("9.2") and Version(version("pytest-xdist")) <= Version("3.8")


def pytest_configure(config):
    if config.getoption("dist", "no") == "loadgroup" and _xdist_cannot_group():
        raise pytest.UsageError(
            "pytest >= 9.2 with pytest-xdist <= 3.8: --dist loadgroup would silently not group, and each shared "
            "sweep would run in both processes; install pytest<9.2 (pyproject.toml's dev extra pins it)"
        )
    os.chdir(ROOT)  # session fixtures run before the per-test chdir above
    # Never reach for the Hub from tests: loading must work from local folders only.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory):
    """A Hugging Face cache (HF_HUB_CACHE) in which `gpt2` is present, as after `hf download gpt2`: its config.json,
    the file the launcher's offline check looks for. Nothing is downloaded; weights are never read from it."""
    from transformers import GPT2Config

    cache = tmp_path_factory.mktemp("hf-hub")
    repo = cache / "models--gpt2"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    GPT2Config().to_json_file(snapshot / "config.json")  # GPT-2 124M's shapes
    return cache


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A SeaweedFS S3 server on 127.0.0.1 for the whole session, with a `sweeps` bucket."""
    from devtools.seaweed import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        server.create_bucket("sweeps")
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The test credentials in the environment only (the standard AWS variables), as a user would set them."""
    from devtools.seaweed import ACCESS_KEY, SECRET_KEY

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return s3_server


# The shared end-to-end sweep: every behaviour the tests check on a real local Ray, in one
# sweep, on the pretrained demo model. LoRA dropout is off so that runs that differ only in
# how the batch is split (micro-batches, workers) must end at the same losses.
BEHAVIOUR = {
    "name": "behaviour",
    "control": "current",
    # One seed per option keeps the sweep small; the control's three give the seed noise 2 degrees of freedom.
    "control_seeds": 3,
    "option_seeds": 1,
    "max_concurrent": 2,  # fewer slots than runs: the queued ones wait for a slot to free (and 2 cores run 2 well)
    "early_stopping": {"min_delta": 0.05, "patience": 1, "grace_evals": 1},
    # context 256: what the longest block gives anyway, stated so that a part of this sweep run alone scores the
    # same; each run is compared at its best evaluation, chosen on half of the val documents, scored on the rest
    "evaluation": {"context": 256, "selection_fraction": 0.5},
    "base": {
        "lora": {"rank": 8, "alpha": 16.0, "dropout": 0.0},
        "data": {"block_size": 128, "batch_size": 16},
        "optim": {"lr": 2.0e-3},
        "run": {"steps": 30, "eval_every": 10, "checkpoint_every": 10},
    },
    "options": {
        "current": {},  # the control, with 3 seeds
        "same_but_seed": {"run": {"seed": 2}},  # A/A: the control on another seed
        # A/B: truly better; at full fine-tuning's own LR, a quarter of LoRA's (specs/fair.yaml's search found
        # 1/16): at LoRA's 2e-3 its gain varies so much across the 19 val documents that Holm's correction over
        # six comparisons leaves it undecided (docs-only p 0.04)
        "full": {"method": "full", "lora": None, "optim": {"lr": 5.0e-4}},
        "hot_lr": {"optim": {"lr": 0.2}},  # 100x the control's learning rate
        "diverge": {"method": "full", "lora": None, "optim": {"lr": 1.0e8, "grad_clip": None}},
        "broken": {"lora": {"target_modules": ["no_such_module"]}, "run": {"max_failures": 0}},
        "long_context": {"data": {"block_size": 256, "batch_size": 8}},
        # on the control's first seed, which they must equal: every other variant runs seeds of its own
        "micro_batches": {"compute": {"micro_batch_size": 8}, "run": {"seed": 0}},  # 2 x 8 accumulated
        "two_workers": {"resources": {"num_workers": 2}, "run": {"seed": 0}},  # 2 x 8, data parallel (gloo)
    },
}


def summary(storage: Path, experiment: str = "smoke") -> dict:
    import json

    return json.loads((storage / experiment / "summary.json").read_text())


@pytest.fixture(scope="session")
def behaviour(tmp_path_factory):
    """(exit code, experiment folder, console output (stdout and stderr), MLflow URI, stdout alone) of the shared
    sweep, run once per session."""

    import yaml

    root = tmp_path_factory.mktemp("behaviour")
    spec = {
        **BEHAVIOUR,
        "storage": {"path": str(root / "out")},
        "tracking": {"mlflow_uri": f"sqlite:///{root / 'mlflow.db'}"},
    }
    (root / "behaviour.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    out = launch(root / "behaviour.yaml", "--local", timeout=1200)
    log = out.stdout + out.stderr
    return out.returncode, root / "out" / "behaviour", log, spec["tracking"]["mlflow_uri"], out.stdout


def runs_of(folder: Path) -> dict:
    """The runs of the experiment in ``folder``, by name."""
    return {r["run"]: r for r in summary(folder.parent, folder.name)["runs"]}


# ----------------------------------------------------------------------------------- the multi-node sweep
# A real cluster on this machine (tests/raynodes.py) and one sweep submitted to it with `ray job submit`,
# shared by test_cluster (placement, a lost node, the bucket, the secret) and test_faults (its `current` is
# the unbroken run a relaunched one must end at).


@pytest.fixture(scope="session")
def local_cluster(s3_server):
    """A head (no CPUs) and two worker nodes, `node_a` and `node_b`, each with its own custom resource."""
    nodes = LocalCluster()
    nodes.env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION="us-east-1")
    try:
        nodes.start_head()
        nodes.add_node("a", cpus=1, resources={"node_a": 1})
        nodes.add_node("b", cpus=2, resources={"node_b": 1})
        yield nodes
    finally:
        nodes.stop()


def submit(cluster: LocalCluster, spec: Path, *args: str, wait: bool = True) -> subprocess.CompletedProcess | str:
    """`ray job submit` from this checkout to the head; returns the finished command, or the job id (``wait=False``)."""
    command = ["ray", "job", "submit", f"--address={cluster.url}", "--working-dir=.", *([] if wait else ["--no-wait"])]
    command += ["--", "python", "-m", "orchestrator.launch", str(spec), *args]
    out = subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=600)
    if wait:
        return out
    assert out.returncode == 0, out.stdout + out.stderr
    return next(line.split("'")[1] for line in out.stdout.splitlines() if "submitted successfully" in line)


def _job_status(cluster: LocalCluster, job_id: str) -> str:
    return subprocess.run(
        ["ray", "job", "status", f"--address={cluster.url}", job_id], env=cluster.env, capture_output=True, text=True
    ).stdout


def bucket_keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="sweeps", Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def registered(client, prefix: str, checkpoint: str) -> bool:
    """Whether Ray Train has registered ``checkpoint`` under ``prefix`` of the bucket (uploaded, in its snapshot)."""
    snapshots = [k for k in bucket_keys(client, prefix) if k.endswith("checkpoint_manager_snapshot.json")]
    return any(checkpoint in client.get_object(Bucket="sweeps", Key=k)["Body"].read().decode() for k in snapshots)


@pytest.fixture(scope="session")
def multinode(local_cluster, s3_server, tmp_path_factory):
    """The sweep on the cluster: `current` on node_a, `two_workers` (2 DDP workers) on node_b, which is killed
    after two_workers' first checkpoint and replaced by node_b2. Yields what the test needs to look at."""
    spec_file = tmp_path_factory.mktemp("multinode") / "multinode.yaml"
    storage = {"path": "s3://sweeps/cluster", "endpoint_url": s3_server.endpoint}
    client = s3_server.client()
    # the model and the data come from the bucket too, as they would for a team's cluster
    for file in Path("contract/assets/tiny-gpt2").iterdir():
        client.upload_file(str(file), "sweeps", f"models/tiny-gpt2/{file.name}")
    client.upload_file("sources/training_data_final_merged.md", "sweeps", "data/qa.md")
    base = {**BEHAVIOUR["base"], "model": {"name": "s3://sweeps/models/tiny-gpt2"}}
    base["data"] = {**base["data"], "path": "s3://sweeps/data/qa.md"}
    spec = {
        **BEHAVIOUR,
        "name": "multinode",
        "control_seeds": 1,
        "base": base,
        "storage": storage,
        "options": {
            "current": {"resources": {"custom": {"node_a": 1}}},
            # on current's seed, which it must end at: every other variant runs a seed of its own
            "two_workers": {"resources": {"num_workers": 2, "custom": {"node_b": 0.5}}, "run": {"seed": 0}},
        },
    }
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    cluster = local_cluster
    job = submit(cluster, spec_file, wait=False)
    # The job's one watcher: `ray job logs --follow` ends when the job does. (A `ray job status` per check is a
    # process importing Ray, 2 s of CPU on two cores: asked every second, it took a core from the sweep.)
    logs = spec_file.parent / "job.log"
    with logs.open("w") as out:
        follow = subprocess.Popen(
            ["ray", "job", "logs", "--follow", f"--address={cluster.url}", job],
            env=cluster.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 1200  # two cores, shared with the other test process
        while not registered(client, "cluster/multinode/two_workers/", step_folder(10)):
            assert follow.poll() is None, f"the job ended before two_workers checkpointed step 10:\n{logs.read_text()}"
            assert time.monotonic() < deadline, "two_workers did not checkpoint step 10"
            time.sleep(0.2)
        cluster.kill("b")
        # --status from another process, from the bucket alone, while the run has lost its node
        keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
        env = {**os.environ, **{k: cluster.env[k] for k in keys}}
        status = launch(spec_file, "--status", env=env, timeout=120)
        (spec_file.parent / "status.txt").write_text(status.stdout + status.stderr)  # to read after the session
        # the lost node's replacement, as an autoscaler adds one
        cluster.add_node("b2", cpus=2, resources={"node_b": 1})
        follow.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if follow.poll() is None:  # a failed wait above: the watcher is ours to stop
            follow.kill()
            follow.wait()
    state = _job_status(cluster, job)
    summary = client.get_object(Bucket="sweeps", Key="cluster/multinode/summary.json")["Body"].read()
    return {
        "state": state.lower(),
        "logs": logs.read_text(),
        "status": status,
        "spec": spec_file,
        "env": env,
        "client": client,
        "summary": json.loads(summary),
    }
