"""How many parameters a run trains, from its model's config alone: no torch, no weights.

GPT-2 in closed form, as ``GPT2LMHeadModel`` builds it: token and position embeddings,
per block two layer norms, the attention's ``c_attn`` (d -> 3d) and ``c_proj`` (d -> d),
the MLP's ``c_fc`` (d -> inner) and ``c_proj`` (inner -> d), every ``Conv1D`` with its
bias; the final layer norm; the head tied to the token embedding unless the config unties
it. LoRA (peft) adds A (r x in) and B (out x r) to each targeted module, and a target
names every module of that name (``c_proj`` is both the attention's and the MLP's).
``tests/test_model.py`` checks these against the models built on the meta device.
"""

from __future__ import annotations

from contract.presets import config_dict
from contract.spec import TrainSpec


def _conv1d_modules(config: dict) -> dict[str, tuple[int, int]]:
    """One GPT-2 block's Conv1D modules: (in, out) by their name within the block."""
    d = config["n_embd"]
    inner = config.get("n_inner") or 4 * d
    return {"attn.c_attn": (d, 3 * d), "attn.c_proj": (d, d), "mlp.c_fc": (d, inner), "mlp.c_proj": (inner, d)}


def _gpt2_total(config: dict) -> int:
    d, layers = config["n_embd"], config["n_layer"]
    norms = 2 * d  # weight and bias
    block = 2 * norms + sum(i * o + o for i, o in _conv1d_modules(config).values())
    head = 0 if config.get("tie_word_embeddings", True) else config["vocab_size"] * d
    return (config["vocab_size"] + config["n_positions"]) * d + layers * block + norms + head


def _lora(config: dict, rank: int, targets: list[str]) -> int | None:
    """Parameters LoRA adds to GPT-2, or None when a target names no Conv1D module (the worker refuses a target that
    names no module; peft would adapt another kind of module)."""
    modules = _conv1d_modules(config)
    named = {t: [m for m in modules if m.rsplit(".", 1)[-1] == t] for t in targets}  # as jobs.model.lora_config
    if not all(named.values()):
        return None
    matched = {m for found in named.values() for m in found}
    return config["n_layer"] * sum(rank * (modules[m][0] + modules[m][1]) for m in matched)


def gpt2_parameters(config: dict | None) -> int | None:
    """A GPT-2's parameter count from its config; None for no config or another architecture."""
    if config is None or config.get("model_type", "gpt2") != "gpt2" or config.get("add_cross_attention"):
        return None
    return _gpt2_total(config)


def lora_parameters(config: dict | None, rank: int, targets: list[str]) -> int | None:
    """The parameters LoRA adds to a GPT-2 of this config; None for another architecture or a target that names no
    Conv1D module."""
    return None if gpt2_parameters(config) is None else _lora(config, rank, targets)


def count_parameters(spec: TrainSpec) -> tuple[int, int] | None:
    """(trainable, total) parameters of the run's model; None when its config is not known offline (an s3://
    prefix, an uncached hub id), is no GPT-2, or LoRA targets anything but GPT-2's Conv1D modules."""
    config = config_dict(spec.model.name)
    total = gpt2_parameters(config)
    if total is None:
        return None
    if spec.method == "full":
        return total, total
    added = _lora(config, spec.lora.rank, spec.lora.target_modules)
    return None if added is None else (added, total + added)
