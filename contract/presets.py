"""Model shapes that are known without network or weights, and the bundled demo preset.

Specs are validated and plans are printed before anything is downloaded, so the
few facts they need (n_positions, layer sizes) must be available offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).parent / "assets"
# A 4-layer, width-128 GPT-2 and its byte-level BPE tokenizer, pretrained on the Python
# documentation (its README.md is the model card). Rebuilt by scripts/build_tiny_preset.py.
PRESETS = {"tiny-gpt2": ASSETS / "tiny-gpt2"}

_GPT2 = {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024}
# The shapes of the public GPT-2 checkpoints, as in their config.json on the Hub.
HUB_SHAPES: dict[str, dict[str, Any]] = {
    "gpt2": {**_GPT2, "n_layer": 12, "n_embd": 768, "n_head": 12},
    "gpt2-medium": {**_GPT2, "n_layer": 24, "n_embd": 1024, "n_head": 16},
    "gpt2-large": {**_GPT2, "n_layer": 36, "n_embd": 1280, "n_head": 20},
    "gpt2-xl": {**_GPT2, "n_layer": 48, "n_embd": 1600, "n_head": 25},
    "distilgpt2": {**_GPT2, "n_layer": 6, "n_embd": 768, "n_head": 12},
}
HUB_SHAPES.update({f"openai-community/{k}": v for k, v in list(HUB_SHAPES.items()) if k != "distilgpt2"})
HUB_SHAPES["distilbert/distilgpt2"] = HUB_SHAPES["distilgpt2"]


def local_folder(name: str) -> Path | None:
    """The local folder ``name`` refers to (a preset or an existing directory), else None."""
    if name in PRESETS:
        return PRESETS[name]
    path = Path(name).expanduser()
    return path if path.is_dir() else None


def config_dict(name: str) -> dict[str, Any] | None:
    """The model's config.json as a dict when it is known offline, else None (s3://, uncached hub ids)."""
    folder = local_folder(name)
    if folder is not None:
        file = folder / "config.json"
        return json.loads(file.read_text()) if file.is_file() else None
    if name in HUB_SHAPES:
        return dict(HUB_SHAPES[name])
    if name.startswith("s3://"):
        return None
    cached = cached_file(name, "config.json")
    return json.loads(Path(cached).read_text()) if cached else None


def cached_file(repo: str, filename: str) -> str | None:
    """The path of ``filename`` of hub repo ``repo`` in the local Hugging Face cache, or None (also for a name that is
    no repo id)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo, filename)
    except ValueError:  # HFValidationError: "bad name//x" cannot be a repo id
        return None
    return found if isinstance(found, str) else None


def n_positions(name: str) -> int | None:
    """The model's maximum sequence length when known offline."""
    config = config_dict(name)
    if config is None:
        return None
    return config.get("n_positions") or config.get("max_position_embeddings")
