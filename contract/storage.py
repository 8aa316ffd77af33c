"""Storage: the one place that turns a path or ``s3://`` URI into a filesystem.

Tune, Train, the data reader, the model loader and the report all go through here,
so they agree on endpoint, region and credentials. Known pitfalls this handles:

- pyarrow ignores ``AWS_ENDPOINT_URL``; the endpoint must be passed explicitly.
- A plain-HTTP endpoint needs ``scheme="http"``.
- When a filesystem is passed to Ray, the path must not keep its ``s3://`` prefix.

Credentials are never taken from a spec. boto3 resolves the standard AWS chain
(environment, ``AWS_PROFILE``, SSO, assumed roles, instance and container roles) and
says which one it used; pyarrow, which moves the bytes, reads the kinds its own chain
refreshes by itself, and is handed boto3's current credentials for the others (SSO,
assume-role profiles, credential_process). Those are fixed for the life of the
filesystem (a run's, for Train), so a run that outlives them (often an hour) needs a
kind pyarrow refreshes: environment variables, a shared credentials file, an instance or
container role. They are never pickled: a filesystem shipped to a Ray worker resolves
them again there.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from contract.spec import StorageSpec

# boto3 credential methods that the AWS C++ SDK inside pyarrow resolves and refreshes itself.
_PYARROW_RESOLVES = {
    "env",
    "shared-credentials-file",
    "config-file",
    "iam-role",
    "container-role",
    "assume-role-with-web-identity",
}


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


_AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


def aws_credentials():
    """boto3's resolved credentials (the standard chain), or None when it finds none.

    Resolved once per process and environment: on a machine without credentials the
    chain ends by probing the instance-metadata endpoint, which takes seconds.
    Refreshable credentials (SSO, roles) renew themselves each time a filesystem reads them.
    """
    return _resolve_credentials(tuple(os.environ.get(name) for name in _AWS_ENV))


@functools.lru_cache(maxsize=4)
def _resolve_credentials(_environment: tuple[str | None, ...]):
    import boto3

    return boto3.Session().get_credentials()


class PatientS3FileSystem(pafs.S3FileSystem):
    """An S3FileSystem whose retry budget survives pickling, and whose credentials never go into a pickle.

    Ray pickles the storage filesystem to every Train worker and controller, and
    pyarrow's own pickling drops ``retry_strategy`` (back to 3 attempts, ~2 s), which
    turned a 20-second storage outage into failed runs. It would also pickle explicit
    credentials; ours are resolved again in the process that unpickles.
    """

    def __init__(self, attempts: int, **kwargs: object):
        credentials = aws_credentials()
        secrets: dict[str, object] = {}
        if credentials is not None and credentials.method not in _PYARROW_RESOLVES:
            frozen = credentials.get_frozen_credentials()
            secrets = {"access_key": frozen.access_key, "secret_key": frozen.secret_key, "session_token": frozen.token}
        super().__init__(retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts), **kwargs, **secrets)
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
    if isinstance(fs, pafs.LocalFileSystem):  # a run's folder may not exist yet when its trial starts
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
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


def check_writable(storage: StorageSpec, probe: bool = True) -> None:
    """Fail before any trial starts when ``storage.path`` cannot be written: a missing bucket,
    missing or rejected credentials, an unreachable endpoint, or a read-only folder.

    ``probe`` writes and deletes a marker file, the only proof that writing works; without it
    (a dry run, which writes nothing) a bucket is checked with HeadBucket and a local folder
    by its permissions.
    """
    uri = storage.path
    if is_s3(uri):
        _check_bucket(storage)
    if not probe:
        if not is_s3(uri):
            existing = next(p for p in [Path(uri).resolve(), *Path(uri).resolve().parents] if p.exists())
            if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
                raise StorageUnavailable(
                    f"storage.path {storage.path!r}: {existing} is not a folder this user can write in; "
                    "check the folder's permissions or choose another storage.path"
                )
        return
    fs, path = filesystem(uri, storage, attempts=2)  # fail in seconds on a wrong endpoint
    marker = f"{path}/.write_check-{os.getpid()}"
    try:
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(marker) as out:
            out.write(b"ok")
        fs.delete_file(marker)
    except OSError as err:
        hint = "check the bucket policy for s3:PutObject" if is_s3(uri) else "check the folder's permissions"
        raise StorageUnavailable(f"storage.path {storage.path!r}: cannot write {uri} ({err}); {hint}") from None


def _check_bucket(storage: StorageSpec) -> None:
    """HeadBucket through boto3, whose error codes say exactly what is wrong."""
    import boto3
    import botocore.exceptions
    from botocore.config import Config

    bucket = storage.path.removeprefix("s3://").split("/", 1)[0]
    where = f"storage.path {storage.path!r}"
    at = f" at {storage.endpoint_url}" if storage.endpoint_url else ""
    credentials = aws_credentials()
    if credentials is None:
        raise StorageUnavailable(
            f"{where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or AWS_PROFILE (run `aws sso login` for an SSO profile), or run on a node with an instance role"
        )
    client = boto3.client(
        "s3",
        endpoint_url=storage.endpoint_url,
        region_name=storage.region,
        config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=10),
    )
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageUnavailable(
                f"{where}: bucket {bucket!r} does not exist{at}; create it (aws s3 mb s3://{bucket}) or fix "
                "storage.path"
            ) from None
        if code in ("403", "AccessDenied", "Forbidden"):
            raise StorageUnavailable(
                f"{where}: access to bucket {bucket!r}{at} denied for the credentials from {credentials.method!r} "
                "(or they are not known there); check the keys, AWS_PROFILE, and the bucket policy (s3:ListBucket, "
                "s3:PutObject)"
            ) from None
        raise StorageUnavailable(
            f"{where}: HeadBucket {bucket!r}{at} failed ({code}: {err}); check the credentials and storage.endpoint_url"
        ) from None
    except botocore.exceptions.BotoCoreError as err:  # no connection, SSO token expired, bad endpoint URL
        raise StorageUnavailable(
            f"{where}: cannot reach S3{at} ({err}); check storage.endpoint_url, the network, and `aws sso login` for "
            "SSO profiles"
        ) from None
