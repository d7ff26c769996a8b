"""Batchscope dashboard entry and home page: every recorded run, starting a new one, deleting one.

A first launch on an empty database starts a demo run. The other views are pages/ files; shared
setup (page config, the sidebar) lives in dashboard.ui because Streamlit runs a page file alone.
"""

import pandas as pd
import streamlit as st

from dashboard import data, launcher, settings, ui
from dashboard.presets import CUSTOM, PRESETS
from storage.database import DatabaseMissingError, EmptyDatabaseError, StorageError

ui.page_setup("Runs")
st.title("Batchscope")
st.caption("See how a continuous-batching LLM server schedules its work: every engine step recorded, "
           "replayable, and re-runnable under other parameters.")
target = settings.db_target()


@st.cache_resource(show_spinner=False)
def demo_launches() -> dict[str, launcher.Launched]:
    """One demo per dashboard process, shared by every browser tab."""
    return {}


def start_demo() -> None:
    launches = demo_launches()
    if "demo" not in launches:
        form = launcher.demo_form()
        launches["demo"] = launcher.launch(form.argv(target), "demo")


@st.fragment(run_every=2)
def wait_for_first_run() -> None:
    try:
        if not data.runs(target).empty:
            st.rerun()
    except (DatabaseMissingError, EmptyDatabaseError):
        pass
    launched = demo_launches().get("demo")
    if launched is not None:
        failure = launcher.early_failure(launched, wait_s=0.1)
        if failure:
            st.error(f"The demo run could not start: {failure} (log: {launched.log_path})")
            return
    st.info("Starting a demo run on the `tiny` model (a small random-weight Llama): requests arrive over about "
            "a minute. This page switches to the runs list as soon as its first step is recorded.")


try:
    runs = data.runs(target)
except (DatabaseMissingError, EmptyDatabaseError):
    runs = None
except StorageError as exc:
    st.error(f"Cannot read the database: {exc}")
    st.stop()

if runs is None or runs.empty:
    st.subheader("No runs yet")
    start_demo()
    wait_for_first_run()
    st.stop()

# -- the runs list -----------------------------------------------------------------------------------
st.subheader("Runs")
table = runs.assign(
    requests=[f"{f}/{n}" for f, n in zip(runs["num_finished"], runs["num_requests"], strict=True)],
    ttft_ms=runs["mean_ttft"] * 1e3,
    e2e_ms=runs["mean_e2e"] * 1e3,
    itl_ms=runs["itl_p50"].astype(float) * 1e3,
    based_on=runs["base_run_id"].astype("Int64"),
    model=runs["model"].fillna("–"),
)
columns = ["id", "status", "name", "mode", "batching", "model", "requests", "output_tokens_per_s", "ttft_ms",
           "itl_ms", "e2e_ms", "num_preemptions", "num_steps", "based_on", "created_at"]
selection = st.dataframe(
    table[columns], hide_index=True, on_select="rerun", selection_mode="single-row", key="runs_table",
    column_config={
        "id": st.column_config.NumberColumn("run", format="%d", width="small"),
        "name": st.column_config.TextColumn("name", width="medium"),
        "output_tokens_per_s": st.column_config.NumberColumn("output tok/s", format="%.1f"),
        "ttft_ms": st.column_config.NumberColumn("mean TTFT (ms)", format="%.1f"),
        "itl_ms": st.column_config.NumberColumn("ITL p50 (ms)", format="%.1f",
                                                help="Median gap between a request's consecutive output tokens, "
                                                     "pooled over requests; shown once the run has finished"),
        "e2e_ms": st.column_config.NumberColumn("mean E2E (ms)", format="%.1f"),
        "num_preemptions": st.column_config.NumberColumn("preemptions", format="%d"),
        "num_steps": st.column_config.NumberColumn("steps", format="%d"),
        "based_on": st.column_config.NumberColumn("what-if of", format="%d"),
        "created_at": st.column_config.DatetimeColumn("started (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    },
)
st.caption("Select a row to open it. *interrupted*: the engine stopped writing without finishing "
           "(killed or crashed); its steps up to the last write are all there.")
rows = selection.selection.rows if selection is not None else []
if rows:
    chosen = table.iloc[rows[0]]
    run_id = int(chosen["id"])
    st.query_params["run"] = str(run_id)
    cols = st.columns(5)
    if cols[0].button("Live", icon=":material/radio_button_checked:", width="stretch",
                      disabled=chosen["status"] == "finished"):
        st.switch_page("pages/1_Live.py")
    if cols[1].button("Replay", icon=":material/replay:", width="stretch"):
        st.switch_page("pages/2_Replay.py")
    if cols[2].button("What-if", icon=":material/science:", width="stretch"):
        st.switch_page("pages/3_What-if.py")
    with cols[3].popover("Delete", icon=":material/delete:", width="stretch"):
        st.write(f"Delete run #{run_id} and all its steps? This cannot be undone.")
        if st.button("Delete for good", type="primary", key="confirm_delete"):
            done = launcher.launch(launcher.delete_run_argv(run_id, target), f"delete-{run_id}")
            failure = launcher.early_failure(done, wait_s=10)
            if failure:
                st.error(failure)
            else:
                data.runs.clear()
                st.query_params.pop("run", None)
                st.rerun()
    if chosen["status"] == "failed" and isinstance(runs.iloc[rows[0]]["error"], str):
        st.error(f"Run #{run_id} failed: {runs.iloc[rows[0]]['error']}")

# -- starting a run ----------------------------------------------------------------------------------
st.subheader("Start a run")
preset_name = st.selectbox("Use case", [*PRESETS, CUSTOM], help="Presets fill the fields below; change any of them.")
preset = PRESETS.get(preset_name, {})
if preset:
    st.caption(preset["why"])
with st.form("start_run"):
    c1, c2, c3 = st.columns(3)
    mode = c1.radio("Engine", launcher.MODES, horizontal=True,
                    format_func={"real": "real model", "simulated": "simulated (cost model)"}.get)
    model = c1.selectbox("Model (real runs)", launcher.MODELS,
                         help="tiny: a random-weight small Llama, fast on CPU. smollm2: SmolLM2-135M-Instruct, "
                              "real text, about 10x slower.")
    workload = c1.selectbox("Workload", launcher.WORKLOADS, index=launcher.WORKLOADS.index(preset.get("workload",
                                                                                                      "mixed")),
                            help="mixed: 70% short / 30% long answers. azure: a real production trace "
                                 "(Azure LLM inference 2023, CC-BY 4.0), lengths and times scaled by 0.1.")
    num_prompts = c1.number_input("Requests", 1, 20_000, int(preset.get("num_prompts", 200)))
    all_at_once = c2.checkbox("All requests at t=0", value=preset.get("request_rate", 8.0) is None)
    request_rate = c2.number_input("Arrival rate (requests/s, Poisson)", 0.1, 10_000.0,
                                   float(preset.get("request_rate") or 8.0))
    max_num_seqs = c2.number_input("max_num_seqs", 1, 1024, int(preset.get("max_num_seqs", 32)))
    max_num_batched_tokens = c2.number_input("max_num_batched_tokens", 16, 131_072,
                                             int(preset.get("max_num_batched_tokens", 1024)))
    chunked = c2.checkbox("enable_chunked_prefill", value=bool(preset.get("enable_chunked_prefill", True)))
    set_blocks = c3.checkbox("Set num_gpu_blocks (else from memory / 2,048 simulated)")
    num_gpu_blocks = c3.number_input("num_gpu_blocks", 16, 1_000_000, 2048)
    policy = c3.selectbox("policy", launcher.POLICIES)
    preemption_mode = c3.selectbox("preemption_mode", launcher.PREEMPTION_MODES)
    swap_space = c3.number_input("swap_space (CPU blocks)", 0, 1_000_000, 0)
    batching = c3.selectbox("batching", launcher.BATCHING)
    name = st.text_input("Name (optional)", max_chars=launcher.MAX_NAME)
    submitted = st.form_submit_button("Start run", type="primary")

if submitted:
    form = launcher.RunForm(
        mode=mode, model=model, workload=workload, num_prompts=int(num_prompts),
        request_rate=None if all_at_once else float(request_rate), max_num_seqs=int(max_num_seqs),
        max_num_batched_tokens=int(max_num_batched_tokens), max_model_len=1024,
        num_gpu_blocks=int(num_gpu_blocks) if set_blocks else None, enable_chunked_prefill=chunked, policy=policy,
        preemption_mode=preemption_mode, swap_space=int(swap_space), batching=batching, name=name,
    )
    try:
        form.validate()
    except launcher.LaunchError as exc:
        st.error(str(exc))
        st.stop()
    launched = launcher.launch(form.argv(target), "run")
    failure = launcher.early_failure(launched, wait_s=3.0 if mode == "simulated" else 1.5)
    if failure:
        st.error(f"The run could not start: {failure}")
    else:
        data.runs.clear()
        st.success(f"Started (process {launched.pid}). Open **Live** to watch it.")
        st.page_link("pages/1_Live.py", label="Watch it live", icon=":material/radio_button_checked:")

with st.expander("Where the data lives"):
    st.write(f"Database: `{target}` (set `BATCHSCOPE_DB` to use another file or a PostgreSQL URL). "
             "Query it with SQL: the README documents the tables.")
    st.dataframe(pd.DataFrame({"table": ["runs", "requests", "steps", "request_phases", "kv_block_events"],
                               "one row per": ["run", "request", "engine step", "phase change of a request",
                                               "KV block that changed owner"]}), hide_index=True)
