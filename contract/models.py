"""Whether a model source can be loaded from here, checked in seconds and without torch.

A model is named by a hub id, a local folder written by ``save_pretrained``, an
``s3://`` prefix holding one, or the bundled preset (:mod:`contract.presets`). The
launcher checks every run's model and tokenizer before anything starts; the worker and
the export load them (``jobs.model``).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from contract.presets import cached_file, local_folder
from contract.spec import StorageSpec
from contract.storage import filesystem, is_s3


class ModelUnavailable(RuntimeError):
    """The model source cannot be read; the message says which and what to do."""


def check_reachable(name: str, storage: StorageSpec) -> None:
    """Fail in seconds, not after minutes of retries, when ``name`` cannot be loaded from here."""
    folder = local_folder(name)
    if folder is not None:
        if not (folder / "config.json").is_file():
            raise ModelUnavailable(
                f"model.name {name!r}: folder has no config.json; point it at a folder written by save_pretrained"
            )
        return
    if is_s3(name):
        fs, path = filesystem(name, storage)
        try:
            info = fs.get_file_info(f"{path}/config.json")
        except OSError as err:
            raise ModelUnavailable(
                f"model.name {name!r}: cannot read from S3 ({err}); check storage.endpoint_url and the AWS credentials "
                "in the environment"
            ) from None
        if info.type.name != "File":
            raise ModelUnavailable(
                f"model.name {name!r}: no config.json under that prefix; upload a folder written by save_pretrained"
            )
        return
    if cached_file(name, "config.json"):
        return
    hint = (
        f"model.name {name!r} is not in the local Hugging Face cache and the Hub cannot be reached "
        f"from here; download it where there is network (`hf download {name}`), or set model.name "
        "to a local folder or an s3:// prefix holding a save_pretrained folder"
    )
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelUnavailable(hint + " (HF_HUB_OFFLINE=1 is set)")
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as err:
        raise ModelUnavailable(f"{hint} ({host}: {err})") from None
