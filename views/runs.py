"""Runs (home): every recorded run, opening or deleting one, and starting a new one."""

import streamlit as st

from dashboard import data, launcher, runs_table, settings, ui, view_files
from dashboard.presets import CUSTOM, CUSTOM_PRESET, PRESETS
from storage.database import DatabaseMissingError, EmptyDatabaseError, StorageError

st.title("Batchscope")
st.caption("See how a continuous-batching LLM server schedules its work: every engine step recorded, "
           "replayable, and re-runnable under other parameters.")
target = settings.db_target()
try:
    every_run, grouped = data.runs(target), data.grouped_runs(target)
except (DatabaseMissingError, EmptyDatabaseError):
    every_run = grouped = None
except StorageError as exc:
    st.error(f"Cannot read the database: {exc}")
    st.stop()

if every_run is None or grouped is None or every_run.empty:
    st.subheader("No runs yet")
    ui.wait_for_first_run(target)
else:
    st.subheader("Runs")
    runs = runs_table.outside_searches(every_run, grouped)
    selection = st.dataframe(runs_table.display(runs), hide_index=True, on_select="rerun", selection_mode="single-row",
                             key="runs_table", column_config=runs_table.COLUMN_CONFIG, height=runs_table.height(runs))
    st.caption("Select a row to open it. *interrupted*: the engine stopped writing without finishing "
               "(killed or crashed); its steps up to the last write are all there."
               + (" The runs of a configuration search (its points recorded step by step, real runs validating "
                  "them) are under their search below." if not grouped.empty else ""))
    rows = selection.selection.rows if selection is not None else []
    if rows:
        chosen = runs.iloc[rows[0]]
        run_id = int(chosen["id"])
        st.query_params["run"] = str(run_id)
        cols = st.columns(5)
        finished = chosen["status"] == "finished"
        for col, (label, icon, page) in zip(cols, runs_table.OPEN_IN, strict=False):
            if col.button(label, icon=icon, width="stretch", disabled=finished and label == "Live"):
                st.switch_page(page)
        ui.delete_run(cols[3], run_id, target)
        if chosen["status"] == "failed" and isinstance(chosen["error"], str):
            st.error(f"Run #{run_id} failed: {chosen['error']}")
    running = every_run[every_run["status"] == "running"]
    if not running.empty:
        newest = int(running["id"].iloc[0])
        st.page_link(view_files.LIVE, label=f"Watch run #{newest} live", icon=":material/radio_button_checked:",
                     query_params={"run": str(newest)})
    for group in runs_table.search_groups(every_run, grouped, data.searches(target)):
        with st.expander(group.label, icon=":material/tune:"):
            st.page_link(view_files.TUNE, label=f"Open search {group.search_id} in Tune", icon=":material/tune:",
                         query_params={"search": str(group.search_id)})
            st.dataframe(group.runs, hide_index=True, column_config=runs_table.SEARCH_COLUMN_CONFIG,
                         height=runs_table.height(group.runs))

st.subheader("Start a run")
preset_name = st.selectbox("Use case", [*PRESETS, CUSTOM], help="Presets fill the fields below; change any of them.")
preset = PRESETS.get(preset_name, CUSTOM_PRESET)
if preset.why:
    st.caption(preset.why)
with st.form("start_run"):
    c1, c2, c3 = st.columns(3)
    mode = c1.radio("Engine", launcher.MODES, horizontal=True,
                    format_func={"real": "real model", "simulated": "simulated (cost model)"}.get)
    model = c1.selectbox("Model (real runs)", launcher.MODELS,
                         help="tiny: a random-weight small Llama, fast on CPU. smollm2: SmolLM2-135M-Instruct, "
                              "real text, about 10x slower.")
    workload = c1.selectbox("Workload", launcher.WORKLOADS, index=ui.index_of(launcher.WORKLOADS, preset.workload),
                            help="mixed: 70% short / 30% long answers. azure: a real production trace "
                                 "(Azure LLM inference 2023, CC-BY 4.0), lengths and times scaled by 0.1.")
    num_prompts = c1.number_input("Requests", *launcher.LIMITS["num_prompts"], preset.num_prompts)
    all_at_once = c2.checkbox("All requests at t=0", value=preset.request_rate is None)
    request_rate = c2.number_input("Arrival rate (requests/s, Poisson)", 0.1, 10_000.0, preset.request_rate or 8.0)
    max_num_seqs = c2.number_input("max_num_seqs", *launcher.LIMITS["max_num_seqs"], preset.max_num_seqs)
    max_num_batched_tokens = c2.number_input("max_num_batched_tokens", *launcher.LIMITS["max_num_batched_tokens"],
                                             preset.max_num_batched_tokens)
    chunked = c2.checkbox("enable_chunked_prefill", value=preset.enable_chunked_prefill)
    set_blocks = c3.checkbox("Set num_gpu_blocks (else from memory / 2,048 simulated)")
    num_gpu_blocks = c3.number_input("num_gpu_blocks", *launcher.LIMITS["num_gpu_blocks"], 2048)
    policy = c3.selectbox("policy", launcher.POLICIES)
    preemption_mode = c3.selectbox("preemption_mode", launcher.PREEMPTION_MODES)
    swap_space = c3.number_input("swap_space (CPU blocks)", *launcher.LIMITS["swap_space"], 0)
    batching = c3.selectbox("batching", launcher.BATCHING)
    name = st.text_input("Name (optional)", max_chars=launcher.MAX_NAME)
    submitted = st.form_submit_button("Start run", type="primary")

if submitted:
    form = launcher.RunForm(
        mode=mode, model=model, workload=workload, num_prompts=int(num_prompts),
        request_rate=None if all_at_once else float(request_rate), max_num_seqs=int(max_num_seqs),
        max_num_batched_tokens=int(max_num_batched_tokens), num_gpu_blocks=int(num_gpu_blocks) if set_blocks else None,
        enable_chunked_prefill=chunked, policy=policy, preemption_mode=preemption_mode, swap_space=int(swap_space),
        batching=batching, name=name,
    )
    try:
        form.validate()
    except launcher.LaunchError as exc:
        st.error(f"Not started: {exc}")
    else:
        launched = launcher.launch(form.argv(target), "run")
        failure = launcher.early_failure(launched, wait_s=3.0 if mode == "simulated" else 1.5)
        if failure:
            st.error(f"The run could not start: {failure}")
        else:
            data.runs.clear()
            st.success(f"Started (process {launched.pid}). Open **Live** to watch it.")
            st.page_link(view_files.LIVE, label="Watch it live", icon=":material/radio_button_checked:")

with st.expander("Where the data lives"):
    st.write(f"Database: `{target}` (set `BATCHSCOPE_DB` to use another file or a PostgreSQL URL). "
             "Query it with SQL: the README documents the tables.")
    st.dataframe(runs_table.TABLES, hide_index=True)
