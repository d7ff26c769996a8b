"""How many KV blocks to allocate: given, or what the memory budget leaves, sized as vLLM does.

On CUDA the budget is measured: free memory from torch.cuda.mem_get_info, and the peak
activation memory of one profiling forward at max_num_batched_tokens, run before the KV cache
exists. The pool is then

    gpu_memory_utilization x total - weights - peak activations - memory used by others

(others: what is in use on the device and not held by this process's allocator), with no cap:
more blocks than max_num_seqs x max_model_len is what lets a pool hold preempted work and shows
how much concurrency the memory allows. Start-up is refused, as vLLM does, when the device's free
memory is already below what --gpu-memory-utilization asks for.

A CPU has no device memory of its own to claim, so there the budget is stated (--cpu-memory-gib),
activations are bounded analytically (torch keeps no peak statistics on CPU), and the pool stays
capped at what could ever be in use at once: an uncapped 4 GiB default would zero gigabytes of
RAM for a model that never touches them, and draw a block map of 50,000+ blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.config import CacheConfig, ConfigError, SchedulerConfig
from engine.executors.kv_cache import bytes_per_block
from engine.executors.model_loading import LoadedModel
from engine.executors.packed_linear import packed_copy_bytes, packing_unavailable

DEFAULT_CPU_MEMORY_GIB = 4.0
MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class KVPoolChoice:
    num_gpu_blocks: int
    block_size: int
    bytes_per_block: int
    source: str  # where the number came from, for the one-line description
    max_model_len: int

    @property
    def num_tokens(self) -> int:
        return self.num_gpu_blocks * self.block_size

    @property
    def max_concurrency(self) -> float:
        """Requests of max_model_len tokens the pool holds at once (vLLM's "maximum concurrency")."""
        return self.num_gpu_blocks / -(-self.max_model_len // self.block_size)

    def warning(self) -> str | None:
        """What a user should know about this pool before serving with it, if anything."""
        if self.num_tokens < self.max_model_len:
            return (f"the KV pool holds {self.num_tokens:,} tokens, less than max_model_len={self.max_model_len}; "
                    "longer prompts will be rejected")
        return None

    def describe(self) -> str:
        mib = self.num_gpu_blocks * self.bytes_per_block / MIB
        return (f"KV pool: {self.num_gpu_blocks:,} blocks x {self.block_size} tokens = {self.num_tokens:,} tokens "
                f"({mib:,.1f} MiB), {self.source}; maximum concurrency for max_model_len {self.max_model_len} "
                f"tokens per request: {self.max_concurrency:.2f}x")


@dataclass(frozen=True)
class MemoryBudget:
    """What the pool is sized from, in bytes."""

    device: str  # "cuda" or "cpu"
    total: int  # the device's memory (CUDA) or the stated budget (CPU)
    free: int  # free on the device now (CPU: total)
    held: int  # what this process's allocator already holds there (weights included)
    weights: int
    peak_activations: int  # one step's transient memory: profiled (CUDA) or bounded (CPU)
    profiled_tokens: int = 0  # tokens of the profiling forward; 0: not profiled
    packed_copy: int = 0  # of weights: the CPU executor's packed copy of its linear weights

    def weights_text(self) -> str:
        text = f"{self.weights / MIB:,.0f} MiB weights"
        return text + (f" (a packed copy of {self.packed_copy / MIB:,.0f} MiB included)" if self.packed_copy else "")

    @property
    def others(self) -> int:
        """Memory in use on the device that this process's allocator does not hold."""
        return max(self.total - self.free - self.held, 0)


def size_kv_pool(budget: MemoryBudget, utilization: float, per_block: int, block_size: int,
                 sched: SchedulerConfig) -> KVPoolChoice:
    """The pool a budget leaves; ConfigError (one line naming the flag) when it leaves none."""
    cuda = budget.device == "cuda"
    wanted = int(budget.total * utilization)
    if cuda:
        free_at_start = budget.free + budget.held  # what was free before this process took any
        if free_at_start < wanted:
            raise ConfigError(
                f"free GPU memory at start-up ({free_at_start / GIB:.2f} of {budget.total / GIB:.2f} GiB) is less "
                f"than --gpu-memory-utilization {utilization:g} asks for ({wanted / GIB:.2f} GiB); lower "
                "--gpu-memory-utilization or free the memory other processes use"
            )
        where = f"{utilization:g} x {budget.total / GIB:.1f} GiB GPU memory"
        flag = "--gpu-memory-utilization"
        activations = f"{budget.peak_activations / MIB:,.0f} MiB peak activations"
        if budget.profiled_tokens:
            activations += f" (profiled at {budget.profiled_tokens:,} tokens)"
        others = f" - {budget.others / MIB:,.0f} MiB used by others"
    else:
        where = f"{utilization:g} x {budget.total / GIB:g} GiB CPU budget"
        flag = "--cpu-memory-gib"
        activations = f"{budget.peak_activations / MIB:,.0f} MiB activations"
        others = ""
    left = wanted - budget.weights - budget.peak_activations - (budget.others if cuda else 0)
    blocks = left // per_block
    if blocks < 1:
        raise ConfigError(
            f"no room for a KV cache: {where} minus {budget.weights_text()}, {activations}"
            f"{others} leaves {max(left, 0) / MIB:,.0f} MiB; raise {flag}, lower max_num_batched_tokens, "
            "or pass --num-gpu-blocks"
        )
    source = f"from {where} - {budget.weights_text()} - {activations}{others}"
    useful = sched.max_num_seqs * -(-sched.max_model_len // block_size)
    if not cuda and blocks > useful:
        blocks = useful
        source += f", capped at max_num_seqs x max_model_len ({sched.max_num_seqs} x {sched.max_model_len})"
    return KVPoolChoice(int(blocks), block_size, per_block, source, sched.max_model_len)


def activation_bytes(loaded: LoadedModel, sched: SchedulerConfig, block_size: int) -> int:
    """CPU: a generous bound on one step's transient memory: hidden states, MLP, logits, decode gathers."""
    elem = torch.finfo(loaded.dtype).bits // 8
    tokens = sched.token_budget
    mlp_width = int(getattr(loaded.model.config.get_text_config(), "intermediate_size", 4 * loaded.hidden_size))
    per_token = (8 * loaded.hidden_size + 3 * mlp_width) * elem
    logits = min(sched.max_num_seqs, tokens) * loaded.vocab_size * 4 * 3  # fp32 logits, softmax, noise
    return tokens * per_token + logits + paged_gather_bytes(loaded, sched, block_size) + 64 * MIB


def paged_gather_bytes(loaded: LoadedModel, sched: SchedulerConfig, block_size: int) -> int:
    """Keys and values paged attention gathers for max_num_seqs decodes at max_model_len: a profiling
    forward with the model's own attention never makes them, so they are added to its peak."""
    elem = torch.finfo(loaded.dtype).bits // 8
    max_blocks = -(-sched.max_model_len // block_size)
    return 2 * sched.max_num_seqs * max_blocks * block_size * loaded.num_kv_heads * loaded.head_dim * elem


def choose_kv_pool(
    loaded: LoadedModel,
    sched: SchedulerConfig,
    cache: CacheConfig,
    cpu_memory_gib: float = DEFAULT_CPU_MEMORY_GIB,
) -> KVPoolChoice:
    """The pool size to run with; ConfigError when the budget leaves no room for even one block.
    On CUDA this runs a profiling forward: call it before the executor allocates the KV cache."""
    per_block = bytes_per_block(loaded.num_layers, cache.block_size, loaded.num_kv_heads, loaded.head_dim,
                                torch.finfo(loaded.dtype).bits // 8)
    if cache.num_gpu_blocks is not None:
        return KVPoolChoice(cache.num_gpu_blocks, cache.block_size, per_block, "from --num-gpu-blocks",
                            sched.max_model_len)
    weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    if loaded.device.type == "cuda":
        budget = measure_cuda_budget(loaded, sched, weights, paged_gather_bytes(loaded, sched, cache.block_size))
    else:
        if cpu_memory_gib <= 0:
            raise ConfigError(f"cpu_memory_gib must be > 0, got {cpu_memory_gib!r}")
        total = int(cpu_memory_gib * GIB)
        packed = packed_copy_bytes(loaded.model) if packing_unavailable(loaded.dtype, loaded.device) is None else 0
        budget = MemoryBudget("cpu", total, total, weights + packed, weights + packed,
                              activation_bytes(loaded, sched, cache.block_size), packed_copy=packed)
    return size_kv_pool(budget, cache.gpu_memory_utilization, per_block, cache.block_size, sched)


def measure_cuda_budget(loaded: LoadedModel, sched: SchedulerConfig, weights: int, gather: int) -> MemoryBudget:
    """Profile one forward at max_num_batched_tokens, then read the device's free memory."""
    device = loaded.device
    peak = profile_peak_activations(loaded, sched) + gather
    torch.cuda.empty_cache()  # the profile's freed blocks are this process's to reuse, not "others"
    free, total = torch.cuda.mem_get_info(device)
    return MemoryBudget("cuda", int(total), int(free), int(torch.cuda.memory_reserved(device)), weights, peak,
                        sched.token_budget)


def profile_peak_activations(loaded: LoadedModel, sched: SchedulerConfig) -> int:
    """Peak memory a dummy forward of token_budget tokens allocates above what is held before it:
    the model's own attention, use_cache=False, logits (and a softmax, as sampling does) for up to
    max_num_seqs rows, as the largest step the scheduler may build."""
    from engine.executors.paged_attention import ATTENTION_NAME

    model, device = loaded.model, loaded.device
    tokens = sched.token_budget
    rows = min(sched.max_num_seqs, tokens)
    # Positions restart every max_model_len tokens: a budget above the model's positions is several prompts.
    positions = (torch.arange(tokens, device=device) % sched.max_model_len).unsqueeze(0)
    input_ids = torch.zeros(1, tokens, dtype=torch.long, device=device)
    switched = getattr(model.config, "_attn_implementation", None) == ATTENTION_NAME
    if switched:  # paged attention needs a KV cache, which must not exist yet
        model.set_attn_implementation("sdpa")
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    try:
        with torch.inference_mode():
            logits = model(input_ids=input_ids, position_ids=positions, use_cache=False, logits_to_keep=rows).logits
            torch.softmax(logits.float(), dim=-1)
        torch.cuda.synchronize(device)
    except torch.cuda.OutOfMemoryError:
        raise ConfigError(
            f"the profiling forward of {tokens:,} tokens ran out of GPU memory before any KV cache was allocated; "
            "lower --max-num-batched-tokens or --max-num-seqs, or use a smaller model"
        ) from None
    finally:
        if switched:
            model.set_attn_implementation(ATTENTION_NAME)
    return int(torch.cuda.max_memory_allocated(device) - before)
