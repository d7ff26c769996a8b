"""Drive vLLM V1's Scheduler with fake model outputs, timed exactly like bench_scheduler.py times ours.

Runs in a separate virtualenv that has vllm (installed with --no-deps plus what its scheduler
imports) and torch 2.13 CPU; it never imports the engine package. bench/bench_scheduler.py starts
it once and sends one JSON command per line on stdin; each answer is one JSON line on stdout
(vLLM's logging goes to stderr):

    {"cmd": "info"}
    {"cmd": "run", "workload": "/path.json", "max_num_seqs": 64, "chunked": true,
     "prefix_caching": false, "log_stats": false, "num_blocks": 2000, "block_size": 16,
     "max_num_batched_tokens": 2048, "max_model_len": 2048}

The fake model is a config.json with no weights (ModelConfig needs one to inspect the
architecture; nothing else reads it). The KV pool is a KVCacheConfig with num_blocks built
directly, as vLLM's tests/v1/core/utils.py does.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# No GPU here: without this vLLM cannot infer a platform. Its CPU platform keeps block_size 16
# and turns async scheduling off (the synchronous Scheduler is what we drive anyway).
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

SAMPLED_TOKEN = 7  # every fake sample; ignore_eos keeps requests to exactly max_tokens


def prompt_tokens(i: int, n: int) -> list[int]:
    """Request i's prompt (same formula in bench_scheduler.py): distinct, never a stop token."""
    return [(i * 1009 + j * 7) % 31000 + 100 for j in range(n)]


# -- other processes' CPU use (stdlib; same method as bench_scheduler.py) ----------------------
_TICKS = os.sysconf("SC_CLK_TCK")


def _busy_ticks() -> tuple[int, int]:
    """(whole machine busy jiffies from /proc/stat, this process's utime + stime)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    with open("/proc/self/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return sum(v) - v[3] - v[4], int(rest[11]) + int(rest[12])


def _other_cores(before: tuple[int, int], after: tuple[int, int], wall_s: float) -> float:
    busy, own = after[0] - before[0], after[1] - before[1]
    return max(busy - own, 0) / _TICKS / max(wall_s, 1e-9)


SPEED_CHECK_EVERY = 100  # steps between speed checks inside a run (outside the timed calls)


def calibrate(repeats: int = 3) -> float:
    """Microseconds for a fixed pure-Python loop (dict and list work like a scheduler's), best of
    `repeats`: the interpreter's speed in this process right now. Timed before, during (every
    SPEED_CHECK_EVERY steps) and after every run: on this VM the machine's speed swings up to 2x for
    seconds at a time with no trace in /proc/stat (other tenants of the host), so this is the only
    way to see that contamination. It also shows that both interpreters run alike."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        d: dict[int, list[int]] = {}
        for i in range(20000):
            lst = d.setdefault(i % 512, [])
            lst.append(i)
            if len(lst) > 8:
                lst.pop(0)
        best = min(best, (time.perf_counter_ns() - t0) / 1e3)
    return best


# -- vLLM -----------------------------------------------------------------------------------------
_FAKE_MODEL_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "num_hidden_layers": 2,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "torch_dtype": "float32",
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def _fake_model_dir() -> str:
    d = Path(tempfile.gettempdir()) / "batchscope-vllm-fake-llama"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(_FAKE_MODEL_CONFIG))
    return str(d)


def make_scheduler(cmd: dict[str, Any]) -> tuple[Any, Any]:
    """(vLLM Scheduler, request factory) for one run's configuration."""
    import torch
    from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.sampling_params import SamplingParams
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.request import Request
    from vllm.v1.structured_output import StructuredOutputManager

    block_size = cmd["block_size"]
    num_blocks = cmd["num_blocks"]
    max_model_len = cmd["max_model_len"]
    model_config = ModelConfig(
        model=_fake_model_dir(), skip_tokenizer_init=True, dtype="float32", max_model_len=max_model_len, seed=0
    )
    scheduler_config = SchedulerConfig(
        max_num_seqs=cmd["max_num_seqs"],
        max_num_batched_tokens=cmd["max_num_batched_tokens"],
        max_model_len=max_model_len,
        enable_chunked_prefill=cmd["chunked"],
        is_encoder_decoder=False,
    )
    cache_config = CacheConfig(block_size=block_size, enable_prefix_caching=cmd["prefix_caching"])
    vllm_config = VllmConfig(scheduler_config=scheduler_config, model_config=model_config, cache_config=cache_config)
    kv_cache_config = KVCacheConfig(
        num_blocks=num_blocks,
        kv_cache_tensors=[],
        kv_cache_groups=[
            KVCacheGroupSpec(
                ["layer"], FullAttentionSpec(block_size=block_size, num_kv_heads=1, head_size=1, dtype=torch.float32)
            )
        ],
    )
    vllm_config.cache_config.num_gpu_blocks = num_blocks
    sched = Scheduler(
        vllm_config=vllm_config,
        kv_cache_config=kv_cache_config,
        structured_output_manager=StructuredOutputManager(vllm_config),
        block_size=block_size,
        log_stats=cmd["log_stats"],
    )
    hasher = None
    if cmd["prefix_caching"]:  # as EngineCore sets it up
        hash_fn = get_hash_fn_by_name(vllm_config.cache_config.prefix_caching_hash_algo)
        init_none_hash(hash_fn)
        hasher = get_request_block_hasher(block_size, hash_fn)

    def new_request(i: int, prompt_len: int, max_tokens: int) -> Any:
        return Request(
            request_id=str(i),
            prompt_token_ids=prompt_tokens(i, prompt_len),
            sampling_params=SamplingParams(max_tokens=max_tokens, ignore_eos=True),
            pooling_params=None,
            arrival_time=0.0,
            block_hasher=hasher,
        )

    return sched, new_request


def run(cmd: dict[str, Any]) -> dict[str, Any]:
    from vllm.v1.outputs import ModelRunnerOutput

    workload = json.loads(Path(cmd["workload"]).read_text())
    calib_us = calibrate()
    gc.collect()
    sched, new_request = make_scheduler(cmd)
    gc.collect()
    gc.freeze()  # as EngineCore does after start-up (freeze_gc_heap); undone after the run
    try:
        rec = _run(sched, new_request, workload, ModelRunnerOutput)
        rec["calib_us"] = calib_us
        rec["calib_after_us"] = calibrate()
        return rec
    finally:
        gc.unfreeze()


def timed_loop(sched: Any, reqs: list[Any], fake_output: Callable[[Any], tuple[Any, Sequence[Any]]],
               who: str) -> dict[str, Any]:
    """Add reqs, then step until all finish, timing schedule() + update_from_output() only: the one
    loop both schedulers run (bench_scheduler.py imports it). fake_output(out) -> (the model
    runner output to update with, what was scheduled); it is not timed."""
    step_ns: list[int] = []
    num_reqs: list[int] = []
    num_tokens: list[int] = []
    num_preempted = 0
    empty_steps = 0
    sched_ns = 0  # schedule()'s share of step_ns
    speed_checks: list[float] = []
    t_add = time.perf_counter_ns()
    for r in reqs:
        sched.add_request(r)
    add_ns = time.perf_counter_ns() - t_add
    before = _busy_ticks()
    t_start = time.perf_counter()
    while sched.has_unfinished_requests():
        t0 = time.perf_counter_ns()
        out = sched.schedule()
        t1 = time.perf_counter_ns()
        result, scheduled = fake_output(out)
        t2 = time.perf_counter_ns()
        sched.update_from_output(out, result)
        t3 = time.perf_counter_ns()
        if not scheduled:
            empty_steps += 1
            if empty_steps > 1000:
                raise RuntimeError(f"{who} scheduled nothing 1000 times; the workload cannot finish")
            continue
        step_ns.append(t1 - t0 + t3 - t2)
        sched_ns += t1 - t0
        if len(step_ns) % SPEED_CHECK_EVERY == 0:
            speed_checks.append(calibrate(2))
        num_reqs.append(len(scheduled))
        num_tokens.append(out.total_num_scheduled_tokens)
        num_preempted += len(out.preempted_req_ids or ())
    wall_s = time.perf_counter() - t_start
    after = _busy_ticks()
    rec = summarize(step_ns, num_reqs, num_tokens, num_preempted, empty_steps, wall_s,
                    _other_cores(before, after, wall_s), add_ns, sched_ns)
    rec["calib_during_us"] = speed_checks
    return rec


def _run(sched: Any, new_request: Any, workload: dict[str, list[int]], ModelRunnerOutput: Any) -> dict[str, Any]:
    reqs = [
        new_request(i, p, m)
        for i, (p, m) in enumerate(zip(workload["prompt_lens"], workload["max_tokens"], strict=True))
    ]
    requests = sched.requests

    def fake_output(out: Any) -> tuple[Any, list[str]]:
        # One token for each request whose prompt is now complete, an empty list for a partial
        # prefill chunk, as vLLM's model runner returns.
        ids = list(out.num_scheduled_tokens)
        return ModelRunnerOutput(
            req_ids=ids,
            req_id_to_index={rid: k for k, rid in enumerate(ids)},
            sampled_token_ids=[[] if requests[rid].is_prefill_chunk else [SAMPLED_TOKEN] for rid in ids],
        ), ids

    rec = timed_loop(sched, reqs, fake_output, "vLLM")
    cfg = sched.vllm_config
    rec["effective"] = {  # what vLLM ended up using after its config post-processing
        "max_num_seqs": cfg.scheduler_config.max_num_seqs,
        "max_num_batched_tokens": cfg.scheduler_config.max_num_batched_tokens,
        "enable_chunked_prefill": cfg.scheduler_config.enable_chunked_prefill,
        "async_scheduling": cfg.scheduler_config.async_scheduling,
        "block_size": cfg.cache_config.block_size,
        "enable_prefix_caching": cfg.cache_config.enable_prefix_caching,
        "usable_blocks": sched.kv_cache_manager.block_pool.get_num_free_blocks() if not sched.requests else None,
    }
    return rec


def summarize(
    step_ns: list[int],
    num_reqs: list[int],
    num_tokens: list[int],
    num_preempted: int,
    empty_steps: int,
    wall_s: float,
    other_cores: float,
    add_ns: int,
    sched_ns: int,
) -> dict[str, Any]:
    """The per-run record both drivers print (bench_scheduler.py imports this too)."""
    total_reqs = sum(num_reqs)
    return {
        "steps": len(step_ns),
        "empty_steps": empty_steps,
        "mean_us": sum(step_ns) / len(step_ns) / 1e3,
        "schedule_mean_us": sched_ns / len(step_ns) / 1e3,  # the rest is update_from_output
        "median_us": statistics.median(step_ns) / 1e3,
        "p90_us": statistics.quantiles(step_ns, n=10)[-1] / 1e3,
        "reqs_per_step": total_reqs / len(step_ns),
        "tokens_per_step": sum(num_tokens) / len(step_ns),
        "us_per_scheduled_req": sum(step_ns) / 1e3 / total_reqs,
        "preemptions": num_preempted,
        "wall_s": wall_s,
        "other_cores": other_cores,
        "add_requests_ms": add_ns / 1e6,
    }


def info() -> dict[str, Any]:
    import torch
    import vllm

    return {"vllm": vllm.__version__, "torch": torch.__version__, "python": sys.version.split()[0]}


def main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # vLLM's log handler writes to sys.stdout: keep it off the answer channel
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            answer = info() if cmd["cmd"] == "info" else run(cmd)
        except Exception as exc:  # report and keep serving; the caller decides
            import traceback

            traceback.print_exc()
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
