"""What `tune` prints: the recommendation (or the closest miss and by how much), its trust figures,
the Pareto frontier and the best points; and the same as one JSON document."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from storage.run_meta import Trust
from tune.evaluate import COMPLETE, FAILED, INVALID, PRUNED, PointResult
from tune.search import SearchOutcome
from tune.slo import SLO
from tune.space import describe_params

TOP_SHOWN = 10


def miss_details(result: PointResult, slo: SLO) -> dict[str, Any]:
    """By how much a point misses: its attainment against the target, and per threshold the share of
    requests within it and the attainment-quantile of the metric against the threshold."""
    n = result.num_requests
    per: dict[str, Any] = {}
    for key, limit in slo.thresholds().items():
        q = result.quantiles_s.get(key, math.inf)
        within = 1 - result.misses.get(key, n) / n if n else 0.0
        per[key] = {"threshold_s": limit, "within_share": within,
                    "quantile_s": q if math.isfinite(q) else None,
                    "over_pct": (q / limit - 1) * 100 if math.isfinite(q) else None}
    needed = slo.needed(n)
    return {"attainment": result.attainment, "needed_good": needed, "good": result.num_good,
            "short_by": max(0, needed - (result.num_good or 0)), "per_slo": per}


def point_json(r: PointResult) -> dict[str, Any]:
    out = r.to_dict()
    out.pop("summary", None)  # in the database (search_points.summary); the report stays readable
    return out


def build_json(outcome: SearchOutcome, slo: SLO, header: dict[str, Any], trust: Trust | None) -> dict[str, Any]:
    rec, near = outcome.recommended, outcome.closest
    chosen = rec or near
    return header | {
        "slo": slo.to_dict(), "needed_good": slo.needed(header["num_requests"]),
        "counts": {s: outcome.count(s) for s in (COMPLETE, PRUNED, INVALID, FAILED)},
        "resimulated": outcome.resimulated, "wall_s": outcome.wall_s,
        "recommended": point_json(rec) if rec else None,
        "closest": (point_json(near) | {"miss": miss_details(near, slo)}) if near else None,
        "trust": asdict(trust) if trust is not None and chosen is not None else None,
        "frontier": [point_json(r) for r in outcome.frontier],
        "frontier_all": None if outcome.frontier_all is None else [point_json(r) for r in outcome.frontier_all],
        "points": [point_json(r) for r in outcome.results],
    }


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1e3:,.1f}"


def _headline(r: PointResult) -> str:
    return (f"goodput {r.goodput or 0:.2f} req/s, {(r.attainment or 0) * 100:.1f}% of requests within the SLOs, "
            f"{r.output_tokens_per_s or 0:,.1f} output tok/s, E2E p50 {_ms(r.e2e_p50)} p99 {_ms(r.e2e_p99)} ms, "
            f"TTFT p99 {_ms(r.ttft_p99)} ms, TPOT p99 {_ms(r.tpot_p99)} ms")


def format_text(outcome: SearchOutcome, slo: SLO, header: dict[str, Any], trust: Trust | None) -> str:
    n = header["num_requests"]
    lines = [
        f"search{' ' + str(header['search_id']) if header.get('search_id') else ''}: {len(outcome.results)} "
        f"configurations over {header['workload']}",
        f"  cost model: {header['cost_model']}"
        + (f" (runs {', '.join(map(str, header['pooled_runs']))})" if header.get("pooled_runs") else ""),
        f"  SLOs: {slo.describe()} ({slo.needed(n)} of {n} requests good)",
        f"  ran on {header['backend']}: {outcome.count(COMPLETE) + outcome.count(PRUNED)} simulated in "
        f"{outcome.wall_s:.1f} s, {_stopped(outcome)}",
    ]
    invalid = [r for r in outcome.results if r.status == INVALID]
    if invalid:
        lines.append(f"  {len(invalid)} combinations skipped as invalid configurations, e.g. "
                     f"{describe_params(invalid[0].params)}: {invalid[0].reason}")
    failed = [r for r in outcome.results if r.status == FAILED]
    if failed:
        lines.append(f"  {len(failed)} configurations failed to simulate, e.g. {describe_params(failed[0].params)}: "
                     f"{failed[0].reason}")
    lines.append("")
    rec, near = outcome.recommended, outcome.closest
    if rec is not None:
        lines += [f"recommended: point {rec.index}: {describe_params(rec.params)}", f"  {_headline(rec)}"]
    elif near is not None:
        miss = miss_details(near, slo)
        lines += [f"no configuration meets the SLOs. Closest: point {near.index}: {describe_params(near.params)}",
                  f"  {(near.attainment or 0) * 100:.1f}% of requests within the SLOs against "
                  f"{slo.attainment * 100:g}% needed: {miss['short_by']} more requests would have to meet them"]
        for key, detail in miss["per_slo"].items():
            q = detail["quantile_s"]
            over = "never reached (too few requests completed)" if q is None else (
                f"{_ms(q)} ms, {detail['over_pct']:+.0f}% against the threshold")
            lines.append(f"  {key}: {detail['within_share'] * 100:.1f}% within {_ms(detail['threshold_s'])} ms; "
                         f"its {slo.attainment * 100:g}th percentile is {over}")
        lines.append(f"  {_headline(near)}")
    else:
        lines.append("no configuration could be simulated")
    if trust is not None and (rec or near) is not None:
        lines += ["", *_trust_lines(trust)]
    if outcome.frontier:
        partial = any(r.stopped_by == "goodput" for r in outcome.results)
        lines += ["", f"Pareto frontier, output tok/s vs E2E p99, of the {sum(r.meets_slo for r in outcome.results)} "
                      f"configurations meeting the SLOs that ran in full ({len(outcome.frontier)} points)"
                      + (" (points that could not beat the best goodput stopped early; --prune slo keeps them)"
                         if partial else "") + ":", *_table(outcome.frontier)]
    elif outcome.frontier_all:
        lines += ["", f"Pareto frontier, output tok/s vs E2E p99, of every configuration ({len(outcome.frontier_all)} "
                      "points):", *_table(outcome.frontier_all)]
    best = sorted((r for r in outcome.results if r.status == COMPLETE and r.meets_slo),
                  key=lambda r: (-(r.goodput or 0), r.e2e_p99 or math.inf, r.index))[:TOP_SHOWN]
    if len(best) > 1:
        lines += ["", f"best {len(best)} by goodput:", *_table(best)]
    sid = header.get("search_id")
    if sid and (rec or near) is not None:
        chosen = rec or near
        assert chosen is not None
        lines += ["", f"recorded as search {sid}; `python -m engine tune --materialize {sid}:{chosen.index}` records "
                      "that point's steps as a run"]
    return "\n".join(lines)


def _stopped(outcome: SearchOutcome) -> str:
    by_slo = sum(r.stopped_by == "slo" for r in outcome.results)
    by_goodput = sum(r.stopped_by == "goodput" for r in outcome.results)
    if outcome.resimulated:
        return (f"{outcome.resimulated} stopped early as provably missing the SLOs, then simulated again in full "
                "since none met them")
    if not by_slo and not by_goodput:
        return "every one in full"
    return (f"{by_slo + by_goodput} stopped early: {by_slo} provably missing the SLOs, {by_goodput} provably "
            "unable to beat the best goodput found")


def _trust_lines(trust: Trust) -> list[str]:
    lines = ["trust (how far to trust this simulation):"]
    held = trust.holdout
    if held.get("folds"):
        lines.append(f"  step-time fit on held-out steps ({held['folds']} contiguous blocks): R² {held['r2']:.2f}, "
                     f"median error {held['median_abs_pct_error']:.1f}%, p90 {held['p90_abs_pct_error']:.1f}%")
    else:
        lines.append(f"  no held-out fit figures: {held.get('reason', 'none recorded')}")
    lines += [f"  warning: {w}" for w in trust.warnings]
    if trust.track_record:
        errs = [abs(e.simulated.error_pct.get("e2e_p50") or 0) for e in trust.track_record]
        lines.append(f"  track record: {len(trust.track_record)} real run(s) of these requests predicted from the "
                     f"base, E2E p50 error median {sorted(errs)[len(errs) // 2]:.1f}%")
    if trust.consistency is not None:
        worst = max((abs(v) for v in trust.consistency.error_pct.values() if v is not None), default=0.0)
        lines.append(f"  consistency check (in sample, not an accuracy figure): the base replayed under its own "
                     f"configuration is within {worst:.1f}% of what it recorded")
    return lines


def _table(rows: list[PointResult]) -> list[str]:
    out = [f"  {'point':>6} {'goodput':>9} {'within':>7} {'tok/s':>10} {'E2E p99 ms':>11} {'TTFT p99 ms':>12}  params"]
    for r in rows:
        out.append(f"  {r.index:>6} {r.goodput or 0:>9.2f} {(r.attainment or 0) * 100:>6.1f}% "
                   f"{r.output_tokens_per_s or 0:>10,.1f} {_ms(r.e2e_p99):>11} {_ms(r.ttft_p99):>12}  "
                   f"{describe_params(r.params)}")
    return out
