"""A run a server recorded (an in-process simulated server, not a fixture written offline) as the
base of `simulate --from-run` (and --validate) and of `serve --simulate --from-run`: the replays
serve its very requests, and the served replay takes its configuration and cost model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import pandas as pd
import pytest

from cli.main import main
from tests.serving_helpers import recorded_requests, recorded_run, serve, simulated

ROOT = Path(__file__).resolve().parents[1]
NUM_REQUESTS = 5
BASE_SEQS = 4


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, int]:
    """(database, run id) of a short run a simulated server recorded, requests overlapping; one per
    test. The last test reads after another process wrote (storage/database.py's header check once
    dropped this process's locks there: tests/test_sqlite_locks.py)."""
    db = tmp_path / "served.db"
    with serve(simulated(step_s=0.005, max_num_seqs=BASE_SEQS), db) as server:
        codes: list[int] = []

        def one(i: int) -> None:
            codes.append(httpx2.post(f"{server.url}/v1/completions",
                                     json={"prompt": "hello world " * (i + 1), "max_tokens": 4 + 3 * i},
                                     headers={"x-request-id": f"req-{i}"}, timeout=60).status_code)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(NUM_REQUESTS)]
        for t in threads:
            t.start()
            time.sleep(0.02)
        for t in threads:
            t.join(60)
        assert codes == [200] * NUM_REQUESTS
        run_id = server.run_id
    assert run_id is not None
    run = recorded_run(db, run_id)
    assert run["status"] == "finished" and run["source"] == "served"
    return db, run_id


def _requests(db: Path, run_id: int) -> pd.DataFrame:
    return recorded_requests(db, run_id).set_index("request_id").sort_index()


def test_simulate_and_validate_from_a_served_run(served: tuple[Path, int]) -> None:
    db, base = served
    base_rows = _requests(db, base)
    assert list(base_rows.index) == [f"req-{i}" for i in range(NUM_REQUESTS)]
    assert main(["simulate", "--db", str(db), "--from-run", str(base), "--json"]) == 0
    assert main(["simulate", "--db", str(db), "--from-run", str(base), "--validate"]) == 0
    what_if, predicted, real = base + 1, base + 2, base + 3
    for run_id in (what_if, predicted, real):
        run = recorded_run(db, run_id)
        assert run["status"] == "finished" and run["base_run_id"] == base, run_id
        assert run["workload_key"] == recorded_run(db, base)["workload_key"], run_id
        rows = _requests(db, run_id)
        assert list(rows.index) == list(base_rows.index), run_id  # the served requests, no more, no fewer
        assert rows[["prompt_len", "max_tokens"]].equals(base_rows[["prompt_len", "max_tokens"]]), run_id
        assert (rows["arrival_time"] - base_rows["arrival_time"]).abs().max() < 1e-6, run_id  # as they arrived
    assert recorded_run(db, what_if)["source"] == recorded_run(db, predicted)["source"] == "what-if"
    assert recorded_run(db, predicted)["validation"]["real_run_id"] == real
    real_run = recorded_run(db, real)
    assert (real_run["source"], real_run["mode"], real_run["model"]) == ("validation", "real", "tiny")
    assert real_run["validates_run_id"] == predicted


def test_serve_simulate_from_a_served_run(served: tuple[Path, int], tmp_path: Path) -> None:
    db, base = served
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--simulate", "--from-run", str(base), "--db", str(db),
         "--port", "0", "--max-num-batched-tokens", "1024"],  # a flag given overrides the base's config
        cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    lines: list[str] = []
    url = None
    for line in proc.stderr:
        lines.append(line)
        match = re.search(r"at (http://\S+)/v1 \(recording run (\d+)\)", line)
        if match:
            url, run_id = match.group(1), int(match.group(2))
            break
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    try:
        assert url is not None, "".join(lines)
        base_run = recorded_run(db, base)
        # Its cost model and its KV pool (256 blocks, not a simulated server's default) are the base run's.
        assert any(f"simulated: {base_run['executor']['cost_model']['name']} cost model, 256 KV blocks" in line
                   for line in lines), "".join(lines)
        assert [m["id"] for m in httpx2.get(f"{url}/v1/models", timeout=30).json()["data"]] == [base_run["model"]]
        for i in range(2):
            response = httpx2.post(f"{url}/v1/completions", json={"prompt": "hello world", "max_tokens": 3},
                                   headers={"x-request-id": f"again-{i}"}, timeout=30)
            assert response.status_code == 200 and response.headers["x-batchscope-run-id"] == str(run_id)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    run = recorded_run(db, run_id)
    assert run["status"] == "finished" and run["source"] == "served" and run_id > base
    assert run["executor"]["cost_model"] == base_run["executor"]["cost_model"]
    assert run["config"]["max_num_seqs"] == BASE_SEQS and run["config"]["num_gpu_blocks"] == 256
    assert run["config"]["max_num_batched_tokens"] == 1024
    assert sorted(recorded_requests(db, run_id)["request_id"]) == ["again-0", "again-1"]
    assert json.dumps(run["config"])  # stored as plain JSON


def test_reading_after_an_in_process_write_and_another_process_write(served: tuple[Path, int]) -> None:
    db, base = served
    assert main(["simulate", "--db", str(db), "--from-run", str(base), "--json"]) == 0
    subprocess.run([sys.executable, "-m", "engine", "simulate", "--db", str(db), "--from-run", str(base), "--json"],
                   cwd=ROOT, capture_output=True, check=True)
    assert recorded_run(db, base + 2)["status"] == "finished"
