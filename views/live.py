"""Live: follow a running run, refreshing about once a second without reloading the page."""

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, data, launcher, run_meta, settings, ui

st.title("Live")
target, runs = ui.runs_or_stop()
if (successor := st.session_state.pop("live_next_part", None)) is not None:
    if successor in set(runs["id"]):  # a rotating server's next part, chosen before the picker is drawn
        st.session_state["live_run"] = successor
        st.query_params["run"] = str(successor)
    else:  # the run list read before it was written: try again on the next refresh
        st.session_state["live_next_part"] = successor
run_id = ui.pick_run(runs, key="live_run", prefer_running=True)
c1, c2 = st.columns([1, 2])
follow = c1.toggle("Follow (refresh every second)", value=True, help="Pause to look closely; play to follow again.")
x_axis = c2.segmented_control("x axis", ["step", "time"], default="step", key="live_x") or "step"


def status_lines(run: dict[str, Any]) -> None:
    """The run's state, what it serves, and what to make of a run that is not running."""
    status, n = run["status"], int(run["num_steps"])
    head = st.columns([3, 1])
    head[0].markdown(f"{ui.status_badge(status)} · {n:,} steps · "
                     f"{run['last_time']:.1f} s · {run['mode']} · {ui.config_summary(run['config'])}")
    meta = run_meta.meta(run)
    if meta.source == "served" and meta.served_url:
        head[0].markdown(f"{'Serving' if status == 'running' else 'Served'} the OpenAI API at "
                         f"`{meta.served_url}/v1`: requests arrive when clients send them.")
    pid = run_meta.engine_pid(run)
    if status == "running" and pid and head[1].button("Stop run", icon=":material/stop_circle:", key="stop_run"):
        if launcher.stop(pid):
            st.toast("Asked the engine to stop; it flushes and marks the run aborted.")
        else:
            st.warning("The engine process is not running here any more.")
    if status == "interrupted":
        st.warning("This run stopped writing without finishing (the engine was killed or crashed). "
                   "Everything up to its last write is shown.")
    elif status == "failed":
        st.error(f"This run failed: {run['error']}")
    elif status != "running":
        st.info(f"This run is {status}; the **Replay** page shows the whole of it step by step.")


def headline_metrics(run: dict[str, Any], steps: pd.DataFrame, first: int, n: int) -> None:
    """Throughput, latencies, queues, KV use over the window; a served run's arrival rate too."""
    now = steps.iloc[-1]
    start, end = float(steps["start_time"].iloc[0]), float(steps["end_time"].iloc[-1])
    window_s = max(end - start, 1e-9)
    recent = data.latency_percentiles(target, run_id, n, since_time=max(0.0, float(run["last_time"]) - 10.0))
    lat = recent.set_index("metric")
    served = run_meta.meta(run).source == "served"
    m = st.columns(8 if served else 7)
    m[0].metric("output tok/s", ui.rate(float(steps["num_output_tokens"].sum()) / window_s, ""),
                help="Over the steps shown below")
    m[1].metric("TTFT p50", ui.ms(lat.loc["ttft", "p50"]), help="Requests that finished in the last 10 s")
    m[2].metric("TPOT p50", ui.ms(lat.loc["tpot", "p50"]), help="Requests that finished in the last 10 s")
    m[3].metric("ITL p50", ui.ms(data.step_gap_itl_p50(target, run_id, first, n - 1, n)),
                help="Median gap between consecutive output tokens over the steps shown below, from the steps' "
                     "end times weighted by their decodes")
    m[4].metric("waiting / running", f"{int(now['num_waiting'])} / {int(now['num_running'])}")
    used, total = int(now["num_used_gpu_blocks"]), int(now["num_gpu_blocks"])
    m[5].metric("KV blocks used", f"{used / max(total, 1):.0%}", help=f"{used:,} of {total:,} GPU blocks")
    m[6].metric("preemptions", int(steps["num_preemptions"].sum()), help="Over the steps shown below")
    if served:
        m[7].metric("arrivals/s", ui.rate(data.arrival_rate(target, run_id, start, end, n), ""),
                    help="Requests that arrived over the steps shown below (by their arrival times), per second: "
                         "the load the server's clients put on it")


def window_charts(steps: pd.DataFrame, phases: pd.DataFrame, config: dict[str, Any]) -> None:
    st.subheader("Batch timeline")
    st.altair_chart(charts.gantt(phases, x_axis), width="stretch")
    st.caption(f"The last {len(steps)} steps, one row per request. Look for: orange prefills cutting into "
               "blue decodes, grey queues growing when arrivals outpace the batch, red preemptions when the KV "
               "pool runs out, yellow padding (slots static batching wastes).")

    x = "step" if x_axis == "step" else "start_time"
    left, right = st.columns(2)
    left.altair_chart(charts.queue_lengths(steps, x), width="stretch")
    left.caption("Queue lengths. A waiting queue that only grows means arrivals exceed what the batch serves.")
    right.altair_chart(charts.kv_usage(steps, x), width="stretch")
    right.caption("KV pool use. Pinned near 100% with preemptions below: the pool is the bottleneck.")
    left.altair_chart(charts.token_mix(steps, config.get("max_num_batched_tokens"), x), width="stretch")
    left.caption("Prefill vs decode tokens per step against the token budget (dashed): prefill bursts "
                 "are what stretch the time between tokens. Yellow: static batching's pad rows, computed and "
                 "thrown away.")
    right.altair_chart(charts.batch_slots(steps, config.get("max_num_seqs"), x), width="stretch")
    right.caption("Sequences per step against max_num_seqs (dashed). Yellow is padding: finished requests "
                  "still holding a static batch's slot.")


@st.fragment(run_every=settings.LIVE_REFRESH_S if follow else None)
def live_panel() -> None:
    run = data.run(target, run_id)
    if run is None:
        st.warning(f"Run #{run_id} is gone (deleted?).")
        return
    if follow and run["status"] != "running" and (successor := data.next_part(target, run_id)) is not None:
        st.session_state["live_next_part"] = successor  # the server rotated its recording: follow it there
        st.rerun(scope="app")
    status_lines(run)
    n = int(run["num_steps"])
    if n == 0:
        st.info("Waiting for the first step…")
        return
    first = max(0, n - settings.LIVE_WINDOW_STEPS)
    steps = data.steps_window(target, run_id, first, n - 1, n)
    headline_metrics(run, steps, first, n)
    window_charts(steps, data.phases_window(target, run_id, first, n - 1, n), run["config"])


live_panel()
