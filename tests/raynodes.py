"""A real multi-node Ray cluster on this machine, for tests: `ray start` processes on 127.0.0.1.

The head runs the dashboard (for `ray job submit`) with token authentication on and no
CPUs, as on KubeRay; each worker node is its own `ray start --block` process with its own
ports and custom resources, so a test decides where runs land, and can lose a node by
killing that process tree (raylet and workers) with SIGKILL. Every process is stopped by
the PID this class started, never by `ray stop`, which would stop every Ray on the machine.
"""

from __future__ import annotations

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
from datetime import datetime
from pathlib import Path

import psutil


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _node_ports() -> list[str]:
    """The ports one node binds, all free, so several nodes can share this machine."""
    agent, agent_grpc, runtime_env, metrics, node_manager, object_manager = free_ports(6)
    return [
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
        f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
    ]


def process_tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and every process it started."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def kill_all(processes: list[psutil.Process], timeout: float = 30) -> None:
    """SIGKILL each of ``processes`` (by PID, as they were listed) and wait for them to end."""
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:  # exited on its own meanwhile
            pass
    psutil.wait_procs(processes, timeout=timeout)


class _NodeExited(AssertionError):
    """A node's `ray start` process ended before the node joined."""


class LocalCluster:
    def __init__(self) -> None:
        # short: Ray's socket paths must fit 107 characters
        self.temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.processes: dict[str, subprocess.Popen] = {}  # each node's `ray start`, by name
        self.gcs, self.dashboard, self.client = free_ports(3)
        self.url = f"http://127.0.0.1:{self.dashboard}"

    def _start(self, name: str, args: list[str]) -> None:
        with (Path(self.temp_dir) / f"{name}.out").open("ab") as out:  # what `ray start` says, for a failure
            self.processes[name] = subprocess.Popen(
                [
                    "ray",
                    "start",
                    "--block",
                    "--disable-usage-stats",
                    "--node-ip-address=127.0.0.1",
                    *_node_ports(),
                    *args,
                ],
                env=self.env,
                start_new_session=True,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def _said(self, name: str) -> str:
        """The end of what node ``name``'s `ray start` printed."""
        return (Path(self.temp_dir) / f"{name}.out").read_text(errors="replace")[-3000:]

    def _exited(self, name: str) -> str | None:
        """None while node ``name``'s `ray start` runs; else its exit status and the end of its output."""
        code = self.processes[name].poll()
        return None if code is None else f"`ray start` for node {name} exited with {code}:\n{self._said(name)}"

    @property
    def gcs_address(self) -> str:
        """What a driver connects to (RAY_ADDRESS), as `ray job submit` sets it for the job's driver."""
        return f"127.0.0.1:{self.gcs}"

    def start_head(self, timeout: float = 120, extra: tuple[str, ...] = ()) -> None:
        """The head: GCS, dashboard and job server, no CPUs (nothing trains there)."""
        self._start(
            "head",
            [
                "--head",
                "--num-cpus=0",
                f"--port={self.gcs}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard}",
                f"--ray-client-server-port={self.client}",
                f"--temp-dir={self.temp_dir}",
                *extra,
            ],
        )
        deadline = time.monotonic() + timeout
        while True:
            assert not (exited := self._exited("head")), exited
            try:
                urllib.request.urlopen(f"{self.url}/api/version", timeout=2)
            except urllib.error.HTTPError:
                return  # the dashboard answers (401: token authentication is on)
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not come up"
                time.sleep(1)
            else:
                return

    def add_node(self, name: str, cpus: int, resources: dict[str, float]) -> None:
        """A worker node with ``cpus`` CPUs and these custom resources; returns once it has joined."""
        # its own temp folder, as a separate machine has: nodes sharing one would share the runtime-env
        # folder, and a node starting up clears the working dirs it does not know, the running job's included
        temp_dir = Path(self.temp_dir) / name
        temp_dir.mkdir()
        for attempt in (1, 2):
            self._start(
                name,
                [
                    f"--address=127.0.0.1:{self.gcs}",
                    f"--num-cpus={cpus}",
                    f"--resources={json.dumps(resources)}",
                    f"--temp-dir={temp_dir}",
                ],
            )
            try:
                return self.wait_for(
                    lambda nodes: any(resources.items() <= n["Resources"].items() for n in nodes), f"node {name}", name
                )
            except _NodeExited:
                # The ports _node_ports found free are free only until the node binds them; a Ray starting
                # meanwhile elsewhere on this machine (the other xdist process's sweep) can take one first.
                # Once more with new ones; a second exit is not that race.
                if attempt == 2:
                    raise

    def nodes(self) -> list[dict] | None:
        """Every node that joined, alive or dead, as Ray's state API lists them (with ``state``, ``is_head_node``,
        ``start_time_ms`` and ``end_time_ms``); None when the state API did not answer."""
        out = subprocess.run(
            ["ray", "list", "nodes", f"--address={self.gcs_address}", "--format=json", "--limit=100", "--detail"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,  # the state API answers slowly while many processes start on two cores
        )
        if out.stdout.lstrip().startswith("["):
            return json.loads(out.stdout)
        # an empty cluster prints this, not a JSON list; anything else is no answer, not an empty cluster
        return [] if "No resource in the cluster" in out.stdout else None

    def alive(self) -> list[dict]:
        """The alive nodes, as Ray's state API lists them (none while it does not answer: callers ask again)."""
        return [
            {"NodeID": n["node_id"], "Resources": n.get("resources_total", {})}
            for n in self.nodes() or []
            if n["state"] == "ALIVE"
        ]

    def wait_for(self, condition, what: str, node: str | None = None, timeout: float = 120) -> None:
        """Until ``condition`` holds of the alive nodes; fails at once if ``node``'s `ray start` exits first."""
        deadline = time.monotonic() + timeout
        while not condition(self.alive()):
            if node is not None and (exited := self._exited(node)):
                raise _NodeExited(exited)
            assert time.monotonic() < deadline, f"{what} did not join the cluster" + (
                f"; `ray start` said:\n{self._said(node)}" if node else ""  # read only when it fails
            )
            time.sleep(1)

    def kill(self, name: str) -> None:
        """Lose a node: SIGKILL its raylet and everything it started, by PID, at once."""
        kill_all(process_tree(self.processes.pop(name).pid))

    def stop(self) -> None:
        """Stop every node this cluster started (the worker nodes together, then the head), by PID."""
        workers = [n for n in self.processes if n != "head"]
        for names in (workers, ["head"] if "head" in self.processes else []):
            processes = [self.processes.pop(name) for name in names]
            tree = [p for process in processes for p in process_tree(process.pid)]
            for process in processes:
                process.send_signal(signal.SIGTERM)  # `ray start --block` tears down what it started
            _, alive = psutil.wait_procs(tree, timeout=2)  # a test cluster need not shut down gracefully
            kill_all(alive)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class AutoscalingCluster(LocalCluster):
    """A head whose autoscaler starts and stops worker nodes on this machine as demand asks: Ray's fake multi-node
    provider, the one Ray's own autoscaler tests use.

    Not ``ray.cluster_utils.AutoscalingCluster``: its ``start()`` runs ``ray stop --force``, which ends every Ray
    instance on the machine, and it reads a config template the wheel does not ship. The provider starts each node
    (a raylet and its workers) from the head's autoscaler process, so every node is in the head's process tree and
    :meth:`stop` ends them with it.
    """

    def start_head(
        self, timeout: float = 120, extra: tuple[str, ...] = (), worker_types: dict[str, dict] | None = None
    ) -> None:
        """The head (no CPUs) with an autoscaler for ``worker_types``: name -> {resources, min_workers, max_workers}."""
        workers = {name: {"node_config": {}, **spec} for name, spec in (worker_types or {}).items()}
        config = {
            "cluster_name": "fake-autoscaling",
            "max_workers": sum(spec["max_workers"] for spec in workers.values()),
            "provider": {
                "type": "fake_multinode",
                # Without it the provider joins new nodes to a GCS on port 6379 (and on the machine's IP).
                "gcs_address": self.gcs_address,
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
            },
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                **workers,
            },
            "head_node_type": "ray.head.default",
            # long enough that no node goes idle between two runs of a short test and is replaced by another
            "idle_timeout_minutes": 5,
            "upscaling_speed": 1.0,
            # the rest of what the monitor reads, empty (the fake provider runs no setup on its nodes)
            "auth": {},
            "docker": {},
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
        }
        path = Path(self.temp_dir) / "autoscaling.json"
        path.write_text(json.dumps(config))
        # the provider refuses to start without RAY_FAKE_CLUSTER; the autoscaler looks at demand every second
        self.env.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
        super().start_head(timeout, (*extra, f"--autoscaling-config={path}"))

    def most_workers_at_once(self) -> int:
        """The most worker nodes alive at the same time, from Ray's own record of when each node started and ended."""
        nodes = self.nodes()
        assert nodes is not None, "Ray's state API did not list the nodes"
        events = []
        for node in nodes:
            if not node["is_head_node"]:  # times as the state API prints them; a node alive now ended at the epoch
                start, end = (datetime.fromisoformat(node[key]).timestamp() for key in ("start_time_ms", "end_time_ms"))
                events += [(start, 1), (end if end > start else float("inf"), -1)]
        alive = most = 0
        for _, change in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
            alive += change
            most = max(most, alive)
        return most
