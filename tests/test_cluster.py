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
import re
from pathlib import Path

import pytest
import yaml

from contract.layout import step_folder
from devtools.seaweed import SECRET_KEY
from tests.conftest import BEHAVIOUR, bucket_keys, launch, submit

pytestmark = [pytest.mark.ray, pytest.mark.s3]


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
    # current, on the node that stayed, is the unbroken run: one worker x 16 ends where two x 8 do
    moved, unbroken = runs["two_workers"], runs["current"]
    assert (moved["status"], moved["steps"], unbroken["restarts"]) == ("completed", 30, [])
    steps = [h["step"] for h in moved["history"]]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # no step counted twice
    (restart,) = moved["restarts"]
    assert restart["at_step"] == 10 and restart["from_node"] != restart["to_node"]  # from its S3 checkpoint, elsewhere
    for key in ("final_val_loss", "final_train_loss"):
        assert moved[key] == pytest.approx(unbroken[key], abs=1e-4)
    report = multinode["client"].get_object(Bucket="sweeps", Key="cluster/multinode/report.md")["Body"].read().decode()
    assert f"**two_workers** restarted at step 10: node {restart['from_node'][:8]} → {restart['to_node'][:8]}" in report


def test_every_checkpoint_is_in_the_bucket_and_the_report_rebuilds_from_it_alone(multinode, tmp_path):
    client = multinode["client"]
    keys = bucket_keys(client, "cluster/multinode/")
    for run, steps in (("current", (10, 20, 30)), ("two_workers", (20, 30))):  # keep_checkpoints 2 + the latest
        for step in steps[-2:]:
            assert any(f"{run}/" in k and k.endswith(f"{step_folder(step)}/manifest.json") for k in keys), (run, step)
    before = _summary(client)
    client.delete_object(Bucket="sweeps", Key="cluster/multinode/summary.json")
    # another process, another folder, no Ray and no access to the nodes' disks: only the bucket
    rebuilt = launch(
        multinode["spec"], "--report", cwd=tmp_path, env={**multinode["env"], "PYTHONPATH": str(Path.cwd())}
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    after = _summary(client)
    assert after["verdict"] == before["verdict"] and after["runs"] == before["runs"]


def test_the_secret_appears_in_no_output(multinode, local_cluster):
    assert SECRET_KEY not in multinode["logs"]
    client = multinode["client"]
    for key in bucket_keys(client, "cluster/"):  # checkpoints, Tune's state, reports
        assert SECRET_KEY.encode() not in client.get_object(Bucket="sweeps", Key=key)["Body"].read(), key
    logs = [f for f in Path(local_cluster.temp_dir).glob("**/session_*/logs/**/*") if f.is_file()]  # every node's
    assert any(f.name.startswith("runtime_env") for f in logs)  # Ray's runtime-env agent, which logs runtime_envs
    for file in logs:
        assert SECRET_KEY.encode() not in file.read_bytes(), file


def test_a_local_storage_path_is_refused_on_a_multi_node_cluster(local_cluster, tmp_path):
    spec = tmp_path / "local.yaml"
    spec.write_text(yaml.safe_dump({**BEHAVIOUR, "name": "local", "storage": {"path": str(tmp_path / "runs")}}))
    out = submit(local_cluster, spec)
    log = out.stdout + out.stderr
    assert out.returncode != 0 and "failed" in log
    assert re.search(r"is a local folder, but this Ray cluster has \d nodes", log) and "s3://bucket/prefix" in log
    assert "storage.shared: true" in log
    assert not (tmp_path / "runs" / "local").exists()  # refused before the experiment's folder was started


def test_cluster_yaml_passes_rays_own_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(Path("cluster.yaml").read_text())
    validate_config(prepare_config(config))
    workers = config["available_node_types"]
    assert any(node["resources"].get("GPU", 0) >= 1 for node in workers.values())
    assert any("pip install" in cmd and "-e ." in cmd for cmd in config["setup_commands"])
