"""Run summary: TTFT, TPOT, ITL, end-to-end latency, queue time, throughput, batch shape, padding."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from engine.request import Request, RequestStatus


@dataclass
class EngineStats:
    """Running totals the engine keeps per step."""

    num_steps: int = 0
    sum_batch_size: int = 0  # scheduled sequences, summed over steps
    sum_batched_tokens: int = 0
    sum_prefill_tokens: int = 0
    sum_padding_tokens: int = 0  # static batching's pad rows, computed but wasted
    num_preemptions: int = 0
    model_time_s: float = 0.0  # executor time, summed
    model_flops: float = 0.0  # useful FLOPs
    padding_flops: float = 0.0  # FLOPs spent on static pad rows and attention bucket padding


@dataclass(frozen=True)
class LatencyStats:
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None

    @classmethod
    def of(cls, values: list[float] | np.ndarray) -> LatencyStats:
        if len(values) == 0:
            return cls(None, None, None, None)
        arr = np.asarray(values, dtype=float)
        p50, p90, p99 = np.percentile(arr, [50, 90, 99])
        return cls(float(arr.mean()), float(p50), float(p90), float(p99))


@dataclass(frozen=True)
class RunSummary:
    num_requests: int
    num_finished: int  # stopped or length
    num_rejected: int
    num_aborted: int
    duration_s: float  # run start to the last finish
    output_tokens: int
    output_tokens_per_s: float
    requests_per_s: float
    ttft_s: LatencyStats
    tpot_s: LatencyStats
    itl_s: LatencyStats  # gaps between consecutive output tokens, pooled over requests (vllm bench serve's ITL)
    e2e_s: LatencyStats
    queue_time_s: LatencyStats
    num_steps: int
    avg_batch_size: float
    avg_batched_tokens: float
    num_preemptions: int
    model_time_s: float
    model_flops: float
    num_padding_tokens: int  # static batching: pad rows computed
    padding_share: float  # pad rows / every token row computed (0 for continuous batching)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """A human-readable table (milliseconds for latencies)."""

        def ms(stats: LatencyStats) -> str:
            if stats.mean is None:
                return "n/a"
            return (f"mean {stats.mean * 1e3:9.2f}  p50 {stats.p50 * 1e3:9.2f}  "  # type: ignore[operator]
                    f"p90 {stats.p90 * 1e3:9.2f}  p99 {stats.p99 * 1e3:9.2f}")  # type: ignore[operator]

        lines = [
            f"requests            {self.num_finished} finished, {self.num_rejected} rejected, "
            f"{self.num_aborted} aborted (of {self.num_requests})",
            f"duration            {self.duration_s:.3f} s, {self.num_steps} steps",
            f"output tokens/s     {self.output_tokens_per_s:.1f}  ({self.output_tokens} tokens)",
            f"requests/s          {self.requests_per_s:.2f}",
            f"TTFT (ms)           {ms(self.ttft_s)}",
            f"TPOT (ms)           {ms(self.tpot_s)}",
            f"ITL (ms)            {ms(self.itl_s)}",
            f"E2E latency (ms)    {ms(self.e2e_s)}",
            f"queue time (ms)     {ms(self.queue_time_s)}",
            f"avg batch size      {self.avg_batch_size:.2f} seqs, {self.avg_batched_tokens:.1f} tokens",
            f"preemptions         {self.num_preemptions}",
        ]
        if self.num_padding_tokens:
            lines.append(f"padding             {self.num_padding_tokens} pad tokens computed, "
                         f"{self.padding_share:.1%} of all computed tokens")
        return "\n".join(lines)


def summarize(requests: Iterable[Request], stats: EngineStats, duration_s: float,
              itl: np.ndarray | None = None) -> RunSummary:
    """itl: every inter-token gap (InterTokenLatency.pooled()); None leaves ITL empty."""
    reqs = list(requests)
    done = [r for r in reqs if r.status in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH)]
    ttft = [r.first_token_time - r.arrival_time for r in done if r.first_token_time is not None]
    tpot = [
        (r.finish_time - r.first_token_time) / (len(r.output_token_ids) - 1)
        for r in done
        if r.first_token_time is not None and r.finish_time is not None and len(r.output_token_ids) > 1
    ]
    e2e = [r.finish_time - r.arrival_time for r in done if r.finish_time is not None]
    queue = [r.first_scheduled_time - r.arrival_time for r in done if r.first_scheduled_time is not None]
    output_tokens = sum(len(r.output_token_ids) for r in reqs)
    steps = max(stats.num_steps, 1)
    computed = stats.sum_batched_tokens + stats.sum_padding_tokens
    duration = max(duration_s, 1e-12)
    return RunSummary(
        num_requests=len(reqs),
        num_finished=len(done),
        num_rejected=sum(r.status == RequestStatus.FINISHED_REJECTED for r in reqs),
        num_aborted=sum(r.status == RequestStatus.FINISHED_ABORTED for r in reqs),
        duration_s=duration_s,
        output_tokens=output_tokens,
        output_tokens_per_s=output_tokens / duration,
        requests_per_s=len(done) / duration,
        ttft_s=LatencyStats.of(ttft),
        tpot_s=LatencyStats.of(tpot),
        itl_s=LatencyStats.of(itl if itl is not None else []),
        e2e_s=LatencyStats.of(e2e),
        queue_time_s=LatencyStats.of(queue),
        num_steps=stats.num_steps,
        avg_batch_size=stats.sum_batch_size / steps,
        avg_batched_tokens=stats.sum_batched_tokens / steps,
        num_preemptions=stats.num_preemptions,
        model_time_s=stats.model_time_s,
        model_flops=stats.model_flops,
        num_padding_tokens=stats.sum_padding_tokens,
        padding_share=stats.sum_padding_tokens / computed if computed else 0.0,
    )
