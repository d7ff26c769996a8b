"""The Tune page's two actions: record a search point as a run (`tune --materialize`) and start a
new search from a recorded run, each through dashboard.launcher (typed inputs, validated first)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, launcher, tune_view, ui, view_files
from dashboard import what_if as wi


def record_point(target: str, search_id: int, points: pd.DataFrame, found: tune_view.Answer | None) -> None:
    """Pick a point (the answer by default); a Replay link once it is a run, else a button recording it."""
    st.subheader("Record a point as a run")
    options = tune_view.materializable(points)
    if options:
        chosen_point = found.point if found is not None and found.point in options else options[0]
        point = st.selectbox("Point", options, index=options.index(chosen_point), key=f"tune_point_{search_id}",
                             format_func=lambda p: f"point {p}" + (" (the answer)" if p == chosen_point else ""))
        run_id = tune_view.run_of_point(points, point)
        if run_id is not None:
            st.page_link(view_files.REPLAY, label=f"Open point {point} in Replay (run #{run_id})",
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



def new_search_form(target: str, runs: pd.DataFrame, expanded: bool) -> None:
    """SLOs, attainment and the values to search; a bad value says what is wrong and starts nothing."""
    with st.expander("Start a new search", expanded=expanded, icon=":material/tune:"):
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
            chunked = c3.checkbox("also with and without chunked prefill", value=True,
                                  help="without chunked prefill a budget below max_model_len is invalid; with it "
                                       "every budget above runs")
            fit = st.radio("Step costs", wi.FITS, format_func=wi.FITS.__getitem__, horizontal=True, key="tune_fit",
                           help="A run's own fit sees only the step shapes its configuration produced; pooling fits "
                                "one cost model to every real run of this model on this device, dtype and thread "
                                "count (a simulated run has only its own)")
            submitted = st.form_submit_button("Search", type="primary", icon=":material/search:")
        if submitted:
            request = launcher.TuneRequest(base_id, {k: v for k, v in slo.items() if v > 0}, attainment, seqs, tokens,
                                           chunked, fit)
            known = set(data.searches(target)["id"])

            def started() -> bool:  # its search row is written: the page follows it from there
                return bool(set(tune_view.search_table(data.reader(target))["id"]) - known)

            if ui.start_and_wait(lambda: request.argv(target), f"tune-{base_id}", "Starting the search…", "search",
                                 wait_s=300, ready=started):
                data.searches.clear()
                st.query_params.pop("search", None)  # open on the new search, the newest
                st.rerun()
