"""The bundled demo model: the committed files are the ones its model card describes, and it loads like a hub id."""

import hashlib
from pathlib import Path

import yaml

from contract.presets import PRESETS, n_positions

FOLDER = PRESETS["tiny-gpt2"]


def _card() -> dict:
    text = (FOLDER / "README.md").read_text()
    front = text.split("---\n")[1]  # the model card's YAML metadata block
    return yaml.safe_load(front)


def test_the_committed_files_match_the_model_card():
    facts = _card()["pretraining"]
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in FOLDER.iterdir() if p.name != "README.md"}
    assert files == facts["sha256"]
    assert facts["corpus_licence"].startswith("PSF-2.0") and "python3.11-doc" in facts["corpus"]
    assert facts["tokens_seen"] == facts["steps"] * 16 * 256
    assert facts["final_train_loss"] < 4.0 and facts["pretraining_seconds"] > 0


def test_it_is_a_gpt2_with_its_own_tokenizer_loaded_through_from_pretrained():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(FOLDER))
    tokenizer = AutoTokenizer.from_pretrained(str(FOLDER))
    assert (
        model.config.model_type == "gpt2"
        and model.config.n_layer == 4
        and len(tokenizer) == model.config.vocab_size == 2048
    )
    assert sum(p.numel() for p in model.parameters()) == _card()["pretraining"]["parameters"]
    assert n_positions("tiny-gpt2") == 256
    assert sum(f.stat().st_size for f in Path(FOLDER).iterdir()) < 6_000_000  # a few MB in git
