"""The search gives identical results whichever backend runs it: in process, a process pool, and a
Ray cluster started here (slow: it starts a real local cluster)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.executors.cost_model import DEFAULT_COST_MODEL
from engine.workload.generators import synthetic_workload
from tune.backends import Backend, ProcessPool, RayCluster, Sequential, choose_backend, chunks
from tune.evaluate import SearchContext
from tune.search import SearchOutcome, run_search
from tune.slo import SLO
from tune.space import Axis, grid

AXES = [Axis("max_num_seqs", (1, 2, 4, 8, 16)), Axis("enable_chunked_prefill", (True, False)),
        Axis("num_gpu_blocks", (40, 2048))]


def _search(backend: Backend, prune: str = "best") -> SearchOutcome:
    workload = synthetic_workload("mixed", 60, request_rate=40.0, seed=11)
    context = SearchContext(workload.requests, DEFAULT_COST_MODEL, SLO(0.3, None, 2.0, 0.9), prune)
    points = grid(AXES, EngineConfig.from_dict({"num_gpu_blocks": 2048}))
    with backend:
        return run_search(context, points, backend)


def _figures(outcome: SearchOutcome) -> list[dict[str, object]]:
    return [r.to_dict() for r in outcome.results]


@pytest.mark.parametrize("prune", ["best", "none"])
def test_a_process_pool_gives_what_one_process_gives(prune: str) -> None:
    alone, pooled = _search(Sequential(), prune), _search(ProcessPool(2), prune)
    assert _figures(alone) == _figures(pooled)
    assert alone.recommended is not None and pooled.recommended is not None
    assert alone.recommended.index == pooled.recommended.index
    assert [r.index for r in alone.frontier] == [r.index for r in pooled.frontier]


def test_pool_workers_do_not_run_the_parents_main_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under Streamlit or its AppTest, `__main__` is the dashboard's app.py (no __spec__, a __file__);
    spawned workers re-ran that script and died (BrokenProcessPool), as CI found after the AppTests."""
    script = tmp_path / "app_like.py"
    script.write_text("raise SystemExit('a spawned worker ran the parent script')\n")
    stand_in = types.ModuleType("__main__")
    stand_in.__file__ = str(script)
    stand_in.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", stand_in)
    alone, pooled = _search(Sequential(), "best"), _search(ProcessPool(2), "best")
    assert _figures(alone) == _figures(pooled)
    assert sys.modules["__main__"] is stand_in  # put back after the workers started


def test_chunks_cover_every_point_once() -> None:
    points = grid(AXES, EngineConfig.from_dict({"num_gpu_blocks": 2048}))
    parts = chunks(points, 3)
    assert sorted(p.index for part in parts for p in part) == [p.index for p in points]
    assert isinstance(choose_backend(1, None), Sequential) and isinstance(choose_backend(3, None), ProcessPool)
    assert isinstance(choose_backend(None, "auto"), RayCluster)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_ray_cluster_gives_what_one_process_gives() -> None:
    pytest.importorskip("ray")
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip("the ray command is not installed beside this Python")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="bsray", dir="/tmp")  # Ray's socket paths must stay short
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--temp-dir", temp, "--include-dashboard", "false", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None, "ray start exited"
                assert time.monotonic() < deadline, "the Ray head did not come up within 60 s"
                time.sleep(0.5)
        on_ray = _search(RayCluster(f"127.0.0.1:{port}"))
        assert _figures(on_ray) == _figures(_search(Sequential()))
    finally:
        # Only what this test started: the `ray start` process group (the head's GCS, raylet, workers).
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_an_unreachable_ray_cluster_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    from cli.tune import main

    code = main(["--no-record", "--num-prompts", "5", "--slo", "e2e=1000", "--search", "max_num_seqs=2",
                 "--ray", f"127.0.0.1:{_free_port()}"])
    err = capsys.readouterr().err
    assert code == 2 and "no Ray cluster answers at" in err and len(err.strip().splitlines()) == 1
