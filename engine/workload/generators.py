"""Named synthetic workloads: uniform lengths, or the mixed short/long output mix."""

from __future__ import annotations

import math
import random

from engine.workload.spec import RequestSpec, Workload, WorkloadError

# The "mixed" output mix from our reference workload: most answers short, some long.
MIXED_SHORT = (10, 20)
MIXED_LONG = (80, 100)
MIXED_SHORT_SHARE = 0.7


def poisson_arrivals(num_requests: int, request_rate: float, rng: random.Random) -> list[float]:
    """Arrival times of a Poisson process at request_rate per second; inf: all at t=0."""
    if request_rate <= 0 or math.isnan(request_rate):
        raise WorkloadError(f"request rate must be > 0 requests/s (or inf), got {request_rate}")
    if math.isinf(request_rate):
        return [0.0] * num_requests
    t = 0.0
    times = []
    for _ in range(num_requests):
        times.append(t)
        t += rng.expovariate(request_rate)
    return times


def _check_range(name: str, lo_hi: tuple[int, int]) -> None:
    lo, hi = lo_hi
    if lo < 1 or hi < lo:
        raise WorkloadError(f"{name} must be MIN:MAX with 1 <= MIN <= MAX, got {lo}:{hi}")


def synthetic_workload(
    kind: str,
    num_requests: int,
    prompt_lens: tuple[int, int] = (16, 128),
    output_lens: tuple[int, int] = (10, 100),
    request_rate: float = math.inf,
    priority_levels: int = 1,
    seed: int = 0,
) -> Workload:
    """kind 'uniform': outputs uniform in output_lens; 'mixed': 70% 10..20, 30% 80..100 tokens."""
    if num_requests < 1:
        raise WorkloadError(f"number of requests must be >= 1, got {num_requests}")
    if priority_levels < 1:
        raise WorkloadError(f"priority levels must be >= 1, got {priority_levels}")
    _check_range("prompt lengths", prompt_lens)
    _check_range("output lengths", output_lens)
    rng = random.Random(seed)
    arrivals = poisson_arrivals(num_requests, request_rate, rng)
    specs = []
    for i, arrival in enumerate(arrivals):
        prompt_len = rng.randint(*prompt_lens)
        if kind == "uniform":
            max_tokens = rng.randint(*output_lens)
        elif kind == "mixed":
            max_tokens = rng.randint(*(MIXED_SHORT if rng.random() < MIXED_SHORT_SHARE else MIXED_LONG))
        else:
            raise WorkloadError(f"unknown workload {kind!r}; use uniform, mixed, azure, or a .jsonl/.csv file")
        specs.append(RequestSpec(request_id=f"r{i}", arrival_time=arrival, max_tokens=max_tokens,
                                 prompt_len=prompt_len, priority=rng.randrange(priority_levels)))
    outputs = f"outputs {output_lens[0]}..{output_lens[1]}" if kind == "uniform" else "outputs 70% 10..20 / 30% 80..100"
    rate = "all at t=0" if math.isinf(request_rate) else f"Poisson {request_rate:g} req/s"
    prompts = f"prompts {prompt_lens[0]}..{prompt_lens[1]}"
    desc = f"{kind}: {num_requests} requests, {prompts}, {outputs}, {rate}, seed {seed}"
    if priority_levels > 1:
        desc += f", {priority_levels} priority levels"
    return Workload(tuple(specs), desc)
