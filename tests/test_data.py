import json

from jobs import data as data_lib
from jobs.model import load_tokenizer
from orchestrator.spec import DataSpec, StorageSpec, TrainSpec

CORPUS = "sources/training_data_final_merged.md"


def test_markdown_splits_at_questions_and_skips_bare_topic_headings():
    text = "# Topic\n\n## Q: one?\n\nAnswer one.\n\n```\n## Q: not a question (inside code)\n```\n\n## Q: two?\nAnswer two.\n"
    docs = data_lib.parse_markdown(text)
    assert len(docs) == 2
    assert docs[0].startswith("## Q: one?") and "not a question" in docs[0]
    assert docs[1] == "## Q: two?\nAnswer two."


def test_jsonl_text_and_question_answer(tmp_path):
    file = tmp_path / "d.jsonl"
    file.write_text(json.dumps({"text": "hello"}) + "\n" + json.dumps({"question": "q?", "answer": "a."}) + "\n")
    docs = data_lib.read_documents(DataSpec(path=str(file)), StorageSpec())
    assert docs == ["hello", "Q: q?\n\na."]


def test_split_has_no_overlap_and_is_deterministic():
    docs = data_lib.read_documents(DataSpec(path=CORPUS), StorageSpec())
    docs += docs[:20]  # exact duplicates must not leak across the split
    train, val = data_lib.split(docs, 0.1, seed=0)
    assert set(train).isdisjoint(val)
    assert len(train) + len(val) == len(docs)
    assert 0.03 < len(val) / len(docs) < 0.2
    assert set(data_lib.split(list(reversed(docs)), 0.1, seed=0)[1]) == set(val)  # order-independent
    assert data_lib.split(docs, 0.1, seed=1)[1] != val


def test_packing_puts_eos_between_documents_and_reports_stats():
    spec = TrainSpec()
    tokenizer = load_tokenizer(spec, StorageSpec())
    docs = ["a b c", "d e"]
    blocks, lengths = data_lib.pack(docs, tokenizer, block_size=2)
    expected = sum((tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for d in docs), [])
    assert lengths == [len(tokenizer(d)["input_ids"]) + 1 for d in docs]
    assert blocks.flatten().tolist() == expected[: len(expected) // 2 * 2]  # EOS after each document, tail dropped
    dataset = data_lib.load(DataSpec(path=CORPUS, block_size=128), StorageSpec(), tokenizer)
    assert dataset.train.shape[1] == 128 and len(dataset.val) > 0
    assert 0 < dataset.stats.longer_than_block < 1  # the corpus has some answers longer than 128 tokens


def test_batch_order_is_a_pure_function_of_step_and_covers_each_epoch():
    order = data_lib.BatchOrder(n_blocks=10, batch_size=4, seed=3)
    first = [order.indices(s) for s in range(5)]
    assert [data_lib.BatchOrder(10, 4, seed=3).indices(s) for s in range(4, -1, -1)][::-1] == first  # any order of calls
    assert sorted(sum(first, [])[:10]) == list(range(10))  # epoch 0 visits every block once
    workers = [data_lib.BatchOrder(10, 2, seed=3, rank=r, world_size=2).indices(0) for r in (0, 1)]
    assert workers[0] + workers[1] == first[0]  # two workers split the same global batch
