"""`python -m engine run`: the scheduler driving a real torch model on a wall clock, recorded.

Same flags as `simulate`, plus the model and where it runs. torch is imported only when this
command runs, so `python -m engine --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from engine.cli.args import (
    add_engine_args,
    add_output_args,
    add_workload_args,
    engine_config_from_args,
    positive_float,
    workload_options_from_args,
)
from engine.cli.session import RecordTarget, run_session
from engine.cli.simulate import default_run_name, print_summary
from engine.clock import WallClock
from engine.snapshot import RunInfo, StepSnapshot
from engine.workload import resolve_workload

DEFAULT_MAX_MODEL_LEN = 2048  # unless the model has fewer positions
DEFAULT_CPU_MEMORY_GIB = 4.0  # mirrors kv_pool_sizing (not imported here: it imports torch)
MAX_REJECTIONS_SHOWN = 5


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("run", help="serve a workload with a real model (torch), recorded step by step")
    g = p.add_argument_group("model and device")
    g.add_argument("--model", default="tiny",
                   help="tiny (random 11M Llama), smollm2 (SmolLM2-135M-Instruct), a model directory or a .gguf file")
    g.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present, else cpu)")
    g.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: fp32 on CPU, bf16 on GPU)")
    g.add_argument("--gpu-memory-utilization", type=positive_float, default=0.9,
                   help="share of device memory for weights + KV cache when sizing the pool (0.9)")
    g.add_argument("--cpu-memory-gib", type=positive_float, default=DEFAULT_CPU_MEMORY_GIB,
                   help=f"on CPU: the memory budget the pool is sized from ({DEFAULT_CPU_MEMORY_GIB:g})")
    add_engine_args(p)
    add_workload_args(p)
    add_output_args(p)
    # None: 2048, or fewer when the model has fewer positions (GPT-2: 1024).
    p.set_defaults(func=run, max_model_len=None)


def run(args: argparse.Namespace) -> int:
    if args.max_model_len is None:
        args.max_model_len = DEFAULT_MAX_MODEL_LEN
        model_chosen_len = True
    else:
        model_chosen_len = False
    engine_config_from_args(args)  # bad flags fail here, before a model is loaded
    workload = resolve_workload(args.workload, workload_options_from_args(args))

    from engine.executors.kv_pool_sizing import choose_kv_pool
    from engine.executors.model_loading import load_model
    from engine.executors.torch_executor import TorchExecutor

    loaded = load_model(args.model, args.device, args.dtype)
    max_pos = loaded.max_position_embeddings
    if model_chosen_len and max_pos is not None and max_pos < args.max_model_len:
        args.max_model_len = max_pos
    config = engine_config_from_args(args)
    pool = choose_kv_pool(loaded, config.scheduler, config.cache, args.cpu_memory_gib)
    print(pool.describe(), file=sys.stderr)
    if pool.num_tokens < config.scheduler.max_model_len:
        print(f"warning: the KV pool holds {pool.num_tokens:,} tokens, less than max_model_len="
              f"{config.scheduler.max_model_len}; longer prompts will be rejected", file=sys.stderr)
    config = engine_config_from_args(args, num_gpu_blocks=pool.num_gpu_blocks)
    executor = TorchExecutor(loaded, config, seed=args.seed)
    facts = executor.describe()
    print(f"model: {args.model} ({loaded.architecture}, {loaded.num_params / 1e6:.1f}M params) on {facts['device']} "
          f"{facts['dtype']}, peak {facts['peak_flops'] / 1e9:,.0f} GFLOP/s", file=sys.stderr)
    info = RunInfo(
        name=args.name or default_run_name("run", args.workload, config),
        mode="real",
        batching=config.scheduler.batching,
        config=config.to_dict() | {"model": args.model, "device": facts["device"], "dtype": facts["dtype"]},
        model=args.model,
        workload=workload.description,
    )
    rejections: dict[str, str] = {}

    def note_rejections(snapshot: StepSnapshot) -> None:
        for f in snapshot.finishes:
            if f.finish_reason == "rejected":
                rejections[f.request_id] = f.reject_reason or "no reason given"

    try:
        result = run_session(config, executor, WallClock(), workload.requests, info,
                             RecordTarget(args.db, enabled=not args.no_record), progress=True,
                             on_step=note_rejections)
    finally:
        executor.shutdown()
    for rid, reason in list(rejections.items())[:MAX_REJECTIONS_SHOWN]:
        print(f"rejected {rid}: {reason}", file=sys.stderr)
    if len(rejections) > MAX_REJECTIONS_SHOWN:
        print(f"... and {len(rejections) - MAX_REJECTIONS_SHOWN} more rejected", file=sys.stderr)
    print_summary(result.summary.to_dict() | {"run_id": result.run_id, "status": result.status},
                  result.summary.format(), args.json, result.run_id)
    return 0
