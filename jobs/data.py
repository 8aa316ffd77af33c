"""Training data: the documents (read and split by :mod:`contract.documents`), tokenized and packed into blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from contract.documents import DataError, read_documents, split
from contract.spec import DataSpec, StorageSpec


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
    val_docs: list[list[int]]  # token ids of each val document, EOS included; scored by jobs.evaluate
    stats: DataStats


def tokenize(docs: list[str], tokenizer) -> list[list[int]]:
    """Each document's token ids followed by EOS (the boundary the model learns to predict)."""
    # verbose=False: documents longer than the model's context are expected; packing cuts them
    return [
        tokenizer(doc, add_special_tokens=False, verbose=False)["input_ids"] + [tokenizer.eos_token_id] for doc in docs
    ]


def pack(docs: list[list[int]], block_size: int) -> torch.Tensor:
    """Join tokenized documents and cut the stream into full blocks (the tail is dropped)."""
    ids = [t for doc in docs for t in doc]
    n_blocks = len(ids) // block_size
    return torch.tensor(ids[: n_blocks * block_size], dtype=torch.long).view(n_blocks, block_size)


def load(spec: DataSpec, storage: StorageSpec, tokenizer) -> Dataset:
    """Read, split, tokenize; pack the train side into blocks. Raises DataError with the fix when train has no full
    block."""
    train_docs, val_docs = split(read_documents(spec, storage), spec.val_fraction, spec.split_seed)
    train_tokens, val_tokens = tokenize(train_docs, tokenizer), tokenize(val_docs, tokenizer)
    train = pack(train_tokens, spec.block_size)
    if len(train) == 0:
        raise DataError(
            f"data: the train split has {sum(map(len, train_tokens))} tokens, less than one block of "
            f"data.block_size {spec.block_size}; use more data, a smaller block_size, or another val_fraction"
        )
    lengths = [len(d) for d in train_tokens + val_tokens]
    stats = DataStats(
        documents=len(lengths),
        train_documents=len(train_docs),
        val_documents=len(val_docs),
        train_tokens=sum(map(len, train_tokens)),
        val_tokens=sum(map(len, val_tokens)),
        longer_than_block=sum(n > spec.block_size for n in lengths) / len(lengths),
        block_size=spec.block_size,
    )
    return Dataset(train=train, val_docs=val_tokens, stats=stats)


class BatchOrder:
    """Which train blocks form each step's batch: a pure function of (seed, step), whatever the workers.

    The blocks are visited in a fresh seeded permutation each epoch, and the batch of
    step ``s`` is positions ``[s*B, (s+1)*B)`` of that endless stream, ``B`` being the
    effective batch. Worker ``r`` of ``W`` takes the ``r``-th of ``W`` equal slices. So the
    step alone restores the data position, and the union over workers is the same
    batch for any ``W``.
    """

    def __init__(self, n_blocks: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} does not split over {world_size} workers")
        self.n, self.batch, self.seed, self.rank, self.world = n_blocks, batch_size, seed, rank, world_size
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            # keep the previous epoch too: a batch may straddle the boundary
            self._perms = {e: p for e, p in self._perms.items() if e == epoch - 1}
            self._perms[epoch] = torch.randperm(
                self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            )
        return self._perms[epoch]

    def indices(self, step: int) -> list[int]:
        """This worker's blocks for ``step``."""
        share = self.batch // self.world
        start = step * self.batch + self.rank * share
        out = []
        for pos in range(start, start + share):
            epoch, offset = divmod(pos, self.n)
            out.append(int(self._perm(epoch)[offset]))
        return out
