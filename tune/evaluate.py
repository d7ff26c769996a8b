"""One point of a search: simulate the workload under its configuration and judge it against the SLOs.

Per-request TTFT / TPOT / E2E come from the simulated engine's own requests (Engine.requests), so
no step is recorded. The same function runs in this process, in a pool worker or on a Ray worker:
everything it reads is in the SearchContext and the Point, so a point's result does not depend on
where or in which order it ran.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from engine.clock import VirtualClock
from engine.config import EngineConfig
from engine.engine_loop import Engine, EngineStalledError
from engine.errors import UserError
from engine.executors.cost_model import CostModel
from engine.executors.simulated import SimulatedExecutor
from engine.workload.spec import RequestSpec
from tune.early_stop import EarlyStop
from tune.slo import SLO, judge
from tune.space import Point

COMPLETE, PRUNED, INVALID, FAILED = "complete", "pruned", "invalid", "failed"
PRUNE_MODES = ("best", "slo", "none")  # stop points that cannot win / that cannot meet the SLOs / never


@dataclass(frozen=True)
class SearchContext:
    """What every point of a search shares (sent once to each worker)."""

    requests: tuple[RequestSpec, ...]
    cost_model: CostModel
    slo: SLO
    prune: str = "best"  # one of PRUNE_MODES


@dataclass(frozen=True)
class PointResult:
    index: int
    params: dict[str, Any]
    config: dict[str, Any] | None
    status: str  # complete | pruned (provably misses the SLOs, stopped early) | invalid | failed
    reason: str | None = None  # invalid or failed: why; pruned: what was certain when it stopped
    num_requests: int = 0
    num_good: int | None = None
    goodput: float | None = None  # good requests per second of the run
    meets_slo: bool = False
    misses: dict[str, int] = field(default_factory=dict)  # per threshold (complete points)
    quantiles_s: dict[str, float] = field(default_factory=dict)  # the attainment-quantile of each metric
    output_tokens_per_s: float | None = None
    requests_per_s: float | None = None
    duration_s: float | None = None
    ttft_p99: float | None = None
    tpot_p99: float | None = None
    e2e_p50: float | None = None
    e2e_p99: float | None = None
    num_preemptions: int | None = None
    num_rejected: int | None = None
    certain_misses: int | None = None  # pruned: misses already certain when it stopped
    stopped_at_s: float | None = None  # pruned: virtual time it stopped
    stopped_by: str | None = None  # pruned: "slo" (it cannot meet them) or "goodput" (it cannot beat `beat`)
    beat: float | None = None  # pruned by goodput: the goodput it could not reach
    summary: dict[str, Any] | None = None  # RunSummary.to_dict() (complete points)

    @property
    def attainment(self) -> float | None:
        if self.num_good is None or not self.num_requests:
            return None
        return self.num_good / self.num_requests

    @property
    def num_missed(self) -> int | None:
        return None if self.num_good is None else self.num_requests - self.num_good

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"attainment": self.attainment}


def evaluate(context: SearchContext, point: Point, prune: bool = True, beat: float | None = None) -> PointResult:
    """prune: False simulates in full whatever the context says (a second, exhaustive pass); beat:
    with prune mode "best", stop once the point provably cannot reach this goodput."""
    if point.config is None:
        return PointResult(point.index, point.params, None, INVALID, point.invalid_reason)
    n = len(context.requests)
    config = EngineConfig.from_dict(point.config)
    stop = None
    if prune and context.prune != "none":
        stop = EarlyStop(context.requests, context.slo, context.slo.allowed_misses(n),
                         beat if context.prune == "best" else None)
    try:
        engine = Engine(config, SimulatedExecutor(context.cost_model), VirtualClock())
        if stop is not None:
            stop.attach(engine)
        summary = engine.run(context.requests, stop=stop)
    except (UserError, EngineStalledError) as exc:
        return PointResult(point.index, point.params, point.config, FAILED, f"{type(exc).__name__}: {exc}",
                           num_requests=n)
    if stop is not None and stop.tripped:
        allowed = context.slo.allowed_misses(n)
        if stop.cannot_beat:
            reason = (f"cannot beat goodput {beat:.4g} req/s: at most {n - stop.certain_misses} good requests "
                      f"({stop.certain_misses} certain to miss by t={stop.tripped_at:.3f} s)")
        else:
            reason = (f"{stop.certain_misses} requests certain to miss by t={stop.tripped_at:.3f} s "
                      f"(at most {allowed} may)")
        return PointResult(point.index, point.params, point.config, PRUNED, reason, num_requests=n,
                           certain_misses=stop.certain_misses, stopped_at_s=stop.tripped_at,
                           stopped_by="goodput" if stop.cannot_beat else "slo",
                           beat=beat if stop.cannot_beat else None)
    verdict = judge(engine.requests.values(), context.slo)
    duration = summary.duration_s
    return PointResult(
        point.index, point.params, point.config, COMPLETE, None, num_requests=verdict.num_requests,
        num_good=verdict.num_good, goodput=verdict.num_good / duration if duration > 0 else 0.0,
        meets_slo=verdict.num_good >= context.slo.needed(verdict.num_requests), misses=verdict.misses,
        quantiles_s=verdict.quantiles_s, output_tokens_per_s=summary.output_tokens_per_s,
        requests_per_s=summary.requests_per_s, duration_s=duration, ttft_p99=summary.ttft_s.p99,
        tpot_p99=summary.tpot_s.p99, e2e_p50=summary.e2e_s.p50, e2e_p99=summary.e2e_s.p99,
        num_preemptions=summary.num_preemptions, num_rejected=summary.num_rejected, summary=summary.to_dict(),
    )


def evaluate_chunk(context: SearchContext, points: list[Point], prune: bool = True,
                   beat: float | None = None) -> list[PointResult]:
    return [evaluate(context, p, prune, beat) for p in points]
