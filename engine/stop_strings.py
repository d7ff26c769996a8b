"""The offline LLM's stop strings: each watched request's text is decoded as its tokens come (the
same incremental detokenizer and stop-string search the server streams with), and a request whose
text completes a stop string is stopped before its next step, its text cut before the string, as
vLLM's LLM does by default. Only requests that have stop strings are watched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.detokenizer import IncrementalDetokenizer, OutputText
from engine.engine_loop import Engine
from engine.request import Request


@dataclass(slots=True)
class _Watched:
    text: OutputText
    seen: int = 0  # output tokens already decoded
    stop: str | None = None  # the stop string that ended it


class StopStrings:
    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._watched: dict[str, _Watched] = {}
        self._live: list[str] = []  # watched requests not yet ended

    def watch(self, req: Request) -> None:
        stop = req.sampling_params.stop
        if not stop:
            return
        stops = (stop,) if isinstance(stop, str) else tuple(stop)
        # No prompt context: the text then decodes as executor.decode(outputs) does for every other
        # request (a SentencePiece tokenizer's leading space included), so a stop string only cuts it.
        detok = IncrementalDetokenizer(self._tokenizer)
        self._watched[req.request_id] = _Watched(OutputText(detok, stops, req.sampling_params.min_tokens))
        self._live.append(req.request_id)

    def after_step(self, engine: Engine) -> None:
        """Decode what each live watched request sampled this step; stop those a stop string ended."""
        still: list[str] = []
        for rid in self._live:
            req = engine.requests[rid]
            watched = self._watched[rid]
            new = req.output_token_ids[watched.seen:]
            watched.seen += len(new)
            if new:
                _, watched.stop = watched.text.add(new, final=req.is_finished)
                if watched.stop is not None:
                    engine.stop_request(rid)  # applied before the next step, or by finish()
                    continue
            if not req.is_finished:
                still.append(rid)
        self._live = still

    def ended(self, request_id: str) -> tuple[str, str] | None:
        """(text before the stop string, the stop string) when one ended the request."""
        watched = self._watched.get(request_id)
        if watched is None or watched.stop is None:
            return None
        return watched.text.text, watched.stop
