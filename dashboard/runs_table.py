"""The Runs page's table: display columns from `data.runs()` and how each is shown."""

from __future__ import annotations

import pandas as pd
import streamlit as st

COLUMNS = ["id", "status", "name", "engine", "batching", "requests", "output_tokens_per_s", "ttft_ms", "itl_ms",
           "e2e_ms", "num_preemptions", "num_steps", "based_on", "created_at"]
OPEN_IN = (("Live", ":material/radio_button_checked:", "pages/live.py"),  # the views a selected run opens in
           ("Replay", ":material/replay:", "pages/replay.py"), ("What-if", ":material/science:", "pages/what_if.py"))
MAX_HEIGHT_PX = 600  # about 16 rows; longer lists scroll
COLUMN_CONFIG = {
    "id": st.column_config.NumberColumn("run", format="%d", width="small", pinned=True),
    "name": st.column_config.TextColumn("name", width="medium", pinned=True),
    "engine": st.column_config.TextColumn("engine", help="real: a model on this machine; simulated: the cost model"),
    "output_tokens_per_s": st.column_config.NumberColumn("tok/s", format="%.1f", help="Output tokens per second"),
    "ttft_ms": st.column_config.NumberColumn("TTFT ms", format="%.1f", help="Mean time to first token"),
    "itl_ms": st.column_config.NumberColumn("ITL ms", format="%.1f",
                                            help="Median (p50) gap between a request's consecutive output tokens, "
                                                 "pooled over requests; shown once the run has finished"),
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
        based_on=runs["base_run_id"].astype("Int64"),
        engine=[mode if pd.isna(model) else f"{mode} · {model}" for mode, model in zip(runs["mode"], runs["model"],
                                                                                      strict=True)],
    )
    return table[COLUMNS]


def height(runs: pd.DataFrame) -> int:
    """Tall enough for every row up to MAX_HEIGHT_PX (a header and 35 px a row)."""
    return min(38 + 35 * len(runs), MAX_HEIGHT_PX)
