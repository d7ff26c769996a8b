"""The OpenAI client against `serve` on the tiny model: completions and chat, streaming and not,
usage, stop strings, concurrent streams, a client that disconnects, and the bad-input table."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pandas as pd
import pytest

from engine.chat_prompt import conversation, plain_chat_text
from serving.prompts import TokenizerCodec
from serving.server import ServingServer
from tests.serving_helpers import TINY_MAX_MODEL_LEN, recorded_requests, recorded_steps, serve, tiny_backend, wait_for

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve") / "serve.db"


@pytest.fixture(scope="module")
def server(db: Path) -> Iterator[ServingServer]:
    with serve(tiny_backend(), db) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: ServingServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def _row(db: Path, server: ServingServer, request_id: str) -> dict[str, Any]:
    """The request's recorded row once it has finished (the server flushes when it goes idle)."""
    assert server.run_id is not None

    def finished() -> dict[str, Any] | None:
        frame = recorded_requests(db, server.run_id)  # type: ignore[arg-type]
        rows = frame[frame["request_id"] == request_id]
        if rows.empty or pd.isna(rows.iloc[0]["finish_reason"]):
            return None
        return dict(rows.iloc[0])

    return wait_for(finished, what=f"request {request_id} to be recorded as finished")  # type: ignore[no-any-return]


def _ascii_window(text: str, width: int = 2) -> str:
    """A run of printable ASCII in the text (tiny's random model writes arbitrary bytes)."""
    for i in range(1, len(text) - width):
        piece = text[i:i + width]
        if all(" " < c < "\x7f" for c in piece):
            return piece
    raise AssertionError(f"no {width} printable ASCII characters in a row in {text!r}")


def test_completion_and_chat_report_usage_and_are_recorded(client: openai.OpenAI, server: ServingServer,
                                                           db: Path) -> None:
    raw = client.completions.with_raw_response.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0)
    done = raw.parse()
    assert raw.headers["x-batchscope-run-id"] == str(server.run_id)
    rid = raw.headers["x-request-id"]
    assert done.object == "text_completion" and done.id == f"cmpl-{rid}"
    assert done.choices[0].finish_reason == "length" and done.choices[0].text
    assert done.usage is not None and done.usage.completion_tokens == 12
    assert done.usage.total_tokens == done.usage.prompt_tokens + 12
    row = _row(db, server, rid)
    assert (row["max_tokens"], row["output_len"], row["finish_reason"]) == (12, 12, "length")
    assert row["prompt_len"] == done.usage.prompt_tokens

    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello there"}],
                                          max_tokens=6, seed=7, temperature=0.8)
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].finish_reason == "length"
    assert chat.usage is not None and chat.usage.completion_tokens == 6


def test_streaming_matches_non_streaming_and_ends_with_usage(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, temperature=0)
    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == whole.choices[0].text
    assert not any("\ufffd" in t for t in texts[:-1]) or "\ufffd" in whole.choices[0].text  # nothing half-decoded
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 20

    chat = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=5, stream=True, stream_options={"include_usage": True}))
    assert chat[0].choices[0].delta.role == "assistant"
    assert chat[-1].usage is not None and chat[-1].usage.completion_tokens == 5
    assert [c.choices[0].finish_reason for c in chat if c.choices and c.choices[0].finish_reason] == ["length"]


def test_stop_string_truncates_and_is_recorded_as_stopped(client: openai.OpenAI, server: ServingServer,
                                                          db: Path) -> None:
    full = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0).choices[0].text
    stop = _ascii_window(full)
    expected = full[:full.index(stop)]
    raw = client.completions.with_raw_response.create(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0,
                                                      stop=[stop, "never appears \x01"])
    done = raw.parse()
    assert done.choices[0].text == expected
    assert done.choices[0].finish_reason == "stop"
    assert done.choices[0].stop_reason == stop  # type: ignore[attr-defined]
    assert done.usage is not None and done.usage.completion_tokens < 40
    row = _row(db, server, raw.headers["x-request-id"])
    assert row["finish_reason"] == "stopped"  # not "aborted": the server stopped it on purpose
    assert row["output_len"] == done.usage.completion_tokens

    streamed = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0, stop=stop,
                                              stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == expected
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_max_tokens_left_out_is_the_rest_of_the_context(client: openai.OpenAI, server: ServingServer,
                                                        db: Path) -> None:
    prompt = list(range(1000, 1200))
    raw = client.completions.with_raw_response.create(model="tiny", prompt=prompt, extra_body={"ignore_eos": True})
    done = raw.parse()
    assert done.usage is not None and done.usage.prompt_tokens == 200
    assert done.usage.completion_tokens == TINY_MAX_MODEL_LEN - 200
    row = _row(db, server, raw.headers["x-request-id"])
    assert row["max_tokens"] == TINY_MAX_MODEL_LEN - 200  # the declared budget is what the run records


def test_concurrent_streams_share_steps(client: openai.OpenAI, server: ServingServer, db: Path) -> None:
    n = 4
    results: dict[int, tuple[str, int]] = {}
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        barrier.wait()
        text, usage = "", 0
        for chunk in client.completions.create(model="tiny", prompt=f"{PROMPT} {i}", max_tokens=30, stream=True,
                                               extra_headers={"x-request-id": f"concurrent-{i}"},
                                               stream_options={"include_usage": True}):
            if chunk.choices:
                text += chunk.choices[0].text
            if chunk.usage is not None:
                usage = chunk.usage.completion_tokens
        results[i] = (text, usage)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == list(range(n)) and all(usage == 30 for _, usage in results.values())
    rows = [_row(db, server, f"concurrent-{i}") for i in range(n)]
    assert all(r["output_len"] == 30 and r["finish_reason"] == "length" for r in rows)
    first = min(r["first_scheduled_time"] for r in rows)
    last = max(r["finish_time"] for r in rows)
    steps = recorded_steps(db, server.run_id)  # type: ignore[arg-type]
    window = steps[(steps["start_time"] >= first) & (steps["end_time"] <= last)]
    assert window["num_running"].max() >= 2  # batched together, not served one after another


def test_client_that_disconnects_mid_stream_is_recorded_as_aborted(client: openai.OpenAI, server: ServingServer,
                                                                   db: Path) -> None:
    stream = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=200, stream=True,
                                       extra_headers={"x-request-id": "goes-away"}, extra_body={"ignore_eos": True})
    received = 0
    for chunk in stream:
        received += bool(chunk.choices)
        if received == 3:
            break
    stream.close()
    row = _row(db, server, "goes-away")
    assert row["finish_reason"] == "aborted"
    assert 3 <= row["output_len"] < 200
    # The server goes on serving.
    assert client.completions.create(model="tiny", prompt=PROMPT, max_tokens=2).usage.completion_tokens == 2  # type: ignore[union-attr]


BAD_REQUESTS = [
    ("malformed JSON", b'{"model": "tiny", "prompt": ', 400, None),
    ("wrong field type", {"prompt": "hi", "max_tokens": "7"}, 400, "max_tokens"),
    ("prompt of the wrong type", {"prompt": {"text": "hi"}}, 400, "prompt"),
    ("max_tokens 0", {"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ("max_tokens negative", {"prompt": "hi", "max_tokens": -3}, 400, "max_tokens"),
    ("beyond max_model_len", {"prompt": "hi", "max_tokens": TINY_MAX_MODEL_LEN}, 400, "max_tokens"),
    ("prompt longer than the context", {"prompt": list(range(1000, 1000 + TINY_MAX_MODEL_LEN))}, 400, "prompt"),
    ("empty prompt", {"prompt": ""}, 400, "prompt"),
    ("token id outside the vocabulary", {"prompt": [5, 10**9], "max_tokens": 2}, 400, "prompt"),
    ("n > 1", {"prompt": "hi", "max_tokens": 2, "n": 2}, 400, "n"),
    ("penalty", {"prompt": "hi", "max_tokens": 2, "presence_penalty": 0.5}, 400, "presence_penalty"),
    ("a batch of prompts", {"prompt": ["a", "b"], "max_tokens": 2}, 400, "prompt"),
    ("stop string kept in the text", {"prompt": "hi", "max_tokens": 2, "stop": ["x"],
                                      "include_stop_str_in_output": True}, 400, "include_stop_str_in_output"),
    ("usage on every chunk", {"prompt": "hi", "max_tokens": 2, "stream": True,
                              "stream_options": {"include_usage": True, "continuous_usage_stats": True}}, 400,
     "continuous_usage_stats"),
    ("top_p out of range", {"prompt": "hi", "max_tokens": 2, "top_p": 0}, 400, None),
    ("stream_options without stream", {"prompt": "hi", "max_tokens": 2, "stream_options": {"include_usage": True}},
     400, "stream_options"),
    ("stream_options with stream false", {"prompt": "hi", "max_tokens": 2, "stream": False,
                                          "stream_options": {"include_usage": False}}, 400, "stream_options"),
    ("temperature inf (1e309)", b'{"prompt": "hi", "max_tokens": 2, "temperature": 1e309}', 400, "temperature"),
    ("temperature NaN", b'{"prompt": "hi", "max_tokens": 2, "temperature": NaN}', 400, "temperature"),
    ("negative stop token id", {"prompt": "hi", "max_tokens": 2, "stop_token_ids": [-1]}, 400, "stop_token_ids"),
    ("stop token id beyond the vocabulary", {"prompt": "hi", "max_tokens": 2, "stop_token_ids": [3, 10**9]}, 400,
     "stop_token_ids"),
    ("min_tokens above max_tokens", {"prompt": "hi", "max_tokens": 2, "min_tokens": 5}, 400, "min_tokens"),
    ("empty stop string", {"prompt": "hi", "max_tokens": 2, "stop": ["x", ""]}, 400, "stop"),
    ("unknown model", {"model": "gpt-9", "prompt": "hi", "max_tokens": 2}, 404, "model"),
    # Whole numbers past 64 bits: the recorder could not store them, and the server's run ended with it.
    ("priority beyond 64 bits", {"prompt": "hi", "max_tokens": 2, "priority": 2**70}, 400, "priority"),
    ("seed beyond 64 bits", {"prompt": "hi", "max_tokens": 2, "seed": 2**70}, 400, "seed"),
    ("negative priority beyond 64 bits", {"prompt": "hi", "max_tokens": 2, "priority": -(2**70)}, 400, "priority"),
    ("array body", [{"prompt": "hi"}], 400, None),
    ("number body", 5, 400, None),
    ("max_tokens a float", {"prompt": "hi", "max_tokens": 10.5}, 400, "max_tokens"),
    ("max_tokens huge", {"prompt": "hi", "max_tokens": 10**12}, 400, "max_tokens"),
    ("logprobs 21", {"prompt": "hi", "max_tokens": 2, "logprobs": 21}, 400, "logprobs"),
]


@pytest.mark.parametrize(("what", "body", "status", "param"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_an_openai_error(server: ServingServer, what: str, body: Any, status: int,
                                        param: str | None) -> None:
    kwargs: dict[str, Any] = {"content": body, "headers": {"content-type": "application/json"}} \
        if isinstance(body, bytes) else {"json": body}
    response = httpx2.post(f"{server.url}/v1/completions", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status and error["message"]
    if param is not None:
        assert error["param"] == param or param in error["message"]


def test_the_server_keeps_serving_after_the_bad_input_table(client: openai.OpenAI, server: ServingServer) -> None:
    """Runs after the table: none of it ended the engine's run (a priority of 2**70 once did)."""
    online = server.online
    assert online is not None
    assert not online.done, online.error
    assert client.completions.create(model="tiny", prompt=PROMPT, max_tokens=2).usage.completion_tokens == 2  # type: ignore[union-attr]


def test_stop_takes_more_than_openais_four_strings_and_a_model_may_be_left_out(server: ServingServer) -> None:
    """As vLLM: no cap on stop strings (OpenAI allows 4), and no `model` means the served one."""
    body = {"prompt": PROMPT, "max_tokens": 2, "stop": [f"stop-{i}" for i in range(10)]}
    response = httpx2.post(f"{server.url}/v1/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "tiny"


def test_chat_without_a_template_is_the_documented_plain_format(client: openai.OpenAI, server: ServingServer,
                                                                 db: Path) -> None:
    """tiny has no chat template: the server renders engine.chat_prompt's fallback, one `role: content`
    line per message (text parts joined by newlines), then `assistant:`."""
    messages: list[Any] = [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": [{"type": "text", "text": "Hello"},
                                                        {"type": "text", "text": "there"}]}]
    rendered = "system: Be brief.\nuser: Hello\nthere\nassistant:"
    assert plain_chat_text(conversation(messages)) == rendered
    codec = server.backend.codec
    assert isinstance(codec, TokenizerCodec) and codec.tokenizer is not None
    assert not getattr(codec.tokenizer, "chat_template", None)
    expected_ids = codec.tokenizer.encode(rendered)
    raw = client.chat.completions.with_raw_response.create(model="tiny", messages=messages, max_tokens=12,
                                                           temperature=0)
    chat = raw.parse()
    assert chat.usage is not None and chat.usage.prompt_tokens == len(expected_ids)
    assert _row(db, server, raw.headers["x-request-id"])["prompt_len"] == len(expected_ids)
    # The same ids as a completion prompt continue the same way: the prompt is those ids, not just as many.
    same = client.completions.create(model="tiny", prompt=expected_ids, max_tokens=12, temperature=0)
    assert chat.choices[0].message.content == same.choices[0].text


def test_bad_chat_input_and_the_server_keeps_serving(server: ServingServer, client: openai.OpenAI) -> None:
    url = f"{server.url}/v1/chat/completions"
    assert httpx2.post(url, json={"messages": []}, timeout=30).status_code == 400
    image = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    assert httpx2.post(url, json=image, timeout=30).status_code == 400
    assert httpx2.post(url, json={"messages": [{"role": "user", "content": "hi"}], "tools": [{}]},
                       timeout=30).status_code == 400
    for role in ("user", "system", "tool"):  # as OpenAI's message types (and vLLM): only an assistant's may be null
        null = httpx2.post(url, json={"messages": [{"role": role, "content": None}], "max_tokens": 2}, timeout=30)
        assert null.status_code == 400 and null.json()["error"]["param"] == "messages", (role, null.text)
        assert "content null" in null.json()["error"]["message"]
    tool_turn = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None},
                 {"role": "user", "content": "and?"}]
    assert httpx2.post(url, json={"messages": tool_turn, "max_tokens": 2}, timeout=30).status_code == 200
    # vLLM refuses stream_options only when it holds something: an empty one with stream false passes.
    assert httpx2.post(url, json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                                  "stream_options": {}}, timeout=30).status_code == 200
    done = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "still there?"}],
                                          max_tokens=3)
    assert done.usage is not None and done.usage.completion_tokens == 3


def test_models_health_version(server: ServingServer) -> None:
    models = httpx2.get(f"{server.url}/v1/models", timeout=30).json()
    assert [m["id"] for m in models["data"]] == ["tiny"]
    assert models["data"][0]["max_model_len"] == TINY_MAX_MODEL_LEN
    assert httpx2.get(f"{server.url}/health", timeout=30).status_code == 200
    assert httpx2.get(f"{server.url}/version", timeout=30).json()["version"]
