"""Sampling fields over HTTP on the tiny model: seed, top_k, stop_token_ids and priority do what
they say once they have crossed the server (not only in the sampler's unit tests)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pandas as pd
import pytest

from serving.prompts import TokenizerCodec
from serving.server import ServingServer
from tests.serving_helpers import recorded_requests, serve, simulated, tiny_backend, wait_for

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sampling") / "sampling.db"


@pytest.fixture(scope="module")
def server(db: Path) -> Iterator[ServingServer]:
    with serve(tiny_backend(), db) as s:
        yield s


def _complete(server: ServingServer, **body: Any) -> dict[str, Any]:
    response = httpx2.post(f"{server.url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 16, **body},
                           timeout=60)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _text(server: ServingServer, **body: Any) -> str:
    return str(_complete(server, **body)["choices"][0]["text"])


def test_a_seed_makes_sampled_output_reproducible(server: ServingServer) -> None:
    first = _text(server, temperature=1.0, seed=3)
    _text(server, temperature=1.0)  # an unseeded draw in between moves the shared generator, not the seeded one
    assert _text(server, temperature=1.0, seed=3) == first
    by_seed = {seed: _text(server, temperature=1.0, seed=seed) for seed in (3, 4, 5)}
    assert by_seed[3] == first
    assert len(set(by_seed.values())) > 1  # the seed is what decides: other seeds draw other text
    assert first != _text(server, temperature=0)  # and it is sampled, not greedy


def test_top_k_1_is_greedy(server: ServingServer) -> None:
    greedy = _text(server, temperature=0, max_tokens=24)
    assert _text(server, temperature=1.0, top_k=1, max_tokens=24) == greedy
    assert _text(server, temperature=1.0, top_k=50, seed=3, max_tokens=24) != greedy  # top_k is what made it so


def test_a_stop_token_id_ends_the_request_with_stop(server: ServingServer) -> None:
    greedy = _complete(server, temperature=0, max_tokens=16, logprobs=0)
    tokens = greedy["choices"][0]["logprobs"]["tokens"]  # each output token's text, decoded alone
    codec = server.backend.codec
    assert isinstance(codec, TokenizerCodec) and codec.tokenizer is not None
    texts = [codec.tokenizer.decode([i]) for i in range(codec.vocab_size)]
    counts = Counter(texts)
    # A token the greedy output reaches after a few others, named by the one id whose text it is.
    k = next(i for i in range(1, len(tokens)) if counts[tokens[i]] == 1 and tokens[i] not in tokens[:i])
    stop_id = texts.index(tokens[k])
    stopped = _complete(server, temperature=0, max_tokens=16, stop_token_ids=[stop_id])
    choice = stopped["choices"][0]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", stop_id)
    assert stopped["usage"]["completion_tokens"] == k + 1  # the stop token counts, as in vLLM
    assert choice["text"] == _text(server, temperature=0, max_tokens=k)  # but its text is not in the output


def test_priority_reaches_the_recorded_request(server: ServingServer, db: Path) -> None:
    response = httpx2.post(f"{server.url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 2, "priority": 7},
                           headers={"x-request-id": "prio-7"}, timeout=60)
    assert response.status_code == 200, response.text
    assert server.run_id is not None

    def recorded() -> Any:
        rows = recorded_requests(db, server.run_id)  # type: ignore[arg-type]
        rows = rows[rows["request_id"] == "prio-7"]
        return None if rows.empty or pd.isna(rows.iloc[0]["finish_reason"]) else dict(rows.iloc[0])

    assert wait_for(recorded, what="prio-7 to be recorded")["priority"] == 7


def test_priority_orders_the_queue_under_the_priority_policy(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with serve(simulated(step_s=0.01, max_num_seqs=1, policy="priority"), db) as server:
        url = f"{server.url}/v1/completions"
        codes: list[int] = []

        def send(rid: str, priority: int, max_tokens: int) -> threading.Thread:
            t = threading.Thread(target=lambda: codes.append(httpx2.post(
                url, json={"prompt": "hi", "max_tokens": max_tokens, "priority": priority, "ignore_eos": True},
                headers={"x-request-id": rid}, timeout=60).status_code))
            t.start()
            return t

        threads = [send("first", 0, 40)]
        wait_for(lambda: server.online is not None and server.online.num_waiting == 0 and
                 server.online.run_id is not None and _running(server), what="the first request to run")
        threads.append(send("low", 9, 4))  # sent before "high", but the lower value goes first
        wait_for(lambda: server.online is not None and server.online.num_waiting == 1, what="low to wait")
        threads.append(send("high", 1, 4))
        wait_for(lambda: server.online is not None and server.online.num_waiting == 2, what="both to wait")
        for t in threads:
            t.join(60)
        assert codes == [200, 200, 200]
        run_id = server.run_id
    rows = recorded_requests(db, run_id).set_index("request_id")  # type: ignore[arg-type]
    assert rows.loc["low", "arrival_time"] < rows.loc["high", "arrival_time"]
    assert rows.loc["high", "first_scheduled_time"] < rows.loc["low", "first_scheduled_time"]
    assert (rows.loc["low", "priority"], rows.loc["high", "priority"]) == (9, 1)


def _running(server: ServingServer) -> bool:
    for line in httpx2.get(f"{server.url}/metrics", timeout=30).text.splitlines():
        if line.startswith("vllm:num_requests_running{"):
            return float(line.rsplit(" ", 1)[1]) == 1
    return False
