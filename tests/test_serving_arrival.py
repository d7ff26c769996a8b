"""A served request's recorded arrival_time is its receipt (the _Gate middleware's stamp, taken when
the headers are in, before the body is read), not the moment the engine admits or schedules it."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx2

from serving.server import ServingServer
from tests.serving_helpers import recorded_requests, serve, simulated, wait_for

STEP_S = 0.2  # a slow step: a request that comes mid-step is admitted only once the step ends
BODY_DELAY_S = 0.4  # the slow request's body comes this long after its headers
TOLERANCE_S = 0.15  # receipt: within a few ms; a stamp at submit or admission comes after the body, >= 0.4 s


def _running(server: ServingServer) -> bool:
    for line in httpx2.get(f"{server.url}/metrics", timeout=30).text.splitlines():
        if line.startswith("vllm:num_requests_running{"):
            return float(line.rsplit(" ", 1)[1]) == 1
    return False


def _raw_request(server: ServingServer, request_id: str, max_tokens: int, body_delay_s: float,
                 sent: list[float]) -> bytes:
    """Send the headers, wait body_delay_s, then the body; the response. sent gets perf_counter
    when the headers went, taken in this process on the clock the recorder uses."""
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"prompt": "hi", "max_tokens": max_tokens, "ignore_eos": True}).encode()
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"x-request-id: %s\r\nContent-Length: %d\r\n\r\n" % (request_id.encode(), len(body)))
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        sent.append(time.perf_counter())
        conn.sendall(head)
        time.sleep(body_delay_s)
        conn.sendall(body)
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
    return response


def test_arrival_is_the_receipt_not_the_admission(tmp_path: Path) -> None:
    db = tmp_path / "arrival.db"
    with serve(simulated(step_s=STEP_S, max_num_seqs=1), db) as server:
        sent_a: list[float] = []
        responses: list[bytes] = []
        busy = threading.Thread(target=lambda: responses.append(_raw_request(server, "busy", 12, 0.0, sent_a)))
        busy.start()
        wait_for(lambda: _running(server), what="the first request to run")
        time.sleep(STEP_S / 2)  # mid-step
        sent_late: list[float] = []
        late_response = _raw_request(server, "late", 2, BODY_DELAY_S, sent_late)
        busy.join(60)
        assert len(responses) == 1
        for response in (*responses, late_response):
            assert response.startswith(b"HTTP/1.1 200"), response[:300]
        run_id = server.run_id
    rows = recorded_requests(db, run_id).set_index("request_id")  # type: ignore[arg-type]
    busy_row, late = rows.loc["busy"], rows.loc["late"]
    # Run times are perf_counter readings less the run's origin: differences compare with the client's.
    error = (late["arrival_time"] - busy_row["arrival_time"]) - (sent_late[0] - sent_a[0])
    assert abs(error) < TOLERANCE_S
    # It waited for the busy one (max_num_seqs 1) after it arrived: scheduling is not arrival.
    assert late["first_scheduled_time"] - late["arrival_time"] > BODY_DELAY_S + STEP_S
    assert late["first_scheduled_time"] >= busy_row["finish_time"] - 1e-6
