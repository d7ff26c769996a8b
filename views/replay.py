"""Replay: any recorded run, scrubbed or played step by step."""

import streamlit as st

from dashboard import charts, data, replay, settings, ui

st.title("Replay")
target, runs = ui.runs_or_stop()
run_id = ui.pick_run(runs, key="replay_run")
run = data.run(target, run_id)
if run is None:
    st.warning(f"Run #{run_id} is gone (deleted?).")
    st.stop()
n = int(run["num_steps"])
if n == 0:
    st.info("This run has no recorded steps yet.")
    st.stop()
version = n
config = run["config"]
st.markdown(f"{ui.status_badge(run['status'])} · {n:,} steps · "
            f"{run['last_time']:.2f} s · {run['mode']} · {run['workload']}")
st.caption(ui.config_summary(config))
headline = ui.summary_line(run)
if headline:
    st.markdown(headline)

step_key = f"replay_step_{run_id}"
st.session_state.setdefault(step_key, n // 2)
c1, c2, c3 = st.columns([1, 1, 2])
playing = c1.toggle("Play", key="replay_play")
speed = c2.select_slider("Steps per tick", [1, 2, 5, 10, 25, 100, 500], value=5 if n > 500 else 1)


@st.fragment(run_every=1.0 if playing else None)
def step_view() -> None:
    if playing:
        st.session_state[step_key] = min(st.session_state[step_key] + speed, n - 1)
    st.session_state[step_key] = min(st.session_state[step_key], n - 1)
    step = st.slider("Step", 0, n - 1, key=step_key)
    row = data.step_at(target, run_id, step, version)
    if row is None:
        st.warning("No such step.")
        return
    st.markdown(replay.step_line(step, row, config.get("max_num_batched_tokens")))

    st.subheader("Whole run")
    chart, caption = replay.whole_run(target, run_id, version, step)
    st.altair_chart(chart, width="stretch")
    st.caption(caption)
    binned = data.steps_binned(target, run_id, version)
    left, right = st.columns(2)
    left.altair_chart(charts.queue_lengths(binned, "step", current=step), width="stretch")
    left.caption("Queue lengths over the run (averaged per bin on long runs).")
    right.altair_chart(charts.kv_usage(binned, "step", current=step), width="stretch")
    right.caption("KV pool use over the run; a flat top with preemptions means the pool is too small.")

    st.subheader(f"Around step {step:,}")
    first = max(0, step - settings.REPLAY_WINDOW_STEPS)
    last = min(n - 1, step + settings.REPLAY_WINDOW_STEPS)
    around = data.phases_window(target, run_id, first, last, version, max_rows=settings.MAX_GANTT_BARS)
    st.altair_chart(charts.gantt(around, "step", current=step), width="stretch")
    window_steps = data.steps_window(target, run_id, first, last, version)
    left, right = st.columns(2)
    left.altair_chart(charts.token_mix(window_steps, config.get("max_num_batched_tokens"), "step", current=step),
                      width="stretch")
    left.caption("Prefill vs decode tokens per step against the budget; yellow: static batching's pad rows.")
    right.altair_chart(charts.batch_slots(window_steps, config.get("max_num_seqs"), "step", current=step),
                       width="stretch")
    right.caption("Sequences per step; yellow padding is static batching's waste.")

    queues = data.queue_contents(target, run_id, step, version)
    groups = replay.queue_groups(queues)
    st.subheader(f"Queues and KV blocks at step {step:,}")
    for col, (name, frame) in zip(st.columns(len(groups)), groups.items(), strict=True):
        col.metric(name, len(frame))
    tabs_left, tabs_right = st.columns([2, 3])
    with tabs_left:
        for name, frame in groups.items():
            if not frame.empty:
                st.markdown(f"**{name}**")
                st.dataframe(frame, hide_index=True, height=min(38 + 35 * len(frame), 220))
    with tabs_right:
        blocks = data.kv_block_map(target, run_id, step, "gpu", version)
        used = int(blocks["request_id"].notna().sum())
        st.markdown(f"**GPU KV pool**: {used:,} of {len(blocks):,} blocks owned "
                    f"({config.get('block_size')} tokens each); one colour per request, grey is free.")
        st.altair_chart(charts.kv_block_grid(blocks), width="content")
        if int(config.get("swap_space") or 0) > 0:
            cpu = data.kv_block_map(target, run_id, step, "cpu", version)
            if not cpu.empty:
                st.markdown(f"**CPU swap pool**: {int(cpu['request_id'].notna().sum())} blocks hold swapped requests.")
                st.altair_chart(charts.kv_block_grid(cpu), width="content")

    st.subheader("One request")
    options = list(queues["request_id"]) or list(data.run_requests(target, run_id, version)["request_id"][:200])
    chosen = st.selectbox("Request", options, help="Requests alive at this step.", key="replay_request")
    if chosen:
        detail, timeline = data.request_detail(target, run_id, chosen, version)
        if detail is not None:
            figures = replay.request_figures(detail)
            for col, (label, value) in zip(st.columns(len(figures)), figures.items(), strict=True):
                col.metric(label, value)
            st.altair_chart(charts.request_timeline(timeline), width="stretch")
            if detail.get("reject_reason"):
                st.warning(f"Rejected: {detail['reject_reason']}")


step_view()

measured = replay.client_vs_server(target, run_id, version)
if not measured.empty:
    st.subheader("What the benchmark client measured")
    st.dataframe(measured, hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.1f")
                                for c in ("client (ms)", "server (ms)", "client - server (ms)")})
    st.caption("`bench serve --db` stored its own timing of these requests. The server's figures count from "
               "when it received each request; the difference is the HTTP path and the client's own time.")
