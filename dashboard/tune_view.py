"""Data for the Tune view: searches, their points as a table a chart can draw, the frontier, which
runs belong to a search, the counts, the recommendation (or the closest miss) and its trust figures.

Plain functions over a read-only SQLAlchemy Engine (dashboard.data.reader gives one), so a page
can cache them the way dashboard/data.py caches its reads. storage.searches does the SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from storage import searches
from storage.run_meta import Trust, trust_from_json

POINT_COLUMNS = ["point", "status", "meets_slo", "goodput", "attainment", "output_tokens_per_s", "e2e_p99",
                 "ttft_p99", "tpot_p99", "run_id", "reason"]


def search_table(db: Engine) -> pd.DataFrame:
    """One row per search, newest first: status, progress, the recommended point and its goodput."""
    return searches.list_searches(db)


def points_table(db: Engine, search_id: int) -> pd.DataFrame:
    """One row per point: its searched parameters as columns (max_num_seqs, ...) beside its figures.
    A point that stopped early or was invalid has no figures (NaN), and says why in `reason`."""
    frame = searches.search_points(db, search_id)
    if frame.empty:
        return pd.DataFrame(columns=POINT_COLUMNS)
    params = pd.DataFrame([dict(p or {}) for p in frame["params"]], index=frame.index)
    return pd.concat([params, frame[POINT_COLUMNS]], axis=1)


def frontier_table(points: pd.DataFrame, meeting_only: bool = True) -> pd.DataFrame:
    """The throughput vs E2E p99 Pareto frontier of a points_table (of the points meeting the SLOs,
    unless meeting_only is False), by E2E p99; the same rule as tune.pareto."""
    rows = points.dropna(subset=["output_tokens_per_s", "e2e_p99"])
    if meeting_only:
        rows = rows[rows["meets_slo"].astype(bool)]
    rows = rows.sort_values(["output_tokens_per_s", "e2e_p99", "point"], ascending=[False, True, True])
    kept, best = [], float("inf")
    for index, latency in zip(rows.index, rows["e2e_p99"], strict=True):
        if latency < best:
            kept.append(index)
            best = latency
    return rows.loc[kept].sort_values(["e2e_p99", "point"])


def grouped_runs(db: Engine) -> pd.DataFrame:
    """run_id, search_id, point, role of every run that belongs to a search."""
    return searches.grouped_runs(db)


def runs_of_search(db: Engine, search_id: int) -> pd.DataFrame:
    """run_id, point, role (point: a materialized point; validation: a real run checking one)."""
    grouped = searches.grouped_runs(db)
    return grouped[grouped["search_id"] == search_id].drop(columns=["search_id"]).reset_index(drop=True)


def search_summary(db: Engine, search_id: int) -> dict[str, Any] | None:
    """The search row: its workload, SLOs, space, backend and report (trust figures, frontier)."""
    return searches.get_search(db, search_id)


STATUSES = ("complete", "pruned", "invalid", "failed")


def counts(points: pd.DataFrame) -> dict[str, int]:
    """Points by status, every status present (from the rows, so a running search counts too)."""
    found = points["status"].value_counts() if not points.empty else pd.Series(dtype=int)
    return {s: int(found.get(s, 0)) for s in STATUSES}


def axes(search: dict[str, Any]) -> list[str]:
    """The searched parameters, in the order given; those with more than one value first."""
    space = search.get("space") or {}
    return sorted(space, key=lambda name: len(space[name]) < 2)


def chosen_point(search: dict[str, Any]) -> int | None:
    """The recommended point, else the closest miss (what the trust figures and the button are about)."""
    if search.get("recommended_point") is not None:
        return int(search["recommended_point"])
    closest = (search.get("report") or {}).get("closest")
    return int(closest["index"]) if closest else None


def closest(search: dict[str, Any]) -> dict[str, Any] | None:
    """When nothing met the SLOs: the closest point's figures and by how much it misses (report["closest"])."""
    if search.get("recommended_point") is not None:
        return None
    return (search.get("report") or {}).get("closest")


def trust(search: dict[str, Any]) -> Trust | None:
    """How far to trust the chosen point's simulation, as the search recorded it."""
    return trust_from_json((search.get("report") or {}).get("trust"))


# -- what the Tune page shows ------------------------------------------------------------------------
SLO_NAMES = {"ttft": "TTFT", "tpot": "TPOT", "e2e": "E2E"}
MS_COLUMNS = ("e2e_p99", "ttft_p99", "tpot_p99")  # seconds in the points table, milliseconds on the page


def value_text(value: Any) -> str:
    """A searched value as the command line takes it (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def describe_params(params: dict[str, Any]) -> str:
    return " · ".join(f"{k}={value_text(v)}" for k, v in params.items()) or "the base configuration"


def search_labels(table: pd.DataFrame) -> dict[int, str]:
    """search id -> its picker label, newest first."""
    return {int(r["id"]): f"#{int(r['id'])} {r['name']} ({r['status']}, {int(r['num_points'])} configurations)"
            for _, r in table.iterrows()}


def default_search(table: pd.DataFrame, wanted: str | None) -> int:
    """The search the URL names (?search=N) when it exists, else the newest."""
    ids = [int(i) for i in table["id"]]
    return int(wanted) if wanted and wanted.isdigit() and int(wanted) in ids else ids[0]


def slo_line(slo: dict[str, Any]) -> str:
    """"TTFT ≤ 500 ms, E2E ≤ 5,000 ms for 99% of requests"."""
    limits = [f"{name} ≤ {slo[f'{key}_ms']:,g} ms" for key, name in SLO_NAMES.items() if slo.get(f"{key}_ms")]
    return f"{', '.join(limits)} for {slo.get('attainment_pct', 99):g}% of requests"


def cost_line(search: dict[str, Any]) -> str:
    """The step costs the search ran on: "fitted to 6 runs of this model and device (runs 3, 5, 8, ...)"."""
    report = search.get("report") or {}
    name = report.get("cost_model") or (search.get("cost_model") or {}).get("name") or "unknown"
    pooled = report.get("pooled_runs") or []
    return f"“{name}”" + (f" (runs {', '.join(f'#{r}' for r in pooled)})" if pooled else "")


def display_points(points: pd.DataFrame, axes_: list[str]) -> pd.DataFrame:
    """The points table in display units: percentages, milliseconds, a Replay link for a recorded point."""
    table = points.assign(
        attainment=points["attainment"] * 100,
        replay=[None if pd.isna(r) else f"Replay?run={int(r)}" for r in points["run_id"]],
        **{c: points[c] * 1e3 for c in MS_COLUMNS},
        **{a: [value_text(v) for v in points[a]] for a in axes_ if a in points},
        reason=points["reason"].fillna(""),
    )
    return table[[*(a for a in axes_ if a in table), *POINT_COLUMNS[:-2], "replay", "reason"]]


@dataclass(frozen=True)
class ChartData:
    frame: pd.DataFrame  # the points that have a goodput, one row each
    x_values: list[str]  # every value of the first searched parameter, in grid order
    series_values: list[str]  # every combination of the others, in grid order
    x_title: str  # that parameter
    series_title: str | None  # the other searched parameters (None: only one was searched)


def chart_frame(points: pd.DataFrame, search: dict[str, Any]) -> ChartData:
    """The points that have a goodput, ready to draw: x (the first searched parameter's value),
    series (the other parameters' values: "512", or "a=1 · b=true" for several), verdict, frontier
    and chosen flags."""
    names = axes(search)
    rows = points.dropna(subset=["goodput"])
    meeting = rows["meets_slo"].astype(bool)
    frontier = set(frontier_table(points, meeting_only=bool(meeting.any()))["point"].astype(int))
    chosen = chosen_point(search)
    rest = names[1:]
    frame = pd.DataFrame({
        "point": rows["point"].astype(int),
        "x": [value_text(v) for v in rows[names[0]]],
        "series": [_series(r, rest) for _, r in rows.iterrows()],
        "goodput": rows["goodput"].astype(float),
        "attainment": rows["attainment"].astype(float) * 100,
        "output_tokens_per_s": rows["output_tokens_per_s"].astype(float),
        "e2e_p99_ms": rows["e2e_p99"].astype(float) * 1e3,
        "verdict": ["meets the SLOs" if m else "misses them" for m in meeting],
        "frontier": [int(p) in frontier for p in rows["point"]],
        "chosen": [int(p) == chosen for p in rows["point"]],
    })
    order = [value_text(v) for v in (search.get("space") or {}).get(names[0], [])]
    order += sorted(set(frame["x"]) - set(order))
    frame["x_order"] = [order.index(x) for x in frame["x"]]
    series = list(dict.fromkeys(_series(r, rest) for _, r in points.iterrows()))  # grid order
    return ChartData(frame, order, series, names[0], " · ".join(rest) or None)


def _series(row: Any, names: list[str]) -> str:
    if len(names) == 1:
        return value_text(row[names[0]])
    return " · ".join(f"{a}={value_text(row[a])}" for a in names) or "all"


def miss_table(near: dict[str, Any], attainment_pct: float) -> pd.DataFrame:
    """By how much the closest point misses, per threshold: the share of requests within it, and the
    metric's percentile at the attainment target (p99 for 99%) against it."""
    per = (near.get("miss") or {}).get("per_slo") or {}
    return pd.DataFrame([{
        "SLO": SLO_NAMES.get(key, key), "threshold (ms)": d["threshold_s"] * 1e3,
        "requests within (%)": d["within_share"] * 100,
        f"its p{attainment_pct:g} (ms)": None if d["quantile_s"] is None else d["quantile_s"] * 1e3,
        "over by (%)": d["over_pct"]} for key, d in per.items()])


def point_row(points: pd.DataFrame, point: int) -> dict[str, Any] | None:
    found = points[points["point"] == point]
    return None if found.empty else found.iloc[0].to_dict()


def run_of_point(points: pd.DataFrame, point: int) -> int | None:
    """The run a point was recorded as (materialized), if it was."""
    row = point_row(points, point)
    return None if row is None or pd.isna(row["run_id"]) else int(row["run_id"])


def materializable(points: pd.DataFrame) -> list[int]:
    """Points that can be recorded as a run: every valid one (a pruned point is re-simulated in full)."""
    return [int(p) for p, s in zip(points["point"], points["status"], strict=True) if s != "invalid"]


@dataclass(frozen=True)
class Answer:
    """The search's answer as the page states it: the recommended point, or the closest miss."""

    point: int
    params: str  # "max_num_seqs=32 · max_num_batched_tokens=512"
    meets_slo: bool
    figures: dict[str, str]  # tile label -> value, in display units
    miss: str | None  # for the closest miss: by how much, in one sentence


def _ms(seconds: Any) -> str:
    return "–" if seconds is None or pd.isna(seconds) else f"{seconds * 1e3:,.1f} ms"


def answer(search: dict[str, Any], points: pd.DataFrame) -> Answer | None:
    """What the search recommends, or the point that comes closest when none meets the SLOs; None
    while nothing has been decided (a running search, or nothing could be simulated)."""
    chosen = chosen_point(search)
    row = point_row(points, chosen) if chosen is not None else None
    if chosen is None or row is None:
        return None
    names = [a for a in axes(search) if a in row]
    figures = {"goodput": f"{row['goodput']:,.2f} req/s", "within the SLOs": f"{row['attainment'] * 100:.1f}%",
               "output tok/s": f"{row['output_tokens_per_s']:,.1f}", "E2E p99": _ms(row["e2e_p99"]),
               "TTFT p99": _ms(row["ttft_p99"]), "TPOT p99": _ms(row["tpot_p99"])}
    near, miss = closest(search), None
    if near is not None:
        details = near.get("miss") or {}
        target = (search.get("slo") or {}).get("attainment_pct", 99)
        miss = (f"{details.get('attainment', 0) * 100:.1f}% of requests within the SLOs against {target:g}% needed: "
                f"{details.get('short_by', 0)} more of {near.get('num_requests', '?')} requests would have to "
                "meet them.")
    return Answer(chosen, describe_params({a: row[a] for a in names}), near is None, figures, miss)


def consistency_line(trust: Trust) -> str | None:
    """The base replayed under its own configuration, against what it recorded (in sample)."""
    if trust.consistency is None:
        return None
    worst = max((abs(v) for v in trust.consistency.error_pct.values() if v is not None), default=0.0)
    return (f"Consistency check (in sample, not an accuracy figure): the base run replayed under its own "
            f"configuration is within {worst:.1f}% of what it recorded.")


POINT_FORMATS = {
    "point": st.column_config.NumberColumn("point", format="%d", width="small", pinned=True),
    "meets_slo": st.column_config.CheckboxColumn("meets SLOs", width="small"),
    "goodput": st.column_config.NumberColumn("goodput (req/s)", format="%.2f",
                                             help="Requests per second that met every SLO"),
    "attainment": st.column_config.NumberColumn("within SLOs %", format="%.1f"),
    "output_tokens_per_s": st.column_config.NumberColumn("tok/s", format="%.1f"),
    "e2e_p99": st.column_config.NumberColumn("E2E p99 ms", format="%.1f"),
    "ttft_p99": st.column_config.NumberColumn("TTFT p99 ms", format="%.1f"),
    "tpot_p99": st.column_config.NumberColumn("TPOT p99 ms", format="%.1f"),
    "replay": st.column_config.LinkColumn("run", display_text="Replay", width="small",
                                          help="The point recorded as a run (Record it below)"),
    "reason": st.column_config.TextColumn("why no figures", width="large",
                                          help="A pruned point stopped early; an invalid one is no configuration"),
}
def miss_formats(table: pd.DataFrame) -> dict[str, Any]:
    """miss_table's column formats: one decimal, the overshoot signed."""
    return {c: st.column_config.NumberColumn(format="%+.0f%%" if c.startswith("over") else "%.1f")
            for c in table.columns[1:]}
