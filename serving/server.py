"""A running server: the online engine loop on its thread, uvicorn on another, recording into a run.

Both the command line and the tests build servers here. The listening socket is bound first (a busy
port fails before a model loads) and handed to uvicorn; uvicorn runs off the main thread so it
installs no signal handlers: the command line decides what SIGINT/SIGTERM do (cli/serve.py).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from sqlalchemy import Engine as SqlEngine

from engine.errors import UserError
from engine.online import OnlineEngine, Rotation
from serving.api_server import build_app
from serving.backend import Backend
from serving.prometheus_metrics import ServingMetrics
from serving.recording import ServedRecording
from serving.state import ServingState

SHUTDOWN_GRACE_S = 5.0  # for connections still open once the engine has stopped


def bind_socket(host: str, port: int) -> socket.socket:
    try:
        return socket.create_server((host, port))
    except OverflowError:
        raise UserError(f"cannot listen on {host}:{port}: a port is from 0 to 65535") from None
    except OSError as exc:
        # create_server adds "(while attempting to bind on address ...)": the line names it already.
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise UserError(f"cannot listen on {host}:{port}: {why}") from None


@dataclass(frozen=True)
class ServerOptions:
    served_model_name: str | None = None
    api_key: str | None = None
    max_waiting: int | None = None
    db: str | SqlEngine | None = None  # a target, or a writer already open (then the server disposes it)
    record: bool = True
    rotation: Rotation | None = None
    name: str | None = None  # the recorded run's name


class ServingServer:
    def __init__(self, backend: Backend, sock: socket.socket, options: ServerOptions | None = None) -> None:
        self.backend = backend
        self.options = options or ServerOptions()
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        self.served_model_name = self.options.served_model_name or backend.model
        self.recording: ServedRecording | None = None
        self.online: OnlineEngine | None = None
        self.state: ServingState | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def run_description(self) -> dict[str, Any]:
        """The recorded run's name, mode, batching, config, model and workload line."""
        b, config = self.backend, self.backend.config
        sched = f"{config.scheduler.batching}, {config.scheduler.max_num_seqs} seqs"
        name = self.options.name or f"serve {b.model}{' (simulated)' if b.mode == 'simulated' else ''} ({sched})"
        workload = f"served at {self.url} as `{self.served_model_name}`"
        rotation = self.options.rotation
        if rotation is not None:
            every = f"{rotation.every_steps} steps" if rotation.every_steps else f"{rotation.every_seconds:g} s"
            workload += f", a new run every {every}"
        return {"name": name, "mode": b.mode, "batching": config.scheduler.batching, "config": b.record_config,
                "model": b.model, "workload": workload}

    def start(self, engine_thread: bool = True) -> None:
        """Open the run and start listening. engine_thread=False: the engine loop is not started;
        the caller runs it on its own thread with serve_engine_here() (the command line does, on
        the thread that loaded the model; see OnlineEngine.open_here)."""
        b, opts = self.backend, self.options
        if opts.record:
            self.recording = ServedRecording(opts.db, self.run_description(), self.url, b.executor.describe())
        metrics = ServingMetrics(self.served_model_name)
        self.online = OnlineEngine(b.config, b.executor, self.recording, opts.rotation, metrics.observe)
        if engine_thread:
            self.online.start()
        else:
            self.online.open_here()
        self.state = ServingState(self.online, b.codec, self.served_model_name, b.config.scheduler.max_model_len,
                                  metrics, b.mode, b.model, opts.api_key, opts.max_waiting)
        config = uvicorn.Config(build_app(self.state), log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S))
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [self._sock]},
                                        name="batchscope-http", daemon=True)
        self._thread.start()
        while not self._uvicorn.started:
            if not self._thread.is_alive():
                raise RuntimeError("the HTTP server stopped during start-up (see the log above)")
            time.sleep(0.01)

    @property
    def run_id(self) -> int | None:
        return self.online.run_id if self.online is not None else None

    def drain(self, timeout_s: float) -> None:
        if self.online is not None:
            self.online.drain(timeout_s)

    def abort_all(self) -> None:
        if self.online is not None:
            self.online.abort_all()

    def serve_engine_here(self) -> None:
        """Run the engine loop on the calling thread until it ends (after start(engine_thread=False))."""
        assert self.online is not None, "start() first"
        self.online.serve_here()

    def wait_engine(self, timeout: float | None = None) -> bool:
        return self.online is None or self.online.join(timeout)

    def close(self) -> None:
        """Abort what is left, close the run, stop listening (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        if self.online is not None:
            self.online.close()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(SHUTDOWN_GRACE_S + 5)
        if self.recording is not None:
            self.recording.dispose()
        self._sock.close()

    def __enter__(self) -> ServingServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
