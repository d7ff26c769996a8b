"""Service-level objectives as per-request thresholds, and how a run is judged against them.

A request is *good* when it completed (stopped or length) and met every given threshold: TTFT,
TPOT (a request with at most one output token has TPOT 0, as `vllm bench serve` counts it) and
end-to-end latency, each inclusive (latency <= threshold). Goodput is good requests per second
of the run (`vllm bench serve --goodput`: good completed requests / duration). A configuration
meets the SLOs when at least `attainment` of all requests are good (DistServe's SLO attainment;
rejected and aborted requests count as missed, since they never completed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from engine.errors import UserError
from engine.request import Request, RequestStatus

SLO_KEYS = ("ttft", "tpot", "e2e")
_ALIASES = {"ttft": "ttft", "tpot": "tpot", "e2e": "e2e", "e2el": "e2e"}  # e2el: vllm bench serve's name


class SLOError(UserError, ValueError):
    """An --slo or --attainment that cannot be read; the message says what is expected."""


@dataclass(frozen=True)
class SLO:
    """Thresholds in seconds (None: not constrained) and the attainment, a fraction in (0, 1]."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None
    attainment: float = 0.99

    def __post_init__(self) -> None:
        if self.ttft_s is None and self.tpot_s is None and self.e2e_s is None:
            raise SLOError("--slo needs at least one of ttft, tpot, e2e (milliseconds), e.g. --slo ttft=500,e2e=5000")
        if not 0 < self.attainment <= 1:
            raise SLOError(f"attainment must be in (0, 100] percent, got {self.attainment * 100:g}")

    def thresholds(self) -> dict[str, float]:
        """The given thresholds by key, in seconds."""
        values = {"ttft": self.ttft_s, "tpot": self.tpot_s, "e2e": self.e2e_s}
        return {k: v for k, v in values.items() if v is not None}

    def needed(self, num_requests: int) -> int:
        """Good requests a configuration needs to meet the SLOs: ceil(attainment x N). The small
        tolerance keeps 0.99 x 2000 at 1980, not 1981 from a float rounded up."""
        return min(num_requests, math.ceil(self.attainment * num_requests - 1e-9))

    def allowed_misses(self, num_requests: int) -> int:
        return num_requests - self.needed(num_requests)

    def describe(self) -> str:
        parts = [f"{k} <= {v * 1e3:g} ms" for k, v in self.thresholds().items()]
        return f"{', '.join(parts)} for {self.attainment * 100:g}% of requests"

    def to_dict(self) -> dict[str, float | None]:
        """Milliseconds, as given on the command line, and the attainment in percent."""
        return {"ttft_ms": _ms(self.ttft_s), "tpot_ms": _ms(self.tpot_s), "e2e_ms": _ms(self.e2e_s),
                "attainment_pct": self.attainment * 100}

    @classmethod
    def from_dict(cls, data: dict[str, float | None]) -> SLO:
        def s(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value) / 1e3

        return cls(s("ttft_ms"), s("tpot_ms"), s("e2e_ms"), float(data.get("attainment_pct") or 99.0) / 100)


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1e3


def parse_slo(text: str, attainment: float = 0.99) -> SLO:
    """`ttft=500,tpot=50,e2e=5000` (milliseconds; any subset) into an SLO."""
    values: dict[str, float] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in _ALIASES:
            raise SLOError(f"--slo takes NAME=MS pairs with NAME among {', '.join(SLO_KEYS)}, got {item!r}")
        name = _ALIASES[key]
        if name in values:
            raise SLOError(f"--slo gives {name} twice")
        try:
            ms = float(raw)
        except ValueError:
            raise SLOError(f"--slo {name} must be a number of milliseconds, got {raw!r}") from None
        if not math.isfinite(ms) or ms <= 0:
            raise SLOError(f"--slo {name} must be a positive number of milliseconds, got {raw!r}")
        values[name] = ms / 1e3
    return SLO(values.get("ttft"), values.get("tpot"), values.get("e2e"), attainment)


def parse_attainment(text: str) -> float:
    """A percentage (99, 99.9, or 99%) as a fraction. Below 1 is refused: 0.99 is almost surely a
    fraction meant as 99%, and an attainment of under 1% is no target."""
    raw = text.strip().rstrip("%")
    try:
        pct = float(raw)
    except ValueError:
        raise SLOError(f"--attainment is a percentage such as 99 or 99.9, got {text!r}") from None
    if not math.isfinite(pct) or pct > 100 or pct <= 0:
        raise SLOError(f"--attainment must be in (0, 100] percent, got {text!r}")
    if pct < 1:
        raise SLOError(f"--attainment is a percentage (99 means 99%), got {text!r}; did you mean {pct * 100:g}?")
    return pct / 100


def completed(req: Request) -> bool:
    return req.status in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH)


def request_latencies(req: Request) -> tuple[float, float, float] | None:
    """(TTFT, TPOT, E2E) of a completed request, in seconds; None if it did not complete."""
    if not completed(req) or req.first_token_time is None or req.finish_time is None:
        return None
    n = len(req.output_token_ids)
    tpot = (req.finish_time - req.first_token_time) / (n - 1) if n > 1 else 0.0
    return req.first_token_time - req.arrival_time, tpot, req.finish_time - req.arrival_time


@dataclass(frozen=True)
class Judgement:
    """How one simulated run fared against the SLOs."""

    num_requests: int
    num_good: int
    misses: dict[str, int]  # requests that missed each threshold (a request may miss several)
    quantiles_s: dict[str, float]  # the attainment-quantile of each constrained metric (inf: too few completed)

    @property
    def attainment(self) -> float:
        return self.num_good / self.num_requests if self.num_requests else 0.0


def judge(requests: Iterable[Request], slo: SLO) -> Judgement:
    """Per-request TTFT / TPOT / E2E from the engine's requests, against the thresholds."""
    reqs = list(requests)
    n = len(reqs)
    lat = np.full((n, 3), np.inf)  # a request that never completed misses everything
    for i, req in enumerate(reqs):
        values = request_latencies(req)
        if values is not None:
            lat[i] = values
    limits = slo.thresholds()
    good = np.ones(n, dtype=bool)
    misses: dict[str, int] = {}
    quantiles: dict[str, float] = {}
    for key, limit in limits.items():
        column = lat[:, SLO_KEYS.index(key)]
        ok = column <= limit
        good &= ok
        misses[key] = int(n - ok.sum())
        # method="higher": the latency the attainment's share of requests stays within, an observed value
        quantiles[key] = float(np.quantile(column, slo.attainment, method="higher")) if n else math.inf
    return Judgement(n, int(good.sum()) if n else 0, misses, quantiles)
