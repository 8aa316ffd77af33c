"""Data: documents, the train/val split, packing, the batch order, and errors that name the file and the fix."""

import json

import pytest

from contract import documents
from contract.spec import DataSpec, StorageSpec, TrainSpec
from jobs import data as data_lib
from jobs.model import load_tokenizer

CORPUS = "sources/training_data_final_merged.md"


def test_markdown_splits_at_questions_and_skips_bare_topic_headings():
    text = (
        "# Topic\n\n## Q: one?\n\nAnswer one.\n\n```\n## Q: not a question (inside code)\n```\n\n"
        "## Q: two?\nAnswer two.\n"
    )
    docs = documents.parse_markdown(text)
    assert len(docs) == 2
    assert docs[0].startswith("## Q: one?") and "not a question" in docs[0]
    assert docs[1] == "## Q: two?\nAnswer two."


def test_jsonl_text_and_question_answer(tmp_path):
    file = tmp_path / "d.jsonl"
    file.write_text(json.dumps({"text": "hello"}) + "\n" + json.dumps({"question": "q?", "answer": "a."}) + "\n")
    docs = documents.read_documents(DataSpec(path=str(file)), StorageSpec())
    assert docs == ["hello", "Q: q?\n\na."]


BAD_DATA = {
    "binary": (b"PK\x03\x04\x00\x00binary", "d.md", "looks binary (a NUL byte at offset 4)"),
    "latin-1": (
        "## Q: caf\u00e9?\n\nA caf\u00e9.\n\n## Q: two?\n\nB.".encode("latin-1"),
        "d.md",
        "not UTF-8: byte 0xe9 at offset 9, line 1 (invalid continuation byte); convert it, e.g. `iconv -f latin1 -t "
        "utf-8",
    ),
    "broken jsonl line": (b'{"text": "a"}\n{"text": "b"}\n{"text": \n', "d.jsonl", "line 3: not valid JSON"),
    "jsonl without text": (
        b'{"text": "a"}\n{"prompt": "b"}\n',
        "d.jsonl",
        "line 2: a JSONL record needs 'text' or 'question' and 'answer', got keys ['prompt']",
    ),
    "empty": (b"", "d.md", "no documents found when read as markdown (0 bytes)"),
    "only headings": (b"# Title\n\n# Another\n", "d.md", "no documents found when read as markdown"),
    "one document": (b"just one paragraph", "d.txt", "1 document found as text; need at least 2"),
}


@pytest.mark.parametrize("raw,name,expected", BAD_DATA.values(), ids=list(BAD_DATA))
def test_unusable_data_is_refused_naming_the_file_and_the_fix(tmp_path, raw, name, expected):
    file = tmp_path / name
    file.write_bytes(raw)
    with pytest.raises(documents.DataError) as err:
        documents.read_documents(DataSpec(path=str(file)), StorageSpec())
    assert f"data.path {str(file)!r}: " in str(err.value)
    assert expected in str(err.value)


def test_split_has_no_overlap_and_is_deterministic():
    docs = documents.read_documents(DataSpec(path=CORPUS), StorageSpec())
    docs += docs[:20]  # exact duplicates must not leak across the split
    train, val = documents.split(docs, 0.1, seed=0)
    assert set(train).isdisjoint(val)
    assert len(train) + len(val) == len(docs)
    assert 0.03 < len(val) / len(docs) < 0.2
    assert set(documents.split(list(reversed(docs)), 0.1, seed=0)[1]) == set(val)  # order-independent
    assert documents.split(docs, 0.1, seed=1)[1] != val


def test_packing_puts_eos_between_documents_and_reports_stats():
    tokenizer = load_tokenizer(TrainSpec(), StorageSpec())
    docs = data_lib.tokenize(["a b c", "d e"], tokenizer)
    assert [d[-1] for d in docs] == [tokenizer.eos_token_id] * 2
    blocks = data_lib.pack(docs, block_size=2)
    stream = docs[0] + docs[1]
    assert blocks.flatten().tolist() == stream[: len(stream) // 2 * 2]  # EOS after each document, tail dropped
    dataset = data_lib.load(DataSpec(path=CORPUS, block_size=128), StorageSpec(), tokenizer)
    assert dataset.train.shape[1] == 128 and dataset.val_docs
    assert dataset.stats.val_tokens == sum(map(len, dataset.val_docs))
    assert dataset.stats.longer_than_block > 0.5  # most Q&A pairs are longer than 128 tokens


def test_batch_order_is_a_pure_function_of_step_and_covers_each_epoch():
    order = data_lib.BatchOrder(n_blocks=10, batch_size=4, seed=3)
    first = [order.indices(s) for s in range(5)]
    assert [data_lib.BatchOrder(10, 4, seed=3).indices(s) for s in range(4, -1, -1)][
        ::-1
    ] == first  # any order of calls
    assert sorted(sum(first, [])[:10]) == list(range(10))  # epoch 0 visits every block once


@pytest.mark.parametrize("workers", [2, 4])
def test_workers_split_the_same_batch_of_the_experiment(workers):
    """batch_size is the effective batch: more workers share it, they never add to it."""
    alone = [data_lib.BatchOrder(40, 8, seed=1).indices(s) for s in range(7)]
    shared = [
        sum((data_lib.BatchOrder(40, 8, seed=1, rank=r, world_size=workers).indices(s) for r in range(workers)), [])
        for s in range(7)
    ]
    assert shared == alone


def test_the_diagnosis_counts_a_corpus_as_training_does():
    """orchestrator.diagnose.corpus reads the documents and counts their tokens without torch (tokenizers alone):
    the same train and val tokens, val documents and long documents as the run's own data loading."""
    from orchestrator.diagnose.corpus import corpus

    spec = TrainSpec()
    stats = data_lib.load(spec.data, StorageSpec(), load_tokenizer(spec, StorageSpec())).stats
    measured = corpus(spec.model_dump(mode="json"))
    assert measured.note is None  # counted, not estimated
    assert (measured.train_tokens, measured.val_tokens, measured.val_documents) == (
        stats.train_tokens,
        stats.val_tokens,
        stats.val_documents,
    )
    assert measured.longer_than_block == stats.longer_than_block
