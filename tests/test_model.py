"""Model loading: every source through from_pretrained; LoRA sizes; clear errors offline; honest MFU peaks."""

import pytest
import torch

from contract.models import ModelUnavailable, check_reachable
from contract.parameters import count_parameters
from contract.spec import StorageSpec, TrainSpec
from jobs.model import load_model, load_tokenizer, lora_config
from jobs.perf import flops_per_token, peak_for


@pytest.mark.parametrize("rank", [1, 8, 16])
def test_lora_on_gpt2_c_attn_has_36864_x_rank_trainable_parameters(rank):
    spec = TrainSpec.model_validate({"model": {"name": "gpt2"}, "lora": {"rank": rank}})
    trainable, total = count_parameters(spec)
    assert trainable == 36_864 * rank  # (768 in + 2304 out) x rank on each of 12 layers
    assert total == 124_439_808 + trainable


def test_full_finetune_trains_everything():
    trainable, total = count_parameters(
        TrainSpec.model_validate(
            {"model": {"name": "gpt2"}, "method": "full", "lora": None, "data": {"block_size": 64}}
        )
    )
    assert trainable == total == 124_439_808


def _built_on_the_meta_device(spec: TrainSpec, config: dict) -> tuple[int, int]:
    """(trainable, total) of the model the worker builds for ``spec`` (transformers, then peft with the worker's own
    LoRA config), on the meta device: shapes only."""
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
        if spec.method == "lora":
            model = get_peft_model(model, lora_config(model, spec.lora))
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())


GPT2_SHAPES = {
    "the preset": {"name": "tiny-gpt2"},
    "gpt2-medium": {"name": "gpt2-medium"},
    "an MLP of its own width, untied head": {"shape": {"n_inner": 96, "tie_word_embeddings": False}},
}
LORA_TARGETS = [["c_attn"], ["c_attn", "c_proj", "c_fc"], ["c_proj"], ["c_fc", "c_proj"]]


@pytest.mark.parametrize("model", GPT2_SHAPES.values(), ids=list(GPT2_SHAPES))
@pytest.mark.parametrize("targets", [None, *LORA_TARGETS], ids=["full", *("+".join(t) for t in LORA_TARGETS)])
def test_the_plans_parameter_count_is_the_built_models(model, targets, tmp_path):
    """The dry run counts from the config alone (contract.parameters, no torch); the worker's model has as many."""
    import json

    from contract.presets import config_dict

    name = model.get("name")
    if name is None:  # a small GPT-2 of another shape, saved as a folder a spec can name
        config = {"model_type": "gpt2", "vocab_size": 300, "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 2}
        name = str(tmp_path)
        (tmp_path / "config.json").write_text(json.dumps({**config, **model["shape"]}))
    method = {"method": "full", "lora": None} if targets is None else {"lora": {"rank": 4, "target_modules": targets}}
    spec = TrainSpec.model_validate({"model": {"name": name}, "data": {"block_size": 64}, **method})
    assert count_parameters(spec) == _built_on_the_meta_device(spec, config_dict(name))


@pytest.mark.parametrize("target", ["no_such_module", "lm_head", "attn.c_proj"])
def test_a_lora_target_the_worker_would_refuse_or_that_is_no_conv1d_is_not_guessed(target):
    spec = TrainSpec.model_validate({"model": {"name": "gpt2"}, "lora": {"target_modules": ["c_attn", target]}})
    assert count_parameters(spec) is None


def test_a_saved_folder_loads_through_the_same_path_as_a_hub_id(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_tokenizer(TrainSpec(), StorageSpec())
    torch.manual_seed(1)
    original = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2))
    original.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    spec = TrainSpec.model_validate(
        {"model": {"name": str(tmp_path)}, "data": {"block_size": 64}, "method": "full", "lora": None}
    )
    check_reachable(str(tmp_path), StorageSpec())
    loaded = load_model(spec, StorageSpec())
    assert torch.equal(loaded.transformer.wte.weight, original.transformer.wte.weight)
    lora = load_model(spec.model_copy(update={"method": "lora", "lora": TrainSpec().lora}), StorageSpec())
    assert lora.peft_config["default"].fan_in_fan_out is True  # GPT-2's Conv1D, set on purpose
    assert sum(p.numel() for p in lora.parameters() if p.requires_grad) == 1 * 8 * (32 + 3 * 32)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_model_to_train_has_its_dropout_on_from_the_first_step_and_on_resume(tmp_path, method):
    """from_pretrained returns a model in eval mode; the job trains what load_model returns, evaluating only
    later (a resumed run, only at its next evaluation), so load_model must hand it over with dropout on."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_tokenizer(TrainSpec(), StorageSpec())
    base = tmp_path / "base"
    GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2)
    ).save_pretrained(base)  # GPT-2's dropouts: 0.1
    tokenizer.save_pretrained(base)
    overrides = {"method": "full", "lora": None} if method == "full" else {"lora": {"rank": 4, "dropout": 0.1}}
    spec = TrainSpec.model_validate({"model": {"name": str(base)}, "data": {"block_size": 64}, **overrides})
    x = torch.randint(0, len(tokenizer), (2, 16))
    fresh = load_model(spec, StorageSpec())
    fresh.save_pretrained(tmp_path / "checkpoint")  # what a checkpoint holds: the weights or the adapter
    for model in (fresh, load_model(spec, StorageSpec(), checkpoint_dir=str(tmp_path / "checkpoint"))):
        assert all(m.training for m in model.modules())
        with torch.no_grad():
            assert not torch.equal(model(input_ids=x).logits, model(input_ids=x).logits)  # dropout draws anew


def test_an_uncached_hub_id_with_the_hub_unreachable_fails_naming_the_host_and_the_fix(monkeypatch):
    """Not offline mode: the probe really connects, to a port where nothing listens."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")
    with pytest.raises(
        ModelUnavailable,
        match=r"model.name 'gpt2-xl' is not in the local Hugging Face cache.*local folder or an s3:// prefix"
        r".*\(127\.0\.0\.1: ",
    ):
        check_reachable("gpt2-xl", StorageSpec())


def test_offline_mode_says_so():
    with pytest.raises(ModelUnavailable, match=r"\(HF_HUB_OFFLINE=1 is set\)"):
        check_reachable("gpt2-xl", StorageSpec())


def test_a_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelUnavailable, match="has no config.json"):
        check_reachable(str(tmp_path), StorageSpec())


def test_flops_per_token_counts_non_embedding_weights_and_attention():
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config())
    non_embedding = 124_439_808 - 1024 * 768  # position embeddings excluded; wte is tied to the head
    assert flops_per_token(model, 1024) == 6 * non_embedding + 12 * 12 * 12 * 64 * 1024


def test_mfu_peaks_follow_the_precision_and_the_exact_gpu():
    assert peak_for("NVIDIA H100 80GB HBM3", "bf16") > 10 * peak_for(
        "NVIDIA H100 80GB HBM3", "fp32"
    )  # fp32 runs get the fp32 peak
    assert peak_for("NVIDIA H100 PCIe", "bf16") < peak_for("NVIDIA H100 80GB HBM3", "bf16")
    assert peak_for("Tesla V100-SXM2-16GB", "bf16") is None  # Volta has no bf16: no MFU rather than a wrong one
    assert (
        len({peak_for(name, "bf16") for name in ("NVIDIA A10", "NVIDIA A10G", "NVIDIA A100-SXM4-80GB")}) == 3
    )  # "A10" is a prefix of both
    assert len({peak_for(name, "bf16") for name in ("NVIDIA L4", "NVIDIA L40S")}) == 2
    assert peak_for("NVIDIA GeForce RTX 4090", "bf16") is None
