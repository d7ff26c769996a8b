"""One request's bridge from the engine thread to its HTTP handler.

The engine loop calls the sink on its own thread after every step; the sink turns tokens into text
(detokenizing, applying stop strings, so the stop decision lands before the next step) and hands the
result to the handler's asyncio queue with call_soon_threadsafe, which never blocks the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from engine.detokenizer import OutputText
from engine.online import RequestOutput
from engine.token_logprobs import TokenLogprobs
from serving.protocol import FinishReason

_FINISH_REASONS: dict[str, FinishReason] = {"stopped": "stop", "length": "length", "aborted": "abort"}


@dataclass(frozen=True)
class Admitted:
    run_id: int | None
    reject_reason: str | None  # the engine refused it (a 400)


@dataclass(frozen=True)
class TextDelta:
    text: str
    num_output_tokens: int
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None  # the stop string or stop token id that ended it
    logprobs: tuple[TokenLogprobs, ...] = ()  # the new tokens' (all of them, a stop token included)


@dataclass(frozen=True)
class Failed:
    message: str


Event = Admitted | TextDelta | Failed


class StreamSink:
    """An engine.online.OutputSink feeding an asyncio queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, text: OutputText, stop_token_ids: Sequence[int] = ()) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self._loop = loop
        self._text = text
        self._stop_ids = frozenset(stop_token_ids)
        self._finished = False

    def _put(self, event: Event) -> None:
        # A closed event loop (the server shutting down) has nobody listening.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def admitted(self, run_id: int | None, reject_reason: str | None) -> None:
        if reject_reason is not None:
            self._finished = True
        self._put(Admitted(run_id, reject_reason))

    def output(self, out: RequestOutput) -> bool:
        if self._finished:
            return False
        if out.finish_reason == "error":
            self._finished = True
            self._put(Failed(out.error or "the engine failed"))
            return False
        ids = out.new_token_ids
        stop_reason: int | str | None = None
        if out.finish_reason == "stopped" and ids:
            # EOS or a stop token ended it: like vLLM, its text is not part of the output.
            stop_reason = ids[-1] if ids[-1] in self._stop_ids else None
            ids = ids[:-1]
        text, stop_string = self._text.add(ids, final=out.finish_reason is not None)
        if stop_string is not None:
            self._finished = True
            self._put(TextDelta(text, out.num_output_tokens, "stop", stop_string, out.new_logprobs))
            return True
        reason = _FINISH_REASONS.get(out.finish_reason) if out.finish_reason else None
        if reason is not None:
            self._finished = True
        self._put(TextDelta(text, out.num_output_tokens, reason, stop_reason, out.new_logprobs))
        return False
