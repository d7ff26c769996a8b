"""The engine with the real executor end to end: rejections, aborts, step facts, pool sizing, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.clock import WallClock
from engine.config import ConfigError
from engine.engine_loop import Engine
from engine.executors.kv_pool_sizing import choose_kv_pool
from engine.executors.model_loading import LoadedModel
from engine.outputs import ModelRunnerOutput, ScheduledRequest, SchedulerOutput
from engine.sampling_params import SamplingParams
from engine.snapshot import StepSnapshot
from engine.step_counts import StepCounts
from engine.workload.spec import RequestSpec
from tests.torch_models import engine_config, load, make_executor, run_specs, save_llama

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load(save_llama(Path(tmp_path_factory.mktemp("llama"))))


def _specs(lengths: list[int], max_tokens: int = 6) -> list[RequestSpec]:
    return [RequestSpec(f"r{i}", 0.0, max_tokens=max_tokens, prompt_len=n) for i, n in enumerate(lengths)]


def test_over_long_prompt_is_rejected_while_others_complete(llama: LoadedModel) -> None:
    engine, _ = run_specs(llama, engine_config(max_model_len=64), _specs([10, 100, 20]))
    reasons = {rid: (r.status.finish_reason, r.reject_reason) for rid, r in engine.requests.items()}
    assert reasons["r1"][0] == "rejected" and "max_model_len=64" in (reasons["r1"][1] or "")
    assert [engine.requests[r].num_output_tokens for r in ("r0", "r2")] == [6, 6]


def test_pool_too_small_for_any_prompt_says_so(llama: LoadedModel) -> None:
    engine, _ = run_specs(llama, engine_config(num_gpu_blocks=2, block_size=8), _specs([30, 40]))
    for req in engine.requests.values():
        assert req.status.finish_reason == "rejected"
        assert "raise num_gpu_blocks" in (req.reject_reason or "")


def test_budget_too_small_for_a_kv_cache_is_a_config_error(llama: LoadedModel) -> None:
    config = engine_config(num_gpu_blocks=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"no room for a KV cache.*--cpu-memory-gib"):
        choose_kv_pool(llama, config.scheduler, config.cache, cpu_memory_gib=0.01)
    pool = choose_kv_pool(llama, config.scheduler, config.cache, cpu_memory_gib=1.0)
    assert pool.num_gpu_blocks == 64 * 64  # capped: max_num_seqs x max_model_len / block_size
    assert pool.describe().startswith("KV pool: 4,096 blocks x 8 tokens = 32,768 tokens")


def test_abort_from_another_thread_mid_run(llama: LoadedModel) -> None:
    config = engine_config(max_num_seqs=4)
    engine = Engine(config, make_executor(llama, config), WallClock())
    third_step = threading.Event()

    def on_step(snapshot: StepSnapshot) -> None:
        if snapshot.step == 2:
            third_step.set()
            release.wait(5)  # hold the loop until the abort was sent

    release = threading.Event()
    specs = _specs([12, 20, 16], max_tokens=40)
    runner = threading.Thread(target=engine.run, args=(specs,), kwargs={"on_step": on_step})
    runner.start()
    assert third_step.wait(30)
    engine.abort_request("r1")
    release.set()
    runner.join(60)
    assert not runner.is_alive()
    r1 = engine.requests["r1"]
    assert r1.status.finish_reason == "aborted" and 0 < r1.num_output_tokens < 40
    assert [engine.requests[r].num_output_tokens for r in ("r0", "r2")] == [40, 40]
    assert engine.scheduler.block_manager.num_used_gpu_blocks == 0


def _timed_step(executor: object, out: SchedulerOutput) -> tuple[ModelRunnerOutput, float]:
    t0 = time.perf_counter()
    result = executor.execute_model(out)  # type: ignore[attr-defined]
    return result, time.perf_counter() - t0


def test_timed_parts_fit_inside_a_wall_clock_taken_outside_the_step(llama: LoadedModel) -> None:
    executor = make_executor(llama, engine_config())
    params = SamplingParams(max_tokens=4, temperature=0)
    prefill = ScheduledRequest("a", 12, 0, True, True, params, tuple(range(11, 23)), (3, 4))
    decode = ScheduledRequest("a", 1, 12, False, True, params, (40,), (3, 4))
    first = SchedulerOutput(step=0, scheduled=(prefill,), counts=StepCounts(num_batched_tokens=12))
    second = SchedulerOutput(step=1, scheduled=(decode,), counts=StepCounts(num_batched_tokens=1))
    for out, reads_context in ((first, False), (second, True)):
        result, wall = _timed_step(executor, out)
        measured = {k: v for k, v in result.timings.items() if k != "other"}  # "other" is the remainder
        assert set(measured) == {"swap", "prepare", "model", "kv_write", "kv_gather", "attention", "sampling"}
        assert all(v >= 0 for v in result.timings.values())
        assert sum(measured.values()) <= result.model_time_s <= wall
        assert result.timings["attention"] > 0 and result.timings["kv_write"] > 0
        # Only a query with cached context reads blocks back; a fresh prompt attends its own new K/V.
        assert (result.timings["kv_gather"] > 0) == reads_context


def test_utilization_is_reported_unclamped_against_the_given_peak(llama: LoadedModel) -> None:
    from engine.executors.torch_executor import TorchExecutor

    executor = TorchExecutor(llama, engine_config(), peak_flops=1e3)  # far below any real device
    params = SamplingParams(max_tokens=4, temperature=0)
    prefill = ScheduledRequest("a", 5, 0, True, True, params, (11, 12, 13, 14, 15), (3,))
    out = SchedulerOutput(step=0, scheduled=(prefill,), counts=StepCounts(num_batched_tokens=5))
    result, _ = _timed_step(executor, out)
    assert result.compute_utilization is not None
    assert result.compute_utilization == pytest.approx(result.num_flops / result.model_time_s / 1e3)
    assert result.compute_utilization > 1


def test_run_command_serves_tiny_without_recording() -> None:
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "engine", "run", "--model", "tiny", "--no-record",
                           "--num-prompts", "8"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "8 finished, 0 rejected" in proc.stdout
    assert "KV pool:" in proc.stderr


def test_run_command_with_a_missing_model_prints_one_line() -> None:
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "engine", "run", "--model", "/no/such/dir", "--no-record"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: model not found") and proc.stderr.count("\n") == 1
