"""`python -m engine profile`: fit a step-time cost model for a model and device, no workload needed.

Times one forward pass for a grid of batch shapes (decode batches at several context lengths,
prefill chunks with and without earlier context, and mixes of both), then fits the same linear
cost model the what-if page fits to recorded runs. The JSON it writes is what
`simulate --cost-model-file` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli.args import add_db_arg, positive_float, positive_int
from engine.config import CacheConfig, ConfigError, EngineConfig, SchedulerConfig
from engine.executors.cost_model import FEATURES, LinearCostModel


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("profile", help="fit a step-time cost model for a model and device")
    p.add_argument("--model", default="tiny", help="tiny, smollm2, a model directory or a .gguf file (tiny)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16 or float16")
    p.add_argument("--max-num-seqs", type=positive_int, default=128, help="largest decode batch to time (128)")
    p.add_argument("--max-num-batched-tokens", type=positive_int, default=2048, help="largest step to time (2048)")
    p.add_argument("--block-size", type=positive_int, default=16)
    p.add_argument("--repeats", type=positive_int, default=5, help="timed passes per shape; the median counts (5)")
    p.add_argument("--budget-s", type=positive_float, default=600.0, help="stop timing new shapes after this long")
    p.add_argument("--output", "-o", default=None, help="write the fitted model here as JSON")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--seed", type=int, default=0)
    add_db_arg(p)
    p.add_argument("--no-store", action="store_true", help="do not store the profile in the database")
    vllm = p.add_argument_group("calibrate from a real vLLM instead of timing this machine")
    vllm.add_argument("--from-vllm-log", metavar="FILE", default=None,
                      help="fit the cost model to a vLLM log written with --enable-logging-iteration-details")
    vllm.add_argument("--kv-cache-tokens", type=positive_int, default=None,
                      help="with --from-vllm-log: the KV cache size in tokens, if the log does not state it")
    vllm.add_argument("--device-profile", metavar="JSON", default=None,
                      help="with --from-vllm-log: a profile of the same GPU to take attention costs from")
    p.set_defaults(func=run)


def run_from_vllm_log(args: argparse.Namespace) -> int:
    from engine.executors.cost_model import cost_model_from_dict
    from engine.executors.vllm_log import fit_from_vllm_log

    profile = None
    if args.device_profile:
        try:
            loaded = cost_model_from_dict(json.loads(Path(args.device_profile).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"{args.device_profile} is not a cost model written by profile -o ({exc})") from None
        if not isinstance(loaded, LinearCostModel):
            raise ConfigError(f"{args.device_profile} holds no coefficients to take attention costs from")
        profile = loaded
    model = fit_from_vllm_log(Path(args.from_vllm_log), args.kv_cache_tokens, profile)
    if args.output:
        Path(args.output).write_text(json.dumps(model.to_dict(), indent=2) + "\n")
    if args.json:
        json.dump(model.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print_model(model)
    for note in model.fit.get("approximated", []):
        print(f"  approximated: {note}")
    if model.fit.get("attention_from"):
        print(f"  attention costs from the device profile {model.fit['attention_from']}")
    if args.output:
        print(f"wrote {args.output} (use it with: python -m engine simulate --cost-model-file {args.output})")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.from_vllm_log:
        return run_from_vllm_log(args)

    import numpy as np

    from engine.executors.cost_fit import fit_cost_model
    from engine.executors.model_loading import load_model
    from engine.executors.shape_profile import SWAP_POOL_BLOCKS, default_grid, time_shapes
    from engine.executors.torch_executor import TorchExecutor

    loaded = load_model(args.model, args.device, args.dtype)
    shapes = default_grid(args.max_num_seqs, args.max_num_batched_tokens)
    need = max(s.decodes * -(-(s.decode_context + 1) // args.block_size)
               + s.prefills * -(-(s.prefill_context + s.chunk) // args.block_size) + s.swap_blocks for s in shapes)
    max_len = max(2048, max(s.prefill_context + s.chunk for s in shapes), max(s.decode_context + 1 for s in shapes))
    config = EngineConfig(SchedulerConfig(max_num_seqs=args.max_num_seqs, enable_chunked_prefill=True,
                                          max_num_batched_tokens=max(args.max_num_batched_tokens, args.max_num_seqs),
                                          max_model_len=min(max_len, loaded.max_position_embeddings or max_len)),
                          CacheConfig(block_size=args.block_size, num_gpu_blocks=need + 1, swap_space=SWAP_POOL_BLOCKS))
    executor = TorchExecutor(loaded, config, seed=args.seed)
    facts = executor.describe()
    progress = None if args.json else (lambda label, seconds: print(f"{label:<42} {seconds * 1e3:8.2f} ms",
                                                                    file=sys.stderr))
    try:
        rows, durations = time_shapes(executor, shapes, args.block_size, need + 1, loaded.vocab_size,
                                      repeats=args.repeats, budget_s=args.budget_s, seed=args.seed, progress=progress)
    finally:
        executor.shutdown()
    model = fit_cost_model(np.array(rows), np.array(durations), name=f"profiled {args.model}",
                           provenance={"source": "profile", "model": args.model, "device": facts["device"],
                                       "dtype": facts["dtype"], "torch_threads": facts["torch_threads"],
                                       "shapes": len(rows)})
    profile_id = None
    if not args.no_store:
        from storage.database import open_for_write
        from storage.device_profiles import save_profile

        profile_id = save_profile(open_for_write(args.db), args.model, facts["device"], facts["dtype"],
                                  int(facts["torch_threads"]), model.to_dict())
    if args.output:
        Path(args.output).write_text(json.dumps(model.to_dict(), indent=2) + "\n")
    if args.json:
        json.dump(model.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_model(model)
        if profile_id is not None:
            print(f"stored as device profile #{profile_id}: what-ifs of {args.model} runs on this device, dtype and "
                  "thread count take the costs their runs never exercised (swaps, pad rows) from it")
        if args.output:
            print(f"wrote {args.output} (use it with: python -m engine simulate --cost-model-file {args.output})")
    return 0


def print_model(model: LinearCostModel) -> None:
    fit = model.fit
    print(f"{model.name}: {fit['num_steps']} steps, R² {fit['r2']:.3f}, median error "
          f"{fit['median_abs_pct_error']:.1f}%, p90 {fit['p90_abs_pct_error']:.1f}% (in sample)")
    held = fit.get("holdout") or {}
    if held.get("folds"):
        print(f"  held out ({held['folds']} contiguous blocks): R² {held['r2']:.3f}, median error "
              f"{held['median_abs_pct_error']:.1f}%, p90 {held['p90_abs_pct_error']:.1f}%")
    for name in FEATURES:
        print(f"  {name:<16} {model.coefficients[name]:.3e} s")
    if model.row_factors:
        print("  row factors      " + ", ".join(f"{rows}: {f:.2f}" for rows, f in sorted(model.row_factors.items())))
