"""Helpers for torch tests: tiny random models of two families, saved and loaded the real way.

Every model is built from a small config with a fixed seed, saved with save_pretrained and
loaded back through load_model, so the tests exercise the same loading path as users.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

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


def make_executor(loaded: LoadedModel, config: EngineConfig, seed: int = 0) -> TorchExecutor:
    return TorchExecutor(loaded, config, seed=seed, peak_flops=TEST_PEAK_FLOPS)


def run_specs(loaded: LoadedModel, config: EngineConfig,
              specs: Iterable[RequestSpec]) -> tuple[Engine, list[StepSnapshot]]:
    """Run a workload to the end; returns the engine (requests, stats) and every step's snapshot."""
    snapshots: list[StepSnapshot] = []
    engine = Engine(config, make_executor(loaded, config), WallClock())
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
