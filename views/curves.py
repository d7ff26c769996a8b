"""Curves: throughput against latency across a sweep, static vs continuous, short vs long requests."""

import streamlit as st

from dashboard import charts, curves, data, launcher, ui

st.title("Curves")
target, runs = ui.runs_or_stop()

st.subheader("Throughput vs latency across a sweep")
groups = data.sweep_groups(target)
with st.expander("Record a new sweep (simulated, seconds)", expanded=groups.empty):
    c1, c2, c3 = st.columns(3)
    param = c1.selectbox("Parameter", launcher.SWEEP_PARAMS)
    values = c2.text_input("Values", curves.SWEEP_DEFAULTS[param], key=f"sweep_values_{param}")
    num_prompts = c3.number_input("Requests", 10, 5000, 400)
    if st.button("Run sweep", icon=":material/show_chart:"):
        request = launcher.SweepRequest(param, values, int(num_prompts))
        if ui.start_and_wait(lambda: request.argv(target), f"sweep-{param}", "Sweeping…", "sweep", wait_s=300):
            data.sweep_groups.clear()
            data.runs.clear()
            st.rerun()

if groups.empty:
    st.info("No sweeps recorded yet. Record one above, or from the command line: "
            "`python -m engine sweep --param max_num_seqs --values 1,2,4,8,16,32,64`.")
else:
    labels = {row["sweep_id"]: f"{row['sweep_param']} · {row['num_runs']} runs · {row['created_at']:%Y-%m-%d %H:%M}"
              for _, row in groups.iterrows()}
    sweep_id = st.selectbox("Sweep", list(labels), format_func=labels.__getitem__)
    param_name, frame = curves.sweep_points(target, sweep_id)
    st.altair_chart(charts.throughput_latency_curve(frame, param_name), width="stretch")
    st.caption(f"One point per {param_name} value. Moving right is more throughput; the knee is where "
               "latency starts to climb faster than throughput grows, usually the setting to pick.")
    st.dataframe(frame.drop(columns=["order"]), hide_index=True, column_config={
        "value_label": param_name,
        "output_tokens_per_s": st.column_config.NumberColumn("output tok/s", format="%.1f"),
        "e2e_mean_ms": st.column_config.NumberColumn("E2E mean (ms)", format="%.1f"),
        "e2e_p99_ms": st.column_config.NumberColumn("E2E p99 (ms)", format="%.1f"),
        "ttft_p99_ms": st.column_config.NumberColumn("TTFT p99 (ms)", format="%.1f")})

st.subheader("Static vs continuous batching")
static_runs = runs[runs["batching"] == "static"]
continuous_runs = runs[runs["batching"] == "continuous"]
if static_runs.empty or continuous_runs.empty:
    st.info("Needs one static and one continuous run of the same workload: record a `batching` sweep above.")
else:
    c1, c2 = st.columns(2)
    with c1:
        static_id = ui.pick_run(static_runs, key="static_run", label="Static run", remember=False)
    same_workload = continuous_runs["workload"] == runs.set_index("id").loc[static_id, "workload"]
    with c2:
        continuous_id = ui.pick_run(continuous_runs, key="continuous_run", label="Continuous run", remember=False,
                                    allowed=same_workload if same_workload.any() else None,
                                    preferred=curves.counterpart(target, runs, static_id))
    frame = curves.batching_comparison(target, static_id, continuous_id)
    colors = {"static": charts.PHASE_COLORS["padding"], "continuous": charts.PHASE_COLORS["decode"]}
    for col, metric in zip(st.columns(3), ["output tok/s", "E2E p99 (ms)", "padding share %"], strict=True):
        col.altair_chart(charts.metric_bars(frame, "batching", metric, metric, colors), width="stretch")
    st.caption("Static batching waits for a batch's longest request: finished requests hold their slot as "
               "padding, so throughput drops and short requests wait behind long ones. The continuous run offered "
               "first is one of the same workload and parameters, batching aside, when one was recorded.")

st.subheader("Short vs long requests")
run_id = ui.pick_run(runs, key="length_run", label="Run", remember=False)
by_length = data.latency_by_length(target, run_id, int(runs.set_index("id").loc[run_id, "num_steps"]))
if by_length.empty:
    st.info("No finished requests in this run yet.")
else:
    st.altair_chart(charts.latency_by_group(by_length), width="stretch")
    st.caption("In a mixed workload short answers should finish fast; if their p99 sits near the long ones', "
               "they are queueing behind them (head-of-line blocking).")
