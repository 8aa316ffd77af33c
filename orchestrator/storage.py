"""Storage: the one place that turns a path or ``s3://`` URI into a pyarrow filesystem.

Tune, Train, the data reader and the model loader all go through here, so they
agree on endpoint, region and credentials. Known pitfalls this handles:

- pyarrow ignores ``AWS_ENDPOINT_URL``; the endpoint must be passed explicitly.
- A plain-HTTP endpoint needs ``scheme="http"``.
- When a filesystem is passed to Ray, the path must not keep its ``s3://`` prefix.

Credentials are never taken from a spec: pyarrow reads them from the environment
or the standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, instance roles).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from orchestrator.spec import StorageSpec


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def filesystem(uri: str, storage: StorageSpec, attempts: int = 12) -> tuple[pafs.FileSystem, str]:
    """The filesystem for ``uri`` and the path within it (``bucket/key`` for S3, absolute for local).

    ``attempts`` bounds the AWS SDK's retries with exponential backoff: 12 rides out
    about a minute and a half of storage outage (Ray itself retries a checkpoint upload
    only 3 times); checks that should fail fast pass fewer.
    """
    if not is_s3(uri):
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    kwargs: dict[str, object] = {}
    if storage.endpoint_url:
        endpoint = urlparse(storage.endpoint_url)
        kwargs["endpoint_override"] = endpoint.netloc or endpoint.path
        kwargs["scheme"] = endpoint.scheme or "https"
    region = storage.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return PatientS3FileSystem(attempts, **kwargs), uri.removeprefix("s3://").rstrip("/")


class PatientS3FileSystem(pafs.S3FileSystem):
    """An S3FileSystem whose retry budget survives pickling.

    Ray pickles the storage filesystem to every Train worker and controller, and
    pyarrow's own pickling drops ``retry_strategy`` (back to 3 attempts, ~2 s), which
    turned a 20-second storage outage into failed runs.
    """

    def __init__(self, attempts: int, **kwargs: object):
        super().__init__(retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts), **kwargs)
        self._init_args = (attempts, kwargs)

    def __reduce__(self):
        return _patient_s3, self._init_args


def _patient_s3(attempts: int, kwargs: dict) -> PatientS3FileSystem:
    return PatientS3FileSystem(attempts, **kwargs)


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or an s3:// URI."""
    return "/".join([uri.rstrip("/"), *parts])


def read_bytes(uri: str, storage: StorageSpec) -> bytes:
    """The contents of one file, local or on S3."""
    fs, path = filesystem(uri, storage)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def read_json(uri: str, storage: StorageSpec) -> Any:
    """The value in a JSON file, local or on S3; None when there is no such file."""
    fs, path = filesystem(uri, storage)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return json.loads(stream.read())


def write_json(uri: str, storage: StorageSpec, value: Any, indent: int | None = None) -> None:
    """Write ``value`` as a JSON file, local or on S3, replacing what was there."""
    fs, path = filesystem(uri, storage)
    with fs.open_output_stream(path) as out:
        out.write(json.dumps(value, indent=indent).encode())


def download_dir(uri: str, dest: Path, storage: StorageSpec) -> Path:
    """Copy every file under an s3:// (or local) prefix into ``dest``; returns ``dest``."""
    fs, path = filesystem(uri, storage)
    dest.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(dest), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return dest


class StorageUnavailable(RuntimeError):
    """The storage cannot be written; the message says where and what to check."""


def check_writable(storage: StorageSpec) -> None:
    """Write and delete a marker under ``storage.path``, so a missing bucket or bad credentials fail before any trial starts."""
    uri = storage.path
    fs, path = filesystem(uri, storage, attempts=2)  # fail in seconds on a wrong endpoint
    marker = f"{path}/.write_check-{os.getpid()}"
    if is_s3(uri):
        bucket = path.split("/", 1)[0]
        try:
            missing = fs.get_file_info(bucket).type == pafs.FileType.NotFound
        except OSError as err:
            raise StorageUnavailable(f"storage.path {storage.path!r}: cannot reach S3 ({err}); check storage.endpoint_url and the AWS credentials in the environment") from None
        if missing:
            raise StorageUnavailable(f"storage.path {storage.path!r}: bucket {bucket!r} does not exist{' at ' + storage.endpoint_url if storage.endpoint_url else ''}; create it (aws s3 mb s3://{bucket}) or fix storage.path")
    try:
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(marker) as out:
            out.write(b"ok")
        fs.delete_file(marker)
    except OSError as err:
        hint = (
            "check that the bucket exists, storage.endpoint_url, and the AWS credentials in the environment "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)" if is_s3(uri) else "check the folder's permissions"
        )
        raise StorageUnavailable(f"storage.path {storage.path!r}: cannot write {uri} ({err}); {hint}") from None
