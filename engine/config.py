"""Engine configuration with vLLM's names, validated with messages that say what to change."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from engine.errors import UserError

Policy = Literal["fcfs", "priority", "sjf", "sjf-oracle"]
PreemptionMode = Literal["recompute", "swap"]
Batching = Literal["continuous", "static"]

POLICIES: tuple[str, ...] = ("fcfs", "priority", "sjf", "sjf-oracle")  # sjf-oracle knows true output lengths
PREEMPTION_MODES: tuple[str, ...] = ("recompute", "swap")
BATCHING_MODES: tuple[str, ...] = ("continuous", "static")


class ConfigError(UserError, ValueError):
    """A configuration that cannot work; the message names the parameter and the fix."""


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 64  # most sequences in one step
    max_num_batched_tokens: int | None = None  # token budget of one step; None: derived
    max_model_len: int = 2048  # longest prompt + output a request may reach, in tokens
    enable_chunked_prefill: bool = False  # split prompts to fit the token budget
    policy: Policy = "fcfs"  # order of the waiting queue and choice of preemption victim
    preemption_mode: PreemptionMode = "recompute"  # what happens to a victim's KV blocks
    scheduler_delay_factor: float = 0.0  # hold new prompts for factor x last prompt latency
    batching: Batching = "continuous"  # static: a new batch only when the last one is done

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens is None:
            # vLLM's default: a step can always hold a whole prompt unless chunking is on.
            derived = 2048 if self.enable_chunked_prefill else max(self.max_model_len, 2048)
            object.__setattr__(self, "max_num_batched_tokens", derived)
        _check_positive("max_num_seqs", self.max_num_seqs)
        _check_positive("max_num_batched_tokens", self.max_num_batched_tokens)
        _check_positive("max_model_len", self.max_model_len)
        _check_choice("policy", self.policy, POLICIES)
        _check_choice("preemption_mode", self.preemption_mode, PREEMPTION_MODES)
        _check_choice("batching", self.batching, BATCHING_MODES)
        if not isinstance(self.enable_chunked_prefill, bool):
            raise ConfigError(f"enable_chunked_prefill must be true or false, got {self.enable_chunked_prefill!r}")
        if not _is_number(self.scheduler_delay_factor) or self.scheduler_delay_factor < 0:
            raise ConfigError(
                f"scheduler_delay_factor must be a number >= 0, got {self.scheduler_delay_factor!r}"
            )
        if self.batching == "static" and self.scheduler_delay_factor:
            # A static batch forms only when the last one is done; V0's delay (which has no static
            # mode) holds prompts while others run, so it would be silently ignored here.
            raise ConfigError(
                f"scheduler_delay_factor ({self.scheduler_delay_factor:g}) applies to continuous batching only: "
                "a static batch is formed when the previous one has finished. Set it to 0 or use "
                "--batching continuous."
            )
        if self.token_budget < self.max_num_seqs:
            raise ConfigError(
                f"max_num_batched_tokens ({self.token_budget}) must be >= max_num_seqs "
                f"({self.max_num_seqs}): every running sequence needs a token each step. "
                "Raise max_num_batched_tokens or lower max_num_seqs."
            )
        if not self.enable_chunked_prefill and self.token_budget < self.max_model_len:
            raise ConfigError(
                f"max_num_batched_tokens ({self.token_budget}) is smaller than max_model_len "
                f"({self.max_model_len}) without chunked prefill, so long prompts could never be "
                "scheduled. Raise max_num_batched_tokens, lower max_model_len, or pass "
                "--enable-chunked-prefill."
            )

    @property
    def token_budget(self) -> int:
        """max_num_batched_tokens after defaults were applied."""
        assert self.max_num_batched_tokens is not None
        return self.max_num_batched_tokens


@dataclass(frozen=True)
class CacheConfig:
    block_size: int = 16  # token slots per KV block
    num_gpu_blocks: int | None = None  # KV pool size; None: derived by the executor
    swap_space: int = 0  # CPU swap pool, in blocks (vLLM counts GiB; we count blocks)
    gpu_memory_utilization: float = 0.9  # share of device memory for weights + KV when deriving

    def __post_init__(self) -> None:
        _check_positive("block_size", self.block_size)
        if self.num_gpu_blocks is not None:
            _check_positive("num_gpu_blocks", self.num_gpu_blocks)
        if not isinstance(self.swap_space, int) or isinstance(self.swap_space, bool) or self.swap_space < 0:
            raise ConfigError(f"swap_space must be a whole number of CPU blocks >= 0, got {self.swap_space!r}")
        if not _is_number(self.gpu_memory_utilization) or not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization!r}"
            )

    @property
    def pool_blocks(self) -> int:
        """num_gpu_blocks once known; the scheduler needs a concrete pool."""
        if self.num_gpu_blocks is None:
            raise ConfigError("num_gpu_blocks is not known yet: pass --num-gpu-blocks or let the executor derive it")
        return self.num_gpu_blocks


@dataclass(frozen=True)
class EngineConfig:
    """Everything that shapes a run's schedule; stored with every recorded run."""

    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)

    def __post_init__(self) -> None:
        sched, cache = self.scheduler, self.cache
        if sched.preemption_mode == "swap" and cache.swap_space == 0:
            raise ConfigError("preemption_mode=swap needs a CPU swap pool: pass --swap-space N (blocks) > 0")

    def to_dict(self) -> dict[str, Any]:
        """Flat dict of every parameter by its vLLM name (JSON-ready)."""
        return {**asdict(self.scheduler), **asdict(self.cache)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EngineConfig:
        """Build from a flat dict; unknown keys are an error naming them."""
        sched_keys = set(SchedulerConfig.__dataclass_fields__)
        cache_keys = set(CacheConfig.__dataclass_fields__)
        unknown = sorted(set(values) - sched_keys - cache_keys)
        if unknown:
            raise ConfigError(f"unknown parameter(s): {', '.join(unknown)}")
        return cls(
            scheduler=SchedulerConfig(**{k: v for k, v in values.items() if k in sched_keys}),
            cache=CacheConfig(**{k: v for k, v in values.items() if k in cache_keys}),
        )

    @classmethod
    def from_record(cls, values: dict[str, Any]) -> EngineConfig:
        """Build from what a run recorded: its config beside executor facts, which are ignored."""
        known = set(SchedulerConfig.__dataclass_fields__) | set(CacheConfig.__dataclass_fields__)
        kept = {k: v for k, v in values.items() if k in known}
        if kept.get("batching") == "static":
            kept["scheduler_delay_factor"] = 0.0  # runs recorded before static refused it ran without it
        return cls.from_dict(kept)

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with some flat parameters changed (what-if and sweeps use this)."""
        values = self.to_dict()
        if "enable_chunked_prefill" in changes and "max_num_batched_tokens" not in changes:
            values["max_num_batched_tokens"] = None  # let the default follow chunking
        values.update(changes)
        return EngineConfig.from_dict(values)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
