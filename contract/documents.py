"""Training documents: read a data file (local or s3://), split it into documents, and those into train and val.

A "document" is one Q&A pair (markdown), one JSONL record or one blank-line separated
paragraph (plain text). Splitting happens on documents, never inside one, and by a salted
hash of the text, so the split is fixed, needs no state, and exact duplicates always land
on the same side (no leakage). The worker tokenizes and packs them (``jobs.data``); the
launcher's checks and the diagnosis read them here, without torch.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from contract.spec import DataSpec, StorageSpec
from contract.storage import is_s3, read_bytes
from contract.text import NotText, decode_text

# A new document starts at a markdown heading or at a question marker ("Q:", "**Question:**").
_BOUNDARY = re.compile(r"^(#{1,6}\s|\**\s*(q|question)\s*[:.]\**)", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(```|~~~)")


class DataError(ValueError):
    """The data file cannot be used; the message names the file, where it went wrong, and the fix."""


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


def jsonl_records(text: str):
    """(line number, object) for each non-empty line of JSONL text; DataError naming the line that is not an object."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"line {number}: not valid JSON ({err.msg} at column {err.colno}); each line of a JSONL file is one "
                "JSON object"
            ) from None
        if not isinstance(record, dict):
            raise DataError(f"line {number}: a JSONL record must be an object, got {type(record).__name__}")
        yield number, record


def parse_jsonl(text: str) -> list[str]:
    docs = []
    for number, record in jsonl_records(text):
        if "text" in record:
            docs.append(str(record["text"]))
        elif "question" in record and "answer" in record:
            docs.append(f"Q: {record['question']}\n\n{record['answer']}")
        else:
            raise DataError(
                f"line {number}: a JSONL record needs 'text' or 'question' and 'answer', got keys {sorted(record)}"
            )
    return docs


def parse_text(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def decode(raw: bytes) -> str:
    """The file's text; raises :class:`DataError` for binary or non-UTF-8 bytes, with the offset and the fix."""
    try:
        return decode_text(raw)
    except NotText as err:
        fix = (
            "training data is text: markdown, plain text or JSONL"
            if err.binary
            else "convert it, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8` (use the file's real encoding)"
        )
        raise DataError(f"{err}; {fix}") from None


def read_documents(spec: DataSpec, storage: StorageSpec) -> list[str]:
    """The documents in ``spec.path`` (local or s3://), parsed by format. Raises :class:`DataError` naming the file."""
    try:
        raw = read_bytes(spec.path, storage) if is_s3(spec.path) else Path(spec.path).read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"data.path {spec.path!r}: no such file (relative paths resolve against the working directory "
            f"{Path.cwd()}); fix the path or use an s3:// URI"
        ) from None
    except OSError as err:
        raise DataError(f"data.path {spec.path!r}: cannot read it ({err})") from None
    fmt = spec.format
    if fmt == "auto":
        suffix = Path(spec.path).suffix.lower()
        fmt = {".md": "markdown", ".markdown": "markdown", ".jsonl": "jsonl"}.get(suffix, "text")
    try:
        docs = {"markdown": parse_markdown, "jsonl": parse_jsonl, "text": parse_text}[fmt](decode(raw))
    except DataError as err:
        raise DataError(f"data.path {spec.path!r}: {err}") from None
    if not docs:
        raise DataError(
            f"data.path {spec.path!r}: no documents found when read as {fmt} ({len(raw)} bytes); "
            "point data.path at the training text or set data.format"
        )
    if len(docs) < 2:
        raise DataError(
            f"data.path {spec.path!r}: {len(docs)} document found as {fmt}; need at least 2 to split train and val"
        )
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
        raise DataError(f"need at least 2 documents to split train/val, found {len(scored)}")
    val_ids = {i for s, i in scored if s < val_fraction} or {scored[0][1]}
    if len(val_ids) == len(docs):
        val_ids.discard(scored[-1][1])
    # Duplicates of a val document go to val too, whatever their index.
    val_texts = {docs[i] for i in val_ids}
    train = [d for d in docs if d not in val_texts]
    val = [d for d in docs if d in val_texts]
    return train, val
