"""`bench serve`'s figures, with `vllm bench serve`'s definitions, names and printed block.

TPOT excludes the first token: (E2E latency - TTFT) / (output tokens - 1), per request with more
than one token. ITL pools every gap between chunks with choices (text or not). Goodput counts the
requests that meet every SLO given (`--goodput ttft:MS tpot:MS e2el:MS`), per second of the benchmark.
Means, medians, standard deviations and percentiles are in milliseconds; an empty list reads as 0, as
vLLM prints it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from serving.bench_client import RequestResult

GOODPUT_METRICS = ("ttft", "tpot", "e2el")
METRIC_HEADERS = (("ttft", "TTFT", "Time to First Token"), ("tpot", "TPOT", "Time per Output Token (excl. 1st token)"),
                  ("itl", "ITL", "Inter-token Latency"), ("e2el", "E2EL", "End-to-end Latency"))


def send_times(num: int, request_rate: float, burstiness: float, seed: int) -> list[float]:
    """vllm bench serve's arrivals: gaps drawn from a gamma distribution with shape `burstiness` and
    mean 1/request_rate (burstiness 1 is a Poisson process); an infinite rate sends all at once."""
    if math.isinf(request_rate):
        return [0.0] * num
    rng = random.Random(seed)
    theta = 1.0 / (request_rate * burstiness)
    t, times = 0.0, []
    for _ in range(num):
        times.append(t)
        t += rng.gammavariate(burstiness, theta)
    return times


def parse_goodput(items: Sequence[str] | None) -> dict[str, float] | None:
    """`ttft:MS tpot:MS e2el:MS` (any subset) -> SLOs in milliseconds; ValueError names a bad item."""
    if not items:
        return None
    slos: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or name not in GOODPUT_METRICS:
            raise ValueError(f"--goodput takes {', '.join(m + ':MS' for m in GOODPUT_METRICS)}; got {item!r}")
        try:
            slos[name] = float(value)
        except ValueError:
            raise ValueError(f"--goodput {name}: expected milliseconds, got {value!r}") from None
        if slos[name] < 0:
            raise ValueError(f"--goodput {name}: milliseconds must be >= 0, got {value}")
    return slos


def tpot_of(r: RequestResult) -> float | None:
    return (r.latency - r.ttft) / (r.output_tokens - 1) if r.success and r.output_tokens > 1 else None


def _stats(name: str, values_s: Sequence[float], percentiles: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(values_s, dtype=float) * 1000.0 if len(values_s) else np.zeros(1)
    out = {f"mean_{name}_ms": float(ms.mean()), f"median_{name}_ms": float(np.median(ms)),
           f"std_{name}_ms": float(ms.std())}
    for p in percentiles:
        out[f"p{p:g}_{name}_ms"] = float(np.percentile(ms, p))
    return out


def calculate(results: Sequence[RequestResult], duration: float, goodput: dict[str, float] | None = None,
              percentiles: Sequence[float] = (99,)) -> dict[str, Any]:
    ok = [r for r in results if r.success]
    tpots = [t for r in ok if (t := tpot_of(r)) is not None]
    total_in = sum(r.prompt_len for r in ok)
    total_out = sum(r.output_tokens for r in ok)
    duration = max(duration, 1e-9)
    good = None
    if goodput:
        good = sum(1 for r in ok if _meets(r, goodput))
    result: dict[str, Any] = {
        "duration": duration,
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / duration,
        "request_goodput": good / duration if good is not None else None,
        "output_throughput": total_out / duration,
        "total_token_throughput": (total_in + total_out) / duration,
    }
    peak_tokens, peak_requests = _peaks(ok)
    result |= {"max_output_tokens_per_s": peak_tokens, "max_concurrent_requests": peak_requests}
    result |= _stats("ttft", [r.ttft for r in ok], percentiles)
    result |= _stats("tpot", tpots, percentiles)
    result |= _stats("itl", [g for r in ok for g in r.itl], percentiles)
    result |= _stats("e2el", [r.latency for r in ok], percentiles)
    result |= {
        "input_lens": [r.prompt_len for r in results],
        "output_lens": [r.output_tokens for r in results],
        "ttfts": [r.ttft for r in results],
        "itls": [r.itl for r in results],
        "generated_texts": [r.generated_text for r in results],
        "errors": [r.error for r in results],
        "request_ids": [r.request_id for r in results],
        "run_ids": sorted({r.run_id for r in results if r.run_id is not None}),
    }
    return result


def _peaks(ok: Sequence[RequestResult]) -> tuple[float, int]:
    """vLLM's peaks over whole-second buckets from the first request's start: the most output tokens
    timed in one bucket (a chunk with choices is a token) and the most requests active during one
    (a request counts in every bucket from its start's to its end's, as `vllm bench serve` counts)."""
    if not ok:
        return 0.0, 0
    origin = min(r.start_time for r in ok)
    starts = np.array([r.start_time - origin for r in ok])
    ends = starts + np.array([r.latency for r in ok])
    seconds = int(np.ceil(ends.max())) + 1
    tokens = np.zeros(seconds)
    for r, start in zip(ok, starts, strict=True):
        times = start + r.ttft + np.concatenate([[0.0], np.cumsum(r.itl)])
        np.add.at(tokens, times.astype(int).clip(0, seconds - 1), 1)
    # +1 at each request's first bucket, -1 after its last: a running sum, not a buckets x requests matrix.
    delta = np.zeros(seconds + 1, dtype=int)
    np.add.at(delta, starts.astype(int), 1)
    np.add.at(delta, ends.astype(int) + 1, -1)
    return float(tokens.max()), int(np.cumsum(delta).max())


def _meets(r: RequestResult, slos: dict[str, float]) -> bool:
    values = {"ttft": r.ttft, "tpot": tpot_of(r) or 0.0, "e2el": r.latency}
    return all(values[name] * 1000.0 <= limit for name, limit in slos.items())


def format_result(result: dict[str, Any], max_concurrency: int | None, request_rate: float,
                  percentiles: Sequence[float] = (99,)) -> str:
    lines = ["{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="=")]

    def row(label: str, value: Any, fmt: str = "") -> None:
        lines.append(f"{label:<40} {value:<10{fmt}}")

    row("Successful requests:", result["completed"])
    row("Failed requests:", result["failed"])
    if max_concurrency is not None:
        row("Maximum request concurrency:", max_concurrency)
    row("Request rate configured (RPS):", request_rate, ".2f")
    row("Benchmark duration (s):", result["duration"], ".2f")
    row("Total input tokens:", result["total_input_tokens"])
    row("Total generated tokens:", result["total_output_tokens"])
    row("Request throughput (req/s):", result["request_throughput"], ".2f")
    if result["request_goodput"] is not None:
        row("Request goodput (req/s):", result["request_goodput"], ".2f")
    row("Output token throughput (tok/s):", result["output_throughput"], ".2f")
    row("Peak output token throughput (tok/s):", result["max_output_tokens_per_s"], ".2f")
    row("Peak concurrent requests:", result["max_concurrent_requests"], ".2f")
    row("Total Token throughput (tok/s):", result["total_token_throughput"], ".2f")
    for key, name, header in METRIC_HEADERS:
        lines.append("{s:{c}^{n}}".format(s=header, n=50, c="-"))
        row(f"Mean {name} (ms):", result[f"mean_{key}_ms"], ".2f")
        row(f"Median {name} (ms):", result[f"median_{key}_ms"], ".2f")
        for p in percentiles:
            row(f"P{p:g} {name} (ms):", result[f"p{p:g}_{key}_ms"], ".2f")
    lines.append("=" * 50)
    return "\n".join(lines)
