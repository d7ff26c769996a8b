"""Small pieces every page uses: opening the database with a clear message, picking a run,
formatting numbers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from dashboard import data, settings
from storage.database import DatabaseMissingError, EmptyDatabaseError, StorageError

STATUS_COLORS = {"running": "green", "finished": "blue", "aborted": "gray", "failed": "red", "interrupted": "orange"}


def status_badge(status: str) -> str:
    """Markdown for a coloured status badge."""
    return f":{STATUS_COLORS.get(status, 'gray')}-badge[{status}]"


NAVIGATION = (
    ("app.py", "Runs", ":material/table_rows:"),
    ("pages/1_Live.py", "Live", ":material/radio_button_checked:"),
    ("pages/2_Replay.py", "Replay", ":material/replay:"),
    ("pages/3_What-if.py", "What-if", ":material/science:"),
    ("pages/4_Curves.py", "Curves", ":material/show_chart:"),
)


def page_setup(title: str) -> None:
    """First call of every page: Streamlit runs a page file alone (app.py does not run first), so
    page config and the sidebar live here. The sidebar replaces Streamlit's file-name navigation
    (hidden in .streamlit/config.toml) with titled, iconed links."""
    st.set_page_config(page_title=f"{title} · Batchscope", page_icon=":material/view_timeline:", layout="wide")
    with st.sidebar:
        st.markdown("### Batchscope")
        for path, label, icon in NAVIGATION:
            st.page_link(path, label=label, icon=icon)
        st.caption(f"Database: `{Path(settings.db_target()).name if '://' not in settings.db_target() else 'URL'}`")


def runs_or_stop(empty_hint: str = "Start one from the **Runs** page.") -> tuple[str, pd.DataFrame]:
    """The database target and its runs; stops the page with a clear message when there are none
    or the database cannot be read."""
    target = settings.db_target()
    try:
        frame = data.runs(target)
    except (DatabaseMissingError, EmptyDatabaseError):
        st.info(f"No runs recorded yet. {empty_hint}")
        st.stop()
    except StorageError as exc:
        st.error(f"Cannot read the database: {exc}")
        st.stop()
    except SQLAlchemyError as exc:
        st.error(f"Cannot read the database {target}: {getattr(exc, 'orig', exc)}")
        st.stop()
    if frame.empty:
        st.info(f"No runs recorded yet. {empty_hint}")
        st.stop()
    return target, frame


def run_label(row: Any) -> str:
    return f"#{row['id']} {row['name']} ({row['status']})"


def pick_run(runs: pd.DataFrame, key: str, prefer_running: bool = False, label: str = "Run",
             allowed: pd.Series | None = None, remember: bool = True, preferred: int | None = None) -> int:
    """A run picker; the page's main one is remembered in the URL (?run=ID) so views can be linked
    and reloaded."""
    choices = runs if allowed is None else runs[allowed]
    if choices.empty:
        st.info("No run fits here yet.")
        st.stop()
    ids = [int(i) for i in choices["id"]]
    labels = {int(r["id"]): run_label(r) for _, r in choices.iterrows()}
    wanted = st.query_params.get("run") if remember else None
    default = int(wanted) if wanted and wanted.isdigit() and int(wanted) in labels else None
    if default is None and preferred in labels:
        default = preferred
    if default is None:
        running = choices[choices["status"] == "running"]
        default = int(running["id"].iloc[0]) if prefer_running and not running.empty else ids[0]
    chosen = st.selectbox(label, ids, index=ids.index(default), format_func=labels.__getitem__, key=key)
    if remember:
        st.query_params["run"] = str(chosen)
    return int(chosen)


def ms(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    # Seconds from 1 s up: "1,425.4 ms" does not fit a metric tile.
    return f"{seconds * 1e3:,.1f} ms" if seconds < 1 else f"{seconds:,.2f} s"


def rate(value: float | None, unit: str = "tok/s") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.1f} {unit}"


def config_summary(config: dict[str, Any]) -> str:
    keys = ("max_num_seqs", "max_num_batched_tokens", "num_gpu_blocks", "block_size", "enable_chunked_prefill",
            "policy", "preemption_mode", "swap_space", "batching")
    return " · ".join(f"{k}={config.get(k)}" for k in keys if k in config)


def summary_line(summary: dict[str, Any]) -> str:
    """A finished run's headline figures from its stored summary."""

    def p50(key: str) -> str:
        return ms((summary.get(key) or {}).get("p50"))

    parts = [f"{rate(summary.get('output_tokens_per_s'))}", f"TTFT p50 {p50('ttft_s')}", f"ITL p50 {p50('itl_s')}",
             f"TPOT p50 {p50('tpot_s')}", f"E2E p50 {p50('e2e_s')}", f"{summary.get('num_preemptions', 0)} preemptions"]
    if summary.get("num_padding_tokens"):
        parts.append(f"{summary['padding_share']:.0%} of computed tokens were padding")
    return " · ".join(parts)
