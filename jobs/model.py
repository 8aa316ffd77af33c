"""The model: GPT-2 from a hub id, a local folder, an s3:// prefix or the bundled preset; LoRA or full.

Every source goes through ``from_pretrained``; an s3:// prefix is first copied to
a local cache folder. Resuming also goes through the standard loaders
(``from_pretrained`` for full weights, ``PeftModel.from_pretrained`` for adapters),
which proves every checkpoint loads without our code.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import warnings
from pathlib import Path

import torch

from contract.models import ModelUnavailable
from contract.presets import PRESETS, config_dict
from contract.spec import LoraSpec, StorageSpec, TrainSpec
from contract.storage import download_dir, is_s3


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
