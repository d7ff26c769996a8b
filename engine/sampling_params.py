"""SamplingParams: how one request's tokens are chosen and when it stops (vLLM's names)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Integral

from engine.errors import UserError
from engine.limits import INT64_MAX, INT64_MIN
from engine.token_logprobs import check_num_logprobs


class SamplingParamsError(UserError, ValueError):
    """Sampling parameters that cannot work."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int = 16  # most output tokens to generate
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0  # nucleus sampling mass, (0, 1]
    top_k: int = 0  # keep the k most likely tokens; 0 or -1 keeps all
    seed: int | None = None  # per-request seed for reproducible sampling
    ignore_eos: bool = False  # keep going past EOS (benchmarks force exact lengths this way)
    stop_token_ids: tuple[int, ...] = ()  # extra tokens that end the request
    min_tokens: int = 0  # no EOS or stop token ends the request before this many output tokens
    logprobs: int | None = None  # each sampled token's log-probability and this many top ones (None: none)
    # vLLM fields a script may set; only their do-nothing values are accepted here, so a script that
    # relies on them is told, never silently given something else.
    n: int = 1  # completions per request
    stop: str | list[str] | tuple[str, ...] | None = None  # stop strings: kept as a tuple (the offline LLM
    # decodes and applies them; the server takes them from its request body)
    prompt_logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.n != 1:
            raise SamplingParamsError(f"n must be 1 (one completion per request), got {self.n!r}")
        if self.prompt_logprobs is not None:
            raise SamplingParamsError("prompt_logprobs are not computed (only the sampled tokens' logprobs); "
                                      "leave prompt_logprobs unset")
        try:
            check_num_logprobs(self.logprobs)
        except ValueError as exc:
            raise SamplingParamsError(str(exc)) from None
        object.__setattr__(self, "stop", _stop_strings(self.stop))
        if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool):
            raise SamplingParamsError(f"max_tokens must be a whole number, got {self.max_tokens!r}")
        if self.max_tokens < 1:
            raise SamplingParamsError(f"max_tokens must be at least 1, got {self.max_tokens!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)
                                      or not INT64_MIN <= self.seed <= INT64_MAX):
            raise SamplingParamsError(f"seed must be a whole number that fits in 64 bits, got {self.seed!r}")
        if not isinstance(self.temperature, (int, float)) or not 0 <= self.temperature < float("inf"):
            raise SamplingParamsError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise SamplingParamsError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < -1:
            raise SamplingParamsError(f"top_k must be -1, 0 (all tokens) or a positive count, got {self.top_k!r}")
        if not isinstance(self.min_tokens, int) or isinstance(self.min_tokens, bool) or not (
                0 <= self.min_tokens <= self.max_tokens):
            raise SamplingParamsError(f"min_tokens must be from 0 to max_tokens ({self.max_tokens}), got "
                                      f"{self.min_tokens!r}")
        given = self.stop_token_ids
        ids = tuple(given) if isinstance(given, Iterable) and not isinstance(given, (str, bytes)) else None
        # numbers.Integral: numpy's integers too, as a script's token ids often are
        if ids is None or not all(isinstance(t, Integral) and not isinstance(t, bool) and t >= 0 for t in ids):
            raise SamplingParamsError(f"stop_token_ids must be a list of token ids (whole numbers >= 0), got {given!r}")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def with_model_eos(params: SamplingParams, extra_eos_token_ids: tuple[int, ...]) -> SamplingParams:
    """params with the model's other EOS ids among its stop tokens, as vLLM's
    update_from_generation_config adds them (not under ignore_eos: nothing EOS-like ends it then)."""
    if not extra_eos_token_ids or params.ignore_eos:
        return params
    ids = tuple(dict.fromkeys((*params.stop_token_ids, *extra_eos_token_ids)))
    return params if ids == params.stop_token_ids else dataclasses.replace(params, stop_token_ids=ids)


def _stop_strings(stop: object) -> tuple[str, ...] | None:
    """vLLM's stop (a string or a list of them) as a tuple, which keeps the params hashable; None when empty."""
    if stop is None:
        return None
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) for s in items):
        raise SamplingParamsError(f"stop must be a string or a list of strings, got {stop!r}")
    if any(not s for s in items):
        raise SamplingParamsError("stop cannot contain an empty string")
    return tuple(items) or None
