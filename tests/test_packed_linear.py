"""The packed oneDNN linears: the same results as the layers they replace, on the same parameters,
installed only where they probe right, and reversible for baselines measured on stock layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.executors import packed_linear
from engine.executors.flops import FlopModel
from engine.executors.packed_linear import (
    PackedLinear,
    install_packed_linears,
    packing_unavailable,
    stock_linears,
)

# Skipped only on a torch built without oneDNN: on one with it, a kernel that fails its probe fails here.
needs_packing = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")


@needs_packing
def test_the_packed_kernel_probes_right_on_this_torch() -> None:
    assert packing_unavailable(torch.float32, torch.device("cpu")) is None


@needs_packing
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_matches_nn_linear_on_any_leading_shape(bias: bool) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(40, 24, bias=bias)
    packed = PackedLinear(layer)
    with torch.inference_mode():
        for shape in [(1, 40), (7, 40), (2, 3, 40)]:
            x = torch.randn(*shape)
            torch.testing.assert_close(packed(x), layer(x), rtol=1e-5, atol=1e-5)
    assert packed.weight is layer.weight and packed.bias is layer.bias


@needs_packing
def test_packed_conv1d_matches_gpt2s_layer() -> None:
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    layer = Conv1D(36, 20)  # weight [in 20, out 36]
    packed = PackedLinear(layer)
    x = torch.randn(5, 20)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), layer(x), rtol=1e-5, atol=1e-5)
    assert (packed.in_features, packed.out_features) == (20, 36)


@needs_packing
def test_with_gradients_it_runs_the_stock_op() -> None:
    layer = nn.Linear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)
    PackedLinear(layer)(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None


@needs_packing
def test_install_swaps_every_linear_keeps_ties_and_the_flop_count() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2,
                                         tie_word_embeddings=True)).eval()
    linears = sum(type(m) is nn.Linear for m in model.modules())
    flops_before = FlopModel.of(model, 2, 4, 8)
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.inference_mode():
        before = model(ids).logits
    assert install_packed_linears(model) == linears
    assert install_packed_linears(model) == linears  # a second executor on the same model changes nothing
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert FlopModel.of(model, 2, 4, 8) == flops_before
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, before, rtol=1e-4, atol=1e-4)
        with stock_linears(model) as swapped:
            assert swapped == linears and sum(type(m) is nn.Linear for m in model.modules()) == linears
            torch.testing.assert_close(model(ids).logits, before, rtol=0, atol=0)
    assert sum(isinstance(m, PackedLinear) for m in model.modules()) == linears


def test_other_dtypes_and_devices_keep_their_layers() -> None:
    assert "float32 only" in str(packing_unavailable(torch.bfloat16, torch.device("cpu")))
    assert "cuda" in str(packing_unavailable(torch.float32, torch.device("cuda")))


def test_a_kernel_that_fails_its_probe_leaves_the_executor_on_the_chunked_head(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.config import CacheConfig, EngineConfig, SchedulerConfig
    from engine.executors.lm_head import ChunkedLMHead
    from engine.executors.model_loading import load_model
    from engine.executors.torch_executor import TorchExecutor

    def broken(weight: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("no oneDNN here")

    monkeypatch.setattr(packed_linear, "pack_weight", broken)
    assert "failed its probe (RuntimeError: no oneDNN here)" in str(packing_unavailable(torch.float32,
                                                                                        torch.device("cpu")))
    loaded = load_model("tiny", device="cpu")
    config = EngineConfig(SchedulerConfig(max_num_seqs=2, max_num_batched_tokens=64, max_model_len=64),
                          CacheConfig(block_size=16, num_gpu_blocks=8))
    executor = TorchExecutor(loaded, config, peak_flops=1e9)
    try:
        assert not any(isinstance(m, PackedLinear) for m in loaded.model.modules())
        assert isinstance(loaded.model.get_output_embeddings(), ChunkedLMHead)
        assert executor.describe()["linear_kernels"].startswith("the model's own; chunked output projection")
    finally:
        executor.shutdown()


@needs_packing
def test_the_executor_runs_packed_linears_and_says_so() -> None:
    from engine.config import CacheConfig, EngineConfig, SchedulerConfig
    from engine.executors.model_loading import load_model
    from engine.executors.torch_executor import TorchExecutor

    loaded = load_model("tiny", device="cpu")
    config = EngineConfig(SchedulerConfig(max_num_seqs=2, max_num_batched_tokens=64, max_model_len=64),
                          CacheConfig(block_size=16, num_gpu_blocks=8))
    executor = TorchExecutor(loaded, config, peak_flops=1e9)
    try:
        assert isinstance(loaded.model.get_output_embeddings(), PackedLinear)
        assert executor.describe()["linear_kernels"].startswith("oneDNN packed (")
    finally:
        executor.shutdown()
