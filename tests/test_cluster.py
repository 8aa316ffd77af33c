"""What a user does on a cluster, on this machine: ray start, ray job submit, read the results.

The cluster runs with token authentication on (RAY_AUTH_MODE=token) on loopback ports, and is
stopped by the PIDs of the processes this test started, never by `ray stop` (which would stop
every Ray on the machine).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ray


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def cluster():
    """A head node started with `ray start --head --block`; yields (dashboard URL, env)."""
    import psutil

    gcs, dashboard, client, agent, agent_grpc, runtime_env, metrics, node_manager, object_manager = _free_ports(9)
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [
            "ray",
            "start",
            "--head",
            "--block",
            "--disable-usage-stats",
            "--num-cpus=3",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--metrics-export-port={metrics}",
            f"--node-manager-port={node_manager}",
            f"--object-manager-port={object_manager}",
            f"--temp-dir={temp_dir}",
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, "ray start exited"
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2)
            except urllib.error.HTTPError:
                break  # the dashboard answers (401: token auth is on)
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not come up"
                time.sleep(1)
            else:
                break
        yield url, env
    finally:
        root = psutil.Process(head.pid)
        started = [root] + root.children(recursive=True)
        head.send_signal(signal.SIGTERM)  # `ray start --block` tears down what it started
        _, alive = psutil.wait_procs(started, timeout=30)
        for process in alive:  # and anything left of our own tree, by PID
            try:
                process.kill()
            except psutil.NoSuchProcess:  # exited between the wait and the kill
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_unauthenticated_requests_are_refused(cluster):
    url, _ = cluster
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{url}/api/jobs/", timeout=5)
    assert err.value.code == 401


def test_ray_job_submit_runs_the_sweep(cluster, tmp_path):
    url, env = cluster
    storage = tmp_path / "results"
    command = [
        "ray",
        "job",
        "submit",
        f"--address={url}",
        "--working-dir=.",
        "--",
        "python",
        "-m",
        "orchestrator.launch",
        "specs/smoke.yaml",
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
        "--set",
        f"storage.path={storage}",
    ]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "succeeded" in log
    assert "[lora_capacity] step 20/20" in log  # progress lines reach the `ray job logs` stream
    summary = json.loads((storage / "smoke" / "summary.json").read_text())
    assert {r["run"]: r["status"] for r in summary["runs"]} == {"current": "completed", "lora_capacity": "completed"}
    for run in summary["runs"]:
        assert (Path(run["best_checkpoint"]) / "adapter_model.safetensors").is_file()


def test_cluster_yaml_passes_rays_own_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(Path("cluster.yaml").read_text())
    validate_config(prepare_config(config))
    workers = config["available_node_types"]
    assert any(node["resources"].get("GPU", 0) >= 1 for node in workers.values())
    assert any("pip install" in cmd and "-e ." in cmd for cmd in config["setup_commands"])
