"""The throughput vs p99-latency Pareto frontier: the points no other point beats on both output
tokens/s (higher is better) and E2E p99 (lower is better)."""

from __future__ import annotations

from collections.abc import Iterable

from tune.evaluate import PointResult


def frontier(results: Iterable[PointResult]) -> list[PointResult]:
    """Non-dominated points, by E2E p99 ascending; of points equal on both, the first (lowest index)."""
    candidates = [r for r in results if r.output_tokens_per_s is not None and r.e2e_p99 is not None]
    candidates.sort(key=lambda r: (-(r.output_tokens_per_s or 0.0), r.e2e_p99, r.index))
    kept: list[PointResult] = []
    best_latency = float("inf")
    for r in candidates:  # by throughput, highest first: a point stays if it is faster than all before it
        assert r.e2e_p99 is not None
        if r.e2e_p99 < best_latency:
            kept.append(r)
            best_latency = r.e2e_p99
    return sorted(kept, key=lambda r: (r.e2e_p99, r.index))
