"""The Runs page's table: display columns from `data.runs()` and how each is shown."""

from __future__ import annotations

import pandas as pd
import streamlit as st

COLUMNS = ["id", "status", "name", "mode", "batching", "model", "requests", "output_tokens_per_s", "ttft_ms",
           "itl_ms", "e2e_ms", "num_preemptions", "num_steps", "based_on", "created_at"]
COLUMN_CONFIG = {
    "id": st.column_config.NumberColumn("run", format="%d", width="small"),
    "name": st.column_config.TextColumn("name", width="medium"),
    "output_tokens_per_s": st.column_config.NumberColumn("output tok/s", format="%.1f"),
    "ttft_ms": st.column_config.NumberColumn("mean TTFT (ms)", format="%.1f"),
    "itl_ms": st.column_config.NumberColumn("ITL p50 (ms)", format="%.1f",
                                            help="Median gap between a request's consecutive output tokens, "
                                                 "pooled over requests; shown once the run has finished"),
    "e2e_ms": st.column_config.NumberColumn("mean E2E (ms)", format="%.1f"),
    "num_preemptions": st.column_config.NumberColumn("preemptions", format="%d"),
    "num_steps": st.column_config.NumberColumn("steps", format="%d"),
    "based_on": st.column_config.NumberColumn("what-if of", format="%d"),
    "created_at": st.column_config.DatetimeColumn("started (UTC)", format="YYYY-MM-DD HH:mm:ss"),
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
        model=runs["model"].fillna("–"),
    )
    return table[COLUMNS]
