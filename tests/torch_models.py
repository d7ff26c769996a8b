"""Helpers for torch tests: tiny random models of two families, saved and loaded the real way.

Every model is built from a small config with a fixed seed, saved with save_pretrained and
loaded back through load_model, so the tests exercise the same loading path as users.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from engine.clock import WallClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.model_loading import LoadedModel, load_model
from engine.executors.torch_executor import TorchExecutor
from engine.request import Request
from engine.snapshot import StepSnapshot
from engine.workload.spec import RequestSpec

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 2048  # above SyntheticPrompt's 1000 reserved ids
TEST_PEAK_FLOPS = 1e11  # skips the start-up matmul in tests; utilization is then relative to this


def save_llama(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         initializer_range=0.2, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return _save(LlamaForCausalLM, config, folder)


def save_smollm2_like(folder: Path) -> Path:
    """SmolLM2-135M's attention shape (9 query heads over 3 KV heads, head_dim 64, tied embeddings), small."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=576, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, tie_word_embeddings=True,
                         max_position_embeddings=512, initializer_range=0.05,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return _save(LlamaForCausalLM, config, folder)


def save_gemma2(folder: Path, softcapping: float | None) -> Path:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                          attn_logit_softcapping=softcapping, query_pre_attn_scalar=1, initializer_range=0.2,
                          bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return _save(Gemma2ForCausalLM, config, folder)


def save_gpt2(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=512,
                        initializer_range=0.2, bos_token_id=None, eos_token_id=None)
    return _save(GPT2LMHeadModel, config, folder)


def _save(cls: type, config: object, folder: Path) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = cls(config)
    model.save_pretrained(folder)
    return folder


def engine_config(num_gpu_blocks: int = 256, block_size: int = 8, swap_space: int = 0, **sched: object) -> EngineConfig:
    sched.setdefault("max_model_len", 512)
    return EngineConfig(SchedulerConfig(**sched), CacheConfig(block_size=block_size,  # type: ignore[arg-type]
                                                              num_gpu_blocks=num_gpu_blocks, swap_space=swap_space))


def make_executor(loaded: LoadedModel, config: EngineConfig, seed: int = 0, attention: Any = None) -> TorchExecutor:
    return TorchExecutor(loaded, config, seed=seed, peak_flops=TEST_PEAK_FLOPS, attention=attention)


def run_specs(loaded: LoadedModel, config: EngineConfig, specs: Iterable[RequestSpec],
              attention: Any = None) -> tuple[Engine, list[StepSnapshot]]:
    """Run a workload to the end; returns the engine (requests, stats) and every step's snapshot."""
    snapshots: list[StepSnapshot] = []
    engine = Engine(config, make_executor(loaded, config, attention=attention), WallClock())
    engine.run(list(specs), on_step=snapshots.append)
    engine.scheduler.block_manager.check_invariants()
    assert engine.scheduler.block_manager.num_used_gpu_blocks == 0
    return engine, snapshots


def hf_greedy(model: object, prompt: list[int], max_new_tokens: int) -> list[int]:
    """transformers' own generate(), greedy, for one prompt alone."""
    ids = torch.tensor([prompt])
    with torch.inference_mode():  # an explicit mask: else generate() masks prompt tokens equal to pad_token_id
        out = model.generate(ids, attention_mask=torch.ones_like(ids),  # type: ignore[attr-defined]
                             max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def load(folder: Path) -> LoadedModel:
    return load_model(str(folder), device="cpu")


def run_requests(loaded: LoadedModel, config: EngineConfig, requests: Iterable[Request],
                 seed: int = 0) -> Engine:
    """Add requests (full SamplingParams) at t=0 and step until all have finished."""
    engine = Engine(config, make_executor(loaded, config, seed), WallClock())
    for req in requests:
        engine.add_request(req)
    while engine.scheduler.has_unfinished_requests():
        engine.step()
    engine.finish()
    return engine


# -- stand-ins for torch.nn.attention.varlen.varlen_attn ---------------------------------------------

def fake_varlen(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seq_q: torch.Tensor,
                cu_seq_k: torch.Tensor | None, max_q: int, max_k: int, *, return_aux: Any = None,
                scale: float | None = None, window_size: tuple[int, int] = (-1, -1), enable_gqa: bool = False,
                seqused_k: torch.Tensor | None = None, block_table: torch.Tensor | None = None,
                num_splits: int | None = None, top_left: bool = False) -> torch.Tensor:
    """torch 2.13's signature; like torch, refuses fewer KV heads without enable_gqa."""
    if not enable_gqa and query.shape[1] != key.shape[-2]:
        raise ValueError("Expect query and key/value to have the same number of heads")
    return _varlen_reference(query, key, value, cu_seq_q, cu_seq_k, scale, tuple(window_size) == (-1, 0),
                             seqused_k, block_table, top_left)


def _varlen_reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seq_q: torch.Tensor,
                      cu_seq_k: torch.Tensor | None, scale: float | None, causal: bool,
                      seqused_k: torch.Tensor | None = None, block_table: torch.Tensor | None = None,
                      top_left: bool = False) -> torch.Tensor:
    """What torch's varlen_attn is documented to compute: q [Tq, Hq, D]; k/v packed [Tk, Hkv, D], or
    a pool [pages, page, Hkv, D] with block_table and seqused_k; causal aligned bottom-right."""
    out = torch.empty_like(query)
    hq, hk = query.shape[1], key.shape[-2]
    for i in range(cu_seq_q.numel() - 1):
        qs, qe = int(cu_seq_q[i]), int(cu_seq_q[i + 1])
        if block_table is not None:
            assert seqused_k is not None and block_table.dtype == torch.int32
            n = int(seqused_k[i])
            k = key[block_table[i].long()].reshape(-1, hk, key.shape[-1])[:n]
            v = value[block_table[i].long()].reshape(-1, hk, key.shape[-1])[:n]
        else:
            assert cu_seq_k is not None
            ks, ke = int(cu_seq_k[i]), int(cu_seq_k[i + 1])
            k, v = key[ks:ke], value[ks:ke]
        q = query[qs:qe]
        k, v = k.repeat_interleave(hq // hk, dim=1), v.repeat_interleave(hq // hk, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) * (scale if scale is not None else q.shape[-1] ** -0.5)
        if causal:
            shift = 0 if top_left else k.shape[0] - q.shape[0]
            visible = torch.arange(k.shape[0]).unsqueeze(0) <= (torch.arange(q.shape[0]) + shift).unsqueeze(1)
            scores = scores.masked_fill(~visible, -math.inf)
        out[qs:qe] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)
    return out


def fake_varlen_packed_only(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seq_q: torch.Tensor,
                            cu_seq_k: torch.Tensor, max_q: int, max_k: int, *, return_aux: Any = None,
                            scale: float | None = None, window_size: tuple[int, int] = (-1, -1)) -> torch.Tensor:
    """An older signature: no block table, no enable_gqa."""
    return _varlen_reference(query, key, value, cu_seq_q, cu_seq_k, scale, tuple(window_size) == (-1, 0))


def fake_varlen_oldest(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seq_q: torch.Tensor,
                       cu_seq_k: torch.Tensor, max_q: int, max_k: int, is_causal: bool = False,
                       return_aux: Any = None) -> torch.Tensor:
    """The first signature: is_causal, and always 1/sqrt(D) scaling."""
    return _varlen_reference(query, key, value, cu_seq_q, cu_seq_k, None, is_causal)


def signature_without_top_left(fn: Any) -> Any:
    sig = inspect.signature(fn)
    return sig.replace(parameters=[p for name, p in sig.parameters.items() if name != "top_left"])
