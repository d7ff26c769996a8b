"""What-if: re-run a recorded workload under new parameters with a cost model fitted to the run; the
trust figures (held out, extrapolations named, the track record) before every prediction."""

import streamlit as st

from dashboard import charts, data, launcher, run_meta, ui
from dashboard import what_if as wi

st.title("What-if")
st.caption("Pick a recorded run, change parameters, and the same scheduler re-runs its exact requests on a "
           "virtual clock, with step times from a cost model fitted to that run.")
target, runs = ui.runs_or_stop()
base_id = ui.pick_run(runs, key="whatif_base", label="Recorded run", allowed=wi.recorded_runs(runs),
                      preferred=wi.default_base(runs),
                      none_fits="A what-if starts from a run that has ended (finished or stopped), and none has yet. "
                                "A running one, like the first-launch demo, can be stopped on the Live page.")
base = data.run(target, base_id)
if base is None:
    st.stop()
cfg = base["config"]
st.caption(f"{base['mode']} run · {base['workload']} · {ui.config_summary(cfg)}")
predictions = wi.predictions_of(runs, base_id)
st.markdown(wi.trust_note(base))

st.subheader("1 · Change parameters")
with st.form("what_if"):
    c1, c2, c3 = st.columns(3)
    values = {
        "max_num_seqs": c1.number_input("max_num_seqs", *wi.bounds("max_num_seqs", cfg), cfg["max_num_seqs"]),
        "max_num_batched_tokens": c1.number_input("max_num_batched_tokens", *wi.bounds("max_num_batched_tokens", cfg),
                                                  cfg["max_num_batched_tokens"]),
        "num_gpu_blocks": c1.number_input("num_gpu_blocks", *wi.bounds("num_gpu_blocks", cfg), cfg["num_gpu_blocks"]),
        "block_size": c2.selectbox("block_size", wi.BLOCK_SIZES,
                                   index=ui.index_of(wi.BLOCK_SIZES, cfg["block_size"], 1)),
        "enable_chunked_prefill": c2.checkbox("enable_chunked_prefill", bool(cfg["enable_chunked_prefill"])),
        "policy": c2.selectbox("policy", launcher.POLICIES, index=ui.index_of(launcher.POLICIES, cfg["policy"])),
        "preemption_mode": c3.selectbox("preemption_mode", launcher.PREEMPTION_MODES,
                                        index=ui.index_of(launcher.PREEMPTION_MODES, cfg["preemption_mode"])),
        "swap_space": c3.number_input("swap_space (CPU blocks)", *wi.bounds("swap_space", cfg), cfg["swap_space"]),
        "batching": c3.selectbox("batching", launcher.BATCHING, index=ui.index_of(launcher.BATCHING, cfg["batching"])),
    }
    fit = st.radio("Step costs", wi.FITS, format_func=wi.FITS.__getitem__, horizontal=True,
                   help="A run's own fit sees only the step shapes its configuration produced; pooling adds the "
                        "other real runs of this model on this device, dtype and thread count (never those of the "
                        "configuration predicted).") if base["mode"] == "real" else "run"
    predict = st.form_submit_button("Predict", type="primary")
request = launcher.WhatIfRequest(base_id, cfg, wi.changed(values, cfg), fit=fit)
if predict:
    try:
        request.validate()
    except launcher.LaunchError as exc:
        st.error(f"Not predicted: {exc}")
    else:
        with st.spinner("Simulating…"):
            failure = launcher.early_failure(launcher.launch(request.argv(target), f"what-if-{base_id}"), wait_s=120)
        if failure:
            st.error(f"The prediction failed: {failure}")
        else:
            data.runs.clear()
            st.rerun()

st.subheader("2 · How far to trust it")
if not predictions:
    st.info("No predictions for this run yet: change a parameter and press **Predict**.")
    st.stop()
pred_id = st.selectbox("Prediction", list(predictions), format_func=predictions.__getitem__)
pred = data.run(target, pred_id)
if pred is None:
    st.stop()
trust = run_meta.trust(pred)
st.caption(wi.fit_line(pred))
if trust is not None:
    pooled = run_meta.what_if_fit(pred) == "pooled"
    intro = ("**Track record**: this base predicting real runs of the same requests under other configurations"
             + (", each on a pooled fit without its own configuration's runs" if pooled else "")
             + ", beside the *nothing changes* answer (the base's own figure), errors in %:")
    if not wi.show_trust(trust, intro):
        st.caption("No track record yet: no real run of these requests under another configuration. "
                   "**Validate with a real run** below adds one.")
check = run_meta.self_check(pred)
if check:
    with st.expander("Consistency check (in sample: not an accuracy figure)"):
        st.dataframe(wi.self_check_table(check), hide_index=True, column_config=wi.COLUMN_FORMATS)
        st.caption("The replay of this run under its own configuration, against what it recorded. The cost "
                   "model was fitted to these very steps, so agreement here says the replay is faithful, not "
                   "that predictions for other parameters are right.")

st.subheader("3 · Predicted vs recorded")
st.markdown(f"Changes: **{wi.describe_changes(run_meta.what_if_changes(pred))}**")
st.dataframe(wi.prediction_table(target, base_id, pred_id), hide_index=True, column_config=wi.COLUMN_FORMATS)
left, right = st.columns(2)
for col, rid, title in ((left, base_id, "Recorded"), (right, pred_id, "Predicted")):
    version = int(runs.set_index("id").loc[rid, "num_steps"])
    col.markdown(f"**{title}** (run #{rid})")
    col.altair_chart(charts.gantt_overview(data.gantt_overview(target, rid, version), height=260), width="stretch")
    col.altair_chart(charts.queue_lengths(data.steps_binned(target, rid, version)), width="stretch")
st.caption("Each run's whole schedule (binned) and queue lengths: where the predicted schedule queues, "
           "preempts or idles differently.")

st.subheader("4 · Check it against a real run")
validation = run_meta.validation(pred)
if validation:
    st.markdown(f"Real run #{validation.real_run_id} with the same parameters (error = predicted vs real):")
    st.dataframe(wi.validation_table(validation), hide_index=True, column_config=wi.COLUMN_FORMATS)
else:
    st.caption("Runs the real engine with these parameters on the same requests and records how far the "
               "prediction was off. It takes as long as the real run.")
    if st.button("Validate with a real run", icon=":material/fact_check:"):
        checked = launcher.WhatIfRequest(base_id, cfg, run_meta.what_if_changes(pred), validate_for_real=True,
                                         fit=run_meta.what_if_fit(pred))
        failure = launcher.early_failure(launcher.launch(checked.argv(target), f"validate-{base_id}"), wait_s=2)
        if failure:
            st.error(failure)
        else:
            st.success("Started: a new prediction and its real run appear here when the real run is done.")
