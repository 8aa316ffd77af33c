"""Model loading: every source through from_pretrained; LoRA sizes; clear errors offline."""

import time

import pytest
import torch

from jobs.model import ModelUnavailable, check_reachable, count_parameters, load_model, load_tokenizer
from orchestrator.spec import StorageSpec, TrainSpec


@pytest.mark.parametrize("rank", [1, 8, 16])
def test_lora_on_gpt2_c_attn_has_36864_x_rank_trainable_parameters(rank):
    spec = TrainSpec.model_validate({"model": {"name": "gpt2"}, "lora": {"rank": rank}})
    trainable, total = count_parameters(spec)
    assert trainable == 36_864 * rank
    assert total == 124_439_808 + trainable


def test_full_finetune_trains_everything():
    trainable, total = count_parameters(TrainSpec.model_validate({"model": {"name": "gpt2"}, "method": "full", "data": {"block_size": 64}}))
    assert trainable == total == 124_439_808


def test_a_saved_folder_loads_through_the_same_path_as_a_hub_id(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_tokenizer(TrainSpec(), StorageSpec())
    torch.manual_seed(1)
    original = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2))
    original.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    spec = TrainSpec.model_validate({"model": {"name": str(tmp_path)}, "data": {"block_size": 64}, "method": "full"})
    check_reachable(str(tmp_path), StorageSpec())
    loaded = load_model(spec, StorageSpec())
    assert torch.equal(loaded.transformer.wte.weight, original.transformer.wte.weight)
    lora = load_model(spec.model_copy(update={"method": "lora"}), StorageSpec())
    assert lora.peft_config["default"].fan_in_fan_out is True  # GPT-2's Conv1D, set on purpose
    assert sum(p.numel() for p in lora.parameters() if p.requires_grad) == 1 * 8 * (32 + 3 * 32)


def test_an_unreachable_hub_id_fails_fast_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelUnavailable, match="not in the local Hugging Face cache.*local folder or an s3:// prefix"):
        check_reachable("gpt2-xl", StorageSpec())
    assert time.monotonic() - start < 10


def test_a_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelUnavailable, match="has no config.json"):
        check_reachable(str(tmp_path), StorageSpec())


def test_flops_per_token_is_nanogpts_estimate_for_gpt2_124m():
    from transformers import GPT2Config, GPT2LMHeadModel

    from jobs.perf import flops_per_token, peak_flops

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config())
    non_embedding = 124_439_808 - 1024 * 768  # position embeddings excluded; wte is tied to the head
    assert flops_per_token(model, 1024) == 6 * non_embedding + 12 * 12 * 12 * 64 * 1024
    assert peak_flops(torch.device("cpu")) is None  # no MFU without a GPU
