"""The chunked CPU output projection computes the same logits as the model's Linear."""

from __future__ import annotations

import torch
from torch import nn

from engine.executors.lm_head import ChunkedLMHead, install_chunked_lm_head


def test_chunked_head_matches_linear_with_bias_and_a_ragged_last_chunk() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(24, 1000, bias=True)
    head = ChunkedLMHead(linear, chunk_rows=300)
    hidden = torch.randn(1, 7, 24)
    with torch.inference_mode():
        assert torch.allclose(head(hidden), linear(hidden), atol=1e-5)
        assert head(hidden[:, :0]).shape == (1, 0, 1000)


def test_install_keeps_tied_weights_shared() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=1500, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, tie_word_embeddings=True))
    assert install_chunked_lm_head(model)
    assert isinstance(model.get_output_embeddings(), ChunkedLMHead)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert not install_chunked_lm_head(model)  # already installed
