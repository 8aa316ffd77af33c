"""What a diagnosis knows about the training data: its size in tokens, its val set, how long its documents are.

Read from the run's data file the way a run of ours reads it (:mod:`contract.documents`: the
same documents, the same train/val split; the same tokenizer when it is available offline), so
"epochs seen" and "a val set of 19 documents" describe the data the emitted sweep trains on.
Without torch: the tokenizer is its ``tokenizer.json``, read by the ``tokenizers`` library that
transformers' fast tokenizers wrap (transformers itself imports torch).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# English BPE averages about 4 characters a token (GPT-2's tokenizer on web text); used only when the tokenizer is not
# available offline, and said so
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Corpus:
    train_tokens: int
    val_documents: int
    val_tokens: int
    longer_than_block: float | None  # share of documents longer than block_size
    note: str | None = None  # how it was measured, when estimated


def corpus(config: dict[str, Any]) -> Corpus | None:
    """The data of ``config`` (a partial run spec) measured as a run would see it; None when the file is not here."""
    from contract.spec import DataSpec

    data = config.get("data") or {}
    path = data.get("path")
    if path is None or not Path(path).is_file():
        return None
    spec = DataSpec(**{k: data[k] for k in ("path", "format", "val_fraction", "split_seed") if k in data})
    model = config.get("model") or {}
    tokenizer = model.get("tokenizer") or model.get("name")  # unnamed: estimated, never another model's tokenizer
    return _measure(spec.path, spec.format, spec.val_fraction, spec.split_seed, tokenizer, data.get("block_size"))


@functools.lru_cache(maxsize=8)  # the sweep report asks once per run, and every run of a sweep shares its data
def _measure(
    path: str, format: str, val_fraction: float, split_seed: int, tokenizer_name: str | None, block: int | None
) -> Corpus | None:
    from contract.documents import DataError, read_documents, split
    from contract.spec import DataSpec, StorageSpec

    data = DataSpec(path=path, format=format, val_fraction=val_fraction, split_seed=split_seed)
    try:
        train, val = split(read_documents(data, StorageSpec()), data.val_fraction, data.split_seed)
    except DataError:
        return None
    tokenizer = _tokenizer(tokenizer_name) if tokenizer_name else None
    if tokenizer is not None:
        # as jobs.data.tokenize counts them: each document's tokens and the EOS after it
        train_lengths = [len(ids) + 1 for ids in _encode(tokenizer, train)]
        val_lengths = [len(ids) + 1 for ids in _encode(tokenizer, val)]
        note = None
    else:
        train_lengths = [round(len(d) / CHARS_PER_TOKEN) for d in train]
        val_lengths = [round(len(d) / CHARS_PER_TOKEN) for d in val]
        note = f"token counts are estimated at {CHARS_PER_TOKEN} characters a token (" + (
            f"{tokenizer_name}'s tokenizer is not available offline)" if tokenizer_name else "no model is named)"
        )
    lengths = train_lengths + val_lengths
    return Corpus(
        train_tokens=sum(train_lengths),
        val_documents=len(val_lengths),
        val_tokens=sum(val_lengths),
        longer_than_block=sum(n > block for n in lengths) / len(lengths) if block else None,
        note=note,
    )


def _tokenizer(name: str):
    """The fast tokenizer of model ``name`` from its tokenizer.json (a local folder, the bundled preset or the local
    Hugging Face cache), or None when it is not here."""
    from tokenizers import Tokenizer

    from contract.presets import cached_file, local_folder

    folder = local_folder(name)
    file = (folder / "tokenizer.json" if folder else None) or cached_file(name, "tokenizer.json")
    if file is None or not Path(file).is_file():
        return None
    return Tokenizer.from_file(str(file))


def _encode(tokenizer, docs: list[str]) -> list[list[int]]:
    """Each document's token ids, no special tokens added (as jobs.data.tokenize asks transformers for them)."""
    return [encoding.ids for encoding in tokenizer.encode_batch(docs, add_special_tokens=False)]
