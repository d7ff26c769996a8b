"""From a parsed request body to what the engine needs, or an APIError that says what is wrong.

Checks happen before anything reaches the engine, so a bad request is answered at once and never
disturbs the others: fields Batchscope cannot honour, the prompt (empty, outside the vocabulary,
too long), max_tokens (<= 0, or beyond the context as vLLM counts it) and the sampling values.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from engine.chat_prompt import conversation
from engine.sampling_params import SamplingParams, SamplingParamsError
from engine.token_logprobs import check_num_logprobs
from engine.workload.synthetic import SyntheticPrompt
from serving.errors import APIError
from serving.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields
from serving.state import ServingState

MAX_REQUEST_ID_LEN = 128  # what the requests table stores


@dataclass(frozen=True)
class Prepared:
    request_id: str
    prompt_token_ids: Sequence[int]
    params: SamplingParams
    priority: int
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def check_model(state: ServingState, body: SamplingFields) -> None:
    if body.model is not None and body.model != state.served_model_name:
        raise APIError(404, f"The model `{body.model}` does not exist. This server serves `{state.served_model_name}`.",
                       "model")


def _refuse(name: str, why: str) -> APIError:
    return APIError(400, f"'{name}' is not supported by Batchscope: {why}", name)


def check_supported(body: SamplingFields) -> None:
    """Refuse, by name, the fields whose feature the engine lacks (never drop them silently)."""
    if body.n != 1:
        raise _refuse("n", "one choice per request; send n = 1")
    if body.best_of not in (None, 1):
        raise _refuse("best_of", "one sequence per request")
    if body.use_beam_search:
        raise _refuse("use_beam_search", "no beam search")
    for name, neutral in (("presence_penalty", 0), ("frequency_penalty", 0), ("repetition_penalty", 1), ("min_p", 0)):
        value = getattr(body, name)
        if value is not None and value != neutral:
            raise _refuse(name, "the sampler has temperature, top_p, top_k and seed only")
    if body.logit_bias:
        raise _refuse("logit_bias", "the sampler has temperature, top_p, top_k and seed only")
    if body.response_format and body.response_format.get("type") not in (None, "text"):
        raise _refuse("response_format", "no structured output")
    if (body.model_extra or {}).get("include_stop_str_in_output"):
        raise _refuse("include_stop_str_in_output", "a stop string ends the text and is not included")
    if body.stream_options is not None and (body.stream_options.model_extra or {}).get("continuous_usage_stats"):
        raise _refuse("continuous_usage_stats", "usage comes in the last chunk only (stream_options.include_usage)")
    if isinstance(body, CompletionRequest):
        if body.echo:
            raise _refuse("echo", "the prompt is not returned")
        if body.suffix:
            raise _refuse("suffix", "no insertion")
    if isinstance(body, ChatCompletionRequest) and (body.tools or body.tool_choice not in (None, "none")):
        raise _refuse("tools", "no tool calling")


def requested_logprobs(body: CompletionRequest | ChatCompletionRequest) -> int | None:
    """How many top tokens each output token's log-probability comes with (None: no logprobs), in
    each endpoint's own terms: completions `logprobs: k`, chat `logprobs: true` with `top_logprobs: k`."""
    if isinstance(body, CompletionRequest):
        if body.top_logprobs is not None:
            raise APIError(400, "top_logprobs is a chat completions field; /v1/completions takes logprobs = "
                                "the number of top tokens", "top_logprobs")
        value, name = body.logprobs, "logprobs"
    else:
        if body.logprobs is not None and not isinstance(body.logprobs, bool):
            raise APIError(400, f"logprobs must be true or false, got {body.logprobs!r}", "logprobs")
        if not body.logprobs:
            if body.top_logprobs not in (None, 0):
                raise APIError(400, "when using top_logprobs, logprobs must be set to true", "top_logprobs")
            return None
        value, name = (0 if body.top_logprobs is None else body.top_logprobs), "top_logprobs"
    try:
        return check_num_logprobs(value, name)
    except ValueError as exc:
        raise APIError(400, str(exc), name) from None


def request_id_from(header: str | None) -> str:
    """The client's x-request-id (benchmarks name their requests), else a fresh one."""
    if header is None:
        return uuid.uuid4().hex
    if not header or len(header) > MAX_REQUEST_ID_LEN or not header.isprintable():
        raise APIError(400, f"x-request-id must be 1 to {MAX_REQUEST_ID_LEN} printable characters")
    return header


def completion_prompt(state: ServingState, body: CompletionRequest) -> Sequence[int]:
    prompt = body.prompt
    if isinstance(prompt, list):
        if not prompt:
            raise APIError(400, "the prompt is empty", "prompt")
        if isinstance(prompt[0], list | str):
            if len(prompt) != 1:
                raise APIError(400, f"a batch of {len(prompt)} prompts was sent; send one prompt per request", "prompt")
            prompt = prompt[0]  # type: ignore[assignment]
    if isinstance(prompt, str):
        try:
            return state.codec.encode(prompt)
        except ValueError as exc:
            raise APIError(400, str(exc), "prompt") from None
    return [int(t) for t in prompt]  # type: ignore[union-attr]


NULL_CONTENT_ROLES = ("assistant", "function")  # OpenAI's: only these messages may have content: null


def chat_prompt(state: ServingState, body: ChatCompletionRequest) -> Sequence[int]:
    for i, m in enumerate(body.messages):
        # vLLM validates messages as OpenAI's types: a user, system, developer or tool message (or one
        # of a custom role) needs its content; an assistant's may be null (it made tool calls). A
        # message without "content" at all is still taken, as vLLM's custom-role type takes it.
        if m.content is None and "content" in m.model_fields_set and m.role not in NULL_CONTENT_ROLES:
            raise APIError(400, f"messages[{i}] ({m.role}) has content null; only an assistant message may",
                           "messages")
    try:
        return state.codec.encode_chat(conversation([m.model_dump() for m in body.messages]))
    except ValueError as exc:
        raise APIError(400, str(exc), "messages") from None
    except Exception as exc:  # a chat template may refuse a conversation (roles out of order, ...)
        raise APIError(400, f"the chat template could not format these messages: {exc}", "messages") from None


def check_stream_options(body: SamplingFields) -> None:
    """vLLM's rule: stream_options with anything in it needs stream = true (an empty {} passes)."""
    options = body.stream_options
    if options is not None and not body.stream and (options.model_fields_set or options.model_extra):
        raise APIError(400, "Stream options can only be defined when `stream=True`.", "stream_options")


def check_sampling_values(state: ServingState, body: SamplingFields) -> None:
    """What SamplingParams' own checks let through: a temperature of inf or nan (JSON 1e309, NaN),
    and stop token ids the model cannot produce."""
    if body.temperature is not None and not math.isfinite(body.temperature):
        raise APIError(400, f"temperature must be a finite number >= 0, got {body.temperature}", "temperature")
    vocab = state.codec.vocab_size
    bad = next((t for t in body.stop_token_ids or () if t < 0 or t >= vocab), None)
    if bad is not None:
        raise APIError(400, f"stop_token_ids has {bad}, outside the model's vocabulary (0..{vocab - 1})",
                       "stop_token_ids")


def check_prompt(state: ServingState, ids: Sequence[int]) -> None:
    n = len(ids)
    if n == 0:
        raise APIError(400, "the prompt is empty", "prompt")
    if not isinstance(ids, SyntheticPrompt):  # synthetic ids are inside the vocabulary by construction
        vocab = state.codec.vocab_size
        bad = next((t for t in ids if t < 0 or t >= vocab), None)
        if bad is not None:
            raise APIError(400, f"prompt token id {bad} is outside the model's vocabulary (0..{vocab - 1})", "prompt")
    if n >= state.max_model_len:
        raise APIError(400, f"This model's maximum context length is {state.max_model_len} tokens, and the prompt "
                            f"has {n}: no room is left for output. Shorten the prompt.", "prompt")


def declared_max_tokens(state: ServingState, requested: int | None, prompt_len: int, name: str = "max_tokens") -> int:
    """The client's max_tokens, or the rest of the context when it gave none (vLLM's rule)."""
    limit = state.max_model_len
    if requested is None:
        return limit - prompt_len
    if requested < 1:
        raise APIError(400, f"{name} must be at least 1, got {requested}", name)
    if prompt_len + requested > limit:
        raise APIError(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                            f"{prompt_len + requested} tokens ({prompt_len} in the prompt, {requested} in the "
                            f"completion). Please reduce the length of the prompt or {name}.", name)
    return requested


def prepare(state: ServingState, body: CompletionRequest | ChatCompletionRequest, request_id: str) -> Prepared:
    check_model(state, body)
    check_supported(body)
    check_stream_options(body)
    check_sampling_values(state, body)
    if isinstance(body, ChatCompletionRequest):
        ids = chat_prompt(state, body)
        requested, name = (body.max_completion_tokens, "max_completion_tokens") \
            if body.max_completion_tokens is not None else (body.max_tokens, "max_tokens")
    else:
        ids = completion_prompt(state, body)
        requested, name = body.max_tokens, "max_tokens"
    check_prompt(state, ids)
    max_tokens = declared_max_tokens(state, requested, len(ids), name)
    if body.min_tokens < 0 or body.min_tokens > max_tokens:
        raise APIError(400, f"min_tokens must be between 0 and max_tokens ({max_tokens}), got {body.min_tokens}",
                       "min_tokens")
    try:
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if body.temperature is None else float(body.temperature),
            top_p=1.0 if body.top_p is None else float(body.top_p),
            top_k=0 if body.top_k is None else body.top_k,
            seed=body.seed, ignore_eos=body.ignore_eos, stop_token_ids=tuple(body.stop_token_ids or ()),
            # As vLLM does, the sampler never draws EOS or a stop token before min_tokens outputs.
            min_tokens=body.min_tokens,
            logprobs=requested_logprobs(body),
        )
    except SamplingParamsError as exc:
        raise APIError(400, str(exc)) from None
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if any(not s for s in stop):
        raise APIError(400, "stop cannot contain an empty string", "stop")
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return Prepared(request_id, ids, params, body.priority, stop, body.stream, include_usage)
