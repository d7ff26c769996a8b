"""Sampled tokens' log-probabilities in OpenAI's two wire shapes, as vLLM fills them.

Completions: parallel lists (tokens, token_logprobs, top_logprobs as {text: logprob} with the
sampled token among them, text_offset). Chat: one entry per token with its UTF-8 bytes and the
top ones. One entry per output token, the EOS or stop token that ended it included, as vLLM counts
it in `usage`; a stop string cuts the text, not the tokens. -inf is written as -9999.0 (vLLM's
floor), since JSON has no infinity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from engine.token_logprobs import TokenLogprobs
from serving.protocol import ChatLogprobs, ChatTokenLogprob, ChatTopLogprob, CompletionLogprobs

TokenText = Callable[[int], str]
LOGPROB_FLOOR = -9999.0


def _finite(logprob: float) -> float:
    return max(logprob, LOGPROB_FLOOR)


def completion_logprobs(entries: Sequence[TokenLogprobs], token_text: TokenText,
                        text_offset: int = 0) -> CompletionLogprobs:
    """`text_offset`: where the first of these tokens starts (a stream's earlier tokens' text)."""
    out = CompletionLogprobs()
    for entry in entries:
        text = token_text(entry.token_id)
        out.tokens.append(text)
        out.token_logprobs.append(_finite(entry.logprob))
        out.text_offset.append(text_offset)
        text_offset += len(text)
        top = {token_text(token): _finite(lp) for token, lp in entry.top}
        top.setdefault(text, _finite(entry.logprob))
        out.top_logprobs.append(top)
    return out


def next_text_offset(logprobs: CompletionLogprobs) -> int:
    """Where the token after these starts."""
    if not logprobs.tokens:
        return 0
    return logprobs.text_offset[-1] + len(logprobs.tokens[-1])


def chat_logprobs(entries: Sequence[TokenLogprobs], token_text: TokenText) -> ChatLogprobs:
    def top(token: int, logprob: float) -> ChatTopLogprob:
        text = token_text(token)
        return ChatTopLogprob(token=text, logprob=_finite(logprob), bytes=list(text.encode("utf-8", "replace")))

    content = []
    for entry in entries:
        sampled = top(entry.token_id, entry.logprob)
        content.append(ChatTokenLogprob(**sampled.model_dump(),
                                        top_logprobs=[top(token, lp) for token, lp in entry.top]))
    return ChatLogprobs(content=content)
