"""Serving one completion: hand it to the engine loop, then stream server-sent events or answer once.

The handler waits for the engine to take the request before it answers, so the response headers can
name the recorded run (`x-batchscope-run-id`) and a refusal is a plain 400. A client that goes away
(mid-stream, or while waiting) aborts its request; the engine records it as aborted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from engine.detokenizer import OutputText
from engine.online import NotAcceptingError, OnlineRequest, QueueFullError
from engine.token_logprobs import TokenLogprobs
from serving.errors import APIError, error_body
from serving.logprobs_format import chat_logprobs, completion_logprobs, next_text_offset
from serving.protocol import (
    SSE_DONE,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatMessageOut,
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    CompletionResponse,
    DeltaMessage,
    FinishReason,
    UsageInfo,
    sse,
)
from serving.request_stream import Admitted, Event, Failed, StreamSink, TextDelta
from serving.state import ServingState
from serving.validation import Prepared

DISCONNECT_POLL_S = 0.5  # how often a waiting handler checks that its client is still there
RUN_ID_HEADER = "x-batchscope-run-id"

Kind = Literal["completion", "chat"]


@dataclass
class _Job:
    state: ServingState
    prepared: Prepared
    sink: StreamSink
    kind: Kind
    response_id: str
    created: int
    next_disconnect_check: float = 0.0  # the event loop's clock

    @property
    def request_id(self) -> str:
        return self.prepared.request_id

    def abort(self) -> None:
        self.state.online.abort(self.request_id)


async def generate(state: ServingState, request: Request, prepared: Prepared, kind: Kind,
                   received_at: float | None) -> Response:
    loop = asyncio.get_running_loop()
    params = prepared.params
    text = OutputText(state.codec.detokenizer(prepared.prompt_token_ids), prepared.stop, params.min_tokens)
    sink = StreamSink(loop, text, params.stop_token_ids)
    online_request = OnlineRequest(prepared.request_id, prepared.prompt_token_ids, params,
                                   priority=prepared.priority, received_at=received_at)
    try:
        state.online.submit(online_request, sink, max_waiting=state.max_waiting)
    except QueueFullError as exc:
        raise APIError(503, f"the server is overloaded: {exc}; retry later") from None
    except NotAcceptingError as exc:
        raise APIError(503, str(exc)) from None
    prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
    job = _Job(state, prepared, sink, kind, prefix + prepared.request_id, int(time.time()))
    first = await _next_event(job, request)
    if first is None:
        return Response(status_code=499)  # the client left; nobody reads this
    if isinstance(first, Failed):
        raise APIError(500, first.message)
    assert isinstance(first, Admitted)
    if first.reject_reason is not None:
        raise APIError(400, f"the engine refused the request: {first.reject_reason}")
    headers = {"x-request-id": prepared.request_id}
    if first.run_id is not None:
        headers[RUN_ID_HEADER] = str(first.run_id)
    if prepared.stream:
        return StreamingResponse(_stream(job), media_type="text/event-stream", headers=headers)
    return await _collect(job, request, headers)


async def _next_event(job: _Job, request: Request) -> Event | None:
    """The next event, or None (after aborting the request) if the client disconnects first. The
    client is looked for every DISCONNECT_POLL_S however often events come: a non-streaming request
    gets one every step, and one that only looked when none came in time would run to its end for
    a client long gone."""
    loop = asyncio.get_running_loop()
    getter = asyncio.ensure_future(job.sink.queue.get())
    try:
        while True:
            now = loop.time()
            if now >= job.next_disconnect_check:
                job.next_disconnect_check = now + DISCONNECT_POLL_S
                if await request.is_disconnected():
                    job.abort()
                    return None
            done, _ = await asyncio.wait({getter}, timeout=max(job.next_disconnect_check - now, 0.0))
            if done:
                return getter.result()
    finally:
        if not getter.done():
            getter.cancel()


async def _collect(job: _Job, request: Request, headers: dict[str, str]) -> Response:
    pieces: list[str] = []
    entries: list[TokenLogprobs] = []
    while True:
        event = await _next_event(job, request)
        if event is None:
            return Response(status_code=499)
        if isinstance(event, Failed):
            return JSONResponse(error_body(500, event.message), status_code=500, headers=headers)
        assert isinstance(event, TextDelta)
        pieces.append(event.text)
        entries.extend(event.logprobs)
        if event.finish_reason is not None:
            break
    usage = UsageInfo.of(len(job.prepared.prompt_token_ids), event.num_output_tokens)
    text = "".join(pieces)
    wants_logprobs = job.prepared.params.logprobs is not None
    codec = job.state.codec
    body: CompletionResponse | ChatCompletionResponse
    if job.kind == "chat":
        body = ChatCompletionResponse(id=job.response_id, created=job.created, model=job.state.served_model_name,
                                      choices=[ChatChoice(message=ChatMessageOut(content=text),
                                                          logprobs=chat_logprobs(entries, codec.token_text)
                                                          if wants_logprobs else None,
                                                          finish_reason=event.finish_reason,
                                                          stop_reason=event.stop_reason)], usage=usage)
    else:
        body = CompletionResponse(id=job.response_id, created=job.created, model=job.state.served_model_name,
                                  choices=[CompletionChoice(text=text, finish_reason=event.finish_reason,
                                                            logprobs=completion_logprobs(entries, codec.token_text)
                                                            if wants_logprobs else None,
                                                            stop_reason=event.stop_reason)], usage=usage)
    return JSONResponse(body.model_dump(mode="json"), headers=headers)


def _chunk(job: _Job, text: str | None, finish_reason: FinishReason | None, stop_reason: int | str | None = None,
           role: bool = False, logprobs: CompletionLogprobs | ChatLogprobs | None = None) -> str:
    model = job.state.served_model_name
    if job.kind == "chat":
        delta = DeltaMessage(role="assistant", content="") if role else DeltaMessage(content=text)
        assert logprobs is None or isinstance(logprobs, ChatLogprobs)
        return sse(ChatCompletionChunk(id=job.response_id, created=job.created, model=model, choices=[
            ChatChunkChoice(delta=delta, logprobs=logprobs, finish_reason=finish_reason, stop_reason=stop_reason)]))
    assert logprobs is None or isinstance(logprobs, CompletionLogprobs)
    return sse(CompletionChunk(id=job.response_id, created=job.created, model=model, choices=[
        CompletionChoice(text=text or "", logprobs=logprobs, finish_reason=finish_reason, stop_reason=stop_reason)]))


class _StreamLogprobs:
    """Each chunk's tokens' logprobs; completions' text offsets run on across chunks."""

    def __init__(self, job: _Job) -> None:
        self._wanted = job.prepared.params.logprobs is not None
        self._chat = job.kind == "chat"
        self._codec = job.state.codec
        self._offset = 0

    def of(self, entries: tuple[TokenLogprobs, ...]) -> CompletionLogprobs | ChatLogprobs | None:
        if not self._wanted:
            return None
        if self._chat:
            return chat_logprobs(entries, self._codec.token_text)
        out = completion_logprobs(entries, self._codec.token_text, self._offset)
        self._offset = next_text_offset(out) if out.tokens else self._offset
        return out


def _usage_chunk(job: _Job, completion_tokens: int) -> str:
    usage = UsageInfo.of(len(job.prepared.prompt_token_ids), completion_tokens)
    model = job.state.served_model_name
    if job.kind == "chat":
        return sse(ChatCompletionChunk(id=job.response_id, created=job.created, model=model, choices=[], usage=usage))
    return sse(CompletionChunk(id=job.response_id, created=job.created, model=model, choices=[], usage=usage))


async def _stream(job: _Job) -> AsyncIterator[str]:
    """Server-sent events; if the client goes away the response task is cancelled here and the
    request is aborted."""
    ended = False
    try:
        if job.kind == "chat":
            yield _chunk(job, None, None, role=True)
        completion_tokens = 0
        stream_logprobs = _StreamLogprobs(job)
        while True:
            event = await job.sink.queue.get()
            if isinstance(event, Failed):
                ended = True
                yield f"data: {json.dumps(error_body(500, event.message))}\n\n"
                break
            assert isinstance(event, TextDelta)
            new_tokens = event.num_output_tokens > completion_tokens
            completion_tokens = event.num_output_tokens
            if event.finish_reason is not None:
                ended = True
            # A step's tokens get their chunk even when they complete no text yet (part of a character):
            # vLLM streams one chunk per step with new tokens, and clients time TTFT and ITL by chunks.
            if event.text or new_tokens or event.finish_reason is not None:
                logprobs = stream_logprobs.of(event.logprobs)
                if job.kind == "chat" and not event.text and event.finish_reason is not None:
                    yield _chunk(job, None, event.finish_reason, event.stop_reason, logprobs=logprobs)
                else:
                    yield _chunk(job, event.text, event.finish_reason, event.stop_reason, logprobs=logprobs)
            if ended:
                break
        if job.prepared.include_usage:
            yield _usage_chunk(job, completion_tokens)
        yield SSE_DONE
    finally:
        if not ended:
            job.abort()

