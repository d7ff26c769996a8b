"""Where a search's points run: in this process, in a local process pool (`--jobs N`), or on a Ray
cluster (`--ray ADDRESS` or `auto`).

Every backend runs the same tune.evaluate.evaluate_chunk on chunks of points and hands each result
to `on_result` as it arrives; the search sorts them by point, so results are identical whatever
ran them and in whichever order they finished (a point's simulation reads nothing but its
context and its configuration). The context (the workload's requests, the cost model, the SLOs)
travels once per worker: as the pool's initializer argument, or once into Ray's object store.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import socket
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from engine.errors import UserError
from tune.evaluate import PointResult, SearchContext, evaluate_chunk
from tune.space import Point

OnResult = Callable[[PointResult], None]
ROOT = Path(__file__).absolute().parents[1]  # the checkout, for Ray workers' import path
CONNECT_TIMEOUT_S = 3.0
CHUNKS_PER_WORKER = 8  # small enough to balance slow and fast points, large enough that IPC is noise


class BackendError(UserError):
    """A backend that cannot start (Ray missing, no cluster at the address)."""


class Backend(Protocol):
    """Used as a context manager: entering starts what it needs (a pool, a cluster connection), so a
    backend that cannot start fails before anything is recorded."""

    @property
    def workers(self) -> int:
        """How many points it runs at once (sizes the rounds of a pruned search)."""
        ...

    def describe(self) -> str: ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc: object) -> None: ...

    def run(self, context: SearchContext, points: Sequence[Point], on_result: OnResult,
            prune: bool = True, beat: float | None = None) -> None:
        """Evaluate every point, calling on_result for each as it completes (in any order)."""
        ...


def chunks(points: Sequence[Point], workers: int) -> list[list[Point]]:
    """Interleaved chunks (point i goes to chunk i mod k): neighbouring grid points cost alike (same
    max_num_seqs, say), so interleaving spreads slow regions over every chunk."""
    k = max(1, min(len(points), workers * CHUNKS_PER_WORKER))
    return [list(points[i::k]) for i in range(k) if points[i::k]]


class Sequential:
    workers = 1

    def describe(self) -> str:
        return "this process"

    def __enter__(self) -> Sequential:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run(self, context: SearchContext, points: Sequence[Point], on_result: OnResult,
            prune: bool = True, beat: float | None = None) -> None:
        for point in points:
            for result in evaluate_chunk(context, [point], prune, beat):
                on_result(result)


_worker_context: SearchContext | None = None


def _init_worker(context: SearchContext) -> None:
    global _worker_context
    _worker_context = context


def _pool_chunk(points: list[Point], prune: bool, beat: float | None) -> list[PointResult]:
    assert _worker_context is not None, "the pool initializer sets the context"
    return evaluate_chunk(_worker_context, points, prune, beat)


@contextmanager
def _workers_skip_main() -> Iterator[None]:
    """While pool workers start, `__main__` is a bare module, so a spawned child does not re-run the
    parent's script: under Streamlit (or its AppTest) `__main__` is the dashboard's app.py, which a
    child would execute and die in. The workers need nothing from it: the chunk function and the
    context live in tune/."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:  # `python -m ...`: children skip it
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class ProcessPool:
    """`--jobs N` local processes. spawn, not fork: the parent may hold a database connection and a
    heartbeat thread, which a forked child would inherit mid-state."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.workers = jobs
        self._pools: dict[int, cf.ProcessPoolExecutor] = {}  # by id(context): workers hold one context

    def describe(self) -> str:
        return f"process pool, {self.jobs} jobs"

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools.clear()

    def _pool(self, context: SearchContext) -> cf.ProcessPoolExecutor:
        """One pool per context, started on first use and kept for a second pass over the same one."""
        pool = self._pools.get(id(context))
        if pool is None:
            pool = cf.ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                          initializer=_init_worker, initargs=(context,))
            self._pools[id(context)] = pool
        return pool

    def run(self, context: SearchContext, points: Sequence[Point], on_result: OnResult,
            prune: bool = True, beat: float | None = None) -> None:
        if not points:
            return
        pool = self._pool(context)
        with _workers_skip_main():  # spawn starts workers on submit
            futures = [pool.submit(_pool_chunk, chunk, prune, beat) for chunk in chunks(points, self.jobs)]
        try:
            for future in cf.as_completed(futures):
                for result in future.result():
                    on_result(result)
        except BaseException:
            for future in futures:
                future.cancel()
            raise


class RayCluster:
    """A Ray cluster: `auto` (the one `ray start` runs on this machine) or a GCS address (HOST:PORT).
    Workers import this checkout: its path goes to them as PYTHONPATH (on other nodes Batchscope must
    be at the same path or installed)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._ray: Any = None
        self._owned = False
        self.workers = 1  # the cluster's CPUs, once joined

    def describe(self) -> str:
        return f"Ray cluster at {self.address}"

    def __enter__(self) -> RayCluster:
        self._ray, self._owned = self._connect()
        self.workers = max(1, int(self._ray.cluster_resources().get("CPU", 1)))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owned and self._ray is not None:
            self._ray.shutdown()
        self._ray, self._owned = None, False

    def _connect(self) -> Any:
        try:
            import ray
        except ImportError:
            raise BackendError("--ray needs the ray package: pip install ray") from None
        if ray.is_initialized():  # a caller (a test, a notebook) already joined a cluster: use it
            return ray, False
        self._check_reachable()
        env = {"PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        try:
            ray.init(address=self.address, runtime_env={"env_vars": env}, log_to_driver=False,
                     logging_level=logging.ERROR, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"cannot join a Ray cluster at {self.address} ({first}); start one with "
                               "`ray start --head` or pass its address") from None
        return ray, True

    def _check_reachable(self) -> None:
        """HOST:PORT that nothing listens on: say so now (ray.init would retry for a minute or more)."""
        host, sep, port = self.address.rpartition(":")
        if not sep or "://" in self.address or not port.isdigit():
            return  # auto, or a ray:// client address: ray.init explains those itself
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise BackendError(f"no Ray cluster answers at {self.address} ({exc.strerror or exc}); start one with "
                               "`ray start --head` or pass its address") from None

    def run(self, context: SearchContext, points: Sequence[Point], on_result: OnResult,
            prune: bool = True, beat: float | None = None) -> None:
        if not points:
            return
        ray = self._ray
        assert ray is not None, "use the backend as a context manager"
        remote = ray.remote(num_cpus=1, max_retries=0)(evaluate_chunk)
        context_ref = ray.put(context)  # once into the object store; every task reads the same copy
        pending = [remote.remote(context_ref, chunk, prune, beat) for chunk in chunks(points, self.workers)]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for result in ray.get(done[0]):
                    on_result(result)
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise


SMALL_SEARCH = 16  # points: fewer run in this process unless --jobs says otherwise (a pool takes ~1 s to start)


def choose_backend(jobs: int | None, ray_address: str | None, num_points: int | None = None) -> Backend:
    """--ray wins; else --jobs (default: every CPU, or this process for a small search); one job runs
    in this process."""
    if ray_address:
        return RayCluster(ray_address)
    if jobs is None:
        jobs = 1 if num_points is not None and num_points < SMALL_SEARCH else (os.cpu_count() or 1)
    return Sequential() if jobs <= 1 else ProcessPool(jobs)
