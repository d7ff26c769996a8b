"""How many KV blocks to allocate: given, or what the memory budget leaves after weights.

vLLM sizes the pool as gpu_memory_utilization x device memory - weights - activations. A CPU
has no "device memory" of its own to claim, so there the budget is stated (--cpu-memory-gib).
The pool is also capped at what could ever be in use at once (max_num_seqs requests of
max_model_len tokens): more blocks than that would only cost memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.config import CacheConfig, ConfigError, SchedulerConfig
from engine.executors.kv_cache import bytes_per_block
from engine.executors.model_loading import LoadedModel

DEFAULT_CPU_MEMORY_GIB = 4.0
MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class KVPoolChoice:
    num_gpu_blocks: int
    block_size: int
    bytes_per_block: int
    source: str  # where the number came from, for the one-line description

    @property
    def num_tokens(self) -> int:
        return self.num_gpu_blocks * self.block_size

    def describe(self) -> str:
        mib = self.num_gpu_blocks * self.bytes_per_block / MIB
        return (f"KV pool: {self.num_gpu_blocks:,} blocks x {self.block_size} tokens = {self.num_tokens:,} tokens "
                f"({mib:,.1f} MiB), {self.source}")


def activation_bytes(loaded: LoadedModel, sched: SchedulerConfig, block_size: int) -> int:
    """A generous bound on one step's transient memory: hidden states, MLP, logits, decode gathers."""
    elem = torch.finfo(loaded.dtype).bits // 8
    tokens = sched.token_budget
    mlp_width = int(getattr(loaded.model.config.get_text_config(), "intermediate_size", 4 * loaded.hidden_size))
    per_token = (8 * loaded.hidden_size + 3 * mlp_width) * elem
    logits = min(sched.max_num_seqs, tokens) * loaded.vocab_size * 4 * 3  # fp32 logits, softmax, noise
    max_blocks = -(-sched.max_model_len // block_size)
    gather = 2 * sched.max_num_seqs * max_blocks * block_size * loaded.num_kv_heads * loaded.head_dim * elem
    return tokens * per_token + logits + gather + 64 * MIB


def choose_kv_pool(
    loaded: LoadedModel,
    sched: SchedulerConfig,
    cache: CacheConfig,
    cpu_memory_gib: float = DEFAULT_CPU_MEMORY_GIB,
) -> KVPoolChoice:
    """The pool size to run with; ConfigError when the budget leaves no room for even one block."""
    per_block = bytes_per_block(loaded.num_layers, cache.block_size, loaded.num_kv_heads, loaded.head_dim,
                                torch.finfo(loaded.dtype).bits // 8)
    if cache.num_gpu_blocks is not None:
        return KVPoolChoice(cache.num_gpu_blocks, cache.block_size, per_block, "from --num-gpu-blocks")
    weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    activations = activation_bytes(loaded, sched, cache.block_size)
    util = cache.gpu_memory_utilization
    if loaded.device.type == "cuda":
        total = torch.cuda.get_device_properties(loaded.device).total_memory
        where = f"{util:g} x {total / GIB:.1f} GiB GPU memory"
        flag = "--gpu-memory-utilization"
    else:
        if cpu_memory_gib <= 0:
            raise ConfigError(f"cpu_memory_gib must be > 0, got {cpu_memory_gib!r}")
        total = int(cpu_memory_gib * GIB)
        where = f"{util:g} x {cpu_memory_gib:g} GiB CPU budget"
        flag = "--cpu-memory-gib"
    free = int(total * util) - weights - activations
    blocks = free // per_block
    if blocks < 1:
        raise ConfigError(
            f"no room for a KV cache: {where} minus {weights / MIB:,.0f} MiB of weights and "
            f"{activations / MIB:,.0f} MiB for activations leaves {max(free, 0) / MIB:,.0f} MiB; "
            f"raise {flag}, lower max_num_batched_tokens, or pass --num-gpu-blocks"
        )
    source = (f"from {where} - {weights / MIB:,.0f} MiB weights - {activations / MIB:,.0f} MiB activations")
    useful = sched.max_num_seqs * -(-sched.max_model_len // cache.block_size)
    if blocks > useful:
        blocks = useful
        source += f", capped at max_num_seqs x max_model_len ({sched.max_num_seqs} x {sched.max_model_len})"
    return KVPoolChoice(blocks, cache.block_size, per_block, source)
