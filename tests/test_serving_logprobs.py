"""logprobs over the wire: the `openai` client against `serve` on `tiny`, both endpoints, streaming
and not, agreeing with the offline engine's values; the bad-input cases; a simulated server refuses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from engine.llm import LLM
from engine.sampling_params import SamplingParams
from serving.server import ServingServer
from tests.serving_helpers import serve, simulated, tiny_backend

PROMPT_IDS = [11, 57, 203, 9, 88, 140]
MESSAGES = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingServer]:
    with serve(tiny_backend(), tmp_path_factory.mktemp("lp") / "lp.db") as s:
        yield s


@pytest.fixture(scope="module")
def client(server: ServingServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def _offline(max_tokens: int, k: int) -> tuple[list[int], list[dict[int, Any]]]:
    """The same greedy request through the offline LLM: its tokens and vLLM-shaped logprobs."""
    llm = LLM("tiny", num_gpu_blocks=64)
    out = llm.generate({"prompt_token_ids": PROMPT_IDS},  # type: ignore[arg-type]
                       SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, logprobs=k))[0]
    assert out.outputs[0].logprobs is not None
    return out.outputs[0].token_ids, out.outputs[0].logprobs


def test_completion_logprobs_match_the_engine_and_stream_as_they_answer(client: openai.OpenAI) -> None:
    done = client.completions.create(model="tiny", prompt=PROMPT_IDS, max_tokens=8, temperature=0, logprobs=2,
                                     extra_body={"ignore_eos": True})
    lp = done.choices[0].logprobs
    assert lp is not None and done.usage is not None
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == done.usage.completion_tokens == 8
    tokens, offline = _offline(8, 2)
    for i, (token, entries) in enumerate(zip(tokens, offline, strict=True)):
        assert lp.tokens[i] == entries[token].decoded_token
        assert lp.token_logprobs[i] == pytest.approx(entries[token].logprob, abs=1e-5)
        top = {e.decoded_token: e.logprob for e in entries.values()}
        assert lp.top_logprobs[i] == pytest.approx(top, abs=1e-5)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(8)]

    chunks = list(client.completions.create(model="tiny", prompt=PROMPT_IDS, max_tokens=8, temperature=0, logprobs=2,
                                            stream=True, extra_body={"ignore_eos": True}))
    streamed: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for chunk in chunks:
        piece = chunk.choices[0].logprobs
        assert piece is not None  # every chunk carries its tokens' logprobs
        for key, values in streamed.items():
            values.extend(getattr(piece, key))
    assert streamed == {key: getattr(lp, key) for key in streamed}
    assert "".join(c.choices[0].text for c in chunks) == done.choices[0].text


def test_chat_logprobs_have_openais_shape_and_stream_as_they_answer(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, temperature=0,  # type: ignore[arg-type]
                                          logprobs=True, top_logprobs=3)
    content = done.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and done.usage is not None and len(content) == done.usage.completion_tokens
    for entry in content:
        assert entry.bytes == list(entry.token.encode("utf-8", "replace"))
        assert len(entry.top_logprobs) == 3
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True) and values[0] == pytest.approx(entry.logprob)  # greedy: top 1
        assert entry.top_logprobs[0].token == entry.token
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6,  # type: ignore[arg-type]
                                                 temperature=0, logprobs=True, top_logprobs=3, stream=True))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content or []]
    assert [e.model_dump() for e in streamed] == [e.model_dump() for e in content]

    plain = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)  # type: ignore[arg-type]
    assert plain.choices[0].logprobs is None


BAD = [
    ("completions: logprobs beyond 20", "completions", {"prompt": "hi", "max_tokens": 2, "logprobs": 21}, "logprobs"),
    ("completions: logprobs true", "completions", {"prompt": "hi", "max_tokens": 2, "logprobs": True}, "logprobs"),
    ("completions: top_logprobs", "completions", {"prompt": "hi", "max_tokens": 2, "top_logprobs": 2},
     "top_logprobs"),
    ("chat: top_logprobs without logprobs", "chat/completions",
     {"messages": MESSAGES, "max_tokens": 2, "top_logprobs": 2}, "top_logprobs"),
    ("chat: logprobs a number", "chat/completions", {"messages": MESSAGES, "max_tokens": 2, "logprobs": 3},
     "logprobs"),
    ("chat: top_logprobs beyond 20", "chat/completions",
     {"messages": MESSAGES, "max_tokens": 2, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
]


@pytest.mark.parametrize(("what", "path", "body", "param"), BAD, ids=[b[0] for b in BAD])
def test_bad_logprobs_requests_get_an_openai_error(server: ServingServer, what: str, path: str, body: dict[str, Any],
                                                   param: str) -> None:
    response = httpx2.post(f"{server.url}/v1/{path}", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and param in error["message"]
    assert httpx2.post(f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 1},
                       timeout=30).status_code == 200  # the server goes on


def test_a_simulated_server_refuses_logprobs_and_serves_the_rest(tmp_path: Path) -> None:
    with serve(simulated(), tmp_path / "sim.db") as sim:
        refused = httpx2.post(f"{sim.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2, "logprobs": 1},
                              timeout=30)
        assert refused.status_code == 400 and "no log-probabilities" in refused.json()["error"]["message"]
        assert httpx2.post(f"{sim.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2},
                           timeout=30).status_code == 200
