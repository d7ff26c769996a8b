"""EngineArgs: every option of a real engine by vLLM name, and the one place one is built.

vLLM's pattern: a flat dataclass of user-facing arguments (`EngineArgs`) is turned into the
validated configs (`create_engine_config`), and only then is a model loaded. The command line,
the offline `LLM`, the dashboard launcher (which validates without loading a model and turns
the arguments into argv) and the HTTP server all go through here, so a flag means the same thing
everywhere. Importing this module does not import torch; `build_real_engine` does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from engine.config import CacheConfig, EngineConfig, SchedulerConfig

if TYPE_CHECKING:
    from engine.executors.kv_pool_sizing import KVPoolChoice
    from engine.executors.model_loading import LoadedModel
    from engine.executors.torch_executor import TorchExecutor

DEFAULT_MAX_MODEL_LEN = 2048  # unless the model has fewer positions or a shorter attention window
DEFAULT_CPU_MEMORY_GIB = 4.0  # the CPU budget the KV pool is sized from (a CPU has no device memory to claim)
ENGINE_CONFIG_FIELDS: tuple[str, ...] = tuple(
    f.name for cls in (SchedulerConfig, CacheConfig) for f in fields(cls)  # type: ignore[arg-type]
)


@dataclass(frozen=True)
class EngineArgs:
    """What a user may set; None means "the default, or derived from the model and device"."""

    model: str = "tiny"  # tiny, smollm2, a model directory or a .gguf file
    device: str | None = None  # cpu, cuda, cuda:N; None: cuda when present
    dtype: str | None = None  # float32, bfloat16, float16; None: fp32 on CPU, bf16 on GPUs that have it
    seed: int = 0  # sampling seed
    cpu_memory_gib: float = DEFAULT_CPU_MEMORY_GIB
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    block_size: int | None = None
    num_gpu_blocks: int | None = None
    swap_space: int | None = None
    enable_chunked_prefill: bool | None = None
    policy: str | None = None
    preemption_mode: str | None = None
    scheduler_delay_factor: float | None = None
    batching: str | None = None
    gpu_memory_utilization: float | None = None

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> EngineArgs:
        """From a namespace's or a form's values; keys that are not engine arguments are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names and v is not None})

    def config_values(self) -> dict[str, Any]:
        """The EngineConfig fields that were given, by vLLM name."""
        return {name: getattr(self, name) for name in ENGINE_CONFIG_FIELDS if getattr(self, name) is not None}

    def create_engine_config(self, max_positions: int | None = None, sliding_window: int | None = None) -> EngineConfig:
        """The validated config (ConfigError naming the fix). Without max_model_len it is fitted to
        the model's positions and attention window when those are given. num_gpu_blocks stays None
        unless given: the KV pool is sized once the model is loaded."""
        values = self.config_values()
        if "max_model_len" not in values:
            values["max_model_len"] = min([DEFAULT_MAX_MODEL_LEN, *(c for c in (max_positions, sliding_window) if c)])
        return EngineConfig.from_dict(values)

    def to_argv(self) -> list[str]:
        """The flags that reproduce these arguments on `python -m engine run` / `serve`."""
        argv = ["--model", self.model]
        if self.device is not None:
            argv += ["--device", self.device]
        if self.dtype is not None:
            argv += ["--dtype", self.dtype]
        if self.seed:
            argv += ["--seed", str(self.seed)]
        if self.cpu_memory_gib != DEFAULT_CPU_MEMORY_GIB:
            argv += ["--cpu-memory-gib", f"{self.cpu_memory_gib:g}"]
        for name, value in self.config_values().items():
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                argv.append(flag if value else "--no-" + flag[2:])
            else:
                argv += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        return argv


@dataclass
class RealEngine:
    """A loaded model, the config it runs under (KV pool sized) and its executor."""

    args: EngineArgs
    loaded: LoadedModel
    config: EngineConfig
    executor: TorchExecutor
    kv_pool: KVPoolChoice

    def describe(self) -> list[str]:
        """The lines a server or a run prints at start-up: the KV pool, the model and device."""
        facts = self.executor.describe()
        loaded = self.loaded
        return [self.kv_pool.describe(),
                f"model: {self.args.model} ({loaded.architecture}, {loaded.num_params / 1e6:.1f}M params) on "
                f"{facts['device']} {facts['dtype']}, peak {facts['peak_flops'] / 1e9:,.0f} GFLOP/s"]

    def record_config(self) -> dict[str, Any]:
        """What a recorded run stores as its config: every engine parameter plus the executor facts."""
        facts = self.executor.describe()
        return self.config.to_dict() | {"model": self.args.model, "device": facts["device"], "dtype": facts["dtype"]}


def build_real_engine(args: EngineArgs, config: EngineConfig | None = None,
                      peak_flops: float | None = None) -> RealEngine:
    """Load the model, size the KV pool (unless num_gpu_blocks is set) and build the executor.

    config: run under this config instead of one derived from args (what-if validation, sweeps);
    peak_flops: reuse a measured peak instead of measuring it (tests build many executors)."""
    from engine.executors.kv_pool_sizing import choose_kv_pool
    from engine.executors.model_loading import load_model
    from engine.executors.torch_executor import TorchExecutor

    args.create_engine_config()  # bad flags fail before the model loads
    loaded = load_model(args.model, args.device, args.dtype)
    if config is None:
        config = args.create_engine_config(loaded.max_position_embeddings, loaded.sliding_window)
    pool = choose_kv_pool(loaded, config.scheduler, config.cache, args.cpu_memory_gib)
    if config.cache.num_gpu_blocks is None:
        config = config.replace(num_gpu_blocks=pool.num_gpu_blocks)
    executor = TorchExecutor(loaded, config, seed=args.seed, peak_flops=peak_flops)
    return RealEngine(args, loaded, config, executor, pool)
