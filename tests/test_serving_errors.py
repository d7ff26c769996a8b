"""Refusals that need a particular server (simulated, so no model loads): API keys, a request that
fails inside the engine, --max-waiting, a draining server, a request id already in use, a
non-streaming client that goes away."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from pathlib import Path
from typing import Any

import httpx2
import openai
import pandas as pd
import pytest

from engine.outputs import ModelRunnerOutput, SchedulerOutput
from tests.serving_helpers import recorded_requests, serve, simulated, wait_for


def _error(response: httpx2.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    return error  # type: ignore[no-any-return]


def test_api_key_guards_v1_routes_only(tmp_path: Path) -> None:
    with serve(simulated(), tmp_path / "k.db", api_key="sesame") as server:
        url = server.url
        assert "missing" in _error(httpx2.get(f"{url}/v1/models", timeout=30), 401)["message"]
        wrong = httpx2.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 2},
                            headers={"Authorization": "Bearer nope"}, timeout=30)
        assert "invalid" in _error(wrong, 401)["message"]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()
        good = openai.OpenAI(base_url=f"{url}/v1", api_key="sesame", max_retries=0)
        assert good.completions.create(model="sim", prompt="hi", max_tokens=2).usage.completion_tokens == 2  # type: ignore[union-attr]
        assert httpx2.get(f"{url}/health", timeout=30).status_code == 200  # probes need no key
        assert httpx2.get(f"{url}/metrics", timeout=30).status_code == 200


class _FailsOn:
    """Fault injection: the forward pass raises whenever a request named boom-* is in the step."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.mode, self.include_token_ids = inner.mode, inner.include_token_ids
        self.eos_token_id, self.vocab_size = inner.eos_token_id, inner.vocab_size
        self.extra_eos_token_ids = inner.extra_eos_token_ids

    def execute_model(self, out: SchedulerOutput) -> ModelRunnerOutput:
        if any(s.request_id.startswith("boom") for s in out.scheduled):
            raise RuntimeError("injected device error")
        return self.inner.execute_model(out)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_request_that_fails_in_the_engine_gets_an_error_and_the_server_goes_on(tmp_path: Path) -> None:
    backend = simulated()
    backend = dataclasses.replace(backend, executor=_FailsOn(backend.executor))
    db = tmp_path / "f.db"
    with serve(backend, db) as server:
        url = f"{server.url}/v1/completions"
        failed = httpx2.post(url, json={"prompt": "hi", "max_tokens": 4}, headers={"x-request-id": "boom-1"},
                             timeout=30)
        assert "injected device error" in _error(failed, 500)["message"]
        with httpx2.stream("POST", url, json={"prompt": "hi", "max_tokens": 4, "stream": True},
                           headers={"x-request-id": "boom-2"}, timeout=30) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data:")]
        assert "injected device error" in lines[0] and lines[-1] == "data: [DONE]"
        for i in range(3):  # the server goes on serving
            ok = httpx2.post(url, json={"prompt": "hi", "max_tokens": 3}, timeout=30)
            assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3, i
        run_id = server.run_id
    rows = recorded_requests(db, run_id).set_index("request_id")  # type: ignore[arg-type]
    assert rows.loc["boom-1", "finish_reason"] == rows.loc["boom-2", "finish_reason"] == "aborted"
    assert (rows["finish_reason"] == "length").sum() == 3


def test_max_waiting_answers_503_beyond_the_queue(tmp_path: Path) -> None:
    with serve(simulated(step_s=0.02, max_num_seqs=1), tmp_path / "w.db", max_waiting=1) as server:
        url = f"{server.url}/v1/completions"
        done: list[int] = []

        def long_one(rid: str) -> None:
            r = httpx2.post(url, json={"prompt": "hi", "max_tokens": 40}, headers={"x-request-id": rid}, timeout=60)
            done.append(r.status_code)

        threads = [threading.Thread(target=long_one, args=(f"long-{i}",)) for i in range(2)]
        threads[0].start()
        wait_for(lambda: server.online and server.online.num_waiting == 0 and done == [] and
                 _gauge(server.url, "vllm:num_requests_running") == 1, what="the first request to run")
        threads[1].start()
        wait_for(lambda: server.online is not None and server.online.num_waiting == 1, what="one waiting request")
        refused = httpx2.post(url, json={"prompt": "hi", "max_tokens": 2}, timeout=30)
        assert "max-waiting" in _error(refused, 503)["message"]
        for t in threads:
            t.join(60)
        assert done == [200, 200]


def _gauge(url: str, name: str) -> float:
    for line in httpx2.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_draining_server_refuses_new_requests_and_finishes_running_ones(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    with serve(simulated(step_s=0.01), db) as server:
        url = f"{server.url}/v1/completions"
        result: list[dict[str, Any]] = []
        t = threading.Thread(target=lambda: result.append(httpx2.post(
            url, json={"prompt": "hi", "max_tokens": 30}, headers={"x-request-id": "running"}, timeout=60).json()))
        t.start()
        wait_for(lambda: _gauge(server.url, "vllm:num_requests_running") == 1, what="the request to run")
        server.drain(30)
        assert "shutting down" in _error(httpx2.post(url, json={"prompt": "x", "max_tokens": 2}, timeout=30),
                                         503)["message"]
        assert httpx2.get(f"{server.url}/health", timeout=30).status_code == 503
        t.join(60)
        assert result[0]["choices"][0]["finish_reason"] == "length"
        assert server.wait_engine(30)
        run_id = server.run_id
    assert server.online is not None and server.online.status == "finished"
    assert list(recorded_requests(db, run_id)["finish_reason"]) == ["length"]  # type: ignore[arg-type]


def test_a_request_id_in_use_is_refused(tmp_path: Path) -> None:
    with serve(simulated(step_s=0.01), tmp_path / "i.db") as server:
        url = f"{server.url}/v1/completions"
        first: list[int] = []
        t = threading.Thread(target=lambda: first.append(httpx2.post(
            url, json={"prompt": "hi", "max_tokens": 30}, headers={"x-request-id": "same"}, timeout=60).status_code))
        t.start()
        wait_for(lambda: _gauge(server.url, "vllm:num_requests_running") == 1, what="the first request to run")
        again = httpx2.post(url, json={"prompt": "hi", "max_tokens": 2}, headers={"x-request-id": "same"}, timeout=30)
        assert "already in use" in _error(again, 400)["message"]
        t.join(60)
        assert first == [200]
        assert _error(httpx2.post(url, json={"prompt": "hi"}, headers={"x-request-id": "x" * 200}, timeout=30),
                      400)["message"].startswith("x-request-id")


def _finished_row(db: Path, run_id: int, request_id: str) -> dict[str, Any] | None:
    rows = recorded_requests(db, run_id)
    rows = rows[rows["request_id"] == request_id]
    if rows.empty or pd.isna(rows.iloc[0]["finish_reason"]):
        return None
    return dict(rows.iloc[0])


def test_a_non_streaming_client_that_goes_away_is_aborted_and_recorded(tmp_path: Path) -> None:
    db = tmp_path / "gone.db"
    with serve(simulated(step_s=0.02), db) as server:  # 400 tokens: 8 s if nobody aborts it
        host, port = server.url.removeprefix("http://").split(":")
        body = json.dumps({"prompt": "hi", "max_tokens": 400, "ignore_eos": True}).encode()
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"x-request-id: walks-away\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            wait_for(lambda: _gauge(server.url, "vllm:num_requests_running") == 1, what="the request to run")
        # The connection is closed with no answer read: the handler's disconnect poll aborts the request.
        assert server.run_id is not None
        row = wait_for(lambda: _finished_row(db, server.run_id, "walks-away"),  # type: ignore[arg-type]
                       what="the request to be recorded as finished")
        assert row["finish_reason"] == "aborted" and 0 < row["output_len"] < 400
        assert _gauge(server.url, "vllm:num_requests_running") == 0
        ok = httpx2.post(f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=30)
        assert ok.status_code == 200  # and the server goes on
