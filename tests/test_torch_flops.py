"""FLOP counts against torch's FlopCounterMode over real forwards, and the peak measurement.

FlopCounterMode counts what the matmuls and attention kernels are asked to compute, from their
shapes. So HF's own forward of one decode (its DynamicCache, its SDPA) is an independent count of
the useful FLOPs; the paged forward's count is useful + padding, since it sees padded key blocks
and pad rows as they really run.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from engine.executors.flops import FlopModel, measure_peak_flops, peak_from_timings
from engine.executors.model_loading import LoadedModel
from engine.outputs import ModelRunnerOutput, ScheduledRequest, SchedulerOutput
from engine.sampling_params import SamplingParams
from engine.step_counts import StepCounts
from tests.torch_models import VOCAB, engine_config, load, make_executor, save_gpt2, save_llama

GREEDY = SamplingParams(temperature=0)


def _cpu_sdpa(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return int(sdpa_flop_count(q, k, v))  # FlopCounterMode knows the CUDA SDPA kernels, not the CPU one


def counter() -> FlopCounterMode:
    return FlopCounterMode(display=False,
                           custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa})


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    folder = tmp_path_factory.mktemp(request.param)
    (save_llama if request.param == "llama" else save_gpt2)(folder)
    return load(Path(folder))


_references: dict[int, tuple[LoadedModel, Any]] = {}  # id -> (the model, kept alive so its id is not reused; HF's)


def hf_decode_flops(loaded: LoadedModel, context: int) -> int:
    """FLOPs transformers' own forward (SDPA, DynamicCache) spends on one decode at this context."""
    from transformers import AutoModelForCausalLM, DynamicCache

    key = id(loaded)
    if key not in _references:
        config = copy.deepcopy(loaded.model.config)  # the served model's config names paged attention
        _references[key] = loaded, AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    kept, reference = _references[key]
    assert kept is loaded
    ids = torch.randint(0, VOCAB, (1, context), generator=torch.Generator().manual_seed(context))
    with torch.inference_mode():
        cache = DynamicCache(config=reference.config)
        if context > 1:
            reference(input_ids=ids[:, :-1], cache=cache, use_cache=True)
        with counter() as fc:
            reference(input_ids=ids[:, -1:], cache=cache, use_cache=True)
    return int(fc.get_total_flops())


def test_flop_model_equals_flop_counter_on_hf_decodes(model: LoadedModel) -> None:
    flops = FlopModel.of(model.model, model.num_layers, model.num_heads, model.head_dim)
    for context in (1, 9, 77):
        decode = ScheduledRequest("d", 1, context - 1, False, True, GREEDY)
        assert flops.step_flops([decode], 1) == hf_decode_flops(model, context)


def _decodes(contexts: list[int], block_size: int, rng: random.Random) -> tuple[ScheduledRequest, ...]:
    free = list(range(200))
    rng.shuffle(free)
    out = []
    for i, ctx in enumerate(contexts):
        need = -(-ctx // block_size)
        out.append(ScheduledRequest(f"r{i}", 1, ctx - 1, False, True, GREEDY, (rng.randrange(VOCAB),),
                                    tuple(free[:need])))
        del free[:need]
    return tuple(out)


def _counted(executor: Any, out: SchedulerOutput) -> tuple[ModelRunnerOutput, int]:
    with counter() as fc:
        result = executor.execute_model(out)
    return result, int(fc.get_total_flops())


def test_useful_and_padding_flops_of_a_bucketed_step_match_what_runs(model: LoadedModel) -> None:
    """Contexts 3..300 over several buckets: useful = HF's count per decode, useful + padding = the real run's."""
    contexts = [3, 20, 130, 300]
    executor = make_executor(model, engine_config())
    scheduled = _decodes(contexts, 8, random.Random(0))
    out = SchedulerOutput(step=0, scheduled=scheduled, counts=StepCounts(num_batched_tokens=4))
    result, ran = _counted(executor, out)
    assert len(executor.attention.plan(_layout_of(executor, scheduled)).decodes) >= 3
    assert result.num_flops == sum(hf_decode_flops(model, c) for c in contexts)
    assert result.num_padding_flops > 0
    assert result.num_flops + result.num_padding_flops == ran


def test_pad_rows_flops_are_padding_only(model: LoadedModel) -> None:
    executor = make_executor(model, engine_config())
    scheduled = _decodes([5, 40], 8, random.Random(1))
    plain, ran_plain = _counted(executor, SchedulerOutput(step=0, scheduled=scheduled,
                                                          counts=StepCounts(num_batched_tokens=2)))
    padded, ran_padded = _counted(executor, SchedulerOutput(step=1, scheduled=scheduled, counts=StepCounts(
                                                            num_batched_tokens=2, num_padding_tokens=5)))
    assert padded.num_flops == plain.num_flops
    assert padded.num_padding_flops - plain.num_padding_flops == ran_padded - ran_plain > 0
    assert padded.num_flops + padded.num_padding_flops == ran_padded


def _layout_of(executor: Any, scheduled: tuple[ScheduledRequest, ...]) -> Any:
    from engine.executors.step_batch import build_step_batch

    out = SchedulerOutput(step=0, scheduled=scheduled, counts=StepCounts(num_batched_tokens=len(scheduled)))
    return build_step_batch(out, executor.kv_cache, executor.attention, False).layout


def test_flop_count_of_a_known_step() -> None:
    model = FlopModel(body_params=1000, lm_head_params=100, num_layers=2, attention_width=8)
    decode = ScheduledRequest("d", 1, 9, False, True, GREEDY)  # 1 query over 10 keys
    chunk = ScheduledRequest("c", 3, 4, True, False, GREEDY)  # 3 queries over 5, 6, 7 keys
    assert model.step_flops([decode, chunk], 1) == 2 * 1000 * 4 + 2 * 100 * 1 + 4 * 2 * 8 * (10 + 18)
    assert model.padding_flops(3, 10) == 2 * 1000 * 3 + 4 * 2 * 8 * 10


def test_peak_is_the_best_size_by_its_median_time() -> None:
    lucky_outlier = {64: [1.0, 1.0, 1e-9], 128: [8.0, 8.0, 9.0]}  # one impossibly fast run must not count
    assert peak_from_timings(lucky_outlier) == pytest.approx(2 * 128**3 / 8.0)
    assert peak_from_timings({64: [2.0, 1.0, 30.0]}) == pytest.approx(2 * 64**3 / 2.0)


def test_peak_warms_up_then_times_each_size_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.executors import flops

    events: list[tuple[str, int]] = []
    times = {32: [5.0, 1.0, 1.0], 64: [1.0, 9.0, 9.0]}  # seconds each timed run "took"

    def one_kernel(a: torch.Tensor, b: torch.Tensor) -> list[tuple[str, object]]:
        def multiply() -> None:
            events.append(("warm-up", a.shape[0]))
        return [("matmul", multiply)]

    def timed(multiply: object, device: torch.device) -> float:
        size = next(n for kind, n in reversed(events) if kind == "warm-up")
        events.append(("timed", size))
        return times[size][sum(1 for e in events if e == ("timed", size)) - 1]

    monkeypatch.setattr(flops, "_kernels", one_kernel)
    monkeypatch.setattr(flops, "_time_matmul", timed)
    peak = measure_peak_flops(torch.device("cpu"), torch.float32, sizes=(32, 64), repeats=3)
    assert peak == pytest.approx(max(2 * 32**3 / 1.0, 2 * 64**3 / 9.0))
    for size in (32, 64):
        mine = [kind for kind, n in events if n == size]
        assert mine[:2] == ["warm-up", "warm-up"] and mine.count("timed") == 3


def test_the_peak_is_the_fastest_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slower kernel than the model runs must not set the reference (it would flatter utilization)."""
    from engine.executors import flops

    seconds = {"slow": 4.0, "fast": 1.0}
    kernels = {name: (lambda: None) for name in seconds}
    monkeypatch.setattr(flops, "_kernels", lambda a, b: list(kernels.items()))
    monkeypatch.setattr(flops, "_time_matmul",
                        lambda multiply, device: next(seconds[n] for n, k in kernels.items() if k is multiply))
    peaks = flops.kernel_peaks(torch.device("cpu"), torch.float32, sizes=(16,), repeats=3)
    assert peaks == pytest.approx({"slow": 2 * 16**3 / 4.0, "fast": 2 * 16**3 / 1.0})
    assert measure_peak_flops(torch.device("cpu"), torch.float32, sizes=(16,), repeats=3) == peaks["fast"]


def test_cpu_fp32_peak_times_the_packed_kernel_the_linears_use() -> None:
    from engine.executors import flops
    from engine.executors.packed_linear import packing_unavailable

    names = [name for name, _ in flops._kernels(torch.randn(8, 8), torch.randn(8, 8))]
    expected = ["torch.matmul"] + (["oneDNN packed"] if packing_unavailable(torch.float32, torch.device("cpu")) is None
                                   else [])
    assert names == expected


def test_a_real_peak_is_positive() -> None:
    assert measure_peak_flops(torch.device("cpu"), torch.float32, sizes=(64,), repeats=3) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_peak_is_timed_with_events() -> None:
    peak = measure_peak_flops(torch.device("cuda"), torch.bfloat16, sizes=(1024, 2048), repeats=3)
    assert 1e11 < peak < 1e16
