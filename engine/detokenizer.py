"""Incremental detokenization and stop strings, as the server streams them and the offline LLM stops on them.

- A character whose bytes are split across tokens is never emitted half-decoded: text is released
  only once the decoded window no longer ends in U+FFFD (the replacement an incomplete UTF-8
  sequence decodes to). The window is re-decoded with a little context before it (TGI's and vLLM's
  prefix/read offsets), so tokenizers that drop a leading space at the start of a decode still
  produce the right text. At the end whatever is left is released, even a broken character (a
  model can emit bytes that never form one).
- Text that may be the start of a stop string is held back until it is known not to be; a stop
  string that completes truncates the output before it (vLLM's default), and is reported.
- Stop strings are looked for only once the request has more than min_tokens tokens, as vLLM does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

PROMPT_CONTEXT_TOKENS = 5  # prompt tokens decoded before the output, for tokenizers whose decode drops a leading space
SIMULATED_TOKEN_TEXT = " [sim]"  # what every token of a simulated server reads as


class Detokenizer(Protocol):
    def add(self, token_ids: Sequence[int]) -> str:
        """Text that these tokens complete (maybe empty while a character is incomplete)."""
        ...

    def flush(self) -> str:
        """Whatever is still held, at the end."""
        ...


class IncrementalDetokenizer:
    """For a Hugging Face tokenizer (its decode(ids, skip_special_tokens=True))."""

    def __init__(self, tokenizer: Any, prompt_token_ids: Sequence[int] = ()) -> None:
        self._tok = tokenizer
        self._ids: list[int] = list(prompt_token_ids[-PROMPT_CONTEXT_TOKENS:]) if prompt_token_ids else []
        self._prefix = 0  # start of the decode window
        self._read = len(self._ids)  # tokens before this have been released as text

    def _decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))

    def add(self, token_ids: Sequence[int]) -> str:
        self._ids.extend(token_ids)
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        new_text = self._decode(self._ids[self._prefix:])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        if self._prefix > 1024:  # keep the buffer short on long outputs
            del self._ids[:self._prefix]
            self._read -= self._prefix
            self._prefix = 0
        return new_text[len(prefix_text):]

    def flush(self) -> str:
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        new_text = self._decode(self._ids[self._prefix:])
        self._prefix = self._read = len(self._ids)
        return new_text[len(prefix_text):] if len(new_text) > len(prefix_text) else ""


class SyntheticDetokenizer:
    """A simulated server's tokens: each reads as SIMULATED_TOKEN_TEXT, so nobody mistakes it for a model."""

    def add(self, token_ids: Sequence[int]) -> str:
        return SIMULATED_TOKEN_TEXT * len(token_ids)

    def flush(self) -> str:
        return ""


class NoTextDetokenizer:
    """A model without a tokenizer: token ids only, no text."""

    def add(self, token_ids: Sequence[int]) -> str:
        return ""

    def flush(self) -> str:
        return ""


class OutputText:
    """One request's output text: detokenized, stop strings applied, released when safe."""

    def __init__(self, detokenizer: Detokenizer, stop: Sequence[str] = (), min_tokens: int = 0) -> None:
        self._detok = detokenizer
        self._stops = tuple(s for s in stop if s)
        self._min_tokens = min_tokens
        self._num_tokens = 0
        self.text = ""  # everything decoded and kept (released or held)
        self._released = 0  # characters of self.text handed out

    def add(self, token_ids: Sequence[int], final: bool = False) -> tuple[str, str | None]:
        """Text that may be released now, and the stop string that ended the output (if one did)."""
        self._num_tokens += len(token_ids)
        new = self._detok.add(token_ids)
        if final:
            new += self._detok.flush()
        start = len(self.text)
        self.text += new
        stops = self._stops if self._num_tokens > self._min_tokens else ()
        if stops:
            hit = self._find_stop(start)
            if hit is not None:
                at, stop = hit
                self.text = self.text[:max(at, self._released)]
                return self._release(len(self.text)), stop
        hold = 0 if final or not stops else self._held_back()
        return self._release(len(self.text) - hold), None

    def _release(self, upto: int) -> str:
        if upto <= self._released:
            return ""
        out = self.text[self._released:upto]
        self._released = upto
        return out

    def _find_stop(self, new_from: int) -> tuple[int, str] | None:
        """The earliest stop string that ends in the new text."""
        best: tuple[int, str] | None = None
        for stop in self._stops:
            at = self.text.find(stop, max(0, new_from - len(stop) + 1))
            if at >= 0 and (best is None or at < best[0]):
                best = (at, stop)
        return best

    def _held_back(self) -> int:
        """Characters at the end that are the start of some stop string."""
        text = self.text
        room = len(text) - self._released
        hold = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, room), hold, -1):
                if text.endswith(stop[:k]):
                    hold = k
                    break
        return hold
