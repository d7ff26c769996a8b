"""One streamed chunk per step with new tokens, even when they complete no text yet (part of a
character), as vLLM streams; `bench serve` times every chunk with choices, as vLLM's client does, so
TTFT is the first token's step and ITL has one gap per later token; and it splits the stream only at
SSE's line ends, so text with U+2028 or U+0085 (which JSON leaves unescaped) reads whole."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import httpx2

from engine.chat_prompt import Messages, plain_chat_text
from engine.workload.spec import RequestSpec
from serving.backend import Backend
from serving.bench_client import ClientOptions, run_requests
from tests.serving_helpers import serve, simulated


class EveryOtherToken:
    """A detokenizer whose tokens come in pairs: the first of a pair completes no character, the second
    releases both (as a byte-level tokenizer's split UTF-8 does)."""

    def __init__(self, pair_text: str = "ab") -> None:
        self._count = 0
        self._pair_text = pair_text

    def add(self, token_ids: Sequence[int]) -> str:
        out = ""
        for _ in token_ids:
            self._count += 1
            out += self._pair_text if self._count % 2 == 0 else ""
        return out

    def flush(self) -> str:
        return ""


class PairCodec:
    has_text = True
    vocab_size = 32_000

    def __init__(self, pair_text: str = "ab") -> None:
        self.pair_text = pair_text

    def encode(self, text: str) -> Sequence[int]:
        return [1] * max(1, len(text) // 4)

    def encode_chat(self, messages: Messages) -> Sequence[int]:
        return self.encode(plain_chat_text(messages))

    def detokenizer(self, prompt_token_ids: Sequence[int]) -> EveryOtherToken:
        return EveryOtherToken(self.pair_text)


def pair_backend(pair_text: str = "ab") -> Backend:
    return dataclasses.replace(simulated(step_s=0.002, max_num_seqs=8), codec=PairCodec(pair_text))


def _stream_chunks(url: str, body: dict[str, object], path: str = "/v1/completions") -> list[dict[str, object]]:
    chunks = []
    with httpx2.stream("POST", url + path, json=body, timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                chunks.append(json.loads(line[5:]))
    return chunks


def test_every_step_with_tokens_gets_a_chunk_even_without_text(tmp_path: Path) -> None:
    with serve(pair_backend(), tmp_path / "s.db", record=False) as server:
        body = {"prompt": [5] * 10, "max_tokens": 7, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        chunks = _stream_chunks(server.url, body)
        chat = _stream_chunks(server.url, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                                           "ignore_eos": True, "stream": True}, "/v1/chat/completions")
    with_choices = [c for c in chunks if c["choices"]]
    assert len(with_choices) == 7  # one per token: 3 pairs and a last token flushed at the end
    texts = [c["choices"][0]["text"] for c in with_choices]  # type: ignore[index]
    assert texts == ["", "ab", "", "ab", "", "ab", ""] and "".join(texts) == "ababab"
    assert [c["choices"][0]["finish_reason"] for c in with_choices][-1] == "length"  # type: ignore[index]
    assert chunks[-1]["usage"]["completion_tokens"] == 7  # type: ignore[index]
    deltas = [c["choices"][0]["delta"] for c in chat]  # type: ignore[index]
    assert deltas[0] == {"role": "assistant", "content": ""} and len(deltas) == 1 + 5  # the role, then one a token
    assert "".join(d.get("content") or "" for d in deltas) == "abab"


def test_bench_client_times_every_token(tmp_path: Path) -> None:
    specs = [RequestSpec(f"r{i}", 0.0, max_tokens=9, prompt_len=12) for i in range(4)]
    with serve(pair_backend(), tmp_path / "s.db", record=False) as server:
        results, _, _ = asyncio.run(run_requests(ClientOptions(server.url, max_concurrency=2), specs, [0.0] * 4))
    for r in results:
        assert r.success, r.error
        assert r.output_tokens == 9 and len(r.itl) == 8  # the first token's chunk is TTFT, then a gap per token
        assert r.generated_text == "abababab"
        assert r.latency >= r.ttft > 0


def test_bench_client_reads_text_with_unicode_line_breaks(tmp_path: Path) -> None:
    specs = [RequestSpec("r0", 0.0, max_tokens=4, prompt_len=12)]
    with serve(pair_backend("a\u2028b\x85c\u2029"), tmp_path / "s.db", record=False) as server:
        results, _, _ = asyncio.run(run_requests(ClientOptions(server.url), specs, [0.0]))
    assert results[0].success, results[0].error
    assert results[0].generated_text == "a\u2028b\x85c\u2029" * 2 and len(results[0].itl) == 3
