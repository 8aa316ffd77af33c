"""Training data: read documents, split train/val by document, tokenize, pack into blocks.

A "document" is one Q&A pair (markdown), one JSONL record or one blank-line
separated paragraph (plain text). Splitting happens on documents, never inside
one, and by a salted hash of the text, so the split is fixed, needs no state,
and exact duplicates always land on the same side (no leakage).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from orchestrator.spec import DataSpec, StorageSpec
from orchestrator.storage import is_s3, read_bytes

# A new document starts at a markdown heading or at a question marker ("Q:", "**Question:**").
_BOUNDARY = re.compile(r"^(#{1,6}\s|\**\s*(q|question)\s*[:.]\**)", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass
class DataStats:
    documents: int
    train_documents: int
    val_documents: int
    train_tokens: int
    val_tokens: int
    longer_than_block: float  # share of documents with more tokens than block_size
    block_size: int

    def describe(self) -> str:
        return (
            f"{self.documents} documents ({self.train_documents} train / {self.val_documents} val), "
            f"{self.train_tokens:,} train tokens / {self.val_tokens:,} val tokens; "
            f"{self.longer_than_block:.0%} of documents are longer than block_size {self.block_size}"
        )


@dataclass
class Dataset:
    train: torch.Tensor  # [n_blocks, block_size] token ids
    val: torch.Tensor
    stats: DataStats


def parse_markdown(text: str) -> list[str]:
    """Split markdown into Q&A documents at headings and question markers (outside code fences).

    A heading with no body of its own (a topic title directly followed by its first
    question) is not a document.
    """
    docs, current, in_fence = [], [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        if not in_fence and _BOUNDARY.match(line) and current:
            docs.append(current)
            current = []
        current.append(line)
    docs.append(current)
    return [doc for lines in docs if (doc := "\n".join(lines).strip()) and len([ln for ln in lines if ln.strip()]) > 1]


def parse_jsonl(text: str) -> list[str]:
    docs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if "text" in record:
            docs.append(str(record["text"]))
        elif "question" in record and "answer" in record:
            docs.append(f"Q: {record['question']}\n\n{record['answer']}")
        else:
            raise ValueError(f"line {number}: a JSONL record needs 'text' or 'question' and 'answer', got keys {sorted(record)}")
    return docs


def parse_text(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def read_documents(spec: DataSpec, storage: StorageSpec) -> list[str]:
    """The documents in ``spec.path`` (local or s3://), parsed by format."""
    raw = read_bytes(spec.path, storage) if is_s3(spec.path) else Path(spec.path).read_bytes()
    text = raw.decode("utf-8")
    fmt = spec.format
    if fmt == "auto":
        suffix = Path(spec.path).suffix.lower()
        fmt = {".md": "markdown", ".markdown": "markdown", ".jsonl": "jsonl"}.get(suffix, "text")
    docs = {"markdown": parse_markdown, "jsonl": parse_jsonl, "text": parse_text}[fmt](text)
    if not docs:
        raise ValueError(f"data.path {spec.path!r}: no documents found as {fmt}; check data.format")
    return docs


def split(docs: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Assign each document to train or val by a salted hash of its text.

    Deterministic for a given seed, independent of document order, and identical
    texts always share a side. At least one document lands on each side.
    """
    def score(doc: str) -> float:
        digest = hashlib.sha256(f"{seed}\0{doc}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    scored = sorted(((score(d), i) for i, d in enumerate(docs)))
    if len(scored) < 2:
        raise ValueError(f"need at least 2 documents to split train/val, found {len(scored)}")
    val_ids = {i for s, i in scored if s < val_fraction} or {scored[0][1]}
    if len(val_ids) == len(docs):
        val_ids.discard(scored[-1][1])
    # Duplicates of a val document go to val too, whatever their index.
    val_texts = {docs[i] for i in val_ids}
    train = [d for d in docs if d not in val_texts]
    val = [d for d in docs if d in val_texts]
    return train, val


def pack(docs: list[str], tokenizer, block_size: int) -> tuple[torch.Tensor, list[int]]:
    """Tokenize, join with EOS between documents, and cut into full blocks (the tail is dropped).

    Returns the blocks and each document's token count (with its EOS).
    """
    ids: list[int] = []
    lengths = []
    for doc in docs:
        # verbose=False: documents longer than the model's context are expected; packing cuts them
        tokens = tokenizer(doc, add_special_tokens=False, verbose=False)["input_ids"] + [tokenizer.eos_token_id]
        ids += tokens
        lengths.append(len(tokens))
    n_blocks = len(ids) // block_size
    blocks = torch.tensor(ids[: n_blocks * block_size], dtype=torch.long).view(n_blocks, block_size)
    return blocks, lengths


def load(spec: DataSpec, storage: StorageSpec, tokenizer) -> Dataset:
    """Read, split and pack the data; raises ValueError with the fix when a side has no full block."""
    docs = read_documents(spec, storage)
    train_docs, val_docs = split(docs, spec.val_fraction, spec.split_seed)
    train, train_lengths = pack(train_docs, tokenizer, spec.block_size)
    val, val_lengths = pack(val_docs, tokenizer, spec.block_size)
    for side, blocks, lengths in (("train", train, train_lengths), ("val", val, val_lengths)):
        if len(blocks) == 0:
            raise ValueError(
                f"data: the {side} split has {sum(lengths)} tokens, less than one block of "
                f"data.block_size {spec.block_size}; use more data, a smaller block_size, or another val_fraction"
            )
    lengths = train_lengths + val_lengths
    stats = DataStats(
        documents=len(docs),
        train_documents=len(train_docs),
        val_documents=len(val_docs),
        train_tokens=sum(train_lengths),
        val_tokens=sum(val_lengths),
        longer_than_block=sum(n > spec.block_size for n in lengths) / len(lengths),
        block_size=spec.block_size,
    )
    return Dataset(train=train, val=val, stats=stats)


class BatchOrder:
    """Which train blocks form each step's batch: a pure function of (seed, step, rank).

    The blocks are visited in a fresh seeded permutation each epoch, and the global
    batch of step ``s`` is positions ``[s*B*W, (s+1)*B*W)`` of that endless stream,
    worker ``r`` taking its own slice. So the step alone restores the data position.
    """

    def __init__(self, n_blocks: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.batch, self.seed, self.rank, self.world = n_blocks, batch_size, seed, rank, world_size
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            # keep the previous epoch too: a batch may straddle the boundary
            self._perms = {e: p for e, p in self._perms.items() if e == epoch - 1}
            self._perms[epoch] = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        return self._perms[epoch]

    def indices(self, step: int) -> list[int]:
        start = (step * self.world + self.rank) * self.batch
        out = []
        for pos in range(start, start + self.batch):
            epoch, offset = divmod(pos, self.n)
            out.append(int(self._perm(epoch)[offset]))
        return out
