"""The Learn page's parts: one lesson's section (its text, its one button, its chart and the course's
figures next to the run's) and the background recording a button starts."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from dashboard import launcher, learn, learn_textbook, learn_tradeoffs, settings
from dashboard.learn_figures import NOT_RECORDED, RECORDING, View
from dashboard.learn_lessons import Lesson
from dashboard.learn_plan import PLANS

VIEWS: dict[str, Callable[[str, learn.LessonRuns], View | None]] = {
    "static_waste": learn_textbook.waste_view, "continuous_loop": learn_textbook.loop_view,
    "scheduler_trace": learn_textbook.trace_view, "production": learn_textbook.production_view,
    "batch_sweep": learn_tradeoffs.sweep_view, "short_long": learn_tradeoffs.short_long_view,
    "chunked_prefill": learn_tradeoffs.chunked_view, "preemption": learn_tradeoffs.preemption_view,
    "policies": learn_tradeoffs.policy_view,
}


def _names(key: str) -> tuple[str, ...]:
    return tuple(name for step in PLANS[key] for name in step.run_names())


def _launched_key(key: str) -> str:
    return f"learn_launched_{key}"


def _failed_key(key: str) -> str:
    return f"learn_failed_{key}"


def _recorded(runs: learn.LessonRuns, key: str) -> tuple[int | None, ...]:
    return tuple(runs.id(name) for name in _names(key))


def is_recording(runs: learn.LessonRuns, key: str) -> bool:
    """Whether this session started the lesson's recording, or any of its runs is being recorded now."""
    return _launched_key(key) in st.session_state or any(n in runs.recording for n in _names(key))


def start(target: str, key: str) -> bool:
    """Start the lesson's runs in the background (the section then follows them); whether it started."""
    request = launcher.LessonRun(key)
    try:
        request.validate()
    except launcher.LaunchError as exc:
        st.error(f"Not started: {exc}")
        return False
    st.session_state.pop(_failed_key(key), None)
    st.session_state[_launched_key(key)] = launcher.launch(request.argv(target, settings.log_dir() / "learn"),
                                                          f"learn-{key}")
    return True


@st.fragment(run_every=2)
def follow(target: str, key: str, seen: tuple[int | None, ...]) -> None:
    """While a lesson records: rerun the page whenever one of its runs finishes; say why if it fails."""
    launched = st.session_state.get(_launched_key(key))
    if launched is not None:
        failure = launcher.early_failure(launched, wait_s=0.1)
        if failure or launcher.wait_for_exit(launched.pid, 0.05):
            del st.session_state[_launched_key(key)]
            if failure:
                st.session_state[_failed_key(key)] = f"{failure} (log: {launched.log_path})"
            st.rerun()
    if _recorded(learn.lesson_runs(target), key) != seen:
        st.rerun()
    st.info("Recording: the simulated runs first (seconds), then the runs on the real `tiny` model, if the lesson "
            "has them (a minute or more on a CPU). The figures below fill in as each run finishes.",
            icon=":material/hourglass_top:")


def tiny_placeholder(view: View) -> str | None:
    """What every tiny cell says while the lesson's real runs are absent (then the column is left out)."""
    cells = {r.tiny for r in view.rows}
    return cells.pop() if len(cells) == 1 and cells & {NOT_RECORDED, RECORDING} else None


def has_tiny_column(view: View) -> bool:
    return any(r.tiny is not None for r in view.rows) and tiny_placeholder(view) is None


def figures_table(view: View) -> pd.DataFrame:
    """The course's figures next to the run's, one row per figure (the figure is the index)."""
    columns = {"the course": [r.course for r in view.rows], view.run_column: [r.run for r in view.rows],
               "check": [r.check for r in view.rows]}  # of the run beside it: the course's figure or direction
    if has_tiny_column(view):
        columns["tiny (real model)"] = [r.tiny or "" for r in view.rows]
    return pd.DataFrame(columns, index=pd.Index([r.figure for r in view.rows], name="figure"))


def section(number: int, lesson: Lesson, target: str, runs: learn.LessonRuns) -> None:
    st.header(f"{number}. {lesson.title}", anchor=lesson.key, divider="gray")
    st.markdown(lesson.text)
    recording = is_recording(runs, lesson.key)
    left, right = st.columns([1, 3], vertical_alignment="center")
    if left.button("Record this lesson", key=f"learn_{lesson.key}", icon=":material/play_arrow:",
                   disabled=recording, width="stretch") and start(target, lesson.key):
        st.rerun()
    right.caption(f"Records {lesson.records}. {lesson.real_note}")
    if _failed_key(lesson.key) in st.session_state:
        st.error(f"Recording stopped: {st.session_state[_failed_key(lesson.key)]}")
    if recording:
        follow(target, lesson.key, _recorded(runs, lesson.key))
    view = VIEWS[lesson.key](target, runs)
    if view is None:
        if not recording:
            st.info("Not recorded yet: press the button (the simulated runs take seconds).")
        return
    st.altair_chart(view.chart, width="stretch")
    st.caption(view.caption)
    st.table(figures_table(view))
    placeholder = tiny_placeholder(view)
    if placeholder:
        st.caption(f"The real `tiny` runs: {placeholder} (the button records them after the simulated ones).")
    elif has_tiny_column(view):
        st.caption("The check is the simulated run's. The `tiny` column was measured on this machine: its "
                   "times depend on the CPU and on whatever else was running then.")
    st.markdown("Open in Replay: " + " · ".join(f"[{label} (#{i})](Replay?run={i})" for label, i in view.links.items()))
