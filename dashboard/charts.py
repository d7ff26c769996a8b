"""Every chart of the dashboard: build_x(frame) -> alt.Chart, one colour and axis scheme.

Columns are computed in pandas before they get here (a Vega transform would keep the renderer
on slow SVG), and each builder takes only what it draws.
"""

from __future__ import annotations

import math
import zlib

import altair as alt
import pandas as pd

PHASE_COLORS: dict[str, str] = {
    "queued": "#b9b0a8",
    "prefill": "#f28e2b",
    "decode": "#4e79a7",
    "preempted": "#e15759",
    "swapped": "#af7aa1",
    "padding": "#edc948",
}
QUEUE_COLORS: dict[str, str] = {"waiting": "#b9b0a8", "running": "#4e79a7", "swapped": "#af7aa1"}
TOKEN_COLORS: dict[str, str] = {"prefill": PHASE_COLORS["prefill"], "decode": PHASE_COLORS["decode"],
                                "padding": PHASE_COLORS["padding"]}
SLOT_COLORS: dict[str, str] = {"running": PHASE_COLORS["decode"], "padding (wasted)": PHASE_COLORS["padding"]}
BLOCK_PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
                 "#1f77b4", "#2ca02c", "#17becf", "#bcbd22", "#8c564b", "#e377c2", "#7f7f7f", "#aec7e8"]
FREE_BLOCK = "#eeeeee"
CURRENT_STEP = "#d62728"
LIMIT_RULE = "#555555"


def _layer(*charts: alt.Chart) -> alt.LayerChart:
    """Charts drawn over each other (no facets here, so always a LayerChart, as alt.layer's type cannot say)."""
    return alt.LayerChart(layer=list(charts))


def _scale(colors: dict[str, str]) -> alt.Scale:
    return alt.Scale(domain=list(colors), range=list(colors.values()))


def _axis_title(x: str) -> str:
    return "engine step" if x == "step" else "time since run start (s)"


def _current_rule(value: float | None) -> list[alt.Chart]:
    if value is None:
        return []
    return [alt.Chart(pd.DataFrame({"x": [value]})).mark_rule(color=CURRENT_STEP, strokeWidth=2).encode(x="x:Q")]


def _limit_rule(value: float | None, title: str) -> list[alt.Chart]:
    """A dashed horizontal line at a configured limit (token budget, max_num_seqs)."""
    if not value:
        return []
    return [alt.Chart(pd.DataFrame({"limit": [value]})).mark_rule(color=LIMIT_RULE, strokeDash=[4, 3]).encode(
        y="limit:Q", tooltip=[alt.Tooltip("limit:Q", title=title)])]


# -- the Gantt ---------------------------------------------------------------------------------------
def gantt(frame: pd.DataFrame, x: str = "step", current: float | None = None, height: int = 360) -> alt.LayerChart:
    """One row per request (arrival order, first at the top), one bar per phase."""
    data = frame.copy()
    if x == "step":
        data["x0"], data["x1"] = data["start_step"], data["end_step"]
    else:
        data["x0"], data["x1"] = data["start_time"], data["end_time"].fillna(data["start_time"])
    data["y0"], data["y1"] = data["row_no"], data["row_no"] + 0.9
    bars = alt.Chart(data).mark_rect().encode(
        x=alt.X("x0:Q", title=_axis_title(x), scale=alt.Scale(zero=False, nice=False)),
        x2="x1:Q",
        y=alt.Y("y0:Q", title="request (arrival order)", scale=alt.Scale(reverse=True, nice=False, zero=False),
                axis=alt.Axis(tickMinStep=1, format="d")),
        y2="y1:Q",
        color=alt.Color("phase:N", scale=_scale(PHASE_COLORS), legend=alt.Legend(orient="top", title=None)),
        tooltip=[alt.Tooltip("request_id:N", title="request"), alt.Tooltip("phase:N"),
                 alt.Tooltip("prompt_len:Q", title="prompt tokens"), alt.Tooltip("max_tokens:Q", title="max tokens"),
                 alt.Tooltip("output_len:Q", title="output tokens"),
                 alt.Tooltip("start_step:Q", title="from step"), alt.Tooltip("end_step:Q", title="to step"),
                 alt.Tooltip("start_time:Q", title="from (s)", format=".3f"),
                 alt.Tooltip("end_time:Q", title="to (s)", format=".3f")],
    )
    return _layer(bars, *_current_rule(current)).properties(height=height)


def gantt_overview(frame: pd.DataFrame, current: float | None = None, height: int = 360) -> alt.LayerChart:
    """The whole run's Gantt binned on the server: each cell is the phase covering most of it."""
    data = frame.copy()
    data["requests"] = data["row0"].astype(str) + "-" + (data["row1"] - 1).astype(str)
    data["steps"] = data["step0"].astype(str) + "-" + (data["step1"] - 1).astype(str)
    cells = alt.Chart(data).mark_rect().encode(
        x=alt.X("step0:Q", title="engine step", scale=alt.Scale(zero=False, nice=False)),
        x2="step1:Q",
        y=alt.Y("row0:Q", title="request (arrival order)", scale=alt.Scale(reverse=True, nice=False, zero=False)),
        y2="row1:Q",
        color=alt.Color("phase:N", scale=_scale(PHASE_COLORS), legend=alt.Legend(orient="top", title=None)),
        opacity=alt.Opacity("share:Q", scale=alt.Scale(domain=[0, 1], range=[0.25, 1]), legend=None),
        tooltip=[alt.Tooltip("requests:N"), alt.Tooltip("steps:N"), alt.Tooltip("phase:N", title="mostly"),
                 alt.Tooltip("share:Q", title="share of cell live", format=".0%")],
    )
    return _layer(cells, *_current_rule(current)).properties(height=height)


# -- step series -----------------------------------------------------------------------------------
def queue_lengths(steps: pd.DataFrame, x: str = "step", current: float | None = None) -> alt.LayerChart:
    data = steps.melt(id_vars=[x], value_vars=["num_waiting", "num_running", "num_swapped"], var_name="queue",
                      value_name="requests")
    data["queue"] = data["queue"].str.removeprefix("num_")
    lines = alt.Chart(data).mark_line(interpolate="step-after").encode(
        x=alt.X(f"{x}:Q", title=_axis_title(x), scale=alt.Scale(zero=False, nice=False)),
        y=alt.Y("requests:Q", title="requests"),
        color=alt.Color("queue:N", scale=_scale(QUEUE_COLORS), legend=alt.Legend(orient="top", title=None)),
        tooltip=[alt.Tooltip(f"{x}:Q"), "queue:N", alt.Tooltip("requests:Q", format=".1f")],
    )
    return _layer(lines, *_current_rule(current)).properties(height=200)


def kv_usage(steps: pd.DataFrame, x: str = "step", current: float | None = None) -> alt.LayerChart:
    data = steps[[x, "num_used_gpu_blocks", "num_gpu_blocks", "num_used_cpu_blocks"]].copy()
    data["used"] = data["num_used_gpu_blocks"] / data["num_gpu_blocks"].where(data["num_gpu_blocks"] > 0)
    area = alt.Chart(data).mark_area(interpolate="step-after", color=PHASE_COLORS["decode"], opacity=0.7).encode(
        x=alt.X(f"{x}:Q", title=_axis_title(x), scale=alt.Scale(zero=False, nice=False)),
        y=alt.Y("used:Q", title="KV blocks in use", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip(f"{x}:Q"), alt.Tooltip("num_used_gpu_blocks:Q", title="blocks used", format=".0f"),
                 alt.Tooltip("num_gpu_blocks:Q", title="pool"),
                 alt.Tooltip("num_used_cpu_blocks:Q", title="swapped to CPU", format=".0f")],
    )
    return _layer(area, *_current_rule(current)).properties(height=200)


def token_mix(steps: pd.DataFrame, budget: int | None, x: str = "step",
              current: float | None = None) -> alt.LayerChart:
    """Prefill, decode and (static batching) padding tokens per step, stacked, against the token budget."""
    columns = {"num_prefill_tokens": "prefill", "num_decode_seqs": "decode"}  # a decode is one token
    if "num_padding_tokens" in steps and steps["num_padding_tokens"].fillna(0).any():
        columns["num_padding_tokens"] = "padding"
    data = steps.melt(id_vars=[x], value_vars=list(columns), var_name="kind", value_name="tokens")
    data["kind"] = data["kind"].map(columns)
    mark = alt.Chart(data).mark_bar() if len(steps) <= 240 else alt.Chart(data).mark_area(interpolate="step-after")
    stack = mark.encode(
        x=alt.X(f"{x}:Q", title=_axis_title(x), scale=alt.Scale(zero=False, nice=False)),
        y=alt.Y("tokens:Q", title="tokens in the step", stack="zero"),
        color=alt.Color("kind:N", scale=_scale(TOKEN_COLORS), legend=alt.Legend(orient="top", title=None)),
        tooltip=[alt.Tooltip(f"{x}:Q"), "kind:N", alt.Tooltip("tokens:Q", format=".0f")],
    )
    return _layer(stack, *_limit_rule(budget, "token budget"), *_current_rule(current)).properties(height=200)


def batch_slots(steps: pd.DataFrame, max_num_seqs: int | None, x: str = "step",
                current: float | None = None) -> alt.LayerChart:
    """Sequences per step, with static batching's padding slots stacked on top, against the cap."""
    data = steps[[x]].copy()
    if "batch_size" in steps:
        data["running"] = steps["batch_size"]
    else:
        data["running"] = steps["num_prefill_seqs"] + steps["num_decode_seqs"]
    data["padding (wasted)"] = steps["num_padding_seqs"]
    data = data.melt(id_vars=[x], var_name="slot", value_name="sequences")
    area = alt.Chart(data).mark_area(interpolate="step-after").encode(
        x=alt.X(f"{x}:Q", title=_axis_title(x), scale=alt.Scale(zero=False, nice=False)),
        y=alt.Y("sequences:Q", title="sequences in the step", stack="zero"),
        color=alt.Color("slot:N", scale=_scale(SLOT_COLORS), legend=alt.Legend(orient="top", title=None)),
        tooltip=[alt.Tooltip(f"{x}:Q"), "slot:N", alt.Tooltip("sequences:Q", format=".1f")],
    )
    return _layer(area, *_limit_rule(max_num_seqs, "max_num_seqs"), *_current_rule(current)).properties(height=200)


def throughput_over_time(frame: pd.DataFrame) -> alt.Chart:
    return alt.Chart(frame).mark_line(point=True, color=PHASE_COLORS["decode"]).encode(
        x=alt.X("time:Q", title="time since run start (s)"),
        y=alt.Y("output_tokens_per_s:Q", title="output tokens/s"),
        tooltip=[alt.Tooltip("time:Q", format=".1f"), alt.Tooltip("output_tokens_per_s:Q", format=".1f")],
    ).properties(height=200)


def latency_scatter(requests: pd.DataFrame, metric: str = "ttft") -> alt.Chart:
    """Each finished request's latency against when it arrived: queue build-up shows as a ramp."""
    data = requests.dropna(subset=[metric]).copy()
    data[f"{metric}_ms"] = data[metric] * 1e3
    return alt.Chart(data).mark_circle(size=18, opacity=0.6, color=PHASE_COLORS["decode"]).encode(
        x=alt.X("arrival_time:Q", title="arrival (s since run start)"),
        y=alt.Y(f"{metric}_ms:Q", title=f"{metric.upper()} (ms)"),
        tooltip=[alt.Tooltip("request_id:N", title="request"), alt.Tooltip(f"{metric}_ms:Q", format=".1f"),
                 alt.Tooltip("prompt_len:Q", title="prompt"), alt.Tooltip("output_len:Q", title="output")],
    ).properties(height=200)


# -- KV block map ----------------------------------------------------------------------------------
def block_color_key(request_id: str) -> int:
    """A stable colour per request, the same on every step."""
    return zlib.crc32(request_id.encode()) % len(BLOCK_PALETTE)


def kv_block_grid(blocks: pd.DataFrame, columns: int | None = None, cell_px: int = 28,
                  max_width_px: int = 540) -> alt.Chart:
    """The pool as a grid of square cells, block 0 top left; wide pools wrap at 64 columns. Cells
    shrink from cell_px to fit max_width_px and 420 px of height, so a small pool is not a speck."""
    if columns is None:
        columns = int(min(64, max(8, math.ceil(math.sqrt(max(len(blocks), 1)) * 1.5))))
    data = blocks.copy()
    data["col"] = data["block_id"] % columns
    data["row"] = data["block_id"] // columns
    data["owner"] = data["request_id"].fillna("free")
    data["color"] = [FREE_BLOCK if rid is None or pd.isna(rid) else BLOCK_PALETTE[block_color_key(rid)]
                     for rid in data["request_id"]]
    rows = int(data["row"].max()) + 1 if len(data) else 1
    cell_px = max(3, min(cell_px, max_width_px // columns, 420 // rows))
    return alt.Chart(data).mark_rect(stroke="white", strokeWidth=0.5).encode(
        x=alt.X("col:O", axis=None),
        y=alt.Y("row:O", axis=None),
        color=alt.Color("color:N", scale=None),
        tooltip=[alt.Tooltip("block_id:Q", title="block"), alt.Tooltip("owner:N", title="owner")],
    ).properties(width=columns * cell_px, height=rows * cell_px)


# -- one request -----------------------------------------------------------------------------------
def request_timeline(phases: pd.DataFrame) -> alt.Chart:
    data = phases.copy()
    data["end_time"] = data["end_time"].fillna(data["start_time"])
    return alt.Chart(data).mark_bar(height=22).encode(
        x=alt.X("start_time:Q", title="time since run start (s)"),
        x2="end_time:Q",
        y=alt.Y("phase:N", sort=list(PHASE_COLORS), title=None),
        color=alt.Color("phase:N", scale=_scale(PHASE_COLORS), legend=None),
        tooltip=["phase:N", alt.Tooltip("start_step:Q", title="from step"), alt.Tooltip("end_step:Q", title="to step"),
                 alt.Tooltip("start_time:Q", title="from (s)", format=".3f"),
                 alt.Tooltip("end_time:Q", title="to (s)", format=".3f")],
    ).properties(height=160)


# -- across runs -----------------------------------------------------------------------------------
def throughput_latency_curve(frame: pd.DataFrame, param: str) -> alt.LayerChart:
    """One point per run of a sweep: throughput against latency (mean and p99), labelled by value."""
    data = frame.melt(id_vars=["value_label", "order", "output_tokens_per_s"], value_vars=["e2e_mean_ms", "e2e_p99_ms"],
                      var_name="latency", value_name="ms")
    data["latency"] = data["latency"].map({"e2e_mean_ms": "E2E mean", "e2e_p99_ms": "E2E p99"})
    base = alt.Chart(data).encode(
        x=alt.X("output_tokens_per_s:Q", title="output tokens/s"),
        y=alt.Y("ms:Q", title="end-to-end latency (ms)", scale=alt.Scale(type="log")),
        color=alt.Color("latency:N", scale=alt.Scale(domain=["E2E mean", "E2E p99"],
                                                     range=[PHASE_COLORS["decode"], PHASE_COLORS["preempted"]]),
                        legend=alt.Legend(orient="top", title=None)),
        order="order:Q",
        tooltip=[alt.Tooltip("value_label:N", title=param), "latency:N", alt.Tooltip("ms:Q", format=".1f"),
                 alt.Tooltip("output_tokens_per_s:Q", format=".1f")],
    )
    return _layer(base.mark_line(point=True), base.mark_text(dy=-10, fontSize=11).encode(text="value_label:N"),
                     ).properties(height=380)


def metric_bars(frame: pd.DataFrame, category: str, metric: str, title: str,
                colors: dict[str, str] | None = None) -> alt.Chart:
    color = alt.Color(f"{category}:N", scale=_scale(colors) if colors else alt.Undefined, legend=None)
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X(f"{category}:N", title=None, sort=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y(f"{metric}:Q", title=title),
        color=color,
        tooltip=[f"{category}:N", alt.Tooltip(f"{metric}:Q", format=".1f")],
    ).properties(height=220)


def latency_by_group(frame: pd.DataFrame) -> alt.Chart:
    """Short vs long requests: p50 and p99 end-to-end latency side by side."""
    data = frame.melt(id_vars=["group"], value_vars=["e2e_p50", "e2e_p99"], var_name="percentile", value_name="s")
    data["ms"] = data["s"] * 1e3
    data["percentile"] = data["percentile"].str.removeprefix("e2e_")
    return alt.Chart(data).mark_bar().encode(
        y=alt.Y("group:N", title=None),
        yOffset="percentile:N",
        x=alt.X("ms:Q", title="end-to-end latency (ms)"),
        color=alt.Color("percentile:N", scale=alt.Scale(domain=["p50", "p99"],
                                                        range=[PHASE_COLORS["decode"], PHASE_COLORS["preempted"]]),
                        legend=alt.Legend(orient="top", title=None)),
        tooltip=["group:N", "percentile:N", alt.Tooltip("ms:Q", format=".1f")],
    ).properties(height=alt.Step(26))
