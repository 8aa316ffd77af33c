"""What a platform engineer does with a cluster, on this machine: a head and worker nodes started with
`ray start` on 127.0.0.1 (tests/raynodes.py), the sweep submitted with `ray job submit`, checkpoints to a
real S3 server (SeaweedFS), and a worker node lost mid-run.

One sweep covers it: two runs on the shared sweep's settings (so their losses can be compared with it),
pinned to two worker nodes by custom resources, reading the model and the data from the bucket. It shows
runs on other nodes, checkpoints written from them into the bucket, a node holding a two-worker
data-parallel run killed after its first checkpoint and replaced (as an autoscaler or KubeRay would),
`--status` while it recovers, the report rebuilt from the bucket alone, and the AWS secret in no output.
A second, short job shows a local storage path refused on a multi-node cluster.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import BEHAVIOUR, runs_of
from tests.raynodes import LocalCluster
from tests.seaweed import ACCESS_KEY, SECRET_KEY

pytestmark = [pytest.mark.ray, pytest.mark.s3]


@pytest.fixture(scope="module")
def cluster(s3_server):
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


def _submit(cluster: LocalCluster, spec: Path, *args: str, wait: bool = True) -> subprocess.CompletedProcess | str:
    """`ray job submit` from this checkout to the head; returns the finished command, or the job id (``wait=False``)."""
    command = ["ray", "job", "submit", f"--address={cluster.url}", "--working-dir=.", *([] if wait else ["--no-wait"])]
    command += ["--", "python", "-m", "orchestrator.launch", str(spec), *args]
    out = subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=600)
    if wait:
        return out
    assert out.returncode == 0, out.stdout + out.stderr
    return next(line.split("'")[1] for line in out.stdout.splitlines() if "submitted successfully" in line)


def _job(cluster: LocalCluster, job_id: str, what: str) -> str:
    return subprocess.run(
        ["ray", "job", what, f"--address={cluster.url}", job_id], env=cluster.env, capture_output=True, text=True
    ).stdout


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="sweeps", Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _registered(client, prefix: str, checkpoint: str) -> bool:
    snapshots = [k for k in _keys(client, prefix) if k.endswith("checkpoint_manager_snapshot.json")]
    return any(checkpoint in client.get_object(Bucket="sweeps", Key=k)["Body"].read().decode() for k in snapshots)


@pytest.fixture(scope="module")
def multinode(cluster, s3_server, tmp_path_factory, behaviour):
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
            "two_workers": {"resources": {"num_workers": 2, "custom": {"node_b": 0.5}}},
        },
    }
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    job = _submit(cluster, spec_file, wait=False)
    deadline = time.monotonic() + 600
    while not _registered(client, "cluster/multinode/two_workers/", "step_000010"):
        assert "RUNNING" in _job(cluster, job, "status") or "PENDING" in _job(cluster, job, "status"), _job(
            cluster, job, "logs"
        )
        assert time.monotonic() < deadline, "two_workers did not checkpoint step 10"
        time.sleep(0.2)
    cluster.kill("b")
    lost = time.time()
    # --status from another process, from the bucket alone, while the run has lost its node
    env = {**os.environ, **{k: cluster.env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}}
    status = subprocess.run(
        [sys.executable, "-m", "orchestrator.launch", str(spec_file), "--status"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    cluster.add_node("b2", cpus=2, resources={"node_b": 1})  # the lost node's replacement, as an autoscaler adds one
    while (state := _job(cluster, job, "status")) and ("RUNNING" in state or "PENDING" in state):
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(1)
    yield {
        "state": state,
        "logs": _job(cluster, job, "logs"),
        "status": status,
        "spec": spec_file,
        "env": env,
        "client": client,
        "lost_at": lost,
        "unbroken": runs_of(behaviour[1]),
    }


def _summary(client) -> dict:
    return json.loads(client.get_object(Bucket="sweeps", Key="cluster/multinode/summary.json")["Body"].read())


def test_runs_land_on_both_worker_nodes_and_status_shows_where(multinode):
    assert "succeeded" in multinode["state"], multinode["logs"][-4000:]
    runs = {r["run"]: r for r in _summary(multinode["client"])["runs"]}
    first_node = {name: r["history"][0]["node_id"] for name, r in runs.items()}
    assert len(set(first_node.values())) == 2  # current on node_a, two_workers on node_b
    status = multinode["status"]
    assert status.returncode == 0, status.stderr
    lines = {line.split()[0]: line for line in status.stdout.splitlines()[2:]}
    assert first_node["current"][:8] in lines["current"] and first_node["two_workers"][:8] in lines["two_workers"]


def test_a_lost_node_costs_its_run_one_interval_not_the_run(multinode):
    runs = {r["run"]: r for r in _summary(multinode["client"])["runs"]}
    moved, unbroken = runs["two_workers"], multinode["unbroken"]["two_workers"]
    assert (moved["status"], moved["steps"]) == ("completed", 30)
    steps = [h["step"] for h in moved["history"]]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # no step counted twice
    (restart,) = moved["restarts"]
    assert restart["at_step"] == 10 and restart["from_node"] != restart["to_node"]  # from its S3 checkpoint, elsewhere
    for key in ("final_val_loss", "final_train_loss"):
        assert moved[key] == pytest.approx(unbroken[key], abs=1e-4)
    assert runs["current"]["final_val_loss"] == pytest.approx(
        multinode["unbroken"]["current[seed=0]"]["final_val_loss"], abs=1e-4
    )
    report = multinode["client"].get_object(Bucket="sweeps", Key="cluster/multinode/report.md")["Body"].read().decode()
    assert f"**two_workers** restarted at step 10: node {restart['from_node'][:8]} → {restart['to_node'][:8]}" in report


def test_every_checkpoint_is_in_the_bucket_and_the_report_rebuilds_from_it_alone(multinode, tmp_path):
    client = multinode["client"]
    keys = _keys(client, "cluster/multinode/")
    for run, steps in (("current", (10, 20, 30)), ("two_workers", (20, 30))):  # keep_checkpoints 2 + the latest
        for step in steps[-2:]:
            assert any(f"{run}/" in k and k.endswith(f"step_{step:06d}/manifest.json") for k in keys), (run, step)
    before = _summary(client)
    client.delete_object(Bucket="sweeps", Key="cluster/multinode/summary.json")
    # another process, another folder, no Ray and no access to the nodes' disks: only the bucket
    rebuilt = subprocess.run(
        [sys.executable, "-m", "orchestrator.launch", str(multinode["spec"]), "--report"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**multinode["env"], "PYTHONPATH": str(Path.cwd())},
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    after = _summary(client)
    assert after["verdict"] == before["verdict"] and after["runs"] == before["runs"]


def test_the_secret_appears_in_no_output(multinode, cluster):
    assert SECRET_KEY not in multinode["logs"]
    client = multinode["client"]
    for key in _keys(client, "cluster/"):  # checkpoints, Tune's state, reports
        assert SECRET_KEY.encode() not in client.get_object(Bucket="sweeps", Key=key)["Body"].read(), key
    logs = [f for f in Path(cluster.temp_dir).glob("**/session_*/logs/**/*") if f.is_file()]  # every node's
    assert any(f.name.startswith("runtime_env") for f in logs)  # Ray's runtime-env agent, which logs runtime_envs
    for file in logs:
        assert SECRET_KEY.encode() not in file.read_bytes(), file


def test_a_local_storage_path_is_refused_on_a_multi_node_cluster(cluster, tmp_path):
    spec = tmp_path / "local.yaml"
    spec.write_text(yaml.safe_dump({**BEHAVIOUR, "name": "local", "storage": {"path": str(tmp_path / "runs")}}))
    out = _submit(cluster, spec)
    log = out.stdout + out.stderr
    assert out.returncode != 0 and "failed" in log
    assert "is a local folder, but this Ray cluster has 3 nodes" in log and "s3://bucket/prefix" in log
    assert "storage.shared: true" in log
    assert not (tmp_path / "runs" / "local").exists()  # refused before the experiment's folder was started


def test_cluster_yaml_passes_rays_own_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(Path("cluster.yaml").read_text())
    validate_config(prepare_config(config))
    workers = config["available_node_types"]
    assert any(node["resources"].get("GPU", 0) >= 1 for node in workers.values())
    assert any("pip install" in cmd and "-e ." in cmd for cmd in config["setup_commands"])
