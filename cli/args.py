"""Command-line options shared by the commands (simulate, run, serve, sweep, profile, tune): vLLM's flag names."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from engine.config import BATCHING_MODES, POLICIES, PREEMPTION_MODES, ConfigError, EngineConfig
from engine.engine_args import DEFAULT_CPU_MEMORY_GIB
from engine.executors.cost_model import CostModel, cost_model_from_dict, named_cost_model
from engine.workload import NAMED_WORKLOADS, WorkloadOptions

DEFAULT_SIM_GPU_BLOCKS = 2048  # a simulated pool when no model decides it


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag gets one line naming the problem instead of a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def int_range(text: str) -> tuple[int, int]:
    """MIN:MAX (or one number N meaning N:N)."""
    parts = text.split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX whole numbers, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or values[0] < 1 or values[1] < values[0]:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX with 1 <= MIN <= MAX, got {text!r}")
    return values[0], values[1]


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """Engine flags default to None so a command can tell what was given (what-if changes);
    engine_config_from_args fills the rest from SchedulerConfig / CacheConfig defaults."""
    g = parser.add_argument_group("scheduler and KV cache (vLLM's names)")
    g.add_argument("--max-num-seqs", type=positive_int, help="most sequences in one step (64)")
    g.add_argument("--max-num-batched-tokens", type=positive_int,
                   help="token budget of one step (default: 2048 with chunked prefill, else max(max_model_len, 2048))")
    g.add_argument("--max-model-len", type=positive_int, help="longest prompt + output (2048)")
    g.add_argument("--block-size", type=positive_int, help="tokens per KV block (16)")
    g.add_argument("--num-gpu-blocks", type=positive_int,
                   help=f"KV pool size in blocks (simulate: {DEFAULT_SIM_GPU_BLOCKS}; run: from memory)")
    g.add_argument("--swap-space", type=non_negative_int, help="CPU swap pool in blocks (vLLM counts GiB; 0: none)")
    g.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction,
                   help="split prompts to fit the token budget (off)")
    g.add_argument("--policy", choices=POLICIES, help="queue order and preemption victim (fcfs)")
    g.add_argument("--preemption-mode", choices=PREEMPTION_MODES,
                   help="recompute: free the victim's KV; swap: move it to the CPU pool (recompute)")
    g.add_argument("--scheduler-delay-factor", type=non_negative_float,
                   help="hold new prompts up to factor x last prompt latency to batch them (0)")
    g.add_argument("--batching", choices=BATCHING_MODES,
                   help="static: a new batch only when the previous one has fully finished (continuous)")


def add_workload_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("workload")
    g.add_argument("--workload", default=None,
                   help=f"{', '.join(NAMED_WORKLOADS)}, or a .jsonl / Azure-format .csv file (default: mixed)")
    g.add_argument("--num-prompts", type=positive_int, default=64,
                   help="requests to generate (64); bench serve sends this many of any workload")
    g.add_argument("--prompt-lens", type=int_range, default=(16, 128), help="prompt lengths MIN:MAX (16:128)")
    g.add_argument("--output-lens", type=int_range, default=(10, 100),
                   help="output lengths MIN:MAX for the uniform workload (10:100)")
    g.add_argument("--request-rate", type=positive_float, default=math.inf,
                   help="Poisson arrivals per second (inf: all at t=0)")
    g.add_argument("--priority-levels", type=positive_int, default=1,
                   help="random priorities 0..N-1 for the priority policy (1)")
    g.add_argument("--seed", type=int, default=0, help="random seed for workloads and sampling (0)")
    g.add_argument("--length-scale", type=positive_float, default=1.0, help="trace CSVs: multiply lengths (1.0)")
    g.add_argument("--time-scale", type=non_negative_float, default=1.0,
                   help="trace CSVs: multiply arrival times (0.1: ten times faster) (1.0)")
    g.add_argument("--max-requests", type=positive_int, default=None, help="trace CSVs: first N requests only")
    g.add_argument("--max-concurrency", type=positive_int, default=None,
                   help="at most N requests in flight: the next is sent when one finishes (a closed-loop client, "
                        "as vllm bench serve --max-concurrency); default: no cap")
    g.add_argument("--max-tokens-cap", type=positive_int, default=None,
                   help="generated and trace workloads: every request declares max_tokens N and stops at its own "
                        "length, so sjf does not know lengths (default: declared max_tokens = length)")


MODEL_HELP = "tiny (random 11M Llama), smollm2 (SmolLM2-135M-Instruct), a model directory or a .gguf file"


def add_model_args(parser: argparse.ArgumentParser, model_default: str | None, model_help: str = MODEL_HELP
                   ) -> argparse._ArgumentGroup:
    """--model, --device, --dtype and the pool's memory budget (run and serve); the group, for more."""
    g = parser.add_argument_group("model and device")
    g.add_argument("--model", default=model_default, help=model_help)
    g.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present, else cpu)")
    g.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: fp32 on CPU, bf16 on GPU)")
    g.add_argument("--gpu-memory-utilization", type=positive_float, default=None,
                   help="share of device memory for weights + KV cache when sizing the pool (0.9)")
    g.add_argument("--cpu-memory-gib", type=positive_float, default=DEFAULT_CPU_MEMORY_GIB,
                   help=f"on CPU: the memory budget the pool is sized from ({DEFAULT_CPU_MEMORY_GIB:g})")
    return g


def add_db_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--db", default=None,
                        help="SQLite file or SQLAlchemy URL (default: $BATCHSCOPE_DB or batchscope.db)")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("output and recording")
    g.add_argument("--json", action="store_true", help="print the summary as JSON")
    g.add_argument("--name", default=None, help="a name for the recorded run")
    add_db_arg(g)
    g.add_argument("--no-record", action="store_true", help="do not record the run")


def engine_config_from_args(
    args: argparse.Namespace, num_gpu_blocks: int | None = None, base: EngineConfig | None = None
) -> EngineConfig:
    """EngineConfig from the flags that were given, over `base` (or the defaults); an explicit
    --num-gpu-blocks beats num_gpu_blocks, which beats base. Raises ConfigError with a fix."""
    given = given_engine_flags(args)
    if num_gpu_blocks is not None and "num_gpu_blocks" not in given:
        given["num_gpu_blocks"] = num_gpu_blocks
    if base is not None:
        return base.replace(**given)
    return EngineConfig.from_dict(given)


def workload_options_from_args(args: argparse.Namespace) -> WorkloadOptions:
    return WorkloadOptions(
        num_requests=args.num_prompts,
        prompt_lens=args.prompt_lens,
        output_lens=args.output_lens,
        request_rate=args.request_rate,
        priority_levels=args.priority_levels,
        seed=args.seed,
        length_scale=args.length_scale,
        time_scale=args.time_scale,
        max_requests=args.max_requests,
        max_tokens_cap=getattr(args, "max_tokens_cap", None),
    )


ENGINE_FLAGS = ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "block_size", "num_gpu_blocks",
                "swap_space", "enable_chunked_prefill", "policy", "preemption_mode", "scheduler_delay_factor",
                "batching", "gpu_memory_utilization")


def given_engine_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The engine flags given on the command line, by vLLM name."""
    return {name: getattr(args, name) for name in ENGINE_FLAGS if getattr(args, name, None) is not None}


def chosen_cost_model(args: argparse.Namespace) -> CostModel | None:
    """The cost model the flags ask for (--cost-model-file, then --cost-model), or None."""
    path = getattr(args, "cost_model_file", None)
    if path:
        try:
            data = json.loads(Path(path).read_text())
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got a {type(data).__name__}")
            return cost_model_from_dict(data)
        except OSError as exc:
            raise ConfigError(f"cannot read cost model file {path}: {exc.strerror or exc}") from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path} is not a cost model written by `python -m engine profile` ({exc})") from None
    return named_cost_model(args.cost_model) if args.cost_model else None
