"""Prompts in and text out for one served model: tokenizing, the chat template, a detokenizer per request.

Chat messages use the tokenizer's chat template when it has one, else a plain documented format
(engine.chat_prompt, shared with the offline LLM.chat).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from engine.chat_prompt import Messages, chat_prompt, plain_chat_text
from engine.detokenizer import Detokenizer, IncrementalDetokenizer, NoTextDetokenizer, SyntheticDetokenizer
from engine.executors.simulated import SimulatedExecutor


class PromptCodec(Protocol):
    vocab_size: int
    has_text: bool  # False: prompts must be token ids, and outputs have no text

    def encode(self, text: str) -> Sequence[int]: ...

    def encode_chat(self, messages: Messages) -> Sequence[int]: ...

    def detokenizer(self, prompt_token_ids: Sequence[int]) -> Detokenizer: ...

    def token_text(self, token_id: int) -> str:
        """One token's text for its log-probability entry (vLLM decodes each token alone)."""
        ...


class TokenizerCodec:
    """A real model's Hugging Face tokenizer (None: a model folder that ships none)."""

    def __init__(self, tokenizer: Any | None, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.has_text = tokenizer is not None

    def encode(self, text: str) -> Sequence[int]:
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: send the prompt as token ids")
        return list(self.tokenizer.encode(text))

    def encode_chat(self, messages: Messages) -> Sequence[int]:
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer, so chat messages cannot be encoded; use /v1/completions "
                             "with token ids")
        return chat_prompt(self.tokenizer, messages)[1]

    def detokenizer(self, prompt_token_ids: Sequence[int]) -> Detokenizer:
        if self.tokenizer is None:
            return NoTextDetokenizer()
        return IncrementalDetokenizer(self.tokenizer, prompt_token_ids)

    def token_text(self, token_id: int) -> str:
        if self.tokenizer is None:
            return token_id_text(token_id)
        return str(self.tokenizer.decode([token_id]))


class SyntheticCodec:
    """A simulated server: prompts become synthetic token ids (about four characters a token, as
    the simulated executor counts them), outputs are placeholder text."""

    has_text = True

    def __init__(self, executor: SimulatedExecutor) -> None:
        self._executor = executor
        self.vocab_size = executor.vocab_size

    def encode(self, text: str) -> Sequence[int]:
        return self._executor.encode(text)

    def encode_chat(self, messages: Messages) -> Sequence[int]:
        return self.encode(plain_chat_text(messages))

    def detokenizer(self, prompt_token_ids: Sequence[int]) -> Detokenizer:
        return SyntheticDetokenizer()

    def token_text(self, token_id: int) -> str:
        return token_id_text(token_id)


def token_id_text(token_id: int) -> str:
    """A token without a tokenizer, as vLLM writes it under return_tokens_as_token_ids."""
    return f"token_id:{token_id}"
