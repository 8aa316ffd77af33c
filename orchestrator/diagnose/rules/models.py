"""What is known about a model from its name: its vocabulary (so its uniform guess), its size, its reference loss on
ordinary text, and whether it is a causal LM at all. Each figure with its source; a model not listed is not judged."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from contract.parameters import gpt2_parameters, lora_parameters
from contract.presets import local_folder
from orchestrator.diagnose.rules.base import Context

# nanoGPT README, "baselines": val loss of the released GPT-2 checkpoints on OpenWebText, nats per GPT-2 BPE token
GPT2_REFERENCE = {"gpt2": 3.12, "gpt2-medium": 2.84, "gpt2-large": 2.67, "gpt2-xl": 2.54}

# Vocabulary sizes by family (the `vocab_size` of each family's config.json on the Hugging Face Hub), first match wins;
# a uniform guess over V tokens scores ln V nats/token: ln 32000 = 10.37, ln 50257 = 10.82, ln 128256 = 11.76,
# ln 151936 = 11.93, ln 262144 = 12.48
VOCABULARIES: tuple[tuple[str, int, str], ...] = (
    (r"llama-?3|llama3", 128_256, "Meta Llama 3's config.json"),
    (r"tinyllama|llama-?2|llama-7b|llama-13b|llama-30b|llama-65b|vicuna|alpaca", 32_000, "Llama 2's config.json"),
    (r"mistral.*v0\.3|mistral-nemo", 32_768, "Mistral 7B v0.3's config.json"),
    (r"mistral|mixtral|zephyr", 32_000, "Mistral 7B v0.1's config.json"),
    (r"qwen", 151_936, "Qwen2.5's config.json (0.5B to 3B; Qwen3 the same)"),
    (r"glm-4", 151_552, "GLM-4-9B's config.json"),
    (r"gemma-?[34]", 262_144, "Gemma 3's config.json"),
    (r"gemma", 256_000, "Gemma's config.json"),
    (r"bloom", 250_880, "BLOOM's config.json"),
    (r"starcoder", 49_152, "StarCoder's config.json"),
    (r"phi-3|phi3", 32_064, "Phi-3's config.json"),
    (r"gpt2|distilgpt2|rugpt3|gpt-2", 50_257, "GPT-2's config.json"),
)
LARGEST_VOCABULARY = 262_144  # Gemma 3's, the largest listed: above ln of it is above any listed model's guess
SMALLEST_LARGE_VOCABULARY = 32_000  # Llama 2's and Mistral's: above ln of it is above a guess over any common LM vocab

# Sizes of models whose name does not carry one (each model's card)
SIZES = {
    "starcoderbase": 15.5e9,
    "starcoder": 15.5e9,
    "gpt2": 124e6,
    "distilgpt2": 82e6,
    "gpt2-medium": 355e6,
    "gpt2-large": 774e6,
    "gpt2-xl": 1.56e9,
    "rugpt3large": 760e6,
    "rugpt3medium": 355e6,
    "rugpt3small": 125e6,
}
_SIZE = re.compile(r"(?:^|[^a-z0-9.])e?(\d+(?:\.\d+)?)([bm])(?![a-z])", re.IGNORECASE)

# Models that are not causal LMs, by name: encoders (classification, NER, extractive QA), vision and speech models
NOT_CAUSAL = re.compile(
    r"bert|electra|xlm-r|xlnet|camembert|deberta|albert|ernie|mpnet|minilm|e5-|bge-|"
    r"vit\b|vit-|convnext|resnet|swin|efficientnet|beit|dino|clip|"
    r"whisper|wav2vec|hubert|wavlm|speecht5",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Vocabulary:
    size: int
    source: str

    @property
    def guess(self) -> float:
        return math.log(self.size)


def vocabulary(ctx: Context) -> Vocabulary | None:
    """The model's vocabulary: from its local config (our presets), else its family's."""
    if ctx.shape and ctx.shape.get("vocab_size"):
        return Vocabulary(int(ctx.shape["vocab_size"]), f"{ctx.model}'s config")
    name = (ctx.model or "").lower()
    for pattern, size, source in VOCABULARIES:
        if re.search(pattern, name):
            return Vocabulary(size, source)
    return None


def size(ctx: Context) -> float | None:
    """The model's parameter count: from its local config (a GPT-2), its name ("Llama-3.2-3B", "Qwen3-0.6B"), or its
    card for names without one; None when unknown."""
    counted = parameters(ctx.shape)
    if counted is not None:
        return float(counted)
    name = (ctx.model or "").rpartition("/")[2].lower()
    for known, n in SIZES.items():
        if name == known or name.startswith(known + "_") or name.startswith(known + "-based"):
            return n
    m = _SIZE.search(name)
    if m is not None:
        return float(m.group(1)) * (1e9 if m.group(2).lower() == "b" else 1e6)
    return SIZES.get(name.removeprefix("openai-community/"))


@dataclass(frozen=True)
class Reference:
    loss: float  # nats per token of the model's own tokenizer
    on: str  # what it was measured on
    source: str


def reference(model: str) -> Reference | None:
    """What ``model`` scores on ordinary text, when a published or measured figure exists: the GPT-2 table, or a local
    model's card. No figure is invented for other families."""
    name = model.removeprefix("openai-community/")
    if name in GPT2_REFERENCE:
        return Reference(GPT2_REFERENCE[name], "OpenWebText", "nanoGPT's README baselines")
    folder = local_folder(model)
    card = _card(folder / "README.md") if folder else {}
    loss = (card.get("pretraining") or {}).get("final_val_loss")
    return Reference(float(loss), "held-out text of its pretraining corpus", "its model card") if loss else None


def _card(path: Path) -> dict[str, Any]:
    """A model card's YAML front matter."""
    if not path.is_file():
        return {}
    text = path.read_text()
    if not text.startswith("---"):
        return {}
    front = yaml.safe_load(text.split("---", 2)[1])
    return front if isinstance(front, dict) else {}


def parameters(shape: dict[str, Any] | None) -> int | None:
    """A GPT-2's parameter count from its config (contract.parameters: as the model is built)."""
    return gpt2_parameters(shape)


def trainable(ctx: Context) -> int | None:
    """Parameters the run trains: every weight for full fine-tuning, the adapters for LoRA (GPT-2 modules)."""
    shape, method = ctx.shape, ctx.known("method")
    if method == "full":
        return parameters(shape)
    if method != "lora":
        return None
    return lora_parameters(shape, ctx.value("lora.rank"), ctx.value("lora.target_modules"))
