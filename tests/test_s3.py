"""Against a real S3 server (SeaweedFS on 127.0.0.1): a storage that cannot be used is refused before anything
starts. (The sweeps that write to S3 are in test_cluster, a multi-node sweep that also reads its model and data
from the bucket, and test_faults, a relaunch through a storage outage.)"""

import pytest

from tests.conftest import launch

pytestmark = pytest.mark.s3


def test_a_missing_bucket_fails_before_anything_starts(s3_env):
    out = launch(
        "specs/smoke.yaml",
        "--local",
        "--set",
        "storage.path=s3://no-such-bucket/x",
        "--set",
        f"storage.endpoint_url={s3_env.endpoint}",
        timeout=120,
    )
    assert out.returncode == 2
    assert "bucket 'no-such-bucket' does not exist" in out.stderr and "aws s3 mb" in out.stderr
    assert "starting a local Ray instance" not in out.stdout  # the launcher says so just before it starts Ray
