"""Evaluation by one protocol for every run: the same target tokens, scored with the same context.

The val documents are joined into one stream and scored with a strided sliding
window (Hugging Face, "Perplexity of fixed-length models"): windows of ``context``
tokens start ``stride`` apart, and each scores only the tokens that no earlier window
scored. Every token after the first is scored exactly once, with at least
``context - stride`` tokens before it (all of them near the start). Which tokens are
scored, and with which context, depends on the val documents and the protocol only:
never on the block size a run trains at.

Each scored token counts for the document it belongs to, so an evaluation yields a
negative log-likelihood sum and a token count per document: what the driver's paired
bootstrap resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from contract.spec import EvalProtocol


@dataclass(frozen=True)
class Window:
    begin: int  # first stream position fed to the model
    end: int  # one past the last
    first_target: int  # first stream position scored; the window scores [first_target, end)


def windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """The sliding windows over a stream of ``n_tokens`` (HF's loop, position 0 never scored: nothing precedes it)."""
    out, prev_end = [], 1
    for begin in range(0, n_tokens, stride):
        end = min(begin + context, n_tokens)
        if end > prev_end:
            out.append(Window(begin, end, prev_end))
            prev_end = end
        if end == n_tokens:
            break
    return out


@dataclass
class EvalSet:
    """The val stream and everything about it that is the same at every evaluation."""

    stream: torch.Tensor  # [n_tokens] token ids of the val documents, joined
    doc_of: torch.Tensor  # [n_tokens] which document each position belongs to
    windows: list[Window]
    doc_tokens: list[int]  # scored tokens per document (identical for every run)

    @property
    def eval_tokens(self) -> int:
        return sum(self.doc_tokens)

    @property
    def n_docs(self) -> int:
        return len(self.doc_tokens)


def eval_set(val_docs: list[list[int]], protocol: EvalProtocol) -> EvalSet:
    """The stream, document ids and windows for ``val_docs`` (each document's tokens, EOS included)."""
    docs = val_docs[: protocol.max_documents] if protocol.max_documents else val_docs
    if protocol.selection_fraction is not None and len(docs) < 2:
        raise ValueError(
            f"evaluation.selection_fraction needs at least 2 val documents, one to choose and one to score; "
            f"found {len(docs)}: raise data.val_fraction or turn the selection share off"
        )
    stream = torch.tensor([t for doc in docs for t in doc], dtype=torch.long)
    doc_of = torch.repeat_interleave(torch.arange(len(docs)), torch.tensor([len(d) for d in docs]))
    wins = windows(len(stream), protocol.context, protocol.stride)
    scored = torch.zeros(len(stream), dtype=torch.bool)
    for w in wins:
        scored[w.first_target : w.end] = True
    counts = torch.bincount(doc_of[scored], minlength=len(docs))
    return EvalSet(stream=stream, doc_of=doc_of, windows=wins, doc_tokens=counts.tolist())


@torch.no_grad()
def per_document_nll(
    model: torch.nn.Module, data: EvalSet, batch_size: int, device: torch.device, rank: int = 0, world: int = 1
) -> torch.Tensor:
    """The summed negative log-likelihood of each document's scored tokens, [n_docs] float64 on every rank.

    Windows are sharded across workers (rank r takes every world-th) and the sums are
    all-reduced, so every rank ends with the same numbers. Windows of one shape are
    batched; the first and the last run on their own.
    """
    model.eval()
    totals = torch.zeros(data.n_docs, dtype=torch.float64, device=device)
    doc_of = data.doc_of.to(device)
    mine = data.windows[rank::world]
    for i in range(0, len(mine), batch_size):
        for group in _same_shape(mine[i : i + batch_size]):
            w0 = group[0]
            x = torch.stack([data.stream[w.begin : w.end] for w in group]).to(device)
            # Only the positions that predict a scored token go through the head: the window's
            # last (end - first_target) predictions, plus the final position (it predicts past the window).
            keep = w0.end - w0.first_target + 1
            logits = model(input_ids=x, use_cache=False, logits_to_keep=keep).logits[:, :-1]
            targets = x[:, w0.first_target - w0.begin :]
            nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view(
                len(group), -1
            )
            for row, w in zip(nll, group):
                totals.index_add_(0, doc_of[w.first_target : w.end], row.double())
    if world > 1:
        dist.all_reduce(totals)
    model.train()
    return totals


def _same_shape(batch: list[Window]) -> list[list[Window]]:
    """Windows grouped by (length, scored tokens): all but the first and the last window share one shape."""
    groups: dict[tuple[int, int], list[Window]] = {}
    for w in batch:
        groups.setdefault((w.end - w.begin, w.end - w.first_target), []).append(w)
    return list(groups.values())
