"""`serve` in a real subprocess: SIGTERM drains (no new requests, running ones finish, run marked
finished); a second SIGTERM aborts what is left (run marked aborted), and so does --drain-timeout
running out."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.serving_helpers import recorded_requests, recorded_run, run_source

ROOT = Path(__file__).resolve().parents[1]
STEP_S = 0.05  # each simulated step


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    drain_timeout = getattr(request, "param", 60)  # indirect parametrization: the server's --drain-timeout
    cost = tmp_path / "cost.json"
    cost.write_text(json.dumps({"name": "slow", "coefficients": {"intercept": STEP_S}}))
    db = tmp_path / "s.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--simulate", "--cost-model-file", str(cost), "--port", "0",
         "--db", str(db), "--drain-timeout", str(drain_timeout)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = None
    assert proc.stderr is not None
    for line in proc.stderr:
        match = re.search(r"at (http://\S+)/v1", line)
        if match:
            url = match.group(1)
            break
    assert url is not None, "the server never said where it listens"
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its pipe from filling
    try:
        yield proc, url, db
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def _stream(url: str, max_tokens: int, out: list[str], first: threading.Event) -> None:
    body = {"prompt": "hello", "max_tokens": max_tokens, "stream": True}
    with httpx2.stream("POST", f"{url}/v1/completions", json=body, headers={"x-request-id": "inflight"},
                       timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                out.append(line)
                first.set()


def test_sigterm_drains_then_the_run_is_finished(server: tuple[subprocess.Popen[str], str, Path]) -> None:
    proc, url, db = server
    lines: list[str] = []
    first = threading.Event()
    reader = threading.Thread(target=_stream, args=(url, 30, lines, first))
    reader.start()
    assert first.wait(60)
    proc.send_signal(signal.SIGTERM)
    refused = httpx2.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30)
    assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
    reader.join(120)
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2].removeprefix("data: "))["choices"][0]["finish_reason"] == "length"
    assert proc.wait(60) == 0
    run = recorded_run(db, 1)
    assert run["status"] == "finished" and run_source(run) == "served"
    rows = recorded_requests(db, 1)
    assert list(rows["request_id"]) == ["inflight"] and list(rows["output_len"]) == [30]


def test_second_sigterm_aborts_and_the_run_is_aborted(server: tuple[subprocess.Popen[str], str, Path]) -> None:
    proc, url, db = server
    lines: list[str] = []
    first = threading.Event()
    reader = threading.Thread(target=_stream, args=(url, 2000, lines, first))
    reader.start()
    assert first.wait(60)
    proc.send_signal(signal.SIGTERM)
    seen = len(lines)
    while len(lines) < seen + 2 and reader.is_alive():  # still streaming while it drains
        reader.join(0.05)
    proc.send_signal(signal.SIGTERM)
    reader.join(120)
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2].removeprefix("data: "))["choices"][0]["finish_reason"] == "abort"
    assert proc.wait(60) == 0
    assert recorded_run(db, 1)["status"] == "aborted"
    rows = recorded_requests(db, 1)
    assert list(rows["finish_reason"]) == ["aborted"] and 0 < rows["output_len"].iloc[0] < 2000


SHORT_DRAIN_S = 0.5


@pytest.mark.parametrize("server", [SHORT_DRAIN_S], indirect=True)
def test_drain_timeout_running_out_aborts_and_the_run_is_aborted(
        server: tuple[subprocess.Popen[str], str, Path]) -> None:
    proc, url, db = server
    lines: list[str] = []
    first = threading.Event()
    reader = threading.Thread(target=_stream, args=(url, 2000, lines, first))  # 100 s of steps: cannot finish
    reader.start()
    assert first.wait(60)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # once: only the deadline can end it
    reader.join(120)
    waited = time.monotonic() - signalled
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2].removeprefix("data: "))["choices"][0]["finish_reason"] == "abort"
    assert SHORT_DRAIN_S <= waited < 10  # it ran to the deadline, and the deadline (not the 100 s) ended it
    assert proc.wait(60) == 0
    assert recorded_run(db, 1)["status"] == "aborted"
    rows = recorded_requests(db, 1)
    assert list(rows["request_id"]) == ["inflight"] and list(rows["finish_reason"]) == ["aborted"]
    assert 0 < rows["output_len"].iloc[0] < 2000
