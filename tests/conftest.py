"""Shared fixtures. Tests run from the repo root so relative spec paths resolve as for a user."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.fixture
def local_ray():
    """Yields while a local Ray instance may be started by the code under test; shuts it down after."""
    import ray

    yield
    if ray.is_initialized():
        ray.shutdown()


def pytest_configure(config):
    # Never reach for the Hub from tests: loading must work from local folders only.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
