"""`bench serve`'s client: stream a workload to any OpenAI-compatible server, timing every chunk.

As `vllm bench serve` does with its random dataset, each request goes to /v1/completions with its
prompt as token ids, `max_tokens` and `ignore_eos`, streaming, with usage in the last chunk. Timing
is vLLM's: TTFT is the first chunk with choices (its text may be empty: a token that completes no
character yet), ITL the gaps between later such chunks, E2E latency the last one; the server sends
one per step with new tokens, so on Batchscope chunks are tokens. Requests are named by the
workload (x-request-id, after a prefix new to each benchmark, so a second benchmark against the same
server reuses no id), so the server's recording uses the same ids; the server's run is read from
the x-batchscope-run-id header when the server is Batchscope.

The HTTP client is aiohttp, as vllm bench serve's: its C parser keeps the client's own time out of
the latencies it measures (a pure-Python client added about 1.4 ms to every TTFT at 25 req/s on 2
cores, BENCHMARKS.md, Serving).
"""

from __future__ import annotations

import asyncio
import codecs
import json
import re
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from engine.errors import UserError
from engine.workload.spec import RequestSpec
from engine.workload.synthetic import SyntheticPrompt
from serving.generation import RUN_ID_HEADER

DEFAULT_VOCAB_SIZE = 32_000  # synthetic prompt ids stay below this (tiny's and the simulator's vocabulary)
_SSE_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass
class RequestResult:
    request_id: str
    success: bool = False
    prompt_len: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    latency: float = 0.0
    start_time: float = 0.0  # seconds since the benchmark started
    error: str = ""
    run_id: int | None = None
    generated_text: str = ""


@dataclass(frozen=True)
class ClientOptions:
    base_url: str
    model: str | None = None  # None: the first model /v1/models lists
    api_key: str | None = None
    max_concurrency: int | None = None
    vocab_size: int = DEFAULT_VOCAB_SIZE
    id_prefix: str = ""  # sent before each workload id: a server keeps every id of its run, so a rerun needs new ones


def prompt_of(spec: RequestSpec, vocab_size: int) -> str | list[int]:
    """Text as given, ids as given, or a length made into ids the way the engine synthesizes them."""
    if spec.prompt_token_ids is not None:
        return list(spec.prompt_token_ids)
    if spec.prompt is not None:
        return spec.prompt
    assert spec.prompt_len is not None
    return list(SyntheticPrompt(spec.prompt_len, zlib.crc32(spec.request_id.encode()), vocab_size))


def request_body(spec: RequestSpec, model: str, vocab_size: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model, "prompt": prompt_of(spec, vocab_size), "max_tokens": spec.max_tokens,
        "temperature": spec.temperature, "ignore_eos": spec.ignore_eos, "stream": True,
        "stream_options": {"include_usage": True},
    }
    if spec.priority:  # vLLM refuses a priority unless it schedules by priority
        body["priority"] = spec.priority
    return body


async def discover_model(client: aiohttp.ClientSession, base_url: str, headers: dict[str, str]) -> str:
    """The first model the server lists; a server that is not there, or not OpenAI-compatible, said in one line."""
    url = f"{base_url}/v1/models"
    try:
        async with client.get(url, headers=headers) as response:
            if response.status != 200:
                raise UserError(f"{url} answered HTTP {response.status}: is {base_url} an OpenAI-compatible "
                                "server? (--model NAME skips this look-up)")
            listing = await response.json(content_type=None)
    except aiohttp.ClientConnectorError as exc:
        raise UserError(f"cannot connect to {base_url}: {exc.os_error.strerror or exc}; is the server "
                        "running?") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise UserError(f"{url} did not answer with a model list ({type(exc).__name__}: {exc})") from None
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "id" not in data[0]:
        raise UserError(f"{url} lists no model: is {base_url} an OpenAI-compatible server?")
    return str(data[0]["id"])


async def sse_lines(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The stream's lines, ended as server-sent events end them (CR, LF or CRLF) and nowhere else
    (str.splitlines would also split at U+2028, U+0085 and the other breaks it knows, which JSON
    leaves unescaped inside a string, a model's text, cutting a chunk in two)."""
    rest = ""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span two reads
    async for raw in resp.content.iter_any():
        *lines, rest = _SSE_LINE_END.split(rest + decoder.decode(raw))
        for line in lines:
            yield line
    if rest:
        yield rest


async def send_one(client: aiohttp.ClientSession, options: ClientOptions, model: str, spec: RequestSpec,
                   bench_start: float) -> RequestResult:
    result = RequestResult(options.id_prefix + spec.request_id)
    headers = {"x-request-id": result.request_id}
    if options.api_key:
        headers["Authorization"] = f"Bearer {options.api_key}"
    body = request_body(spec, model, options.vocab_size)
    if isinstance(body["prompt"], list):
        result.prompt_len = len(body["prompt"])
    start = time.perf_counter()
    result.start_time = start - bench_start
    last = start
    texts: list[str] = []  # one a chunk with choices, empty ones included
    try:
        async with client.post(f"{options.base_url}/v1/completions", json=body, headers=headers) as resp:
            run_id = resp.headers.get(RUN_ID_HEADER)
            result.run_id = int(run_id) if run_id and run_id.isdigit() else None
            if resp.status != 200:
                result.error = f"HTTP {resp.status}: {(await resp.read()).decode(errors='replace')[:500]}"
                return result
            async for line in sse_lines(resp):
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                now = time.perf_counter()
                chunk = json.loads(data)
                if "error" in chunk:
                    result.error = str(chunk["error"].get("message", chunk["error"]))
                    return result
                choices = chunk.get("choices") or []
                if choices:  # timed even without text (a token that completes no character yet), as vLLM's client
                    if not texts:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
                    texts.append(choices[0].get("text") or "")
                usage = chunk.get("usage")
                if usage:
                    result.output_tokens = int(usage.get("completion_tokens") or 0)
                    result.prompt_len = int(usage.get("prompt_tokens") or result.prompt_len)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    if not texts:
        result.error = "the stream carried no choices (no chunk to time the first token by)"
        return result
    result.success = True
    result.latency = last - start
    result.generated_text = "".join(texts)
    if not result.output_tokens:  # a server that sends no usage: one token per chunk
        result.output_tokens = len(texts)
    return result


async def run_requests(options: ClientOptions, specs: Sequence[RequestSpec],
                       send_times: Sequence[float]) -> tuple[list[RequestResult], float, str]:
    """Send each request at its time (seconds after the start), at most max_concurrency at once;
    returns the results in workload order, the benchmark's duration and the model name used."""
    headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
    connector = aiohttp.TCPConnector(limit=0)  # no cap on connections: max_concurrency is the only limit
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as client:
        model = options.model or await discover_model(client, options.base_url, headers)
        gate = asyncio.Semaphore(options.max_concurrency) if options.max_concurrency else None

        async def limited(spec: RequestSpec) -> RequestResult:
            if gate is None:
                return await send_one(client, options, model, spec, start)
            async with gate:
                return await send_one(client, options, model, spec, start)

        start = time.perf_counter()
        tasks = []
        for spec, at in zip(specs, send_times, strict=True):
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(limited(spec)))
        results = list(await asyncio.gather(*tasks))
        return results, time.perf_counter() - start, model
