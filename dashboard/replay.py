"""The Replay page's figures: one step in words, and who sits in which queue at that step."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from dashboard import charts, data, settings, ui

QUEUE_PHASES = {"waiting": ("queued", "preempted"), "running": ("prefill", "decode"), "swapped": ("swapped",),
                "padding": ("padding",)}
QUEUE_COLUMNS = ["request_id", "phase", "prompt_len", "max_tokens", "priority", "start_step"]
CLIENT_COLUMNS = ["benchmark", "requests", "metric", "client (ms)", "server (ms)", "client - server (ms)"]


def step_line(step: int, row: dict[str, Any], budget: int | None) -> str:
    """What the scheduler ran at one step, as one Markdown sentence."""
    return (f"Step **{step:,}** at {row['start_time']:.3f} s: {int(row['num_prefill_seqs'])} prefill "
            f"({int(row['num_prefill_tokens'])} tokens) + {int(row['num_decode_seqs'])} decode sequences, "
            f"{int(row['num_batched_tokens'])} of {budget} budget tokens, {int(row['num_preemptions'])} preempted.")


def queue_groups(queues: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The requests alive at a step by queue (waiting, running, swapped, padding), QUEUE_COLUMNS only."""
    return {name: queues.loc[queues["phase"].isin(phases), QUEUE_COLUMNS] for name, phases in QUEUE_PHASES.items()}


def request_figures(detail: dict[str, Any]) -> dict[str, str | int]:
    """One request's headline figures as metric tiles: label -> shown value."""
    return {"prompt tokens": int(detail["prompt_len"]),
            "output tokens": "–" if detail["output_len"] is None else int(detail["output_len"]),
            "TTFT": ui.ms(detail.get("ttft")), "end-to-end": ui.ms(detail.get("e2e")),
            "preemptions": int(detail["num_preemptions"] or 0), "finish": detail["finish_reason"] or "running"}


def whole_run(target: str, run_id: int, version: int, step: int) -> tuple[alt.LayerChart, str]:
    """The whole run's Gantt with `step` marked, and its caption: bar by bar while the browser can
    draw that many bars, else binned on the server."""
    if data.phase_count(target, run_id, version) <= settings.MAX_GANTT_BARS:
        phases = data.phases_window(target, run_id, 0, version - 1, version, max_rows=settings.MAX_GANTT_BARS)
        return charts.gantt(phases, "step", current=step), "Every request's life, the current step in red."
    return (charts.gantt_overview(data.gantt_overview(target, run_id, version), current=step),
            "Too many requests to draw one by one: each cell shows the phase covering most of it, "
            "fainter when few requests are alive there. Zoom in below.")


def client_vs_server(target: str, run_id: int, version: int) -> pd.DataFrame:
    """Per benchmark and metric: p50 and p99 in ms as a benchmark client and the server saw the same
    requests; empty when no `bench serve --db` named the run."""
    frame = data.client_vs_server(target, run_id, version)
    rows = []
    for bench_id, group in frame.groupby("benchmark_id", sort=True):
        for metric, name in (("ttft", "TTFT"), ("e2el", "end-to-end")):
            client, server = group[f"client_{metric}"].astype(float), group[f"server_{metric}"].astype(float)
            for q in (0.5, 0.99):
                c_ms, s_ms = client.quantile(q) * 1000, server.quantile(q) * 1000
                rows.append({"benchmark": int(bench_id), "requests": len(group), "metric": f"{name} p{q * 100:g}",
                             "client (ms)": c_ms, "server (ms)": s_ms, "client - server (ms)": c_ms - s_ms})
    return pd.DataFrame(rows, columns=CLIENT_COLUMNS)
