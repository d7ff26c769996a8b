"""What a server serves with: a real model (built by engine.engine_args.build_real_engine, the one way
to build one) or a cost model on the wall clock (serve --simulate)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.config import EngineConfig
from engine.engine_args import EngineArgs, build_real_engine
from engine.executors.base import Executor
from engine.executors.cost_model import CostModel
from serving.prompts import PromptCodec, SyntheticCodec, TokenizerCodec
from serving.simulated_serving import SleepingExecutor


@dataclass
class Backend:
    config: EngineConfig
    executor: Executor
    codec: PromptCodec
    mode: str  # real | simulated
    model: str
    record_config: dict[str, Any]  # the recorded run's config: engine parameters plus executor facts
    description: list[str] = field(default_factory=list)  # lines to print at start-up


def real_backend(args: EngineArgs, peak_flops: float | None = None) -> Backend:
    """Load the model and size the KV pool; peak_flops skips the start-up matmul timing (tests)."""
    real = build_real_engine(args, peak_flops=peak_flops)
    lines = real.describe()
    warning = real.kv_pool.warning()
    if warning:
        lines.append(f"warning: {warning}")
    codec = TokenizerCodec(real.loaded.tokenizer, real.executor.vocab_size)
    return Backend(real.config, real.executor, codec, "real", args.model, real.record_config(), lines)


def simulated_backend(config: EngineConfig, cost_model: CostModel, model: str) -> Backend:
    executor = SleepingExecutor(cost_model)
    lines = [f"simulated: {cost_model.name} cost model, {config.cache.num_gpu_blocks} KV blocks of "
             f"{config.cache.block_size} tokens; tokens are placeholders"]
    return Backend(config, executor, SyntheticCodec(executor.inner), "simulated", model,
                   config.to_dict() | {"model": model, "executor": "simulated"}, lines)
