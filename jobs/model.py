"""The model: GPT-2 from a hub id, a local folder, an s3:// prefix or the bundled preset; LoRA or full.

Every source goes through ``from_pretrained``; an s3:// prefix is first copied to
a local cache folder. Resuming also goes through the standard loaders
(``from_pretrained`` for full weights, ``PeftModel.from_pretrained`` for adapters),
which proves every checkpoint loads without our code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch

from contract.presets import PRESETS, cached_file, config_dict, local_folder
from contract.spec import LoraSpec, StorageSpec, TrainSpec
from contract.storage import download_dir, filesystem, is_s3


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


def source_folder(name: str, storage: StorageSpec) -> str:
    """What to pass to ``from_pretrained``: the preset folder, a local copy of an s3:// prefix, or ``name``."""
    if name in PRESETS:
        return str(PRESETS[name])
    if is_s3(name):
        cache = Path(tempfile.gettempdir()) / "plateau-models" / hashlib.sha256(name.encode()).hexdigest()[:16]
        if not (cache / "config.json").is_file():
            download_dir(name, cache, storage)
        return str(cache)
    return name


@contextlib.contextmanager
def _quiet_peft():
    """peft 0.21 calls a transformers 5 method that warns it is deprecated; not ours to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def lora_config(model: torch.nn.Module, lora: LoraSpec):
    """A peft LoraConfig for ``model``; GPT-2's Conv1D layers get ``fan_in_fan_out=True`` on purpose."""
    from peft import LoraConfig
    from transformers.pytorch_utils import Conv1D

    targeted = [m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in lora.target_modules]
    if not targeted:
        raise ValueError(
            f"lora.target_modules {lora.target_modules} match no module of this model; GPT-2 uses c_attn, c_proj, c_fc"
        )
    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        fan_in_fan_out=isinstance(targeted[0], Conv1D),  # Conv1D stores weights as (in, out)
        task_type="CAUSAL_LM",
    )


def load_tokenizer(spec: TrainSpec, storage: StorageSpec):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source_folder(spec.model.tokenizer_source, storage))


def _causal_lm_loss(model: torch.nn.Module) -> torch.nn.Module:
    """Name the loss GPT-2 uses anyway: transformers 5 warns when a config names none, once per worker."""
    model.loss_type = "ForCausalLM"
    return model


def load_model(spec: TrainSpec, storage: StorageSpec, checkpoint_dir: str | None = None) -> torch.nn.Module:
    """The model to train: base weights (or fresh ones), then LoRA; from ``checkpoint_dir`` when resuming.

    In training mode: ``from_pretrained`` leaves a model in eval mode, and a run would otherwise train without
    its dropout until its first evaluation switched it back (a resumed run's comes only at its next one).
    """
    return _load(spec, storage, checkpoint_dir).train()


def _load(spec: TrainSpec, storage: StorageSpec, checkpoint_dir: str | None) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a worker's output is a log stream, not a terminal
    src = source_folder(spec.model.name, storage)
    try:
        attention = {"attn_implementation": spec.compute.attention}
        if spec.method == "full" and checkpoint_dir:
            return _causal_lm_loss(AutoModelForCausalLM.from_pretrained(checkpoint_dir, **attention))
        if spec.model.init == "pretrained":
            model = AutoModelForCausalLM.from_pretrained(src, **attention)
        else:
            torch.manual_seed(spec.run.seed)  # the frozen random base must be identical on resume
            known = config_dict(spec.model.name)  # offline when the shape is known (hub GPT-2 sizes)
            config = AutoConfig.for_model(**known) if known else AutoConfig.from_pretrained(src)
            model = AutoModelForCausalLM.from_config(config, **attention)
    except OSError as err:
        raise ModelUnavailable(f"model.name {spec.model.name!r}: {err}") from None
    model = _causal_lm_loss(model)
    if spec.method == "full":
        return model
    from peft import PeftModel, get_peft_model

    with _quiet_peft():
        if checkpoint_dir:
            return PeftModel.from_pretrained(model, checkpoint_dir, is_trainable=True)
        return get_peft_model(model, lora_config(model, spec.lora))


def count_parameters(spec: TrainSpec) -> tuple[int, int] | None:
    """(trainable, total) parameters, computed on the meta device: no weights are loaded.

    None when the model's config is not known offline (an s3:// prefix, an uncached hub id).
    """
    config = config_dict(spec.model.name)
    if config is None:
        return None
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type = config.pop("model_type", "gpt2")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **config))
        if spec.method == "lora":
            from peft import get_peft_model

            with _quiet_peft():
                model = get_peft_model(model, lora_config(model, spec.lora))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
