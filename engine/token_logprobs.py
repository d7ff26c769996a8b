"""Log-probabilities of sampled tokens, as vLLM returns them for `logprobs=k`.

They are the model's raw log-softmax (vLLM V1's default `raw_logprobs`): before temperature, top-k,
top-p and min_tokens' masking, so they say what the model thinks of a token, not how it was drawn.
Plain data: the scheduler carries them onto the request without knowing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LOGPROBS = 20  # vLLM's default max_logprobs, and OpenAI's top_logprobs limit


@dataclass(frozen=True, slots=True)
class TokenLogprobs:
    """One sampled token's log-probability and rank (1 = the most likely), and the `num_top` most
    likely tokens with theirs, most likely first."""

    token_id: int
    logprob: float
    rank: int
    top: tuple[tuple[int, float], ...] = ()

    def as_dict(self) -> dict[int, tuple[float, int]]:
        """token id -> (logprob, rank): the sampled token first, then the top ones, as vLLM's
        per-position dict."""
        entries = {self.token_id: (self.logprob, self.rank)}
        for rank, (token, lp) in enumerate(self.top, start=1):
            entries.setdefault(token, (lp, rank))
        return entries


def check_num_logprobs(value: object, name: str = "logprobs") -> int | None:
    """A requested number of top log-probabilities (None: none asked), or ValueError saying why not."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LOGPROBS:
        raise ValueError(f"{name} must be an integer from 0 to {MAX_LOGPROBS}, got {value!r}")
    return value
