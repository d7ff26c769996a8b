"""Small pieces every page uses: opening the database with a clear message, waiting for the
first run, picking a run, formatting numbers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from dashboard import data, demo, demo_workload, launcher, run_meta, settings
from storage.database import DatabaseMissingError, EmptyDatabaseError, StorageError

STATUS_COLORS = {"running": "green", "finished": "blue", "aborted": "gray", "failed": "red", "interrupted": "orange"}


def status_badge(status: str) -> str:
    """Markdown for a coloured status badge."""
    return f":{STATUS_COLORS.get(status, 'gray')}-badge[{status}]"


def runs_or_stop(empty_hint: str = "Start one from the **Runs** page.") -> tuple[str, pd.DataFrame]:
    """The database target and its runs; stops the page with a clear message when there are none
    or the database cannot be read."""
    target = settings.db_target()
    try:
        frame = data.runs(target)
    except (DatabaseMissingError, EmptyDatabaseError):
        frame = None
    except StorageError as exc:
        st.error(f"Cannot read the database: {exc}")
        st.stop()
    except SQLAlchemyError as exc:
        st.error(f"Cannot read the database {target}: {getattr(exc, 'orig', exc)}")
        st.stop()
    if frame is None or frame.empty:
        st.info(f"No runs recorded yet. {empty_hint}")
        wait_for_first_run(target)
        st.stop()
    return target, frame


def wait_for_first_run(target: str) -> None:
    """While this dashboard's demo starts: say so, and rerun the page once its first step is recorded."""
    launched = demo.launched(target)
    if launched is not None:
        _demo_progress(target, launched)


@st.fragment(run_every=2)
def _demo_progress(target: str, launched: launcher.Launched) -> None:
    try:
        if not data.runs(target).empty:
            st.rerun()
    except (DatabaseMissingError, EmptyDatabaseError):
        pass
    failure = launcher.early_failure(launched, wait_s=0.1)
    if failure:
        st.error(f"The demo run could not start: {failure} (log: {launched.log_path})")
        return
    st.info(f"Starting a demo run on the `tiny` model (a small random-weight Llama): {demo_workload.describe()}. "
            "This page shows it as soon as its first step is recorded.")


def delete_run(container: Any, run_id: int, target: str) -> None:
    """A Delete popover with a confirmation; on success the runs list is re-read without the run."""
    with container.popover("Delete", icon=":material/delete:", width="stretch"):
        st.write(f"Delete run #{run_id} and all its steps? This cannot be undone.")
        if st.button("Delete for good", type="primary", key="confirm_delete"):
            launched = launcher.launch(launcher.delete_run_argv(run_id, target), f"delete-{run_id}")
            failure = launcher.early_failure(launched, wait_s=10)
            if failure:
                st.error(failure)
            else:
                data.runs.clear()
                st.query_params.pop("run", None)
                st.rerun()


def run_label(row: Any) -> str:
    return f"#{row['id']} {row['name']} ({row['status']})"


def pick_run(runs: pd.DataFrame, key: str, prefer_running: bool = False, label: str = "Run",
             allowed: pd.Series | None = None, remember: bool = True, preferred: int | None = None,
             none_fits: str = "No run fits here yet.") -> int:
    """A run picker; the page's main one is remembered in the URL (?run=ID) so views can be linked
    and reloaded. none_fits: what the page says when no run is allowed."""
    choices = runs if allowed is None else runs[allowed]
    if choices.empty:
        st.info(none_fits)
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


def summary_line(run: run_meta.RunRow) -> str | None:
    """A finished run's headline figures from its stored summary; None while it runs."""
    h = run_meta.headline(run)
    if h is None:
        return None
    parts = [rate(h.output_tokens_per_s), f"TTFT p50 {ms(h.ttft_p50)}", f"ITL p50 {ms(h.itl_p50)}",
             f"TPOT p50 {ms(h.tpot_p50)}", f"E2E p50 {ms(h.e2e_p50)}", f"{h.num_preemptions} preemptions"]
    if h.padding_share is not None:
        parts.append(f"{h.padding_share:.0%} of computed tokens were padding")
    return " · ".join(parts)


def index_of(options: Sequence[Any], value: Any, fallback: int = 0) -> int:
    """A selectbox index for value, or fallback when it is not among the options."""
    return list(options).index(value) if value in options else fallback


def start_and_wait(build_argv: Callable[[], list[str]], label: str, doing: str, what: str, wait_s: float,
                   ready: Callable[[], bool] | None = None) -> bool:
    """Build a command line from a typed request and run it to its end (or wait_s, or until `ready`
    says True): a bad input says "Not started: ..." and starts nothing; a failed command says why.
    True when it went through."""
    try:
        argv = build_argv()
    except launcher.LaunchError as exc:
        st.error(f"Not started: {exc}")
        return False
    with st.spinner(doing):
        failure = launcher.early_failure(launcher.launch(argv, label), wait_s=wait_s, ready=ready)
    if failure:
        st.error(f"The {what} failed: {failure}")
        return False
    return True
