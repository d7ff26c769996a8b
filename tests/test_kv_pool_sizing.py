"""KV pool sizing: the arithmetic with made-up memory figures (CPU), the measuring layer on CUDA and, with
torch.cuda's memory calls faked, on the CPU too."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from engine.config import ConfigError, EngineConfig, SchedulerConfig
from engine.executors.kv_pool_sizing import GIB, MIB, MemoryBudget, choose_kv_pool, size_kv_pool

SCHED = SchedulerConfig(max_num_seqs=8, max_model_len=1024)  # 8 x 64 blocks of 16 would be the old cap
PER_BLOCK = 1 * MIB


def _cuda(total_gib: float = 80, free_gib: float = 70, held_gib: float = 2, weights_gib: float = 2,
          peak_gib: float = 1) -> MemoryBudget:
    return MemoryBudget("cuda", int(total_gib * GIB), int(free_gib * GIB), int(held_gib * GIB),
                        int(weights_gib * GIB), int(peak_gib * GIB), profiled_tokens=2048)


def test_cuda_pool_is_utilization_minus_weights_activations_and_others_without_a_cap() -> None:
    budget = _cuda()  # others: 80 - 70 - 2 = 8 GiB
    pool = size_kv_pool(budget, 0.9, PER_BLOCK, 16, SCHED)
    assert budget.others == 8 * GIB
    assert pool.num_gpu_blocks == (int(0.9 * 80 * GIB) - 2 * GIB - 1 * GIB - 8 * GIB) // PER_BLOCK  # 62,771
    assert pool.num_gpu_blocks > SCHED.max_num_seqs * 64  # no max_num_seqs x max_model_len cap on CUDA
    text = pool.describe()
    assert "2,048 MiB weights - 1,024 MiB peak activations (profiled at 2,048 tokens) - 8,192 MiB used by others" \
        in text
    assert "capped" not in text


def test_the_pool_grows_with_gpu_memory_utilization() -> None:
    low, high = (size_kv_pool(_cuda(), u, PER_BLOCK, 16, SCHED).num_gpu_blocks for u in (0.5, 0.85))
    assert high - low == (int(0.85 * 80 * GIB) - int(0.5 * 80 * GIB)) // PER_BLOCK


def test_maximum_concurrency_is_whole_requests_of_max_model_len_the_pool_holds() -> None:
    pool = size_kv_pool(_cuda(), 0.9, PER_BLOCK, 16, SCHED)
    assert pool.max_concurrency == pool.num_gpu_blocks / 64  # 1024 tokens = 64 blocks of 16
    assert pool.describe().endswith(
        f"; maximum concurrency for max_model_len 1024 tokens per request: {pool.num_gpu_blocks / 64:.2f}x")
    odd = SchedulerConfig(max_num_seqs=8, max_model_len=1000)  # a request still takes 63 whole blocks
    assert size_kv_pool(_cuda(), 0.9, PER_BLOCK, 16, odd).max_concurrency == pool.num_gpu_blocks / 63


def test_start_up_is_refused_when_free_memory_is_below_what_utilization_asks() -> None:
    busy = _cuda(free_gib=60, held_gib=2)  # 62 GiB free before this process, 0.9 x 80 = 72 asked
    with pytest.raises(ConfigError) as caught:
        size_kv_pool(busy, 0.9, PER_BLOCK, 16, SCHED)
    message = str(caught.value)
    assert message == ("free GPU memory at start-up (62.00 of 80.00 GiB) is less than --gpu-memory-utilization 0.9 "
                       "asks for (72.00 GiB); lower --gpu-memory-utilization or free the memory other processes use")
    assert size_kv_pool(busy, 0.75, PER_BLOCK, 16, SCHED).num_gpu_blocks > 0  # 60 GiB asked: fits


def test_no_room_after_weights_and_activations_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^no room for a KV cache: .*raise --gpu-memory-utilization"):
        size_kv_pool(_cuda(weights_gib=60, peak_gib=5), 0.9, PER_BLOCK, 16, SCHED)


def test_cpu_budget_is_stated_and_stays_capped() -> None:
    budget = MemoryBudget("cpu", 4 * GIB, 4 * GIB, 0, 100 * MIB, 200 * MIB)
    pool = size_kv_pool(budget, 0.9, PER_BLOCK, 16, SCHED)
    assert pool.num_gpu_blocks == 8 * 64
    assert "capped at max_num_seqs x max_model_len (8 x 1024)" in pool.describe()
    assert "used by others" not in pool.describe()
    small = MemoryBudget("cpu", GIB // 2, GIB // 2, 0, 100 * MIB, 200 * MIB)  # 460 - 300 MiB: under the cap
    assert size_kv_pool(small, 0.9, PER_BLOCK, 16, SCHED).num_gpu_blocks == (int(0.9 * GIB // 2) - 300 * MIB) // MIB


def test_a_pool_smaller_than_max_model_len_comes_with_a_warning() -> None:
    tight = MemoryBudget("cpu", GIB, GIB, 0, 0, int(0.9 * GIB) - 10 * MIB)  # 10 blocks of 16 tokens
    pool = size_kv_pool(tight, 0.9, PER_BLOCK, 16, SCHED)
    assert pool.num_gpu_blocks == 10
    assert pool.warning() == ("the KV pool holds 160 tokens, less than max_model_len=1024; "
                              "longer prompts will be rejected")
    assert size_kv_pool(_cuda(), 0.9, PER_BLOCK, 16, SCHED).warning() is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_sizing_profiles_a_forward_and_the_pool_it_chooses_fits() -> None:
    from engine.executors.model_loading import load_model
    from engine.executors.torch_executor import TorchExecutor

    loaded = load_model("tiny", "cuda")
    config = EngineConfig.from_dict({"max_num_seqs": 16, "max_model_len": 512, "gpu_memory_utilization": 0.3})
    total = torch.cuda.mem_get_info(loaded.device)[1]
    pool = choose_kv_pool(loaded, config.scheduler, config.cache)
    assert "peak activations (profiled at 2,048 tokens)" in pool.describe()
    assert pool.num_gpu_blocks > 16 * 512 // 16  # far more than the old cap on any GPU tiny fits on
    assert pool.num_gpu_blocks * pool.bytes_per_block < 0.3 * total
    executor = TorchExecutor(loaded, config.replace(num_gpu_blocks=pool.num_gpu_blocks))  # allocates the pool
    assert torch.cuda.memory_reserved(loaded.device) < 0.3 * total + (1 << 30)
    executor.shutdown()


def test_the_cpu_budget_counts_the_packed_copy_of_the_linear_weights() -> None:
    """The CPU executor packs a second copy of every linear weight; the pool must leave room for it."""
    from engine.config import CacheConfig
    from engine.executors.kv_pool_sizing import activation_bytes
    from engine.executors.model_loading import load_model
    from engine.executors.packed_linear import packed_copy_bytes, packing_unavailable

    loaded = load_model("tiny", device="cpu")
    sched = SchedulerConfig(max_num_seqs=64, max_num_batched_tokens=2048, max_model_len=2048)
    params = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    linears = sum(m.weight.numel() * 4 for m in loaded.model.modules() if type(m) is torch.nn.Linear)
    assert packed_copy_bytes(loaded.model) == linears > 0
    pool = choose_kv_pool(loaded, sched, CacheConfig(block_size=16), cpu_memory_gib=0.5)
    packed = linears if packing_unavailable(torch.float32, torch.device("cpu")) is None else 0
    left = int(0.9 * 0.5 * GIB) - params - packed - activation_bytes(loaded, sched, 16)
    assert pool.num_gpu_blocks == left // pool.bytes_per_block
    if packed:
        assert f"a packed copy of {packed / MIB:,.0f} MiB included" in pool.describe()


class _FakeAllocator:
    """torch.cuda's memory calls, answered with figures a test sets: the CUDA measuring layer then runs
    on the CPU (the profiling forward included), so a change that breaks it fails here, not first on a
    lent GPU."""

    def __init__(self, allocated: int, step_peak: int, free: int, total: int, reserved: int) -> None:
        self.allocated, self.step_peak, self.reserved = allocated, step_peak, reserved
        self.free, self.total = free, total
        self.calls: list[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cuda = torch.cuda
        for name in ("synchronize", "empty_cache", "reset_peak_memory_stats"):
            monkeypatch.setattr(cuda, name, lambda *a, _n=name, **k: self.calls.append(_n))
        monkeypatch.setattr(cuda, "memory_allocated", lambda *a, **k: self.allocated)
        monkeypatch.setattr(cuda, "max_memory_allocated", lambda *a, **k: self.allocated + self.step_peak)
        monkeypatch.setattr(cuda, "mem_get_info", self.mem_get_info)
        monkeypatch.setattr(cuda, "memory_reserved", lambda *a, **k: self.reserved)

    def mem_get_info(self, *args: object) -> tuple[int, int]:
        self.calls.append("mem_get_info")
        return self.free, self.total


def test_the_cuda_measuring_layer_profiles_the_largest_step_and_reads_free_memory_after(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.executors.kv_pool_sizing import measure_cuda_budget
    from engine.executors.model_loading import load_model
    from engine.executors.paged_attention import ATTENTION_NAME, register_paged_attention

    loaded = load_model("tiny", device="cpu")
    loaded.model.set_attn_implementation(register_paged_attention())  # as after an executor ran on it
    sched = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=96, max_model_len=64)
    fake = _FakeAllocator(allocated=300 * MIB, step_peak=40 * MIB, free=70 * GIB, total=80 * GIB, reserved=2 * GIB)
    fake.install(monkeypatch)
    seen: list[tuple[tuple[int, ...], int, int, str]] = []

    def spy(module: Any, args: tuple, kwargs: dict) -> None:  # type: ignore[type-arg]
        seen.append((tuple(kwargs["input_ids"].shape), int(kwargs["position_ids"].max()), kwargs["logits_to_keep"],
                     module.config._attn_implementation))

    handle = loaded.model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        budget = measure_cuda_budget(loaded, sched, weights=123 * MIB, gather=5 * MIB)
    finally:
        handle.remove()
    # One forward of the whole token budget, positions restarting at max_model_len, logits for up to
    # max_num_seqs rows, on the model's own attention (paged attention needs a KV cache not yet made).
    assert seen == [((1, 96), 63, 8, "sdpa")]
    assert loaded.model.config._attn_implementation == ATTENTION_NAME  # switched back
    assert budget == MemoryBudget("cuda", 80 * GIB, 70 * GIB, 2 * GIB, 123 * MIB, 40 * MIB + 5 * MIB, 96)
    # Peak stats reset before the forward; the profile's freed blocks released before free memory is read.
    assert fake.calls.index("reset_peak_memory_stats") < fake.calls.index("mem_get_info")
    assert fake.calls[fake.calls.index("mem_get_info") - 1] == "empty_cache"


def test_a_profiling_forward_out_of_memory_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.executors.kv_pool_sizing import profile_peak_activations
    from engine.executors.model_loading import load_model
    from engine.executors.paged_attention import ATTENTION_NAME, register_paged_attention

    loaded = load_model("tiny", device="cpu")
    loaded.model.set_attn_implementation(register_paged_attention())
    _FakeAllocator(0, 0, 0, 0, 0).install(monkeypatch)

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    handle = loaded.model.register_forward_pre_hook(out_of_memory)
    try:
        with pytest.raises(ConfigError, match=r"profiling forward of 2,048 tokens ran out of GPU memory.*"
                                              r"--max-num-batched-tokens"):
            profile_peak_activations(loaded, SchedulerConfig(max_num_seqs=8, max_model_len=512))
    finally:
        handle.remove()
    assert loaded.model.config._attn_implementation == ATTENTION_NAME
