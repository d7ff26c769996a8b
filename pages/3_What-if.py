"""What-if: re-run a recorded workload under new parameters with a cost model fitted to the run,
the simulator's own error on the recorded configuration first."""

import sys

import pandas as pd
import streamlit as st

from dashboard import charts, data, launcher, ui

LABELS = {"output_tokens_per_s": ("output tokens/s", 1.0), "ttft_p50": ("TTFT p50 (ms)", 1e3),
          "ttft_p99": ("TTFT p99 (ms)", 1e3), "e2e_p50": ("E2E p50 (ms)", 1e3), "e2e_p99": ("E2E p99 (ms)", 1e3)}
NUMBER_FORMATS = {c: st.column_config.NumberColumn(format="%.1f")
                  for c in ("recorded", "simulated", "predicted", "real")}
NUMBER_FORMATS |= {c: st.column_config.NumberColumn(format="%+.1f%%") for c in ("error %", "change %")}


def metric_table(first: dict, second: dict, first_name: str, second_name: str, diff_name: str) -> pd.DataFrame:
    """Two metric dicts (seconds, tokens/s) side by side in display units with the % difference."""
    rows = []
    for key, (label, scale) in LABELS.items():
        a, b = first.get(key), second.get(key)
        rows.append({"metric": label, first_name: None if a is None else a * scale,
                     second_name: None if b is None else b * scale,
                     diff_name: None if a in (None, 0) or b is None else (b - a) / a * 100})
    return pd.DataFrame(rows)


ui.page_setup("What-if")
st.title("What-if")
st.caption("Pick a recorded run, change parameters, and the same scheduler re-runs its exact requests on a "
           "virtual clock, with step times from a cost model fitted to that run.")
target, runs = ui.runs_or_stop()
finished = runs["status"].isin(["finished", "aborted", "interrupted"]) & runs["base_run_id"].isna()
# Open on a run that already has predictions, else the latest real run.
predicted_bases = runs["base_run_id"].dropna().astype(int)
real = runs[finished & (runs["mode"] == "real")]
preferred = int(predicted_bases.iloc[0]) if not predicted_bases.empty else (
    int(real["id"].iloc[0]) if not real.empty else None)
base_id = ui.pick_run(runs, key="whatif_base", label="Recorded run", allowed=finished, preferred=preferred)
base = data.run(target, base_id)
if base is None:
    st.stop()
cfg = base["config"]
st.caption(f"{base['mode']} run · {base['workload']} · {ui.config_summary(cfg)}")

children = runs[(runs["base_run_id"] == base_id) & (runs["mode"] == "simulated")]
latest_extra = (data.run(target, int(children["id"].iloc[0])) or {}).get("extra") if not children.empty else None

# -- how far to trust it ---------------------------------------------------------------------------
st.subheader("1 · How far to trust it")
if base.get("cost_model"):
    fit = base["cost_model"].get("fit", {})
    factors = base["cost_model"].get("row_factors", {})
    rows_note = (f", plus measured corrections for {len(factors)} step sizes (token rows) off the linear trend"
                 if factors else "")
    st.markdown(f"Cost model fitted to {fit.get('num_steps', '?')} recorded steps{rows_note}: median step-time "
                f"error {fit.get('median_abs_pct_error', float('nan')):.1f}%, R² {fit.get('r2', float('nan')):.3f}.")
elif base["mode"] == "simulated":
    st.markdown("A simulated run: the what-if re-uses the cost model that produced it.")
else:
    st.markdown("The cost model is fitted to this run's steps on the first prediction, then stored with it.")
check = (latest_extra or {}).get("what_if", {}).get("self_check")
if check:
    st.markdown("The simulator replaying this run **under its own configuration**:")
    st.dataframe(metric_table(check["recorded"], check["predicted"], "recorded", "simulated", "error %"),
                 hide_index=True, column_config=NUMBER_FORMATS)
    st.caption("Predictions for other parameters inherit errors of about this size.")
else:
    st.info("The self-check appears with the first prediction below.")

# -- change parameters -----------------------------------------------------------------------------
st.subheader("2 · Change parameters")
with st.form("what_if"):
    c1, c2, c3 = st.columns(3)
    values = {
        "max_num_seqs": c1.number_input("max_num_seqs", 1, 1024, int(cfg["max_num_seqs"])),
        "max_num_batched_tokens": c1.number_input("max_num_batched_tokens", 16, 131_072,
                                                  int(cfg["max_num_batched_tokens"])),
        "num_gpu_blocks": c1.number_input("num_gpu_blocks", 16, 1_000_000, int(cfg["num_gpu_blocks"])),
        "block_size": c2.selectbox("block_size", [8, 16, 32, 64], index=[8, 16, 32, 64].index(int(cfg["block_size"]))
                                   if int(cfg["block_size"]) in (8, 16, 32, 64) else 1),
        "enable_chunked_prefill": c2.checkbox("enable_chunked_prefill", bool(cfg["enable_chunked_prefill"])),
        "policy": c2.selectbox("policy", launcher.POLICIES, index=launcher.POLICIES.index(cfg["policy"])),
        "preemption_mode": c3.selectbox("preemption_mode", launcher.PREEMPTION_MODES,
                                        index=launcher.PREEMPTION_MODES.index(cfg["preemption_mode"])),
        "swap_space": c3.number_input("swap_space (CPU blocks)", 0, 1_000_000, int(cfg["swap_space"])),
        "batching": c3.selectbox("batching", launcher.BATCHING, index=launcher.BATCHING.index(cfg["batching"])),
    }
    predict = st.form_submit_button("Predict", type="primary")

changes = {k: v for k, v in values.items() if v != cfg.get(k)}


def what_if_argv(validate: bool) -> list[str]:
    argv = [sys.executable, "-m", "engine", "simulate", "--db", target, "--from-run", str(base_id)]
    for key, value in changes.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    return [*argv, "--validate"] if validate else argv


if predict:
    if values["preemption_mode"] == "swap" and values["swap_space"] == 0:
        st.error("swap preemption needs swap_space of at least one block")
        st.stop()
    with st.spinner("Simulating…"):
        launched = launcher.launch(what_if_argv(validate=False), f"what-if-{base_id}")
        failure = launcher.early_failure(launched, wait_s=120)
    if failure:
        st.error(f"The prediction failed: {failure}")
    else:
        data.runs.clear()
        st.rerun()

# -- the answer ------------------------------------------------------------------------------------
st.subheader("3 · Predicted vs recorded")
if children.empty:
    st.info("No predictions for this run yet: change a parameter and press **Predict**.")
    st.stop()
labels = {int(r["id"]): f"#{r['id']} {r['name']}" for _, r in children.iterrows()}
pred_id = st.selectbox("Prediction", list(labels), format_func=labels.__getitem__)
pred = data.run(target, pred_id)
if pred is None:
    st.stop()
pred_extra = pred.get("extra") or {}
what_if = pred_extra.get("what_if", {})
rec = data.latency_percentiles(target, base_id, int(base["num_steps"])).set_index("metric")
new = data.latency_percentiles(target, pred_id, int(pred["num_steps"])).set_index("metric")
base_row, pred_row = runs.set_index("id").loc[base_id], runs.set_index("id").loc[pred_id]
table = pd.DataFrame([
    {"metric": "output tokens/s", "recorded": base_row["output_tokens_per_s"],
     "predicted": pred_row["output_tokens_per_s"]},
    *({"metric": f"{m.upper()} {p} (ms)", "recorded": rec.loc[m, p] * 1e3, "predicted": new.loc[m, p] * 1e3}
      for m in ("ttft", "e2e") for p in ("p50", "p99")),
    {"metric": "preemptions", "recorded": base_row["num_preemptions"], "predicted": pred_row["num_preemptions"]},
])
table["change %"] = (table["predicted"] - table["recorded"]) / table["recorded"] * 100
st.markdown(f"Changes: **{', '.join(f'{k}={v}' for k, v in what_if.get('changes', {}).items()) or 'none'}**")
st.dataframe(table, hide_index=True, column_config=NUMBER_FORMATS)

left, right = st.columns(2)
for col, rid, title in ((left, base_id, "Recorded"), (right, pred_id, "Predicted")):
    r = data.run(target, rid)
    if r is None:
        continue
    col.markdown(f"**{title}** (run #{rid})")
    col.altair_chart(charts.gantt_overview(data.gantt_overview(target, rid, int(r["num_steps"])), height=260),
                     width="stretch")
    col.altair_chart(charts.queue_lengths(data.steps_binned(target, rid, int(r["num_steps"]))), width="stretch")
st.caption("Each run's whole schedule (binned) and queue lengths: where the predicted schedule queues, "
           "preempts or idles differently.")

validation = pred_extra.get("validation")
st.subheader("4 · Check it against a real run")
if validation:
    st.markdown(f"Real run #{validation['real_run_id']} with the same parameters (error = predicted vs real):")
    table = metric_table(validation["real"], validation["predicted"], "real", "predicted", "error %")
    st.dataframe(table, hide_index=True, column_config=NUMBER_FORMATS)
else:
    st.caption("Runs the real engine with these parameters on the same requests and records how far the "
               "prediction was off. It takes as long as the real run.")
    if st.button("Validate with a real run", icon=":material/fact_check:"):
        launched = launcher.launch(what_if_argv(validate=True), f"validate-{base_id}")
        failure = launcher.early_failure(launched, wait_s=2)
        if failure:
            st.error(failure)
        else:
            st.success("Started: a new prediction and its real run appear here when the real run is done.")
