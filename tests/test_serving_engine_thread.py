"""Where the online loop steps: on the thread that loaded the model when asked (open_here /
serve_here), which is how `serve` runs it: torch keeps one OpenMP team per calling thread, and
stepping on a second thread made real decode steps 20-25% slower (bench/results_serving.md)."""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path

import httpx2
import pytest

from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.executors.cost_model import LinearCostModel
from engine.online import OnlineEngine, OnlineRequest, RequestOutput
from engine.outputs import ModelRunnerOutput, SchedulerOutput
from engine.sampling_params import SamplingParams
from serving.simulated_serving import SleepingExecutor

CONFIG = EngineConfig(SchedulerConfig(max_model_len=256), CacheConfig(num_gpu_blocks=64))


class ThreadNotingExecutor(SleepingExecutor):
    """Notes the name of every thread that runs a step."""

    def __init__(self) -> None:
        super().__init__(LinearCostModel(coefficients={"intercept": 0.001}))
        self.threads: set[str] = set()

    def execute_model(self, out: SchedulerOutput) -> ModelRunnerOutput:
        self.threads.add(threading.current_thread().name)
        return super().execute_model(out)


class Sink:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.tokens = 0

    def admitted(self, run_id: int | None, reject_reason: str | None) -> None:
        assert reject_reason is None

    def output(self, out: RequestOutput) -> bool:
        self.tokens = out.num_output_tokens
        if out.finish_reason is not None:
            self.done.set()
        return False


def test_serve_here_steps_on_the_calling_thread_only() -> None:
    executor = ThreadNotingExecutor()
    online = OnlineEngine(CONFIG, executor)

    def loader() -> None:  # stands for the thread that loaded the model
        online.open_here()
        online.serve_here()

    thread = threading.Thread(target=loader, name="loader")
    thread.start()
    sink = Sink()
    online.submit(OnlineRequest("r", list(range(100, 110)), SamplingParams(max_tokens=5)), sink)
    assert sink.done.wait(30)
    online.drain(5)
    thread.join(30)
    assert not thread.is_alive() and online.done and online.status == "finished"
    assert sink.tokens == 5
    assert executor.threads == {"loader"}


def test_the_serve_command_steps_on_its_own_thread_and_a_signal_still_drains(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """run_serve on this (the main) thread: every step runs here, and SIGTERM, whose handler runs on
    this same thread, mid-loop, drains through a thread of its own instead of deadlocking."""
    import cli.serve
    import serving.backend
    import serving.server

    executor = ThreadNotingExecutor()
    real = serving.backend.simulated_backend

    def backend_with_noting_executor(config: EngineConfig, cost_model: object, model: str) -> serving.backend.Backend:
        b = real(config, cost_model, model)  # type: ignore[arg-type]
        b.executor = executor
        return b

    monkeypatch.setattr(serving.backend, "simulated_backend", backend_with_noting_executor)
    listening: list[str] = []
    done: list[int] = []

    def client() -> None:
        url = None
        while url is None and not done:
            url = next(iter(listening), None)
            time.sleep(0.05)
        r = httpx2.post(f"{url}/v1/completions", json={"prompt": [1, 2, 3], "max_tokens": 4}, timeout=30)
        done.append(r.status_code)
        os.kill(os.getpid(), signal.SIGTERM)

    start = serving.server.ServingServer.start

    def start_and_tell(self: serving.server.ServingServer, engine_thread: bool = True) -> None:
        start(self, engine_thread)
        listening.append(self.url)

    monkeypatch.setattr(serving.server.ServingServer, "start", start_and_tell)
    threading.Thread(target=client, daemon=True).start()
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli.serve.add_serve_parser(sub)
    args = parser.parse_args(["serve", "--simulate", "--port", "0", "--no-record", "--drain-timeout", "10"])
    assert args.func(args) == 0
    assert done == [200]
    assert executor.threads == {threading.current_thread().name}


def test_a_start_that_fails_after_the_run_opened_still_ends_it_at_once(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine loop is to run on the caller's thread, so nothing runs it yet when the HTTP server
    dies during start-up: close() must end the run there and then, not wait for a loop that never
    comes, and the run must not be left 'running'."""
    import uvicorn

    from serving.server import ServerOptions, ServingServer, bind_socket
    from tests.serving_helpers import recorded_run, simulated

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)  # stops at once, never started
    server = ServingServer(simulated(), bind_socket("127.0.0.1", 0), ServerOptions(db=str(tmp_path / "s.db")))
    with pytest.raises(RuntimeError, match="stopped during start-up"):
        server.start(engine_thread=False)
    run_id = server.run_id
    assert run_id is not None
    started = time.perf_counter()
    server.close()
    assert time.perf_counter() - started < 5
    assert server.online is not None and server.online.done
    assert recorded_run(tmp_path / "s.db", run_id)["status"] in ("finished", "aborted")
    server.close()  # a second close does nothing
