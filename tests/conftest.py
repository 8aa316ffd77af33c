"""Shared fixtures. Tests run from the repo root so relative spec paths resolve as for a user."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def pytest_configure(config):
    os.chdir(ROOT)  # session fixtures run before the per-test chdir above
    # Never reach for the Hub from tests: loading must work from local folders only.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A SeaweedFS S3 server on 127.0.0.1 for the whole session, with a `sweeps` bucket."""
    from tests.seaweed import SeaweedS3

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
    from tests.seaweed import ACCESS_KEY, SECRET_KEY

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return s3_server


# The uninterrupted reference: one smoke option (warmup + linear decay, so the LR depends
# on the step) trained 40 steps. Fault tests end where it ends, or they lost work.
REFERENCE_ARGS = ["--set", "run.steps=40", "--set", "run.eval_every=10", "--set", "run.checkpoint_every=20"]


def registered(root: Path, checkpoint: str) -> bool:
    """Whether Ray Train has registered ``checkpoint`` under ``root`` (uploaded and recorded in its snapshot)."""
    return any(checkpoint in p.read_text() for p in root.glob("**/checkpoint_manager_snapshot.json"))


def summary(storage: Path, experiment: str = "smoke") -> dict:
    import json

    return json.loads((storage / experiment / "summary.json").read_text())


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    from orchestrator.launch import main

    storage = tmp_path_factory.mktemp("reference")
    assert main(["specs/smoke.yaml", "--local", "--only", "lr_schedule", "--set", f"storage.path={storage}", *REFERENCE_ARGS]) == 0
    return storage
