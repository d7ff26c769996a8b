"""The Runs page's tables: display columns from `data.runs()` and how each is shown; the runs that
belong to a search (materialized points, validation runs) apart from the rest, grouped by search."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from dashboard import view_files
from storage import searches

COLUMNS = ["id", "status", "name", "source", "engine", "batching", "requests", "output_tokens_per_s", "ttft_ms",
           "itl_ms", "itl_p99_ms", "e2e_ms", "num_preemptions", "num_steps", "based_on", "created_at"]
OPEN_IN = (("Live", ":material/radio_button_checked:", view_files.LIVE),  # the views a selected run opens in
           ("Replay", ":material/replay:", view_files.REPLAY), ("What-if", ":material/science:", view_files.WHAT_IF))
MAX_HEIGHT_PX = 600  # about 16 rows; longer lists scroll
COLUMN_CONFIG = {
    "id": st.column_config.NumberColumn("run", format="%d", width="small", pinned=True),
    "name": st.column_config.TextColumn("name", width="medium", pinned=True),
    "source": st.column_config.TextColumn("source", width="small",
                                          help="workload: generated or from a file; served: what `serve` served; "
                                               "what-if: a prediction from a recorded run; validation: a real run "
                                               "checking a prediction"),
    "engine": st.column_config.TextColumn("engine", help="real: a model on this machine; simulated: the cost model"),
    "output_tokens_per_s": st.column_config.NumberColumn("tok/s", format="%.1f", help="Output tokens per second"),
    "ttft_ms": st.column_config.NumberColumn("TTFT ms", format="%.1f", help="Mean time to first token"),
    "itl_ms": st.column_config.NumberColumn("ITL p50 ms", format="%.1f",
                                            help="Median (p50) gap between a request's consecutive output tokens, "
                                                 "pooled over requests; shown once the run has finished"),
    "itl_p99_ms": st.column_config.NumberColumn("ITL p99 ms", format="%.1f",
                                                help="99th percentile of the same gaps: the stalls a stream sees"),
    "e2e_ms": st.column_config.NumberColumn("E2E ms", format="%.1f", help="Mean end-to-end latency"),
    "requests": st.column_config.TextColumn("requests", width="small", help="finished / recorded"),
    "num_preemptions": st.column_config.NumberColumn("preempted", format="%d", width="small",
                                                     help="Preemptions over the run"),
    "num_steps": st.column_config.NumberColumn("steps", format="%d", width="small"),
    "based_on": st.column_config.NumberColumn("what-if of", format="%d", width="small",
                                              help="The recorded run this prediction re-ran"),
    "created_at": st.column_config.DatetimeColumn("started (UTC)", format="MM-DD HH:mm:ss"),
}
TABLES = pd.DataFrame({
    "table": ["runs", "requests", "steps", "request_phases", "kv_block_events"],
    "one row per": ["run", "request", "engine step", "phase change of a request", "KV block that changed owner"],
})  # what the database holds, for users who query it with SQL


def display(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs in display units, one row per run in the order given, COLUMNS only."""
    table = runs.assign(
        requests=[f"{f}/{n}" for f, n in zip(runs["num_finished"], runs["num_requests"], strict=True)],
        ttft_ms=runs["mean_ttft"] * 1e3,
        e2e_ms=runs["mean_e2e"] * 1e3,
        itl_ms=runs["itl_p50"].astype(float) * 1e3,
        itl_p99_ms=runs["itl_p99"].astype(float) * 1e3,
        based_on=runs["base_run_id"].astype("Int64"),
        engine=[mode if pd.isna(model) else f"{mode} · {model}" for mode, model in zip(runs["mode"], runs["model"],
                                                                                      strict=True)],
    )
    return table[COLUMNS]


def height(runs: pd.DataFrame) -> int:
    """Tall enough for every row up to MAX_HEIGHT_PX (a header and 35 px a row)."""
    return min(38 + 35 * len(runs), MAX_HEIGHT_PX)


def outside_searches(runs: pd.DataFrame, grouped: pd.DataFrame) -> pd.DataFrame:
    """The Runs list: every run but those that belong to a search (they show under their search)."""
    return searches.without_search_runs(runs, grouped)


@dataclass(frozen=True)
class SearchGroup:
    search_id: int
    label: str  # "search 3: 12 runs · its name"
    runs: pd.DataFrame  # SEARCH_COLUMNS, in display units


SEARCH_COLUMNS = ["replay", "point", "role", *COLUMNS]
SEARCH_COLUMN_CONFIG = COLUMN_CONFIG | {
    "replay": st.column_config.LinkColumn("open", display_text="Replay", width="small",
                                          help="Open the run in Replay"),
    "point": st.column_config.NumberColumn("point", format="%d", width="small", help="The search point it records"),
    "role": st.column_config.TextColumn("role", width="small",
                                        help="point: a search point recorded step by step; validation: a real run "
                                             "checking one"),
}
MAX_LABEL_NAME = 70  # characters of a search's name in its group's title


def search_groups(runs: pd.DataFrame, grouped: pd.DataFrame, searches: pd.DataFrame) -> list[SearchGroup]:
    """One group per search with recorded runs, newest search first; its runs by point, then id."""
    if grouped.empty:
        return []
    names = dict(zip(searches["id"].astype(int), searches["name"], strict=True)) if not searches.empty else {}
    roles = grouped.assign(run_id=grouped["run_id"].astype(int)).drop_duplicates("run_id").set_index("run_id")
    mine = runs[runs["id"].isin(roles.index)]
    table = display(mine).assign(search_id=[int(roles.loc[i, "search_id"]) for i in mine["id"]],
                                 point=[int(roles.loc[i, "point"]) for i in mine["id"]],
                                 role=[str(roles.loc[i, "role"]) for i in mine["id"]],
                                 replay=[f"Replay?run={int(i)}" for i in mine["id"]])
    groups = []
    for search_id in sorted(set(table["search_id"]), reverse=True):
        rows = table[table["search_id"] == search_id].sort_values(["point", "id"])
        name = str(names.get(search_id, ""))
        name = name if len(name) <= MAX_LABEL_NAME else name[:MAX_LABEL_NAME - 1] + "…"
        noun = "run" if len(rows) == 1 else "runs"
        groups.append(SearchGroup(search_id, f"search {search_id}: {len(rows)} {noun} · {name}",
                                  rows[SEARCH_COLUMNS].reset_index(drop=True)))
    return groups
