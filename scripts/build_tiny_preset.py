"""Rebuild the bundled ``tiny-gpt2`` preset in jobs/assets/tiny-gpt2.

A byte-level BPE tokenizer (vocab 1024) trained on the bundled corpus, and a
2-layer, width-128 GPT-2 with seeded random weights, both written with
``save_pretrained`` so the preset loads through the same ``from_pretrained`` path
as a hub id. Run from the repo root: ``python scripts/build_tiny_preset.py``.
"""

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

CORPUS = Path("sources/training_data_final_merged.md")
OUT = Path("jobs/assets/tiny-gpt2")
EOS = "<|endoftext|>"


def main() -> None:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train([str(CORPUS)], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS, model_max_length=256)

    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=128, n_layer=2, n_head=4, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    OUT.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT)
    tokenizer.save_pretrained(OUT)
    print(f"wrote {OUT}: vocab {len(tokenizer)}, {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main()
