"""Helpers for the serving tests: servers on free loopback ports, the tiny model loaded once."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_args import EngineArgs
from engine.executors.cost_model import LinearCostModel
from serving.backend import Backend, real_backend, simulated_backend
from serving.server import ServerOptions, ServingServer, bind_socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEST_PEAK_FLOPS = 1e11  # skips the start-up matmul timing
TINY_MAX_MODEL_LEN = 256


def tiny_backend() -> Backend:
    """The tiny model, loaded afresh: a server that stops frees its executor's KV pool, so each
    server gets its own."""
    args = EngineArgs(model="tiny", max_model_len=TINY_MAX_MODEL_LEN, num_gpu_blocks=256, max_num_seqs=8)
    return real_backend(args, peak_flops=TEST_PEAK_FLOPS)


def simulated(step_s: float = 0.002, num_gpu_blocks: int = 256, **sched: Any) -> Backend:
    """A simulated backend whose every step takes step_s seconds."""
    sched.setdefault("max_model_len", 512)
    config = EngineConfig(SchedulerConfig(**sched), CacheConfig(num_gpu_blocks=num_gpu_blocks))
    return simulated_backend(config, LinearCostModel(coefficients={"intercept": step_s}, name="test"), "sim")


@contextmanager
def serve(backend: Backend, db: Path | str, **options: Any) -> Iterator[ServingServer]:
    server = ServingServer(backend, bind_socket("127.0.0.1", 0), ServerOptions(db=str(db), **options))
    server.start()
    try:
        yield server
    finally:
        server.close()


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "the condition") -> Any:
    """Poll until condition() is truthy; fail the test (not a timing assertion) if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def recorded_requests(db: Path | str, run_id: int) -> pd.DataFrame:
    from storage.database import open_for_read
    from storage.queries import run_requests

    engine = open_for_read(str(db))
    try:
        return run_requests(engine, run_id)
    finally:
        engine.dispose()


def recorded_run(db: Path | str, run_id: int) -> dict[str, Any]:
    from storage.database import open_for_read
    from storage.queries import get_run

    engine = open_for_read(str(db))
    try:
        run = get_run(engine, run_id)
        assert run is not None
        return run
    finally:
        engine.dispose()


def recorded_steps(db: Path | str, run_id: int) -> pd.DataFrame:
    from sqlalchemy import text

    from storage.database import open_for_read

    engine = open_for_read(str(db))
    try:
        return pd.read_sql(text("SELECT * FROM steps WHERE run_id = :r ORDER BY step"), engine, params={"r": run_id})
    finally:
        engine.dispose()


def run_source(run: dict[str, Any]) -> str | None:
    return run.get("source")


def previous_run(run: dict[str, Any]) -> int | None:
    return run.get("previous_run_id")
