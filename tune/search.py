"""A whole search: every valid point through a backend, then the recommendation.

The recommendation is the point with the highest goodput among those meeting the SLOs, ties to the
lower E2E p99, then to the lower point number. Pruning (tune.early_stop) stops only points that
provably cannot be it:

- "slo": points that provably miss the SLOs. Every point that meets them keeps all its figures, so
  the frontier of those points is exact too.
- "best" (the default): also points whose goodput provably stays below the best goodput already
  found among points meeting the SLOs. "Already found" must not depend on which worker finished
  first, or results would differ between backends: the points run in rounds (the first a sample
  spread over the grid), and round r prunes against the best of rounds before it only. A point
  stopped so has no figures; the frontier then covers the points that ran in full.

When no point meets the SLOs the answer is the closest point (most good requests, then goodput,
then E2E p99); no goodput bound was ever in force then, and the points stopped for missing the
SLOs are simulated again in full, so that answer is exact too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tune.backends import Backend
from tune.evaluate import COMPLETE, PRUNED, PointResult, SearchContext, evaluate
from tune.pareto import frontier
from tune.space import Point

ROUNDS = 8  # rounds of a "best" search: later rounds prune against a better goodput
MIN_ROUND_PER_WORKER = 4  # a round keeps every worker busy to its end


def rounds(points: Sequence[Point], workers: int) -> list[list[Point]]:
    """Interleaved rounds: round r holds every k-th point from the r-th, so the first is a sample
    of the whole grid (a good goodput to prune against comes early)."""
    if not points:
        return []
    size = max(MIN_ROUND_PER_WORKER * workers, math.ceil(len(points) / ROUNDS))
    k = math.ceil(len(points) / size)
    return [list(points[r::k]) for r in range(k)]


@dataclass(frozen=True)
class SearchOutcome:
    results: list[PointResult]  # one per point, by index (invalid ones included)
    recommended: PointResult | None  # highest goodput meeting the SLOs
    closest: PointResult | None  # when nothing meets them: the point that comes nearest
    frontier: list[PointResult]  # Pareto frontier of the points meeting the SLOs (the same with or without pruning)
    frontier_all: list[PointResult] | None  # ... of every point, when every point was simulated in full
    wall_s: float
    resimulated: int  # pruned points simulated again in full because nothing met the SLOs

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)


def _rank_key(r: PointResult) -> tuple[float, float, int]:
    """Higher goodput first, then lower E2E p99, then lower point number (min() of this key wins)."""
    return (-(r.goodput or 0.0), r.e2e_p99 if r.e2e_p99 is not None else float("inf"), r.index)


def recommend(results: Sequence[PointResult]) -> PointResult | None:
    meeting = [r for r in results if r.status == COMPLETE and r.meets_slo]
    return min(meeting, key=_rank_key) if meeting else None


def closest(results: Sequence[PointResult]) -> PointResult | None:
    complete = [r for r in results if r.status == COMPLETE]
    if not complete:
        return None
    return min(complete, key=lambda r: (-(r.num_good or 0), *_rank_key(r)))


def run_search(context: SearchContext, points: Sequence[Point], backend: Backend,
               on_result: Callable[[PointResult], None] | None = None) -> SearchOutcome:
    """on_result sees every result as it arrives (a re-simulated point a second time, in full)."""
    start = time.perf_counter()
    by_index: dict[int, PointResult] = {}

    def collect(result: PointResult) -> None:
        by_index[result.index] = result
        if on_result is not None:
            on_result(result)

    for point in points:
        if point.config is None:
            collect(evaluate(context, point))
    valid = [p for p in points if p.config is not None]
    beat: float | None = None
    for group in rounds(valid, backend.workers) if context.prune == "best" else [valid]:
        backend.run(context, group, collect, True, beat)
        best = recommend(list(by_index.values()))
        beat = best.goodput if best is not None else None
    results = [by_index[p.index] for p in points]
    resimulated = 0
    if recommend(results) is None:
        again = [p for p, r in zip(points, results, strict=True) if r.status == PRUNED]
        if again:
            backend.run(context, again, collect, False)
            resimulated = len(again)
            results = [by_index[p.index] for p in points]
    complete = [r for r in results if r.status == COMPLETE]
    everything_simulated = all(r.status != PRUNED for r in results)
    return SearchOutcome(
        results=results, recommended=recommend(results), closest=closest(results) if not recommend(results) else None,
        frontier=frontier(r for r in complete if r.meets_slo),
        frontier_all=frontier(complete) if everything_simulated else None,
        wall_s=time.perf_counter() - start, resimulated=resimulated,
    )
