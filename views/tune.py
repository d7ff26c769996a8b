"""Tune: a configuration search's answer (the recommendation, or the closest miss and by how much),
its points and frontier, how far to trust it; a point recorded as a run; a new search from a run."""

import streamlit as st

from dashboard import data, settings, tune_actions, tune_charts, tune_view, ui
from dashboard import what_if as wi

CLI = ("python -m engine tune --from-run RUN --slo ttft=500,e2e=5000 "
       "--search max_num_seqs=4,8,16,32 max_num_batched_tokens=256,512,1024")

st.title("Tune")
st.caption("Which configuration serves a workload best within latency targets (SLOs)? Every combination of the "
           "parameters you name is simulated on a recorded run's requests and cost model; the highest goodput "
           "(requests/s meeting every SLO) among those meeting the SLOs wins.")


def show_search(target: str, search_id: int, was_running: bool) -> None:
    """The search's header, answer, chart, trust figures and points (a fragment, redrawn while the
    search runs, so its points appear as they are written)."""
    search, points = data.search(target, search_id), data.search_points(target, search_id)
    if search is None:
        st.stop()
    if was_running and search["status"] != "running":
        st.rerun()  # finished: the whole page once more, with its actions, and no more refreshing
    based = f"run #{search['base_run_id']}: " if search["base_run_id"] is not None else ""
    st.markdown(f"**SLOs**: {tune_view.slo_line(search['slo'])}  \n**Workload**: {based}{search['workload']}  \n"
                f"**Step costs**: {tune_view.cost_line(search)}  \n"
                f"**Ran on** {search['backend']}, pruning `{search['prune']}` · {ui.status_badge(search['status'])}")
    counts = tune_view.counts(points)
    tiles = st.columns(len(counts) + 2)
    tiles[0].metric("configurations", f"{len(points)} / {search['num_points']}")
    tiles[1].metric("meet the SLOs", int(points["meets_slo"].astype(bool).sum()))
    for tile, (status, n) in zip(tiles[2:], counts.items(), strict=True):
        tile.metric(status, n)
    if search["status"] == "running":
        st.info("This search is still running: its points appear here as they are written.")
    elif search["error"]:
        st.error(f"The search stopped: {search['error']}")

    found = tune_view.answer(search, points)
    st.subheader("The answer")
    if found is None:
        st.info("No configuration could be simulated yet: nothing to recommend.")
    elif found.meets_slo:
        st.success(f"**Recommended: point {found.point}**: {found.params}", icon=":material/check_circle:")
    else:
        st.warning(f"**No configuration meets the SLOs.** Closest: **point {found.point}**: {found.params}. "
                   f"{found.miss}", icon=":material/warning:")
        near = tune_view.closest(search)
        if near is not None:
            misses = tune_view.miss_table(near, search["slo"].get("attainment_pct", 99))
            st.dataframe(misses, hide_index=True, column_config=tune_view.miss_formats(misses))
    if found is not None:
        for tile, (label, value) in zip(st.columns(len(found.figures)), found.figures.items(), strict=True):
            tile.metric(label, value)

    chart = tune_view.chart_frame(points, search)
    if chart.frame.empty:
        st.info("No configuration has a goodput yet: every point so far stopped early or was invalid.")
    else:
        chosen = "recommended" if found is not None and found.meets_slo else "closest"
        st.altair_chart(tune_charts.goodput_by_config(chart, chosen), width="stretch")
        st.caption("One mark per configuration that ran: a dot meets the SLOs, a cross misses them. Black rings: the "
                   "frontier (output tok/s against E2E p99; of the points meeting the SLOs when any do). Red: the "
                   f"{chosen} point. Points that stopped early (pruned) or were invalid have no goodput and are "
                   "listed in the table only.")

    trust = tune_view.trust(search)
    if trust is not None and found is not None:
        st.subheader("How far to trust it")
        wi.show_trust(trust)
        if (consistency := tune_view.consistency_line(trust)) is not None:
            st.caption(consistency)

    st.subheader("Every configuration")
    st.dataframe(tune_view.display_points(points, tune_view.axes(search)), hide_index=True,
                 column_config=tune_view.POINT_FORMATS)


target, runs = ui.runs_or_stop(f"Record one on the **Runs** page, then search its configurations here or with `{CLI}`.")
searches = data.searches(target)

if searches.empty:
    st.subheader("No searches yet")
    st.info(f"Start one from a recorded run with the form below, or from the command line: `{CLI}`")
else:
    labels = tune_view.search_labels(searches)
    default = tune_view.default_search(searches, st.query_params.get("search"))
    search_id = st.selectbox("Search", list(labels), index=list(labels).index(default), format_func=labels.__getitem__)
    st.query_params["search"] = str(search_id)
    running = (data.search(target, search_id) or {}).get("status") == "running"
    st.fragment(run_every=settings.LIVE_REFRESH_S if running else None)(show_search)(target, search_id, running)
    points = data.search_points(target, search_id)
    tune_actions.record_point(target, search_id, points, tune_view.answer(data.search(target, search_id) or {}, points))

tune_actions.new_search_form(target, runs, expanded=searches.empty)
