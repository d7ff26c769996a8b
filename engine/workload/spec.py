"""A workload: requests to send, each with an arrival time, and a one-line description."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import UserError


class WorkloadError(UserError, ValueError):
    """A workload that cannot be built or read; the message names the file, line and field."""


@dataclass(frozen=True, slots=True)
class RequestSpec:
    request_id: str
    arrival_time: float  # seconds after the run starts
    max_tokens: int
    prompt_len: int | None = None  # synthesize a prompt of this many tokens...
    prompt: str | None = None  # ...or tokenize this text...
    prompt_token_ids: tuple[int, ...] | None = None  # ...or use these ids
    priority: int = 0  # lower runs first under the priority policy
    ignore_eos: bool = True  # generate exactly max_tokens (benchmark practice) unless told otherwise
    temperature: float = 0.0


@dataclass(frozen=True)
class Workload:
    requests: tuple[RequestSpec, ...]
    description: str

    def __len__(self) -> int:
        return len(self.requests)
