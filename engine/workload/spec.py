"""A workload: requests to send, each with an arrival time, and a one-line description."""

from __future__ import annotations

from dataclasses import dataclass, replace

from engine.errors import UserError


class WorkloadError(UserError, ValueError):
    """A workload that cannot be built or read; the message names the file, line and field."""


@dataclass(frozen=True, slots=True)
class RequestSpec:
    request_id: str
    arrival_time: float  # seconds after the run starts
    max_tokens: int  # what the client declares (all a scheduling policy may know)
    prompt_len: int | None = None  # synthesize a prompt of this many tokens...
    prompt: str | None = None  # ...or tokenize this text...
    prompt_token_ids: tuple[int, ...] | None = None  # ...or use these ids
    priority: int = 0  # lower runs first under the priority policy
    ignore_eos: bool = True  # generate exactly max_tokens (benchmark practice) unless told otherwise
    temperature: float = 0.0
    true_output_len: int | None = None  # where it really stops (a replay, a trace), hidden from policies

    @property
    def length_is_declared(self) -> bool:
        """Whether the declared max_tokens is exactly where it stops (so a policy reading max_tokens
        knows its true length)."""
        return self.ignore_eos and (self.true_output_len is None or self.true_output_len >= self.max_tokens)


@dataclass(frozen=True)
class Workload:
    requests: tuple[RequestSpec, ...]
    description: str

    def __len__(self) -> int:
        return len(self.requests)

    @property
    def lengths_declared(self) -> bool:
        """Every request declares its true output length as max_tokens: sjf then knows every length
        (an oracle), and is labelled so."""
        return all(spec.length_is_declared for spec in self.requests)


def declare_max_tokens(workload: Workload, cap: int) -> Workload:
    """Each request declares max_tokens = cap, as a client that does not know its answer's length
    does, and stops at its own length (cut to cap when longer)."""
    if cap < 1:
        raise WorkloadError(f"--max-tokens-cap must be >= 1, got {cap}")
    specs = tuple(replace(spec, max_tokens=cap, true_output_len=min(spec.true_output_len or spec.max_tokens, cap))
                  for spec in workload.requests)
    return Workload(specs, f"{workload.description}, max_tokens declared as {cap}")
