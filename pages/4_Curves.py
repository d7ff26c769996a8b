"""Curves: throughput against latency across a sweep, static vs continuous, short vs long requests."""

import sys

import pandas as pd
import streamlit as st

from dashboard import charts, data, launcher, ui


def to_ms(seconds: float | None) -> float | None:
    return None if seconds is None or pd.isna(seconds) else float(seconds) * 1e3


ui.page_setup("Curves")
st.title("Curves")
target, runs = ui.runs_or_stop()

# -- a sweep ---------------------------------------------------------------------------------------
st.subheader("Throughput vs latency across a sweep")
groups = data.sweep_groups(target)
with st.expander("Record a new sweep (simulated, seconds)", expanded=groups.empty):
    c1, c2, c3 = st.columns(3)
    param = c1.selectbox("Parameter", ["max_num_seqs", "max_num_batched_tokens", "num_gpu_blocks", "request_rate",
                                       "batching"])
    defaults = {"max_num_seqs": "1,2,4,8,16,32,64", "max_num_batched_tokens": "256,512,1024,2048,4096",
                "num_gpu_blocks": "128,256,512,1024,2048", "request_rate": "2,4,8,16,32,64",
                "batching": "static,continuous"}
    values = c2.text_input("Values", defaults[param], key=f"sweep_values_{param}")
    num_prompts = c3.number_input("Requests", 10, 5000, 400)
    if st.button("Run sweep", icon=":material/show_chart:"):
        cleaned = ",".join(v.strip() for v in values.split(",") if v.strip())
        if not cleaned or len(cleaned) > 200 or not all(c.isalnum() or c in ",." for c in cleaned):
            st.error("Values must be a comma-separated list of numbers (or static,continuous).")
        else:
            argv = [sys.executable, "-m", "engine", "sweep", "--db", target, "--param", param, "--values", cleaned,
                    "--workload", "mixed", "--num-prompts", str(int(num_prompts))]
            if param != "request_rate":
                argv += ["--request-rate", "20"]
            with st.spinner("Sweeping…"):
                done = launcher.launch(argv, f"sweep-{param}")
                failure = launcher.early_failure(done, wait_s=300)
            if failure:
                st.error(f"The sweep failed: {failure}")
            else:
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
    sweep = data.sweep_runs(target, sweep_id)
    param_name = str(sweep["sweep_param"].iloc[0])
    points = []
    for _, row in sweep.iterrows():
        lat = data.latency_percentiles(target, int(row["id"]), int(row["num_steps"])).set_index("metric")
        points.append({"value_label": row["sweep_value"], "run": int(row["id"]),
                       "output_tokens_per_s": row["output_tokens_per_s"],
                       "e2e_mean_ms": to_ms(lat.loc["e2e", "mean"]), "e2e_p99_ms": to_ms(lat.loc["e2e", "p99"]),
                       "ttft_p99_ms": to_ms(lat.loc["ttft", "p99"]), "preemptions": row["num_preemptions"]})
    frame = pd.DataFrame(points)
    numeric = pd.to_numeric(frame["value_label"], errors="coerce")
    frame["order"] = numeric if numeric.notna().all() else range(len(frame))
    frame = frame.sort_values("order")
    st.altair_chart(charts.throughput_latency_curve(frame, param_name), width="stretch")
    st.caption(f"One point per {param_name} value. Moving right is more throughput; the knee is where "
               "latency starts to climb faster than throughput grows, usually the setting to pick.")
    st.dataframe(frame.drop(columns=["order"]), hide_index=True, column_config={
        "value_label": param_name,
        "output_tokens_per_s": st.column_config.NumberColumn("output tok/s", format="%.1f"),
        "e2e_mean_ms": st.column_config.NumberColumn("E2E mean (ms)", format="%.1f"),
        "e2e_p99_ms": st.column_config.NumberColumn("E2E p99 (ms)", format="%.1f"),
        "ttft_p99_ms": st.column_config.NumberColumn("TTFT p99 (ms)", format="%.1f")})

# -- static vs continuous ------------------------------------------------------------------------------
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
                                    allowed=same_workload if same_workload.any() else None)
    rows = []
    for label, rid in (("static", static_id), ("continuous", int(continuous_id))):
        row = runs.set_index("id").loc[rid]
        lat = data.latency_percentiles(target, rid, int(row["num_steps"])).set_index("metric")
        binned = data.steps_binned(target, rid, int(row["num_steps"]), 10_000)
        slots = (binned["batch_size"] * binned["num_steps"]).sum()
        padding = (binned["num_padding_seqs"] * binned["num_steps"]).sum()
        rows.append({"batching": label, "output tok/s": row["output_tokens_per_s"],
                     "E2E p50 (ms)": to_ms(lat.loc["e2e", "p50"]), "E2E p99 (ms)": to_ms(lat.loc["e2e", "p99"]),
                     "padding share %": 100 * padding / max(slots + padding, 1)})
    frame = pd.DataFrame(rows)
    colors = {"static": charts.PHASE_COLORS["padding"], "continuous": charts.PHASE_COLORS["decode"]}
    cols = st.columns(3)
    for col, metric in zip(cols, ["output tok/s", "E2E p99 (ms)", "padding share %"], strict=True):
        col.altair_chart(charts.metric_bars(frame, "batching", metric, metric, colors), width="stretch")
    st.caption("Static batching waits for a batch's longest request: finished requests hold their slot as "
               "padding, so throughput drops and short requests wait behind long ones.")

# -- short vs long ------------------------------------------------------------------------------------
st.subheader("Short vs long requests")
run_id = ui.pick_run(runs, key="length_run", label="Run", remember=False)
row = runs.set_index("id").loc[run_id]
by_length = data.latency_by_length(target, run_id, int(row["num_steps"]))
if by_length.empty:
    st.info("No finished requests in this run yet.")
else:
    st.altair_chart(charts.latency_by_group(by_length), width="stretch")
    st.caption("In a mixed workload short answers should finish fast; if their p99 sits near the long ones', "
               "they are queueing behind them (head-of-line blocking).")
