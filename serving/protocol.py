"""The OpenAI-compatible wire format: request bodies as clients send them, responses as they expect them.

Requests accept vLLM's extra sampling fields (top_k, ignore_eos, min_tokens, stop_token_ids,
priority) and ignore fields they do not know, as vLLM does; fields whose feature Batchscope lacks
(penalties, n > 1, echo, include_stop_str_in_output, continuous_usage_stats ...) are refused
by name in serving.validation, never silently dropped.
Numbers and booleans are strict: `"max_tokens": "7"` is a 400, not a 7; whole numbers fit in 64 bits.
`stop` takes any number of strings, as vLLM (OpenAI caps it at 4); each is matched against the text.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from engine.limits import INT64_MAX, INT64_MIN

# Whole numbers a 64-bit column (and torch's seed) can hold, as vLLM bounds seed: a priority or seed of
# 2**70 is a 400 here, not an overflow in the recorder that ends the server's run.
Int64 = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]
Number = StrictInt | StrictFloat


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: StrictBool = False


class SamplingFields(BaseModel):
    """What completions and chat completions share."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr | None = None
    max_tokens: Int64 | None = None  # None: the rest of the context
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: Int64 | None = None
    seed: Int64 | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stop_token_ids: list[Int64] | None = None
    ignore_eos: StrictBool = False
    min_tokens: Int64 = 0
    priority: Int64 = 0
    n: Int64 = 1
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None
    logprobs: Any = None  # completions: how many top tokens (0-20); chat: true / false (checked in validation)
    top_logprobs: Any = None  # chat: how many top tokens with logprobs = true
    # Known fields Batchscope cannot honour; refused when set to anything but their neutral value.
    best_of: Int64 | None = None
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    repetition_penalty: Number | None = None
    logit_bias: dict[str, Any] | None = None
    min_p: Number | None = None
    use_beam_search: StrictBool | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(SamplingFields):
    prompt: StrictStr | list[StrictStr] | list[Int64] | list[list[Int64]]
    echo: StrictBool | None = None
    suffix: StrictStr | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: StrictStr
    text: StrictStr | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: StrictStr
    content: StrictStr | list[ContentPart] | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Int64 | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None


# -- responses -----------------------------------------------------------------------------------
class UsageInfo(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> UsageInfo:
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens)


FinishReason = Literal["stop", "length", "abort"]


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy completions shape: parallel lists, one entry per output token."""

    text_offset: list[int] = Field(default_factory=list)  # where each token's text starts in the completion
    token_logprobs: list[float] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)  # the top ones and the sampled token


class ChatTopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(ChatTopLogprob):
    top_logprobs: list[ChatTopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None  # vLLM's: the stop string or stop token id that ended it


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: UsageInfo | None = None


class CompletionChunk(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


def sse(chunk: BaseModel) -> str:
    """One server-sent event; `usage` appears only on the chunk that carries it, as OpenAI sends it."""
    exclude = {"usage"} if getattr(chunk, "usage", None) is None else None
    return f"data: {chunk.model_dump_json(exclude=exclude)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    error: ErrorInfo
