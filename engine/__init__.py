"""Batchscope's serving engine: a vLLM-style continuous-batching scheduler you can watch.

Importing `engine` never imports torch; `engine.LLM` loads it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.block_manager import BlockManager
from engine.config import CacheConfig, ConfigError, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.outputs import ModelRunnerOutput, ScheduledRequest, SchedulerOutput
from engine.request import Request, RequestStatus
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler

if TYPE_CHECKING:
    from engine.llm import LLM

__all__ = [
    "LLM",
    "BlockManager",
    "CacheConfig",
    "ConfigError",
    "Engine",
    "EngineConfig",
    "ModelRunnerOutput",
    "Request",
    "RequestStatus",
    "SamplingParams",
    "ScheduledRequest",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
]


def __getattr__(name: str) -> Any:
    if name == "LLM":  # torch-backed: import only when asked for
        from engine.llm import LLM

        return LLM
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
