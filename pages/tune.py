"""Tune: a configuration search's answer (the recommendation, or the closest miss and by how much),
its points and frontier, how far to trust it; a point recorded as a run; a new search from a run."""

import streamlit as st

from dashboard import data, launcher, tune_charts, tune_view, ui
from dashboard import what_if as wi

CLI = ("python -m engine tune --from-run RUN --slo ttft=500,e2e=5000 "
       "--search max_num_seqs=4,8,16,32 max_num_batched_tokens=256,512,1024")

st.title("Tune")
st.caption("Which configuration serves a workload best within latency targets (SLOs)? Every combination of the "
           "parameters you name is simulated on a recorded run's requests and cost model; the highest goodput "
           "(requests/s meeting every SLO) among those meeting the SLOs wins.")
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
    search, points = data.search(target, search_id), data.search_points(target, search_id)
    if search is None:
        st.stop()
    based = f"run #{search['base_run_id']}: " if search["base_run_id"] is not None else ""
    st.markdown(f"**SLOs**: {tune_view.slo_line(search['slo'])}  \n**Workload**: {based}{search['workload']}  \n"
                f"**Ran on** {search['backend']}, pruning `{search['prune']}` · {ui.status_badge(search['status'])}")
    counts = tune_view.counts(points)
    tiles = st.columns(len(counts) + 2)
    tiles[0].metric("configurations", f"{len(points)} / {search['num_points']}")
    tiles[1].metric("meet the SLOs", int(points["meets_slo"].astype(bool).sum()))
    for tile, (status, n) in zip(tiles[2:], counts.items(), strict=True):
        tile.metric(status, n)
    if search["status"] == "running":
        st.info("This search is still running: reload the page for the points written since.")
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
        st.markdown(wi.holdout_line(trust))
        for line in trust.borrowed:
            st.caption(f"Cost: {line}")
        for line in trust.warnings:
            st.warning(line, icon=":material/warning:")
        if trust.track_record:
            st.dataframe(wi.track_record_table(trust), hide_index=True, column_config=wi.TRACK_FORMATS)
        if (consistency := tune_view.consistency_line(trust)) is not None:
            st.caption(consistency)

    st.subheader("Every configuration")
    st.dataframe(tune_view.display_points(points, tune_view.axes(search)), hide_index=True,
                 column_config=tune_view.POINT_FORMATS)

    st.subheader("Record a point as a run")
    options = tune_view.materializable(points)
    if options:
        chosen_point = found.point if found is not None and found.point in options else options[0]
        point = st.selectbox("Point", options, index=options.index(chosen_point), key=f"tune_point_{search_id}",
                             format_func=lambda p: f"point {p}" + (" (the answer)" if p == chosen_point else ""))
        run_id = tune_view.run_of_point(points, point)
        if run_id is not None:
            st.page_link("pages/replay.py", label=f"Open point {point} in Replay (run #{run_id})",
                         icon=":material/replay:", query_params={"run": str(run_id)})
        else:
            st.caption("A point is stored as its figures only; recording it re-simulates it (deterministically) "
                       "with every step, so Replay can show its schedule.")
            if st.button("Record it as a run", icon=":material/play_arrow:", key="tune_materialize"):
                with st.spinner("Simulating…"):
                    launched = launcher.launch(launcher.materialize_argv(search_id, point, target), "materialize")
                    failure = launcher.early_failure(launched, wait_s=120)
                if failure:
                    st.error(f"Not recorded: {failure}")
                else:
                    for reader in (data.search_points, data.searches, data.runs, data.grouped_runs):
                        reader.clear()
                    st.rerun()

with st.expander("Start a new search", expanded=searches.empty, icon=":material/tune:"):
    with st.form("tune"):
        base_id = ui.pick_run(runs, key="tune_base", label="Recorded run (its requests and cost model)",
                              allowed=wi.recorded_runs(runs), remember=False)
        c1, c2, c3, c4 = st.columns(4)
        slo = {"ttft": c1.number_input("TTFT SLO (ms)", 0.0, 3_600_000.0, 500.0, key="tune_ttft",
                                         help="0: no TTFT target"),
               "tpot": c2.number_input("TPOT SLO (ms)", 0.0, 3_600_000.0, 0.0, key="tune_tpot",
                                         help="0: no TPOT target"),
               "e2e": c3.number_input("E2E SLO (ms)", 0.0, 3_600_000.0, 5000.0, key="tune_e2e",
                                        help="0: no E2E target")}
        attainment = c4.number_input("of requests (%)", 0.0, 100.0, 99.0, help="A configuration meets the SLOs "
                                     "when at least this share of requests meets every target")
        seqs = c1.text_input("max_num_seqs values", launcher.TuneRequest.max_num_seqs, key="tune_seqs")
        tokens = c2.text_input("max_num_batched_tokens values", launcher.TuneRequest.max_num_batched_tokens,
                               key="tune_tokens")
        chunked = c3.checkbox("also with and without chunked prefill")
        submitted = st.form_submit_button("Search", type="primary", icon=":material/search:")
    if submitted:
        request = launcher.TuneRequest(base_id, {k: v for k, v in slo.items() if v > 0}, attainment, seqs, tokens,
                                       chunked)
        try:
            argv = request.argv(target)
        except launcher.LaunchError as exc:
            st.error(f"Not started: {exc}")
        else:
            with st.spinner("Searching…"):
                failure = launcher.early_failure(launcher.launch(argv, f"tune-{base_id}"), wait_s=300)
            if failure:
                st.error(f"The search failed: {failure}")
            else:
                data.searches.clear()
                st.query_params.pop("search", None)  # open on the new search, the newest
                st.rerun()
