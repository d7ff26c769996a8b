"""The Learn page's charts: build_x(frame) -> Altair chart, in the dashboard's colours (dashboard.charts).

Columns are computed before they get here (no Vega transforms), as in dashboard.charts.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from dashboard import charts
from dashboard.charts import FREE_BLOCK, PHASE_COLORS

AnyChart = alt.Chart | alt.LayerChart | alt.VConcatChart | alt.HConcatChart  # what a lesson's view draws
BATCHING_COLORS = {"static": PHASE_COLORS["padding"], "continuous": PHASE_COLORS["decode"]}
ENGINE_COLORS = {"simulated": PHASE_COLORS["decode"], "tiny (real)": PHASE_COLORS["prefill"]}
BUDGET_COLORS = {"decodes (D, E)": PHASE_COLORS["decode"], "A's prompt": PHASE_COLORS["prefill"],
                 "B's chunk": "#ffbe7d", "unused budget": FREE_BLOCK}
BLOCK_COLORS = {"held by D, E": PHASE_COLORS["decode"], "taken in the step": PHASE_COLORS["prefill"],
                "free": FREE_BLOCK}
CHUNKING_COLORS = {"chunked prefill off": PHASE_COLORS["preempted"], "chunked prefill on": PHASE_COLORS["decode"]}
MODE_COLORS = {"recompute": PHASE_COLORS["preempted"], "swap": PHASE_COLORS["swapped"]}
POLICY_METRICS = {"mean": PHASE_COLORS["decode"], "longest": PHASE_COLORS["preempted"]}


def _scale(colors: dict[str, str]) -> alt.Scale:
    return alt.Scale(domain=list(colors), range=list(colors.values()))


def _legend() -> alt.Legend:
    return alt.Legend(orient="top", title=None)


def stacked(parts: Sequence[tuple[str, alt.LayerChart]]) -> alt.VConcatChart:
    """Charts of the same steps one above the other, titled, on one shared x axis so lengths compare."""
    return alt.vconcat(*(chart.properties(title=title) for title, chart in parts)).resolve_scale(x="shared")


def trace_step(budget: pd.DataFrame, blocks: pd.DataFrame, token_budget: int) -> alt.HConcatChart:
    """Per configuration: the step's token budget by who used it, and the KV pool after it."""
    y = alt.Y("configuration:N", title=None, sort=None, axis=alt.Axis(labelLimit=220))
    tokens = alt.Chart(budget).mark_bar().encode(
        x=alt.X("tokens:Q", title=f"tokens in the step (budget {token_budget})", stack="zero",
                scale=alt.Scale(domain=[0, token_budget])),
        y=y, color=alt.Color("part:N", scale=_scale(BUDGET_COLORS), legend=_legend()),
        order="order:Q", tooltip=["configuration:N", "part:N", "tokens:Q"])
    pool = alt.Chart(blocks).mark_bar().encode(
        x=alt.X("blocks:Q", title="KV blocks after the step", stack="zero"),
        y=alt.Y("configuration:N", title=None, sort=None, axis=None),
        color=alt.Color("part:N", scale=_scale(BLOCK_COLORS), legend=_legend()),
        order="order:Q", tooltip=["configuration:N", "part:N", "blocks:Q"])
    return alt.hconcat(tokens.properties(height=alt.Step(34), width=520),
                       pool.properties(height=alt.Step(34), width=300)).resolve_scale(color="independent")


def throughput_vs_tpot(frame: pd.DataFrame) -> alt.LayerChart:
    """One point per max_num_seqs: output tokens/s against time per output token, per engine."""
    base = alt.Chart(frame).encode(
        x=alt.X("output_tokens_per_s:Q", title="output tokens/s"),
        y=alt.Y("tpot_ms:Q", title="time per output token, p50 (ms)"),
        color=alt.Color("engine:N", scale=_scale(ENGINE_COLORS), legend=_legend()),
        order="max_num_seqs:Q",
        tooltip=["engine:N", "max_num_seqs:Q", alt.Tooltip("output_tokens_per_s:Q", format=",.0f"),
                 alt.Tooltip("tpot_ms:Q", format=".1f")])
    labels = base.mark_text(dx=12, dy=-8, fontSize=11).encode(text="max_num_seqs:Q")
    return alt.LayerChart(layer=[base.mark_line(point=True), labels]).properties(height=320)


def short_long(frame: pd.DataFrame) -> alt.Chart:
    """Median end-to-end latency of short and long answers, static vs continuous."""
    return alt.Chart(frame).mark_bar().encode(
        y=alt.Y("group:N", title=None), yOffset=alt.YOffset("batching:N", sort=list(BATCHING_COLORS)),
        x=alt.X("e2e_p50:Q", title="median end-to-end latency (steps)"),
        color=alt.Color("batching:N", scale=_scale(BATCHING_COLORS), legend=_legend()),
        tooltip=["group:N", "batching:N", alt.Tooltip("e2e_p50:Q", title="median (steps)"), "count:Q"],
    ).properties(height=alt.Step(30))


def step_times(frame: pd.DataFrame) -> alt.Chart:
    """Each step's duration over the run: a spike is a stall every decoding request sits through."""
    return alt.Chart(frame).mark_line(interpolate="step-after", strokeWidth=1.2).encode(
        x=alt.X("start_time:Q", title="time since run start (s)"),
        y=alt.Y("ms:Q", title="step duration (ms)"),
        color=alt.Color("series:N", scale=_scale(CHUNKING_COLORS), legend=_legend()),
        tooltip=["series:N", "step:Q", alt.Tooltip("ms:Q", format=".1f"), "num_prefill_tokens:Q"],
    ).properties(height=280)


def preemption_costs(frame: pd.DataFrame) -> alt.HConcatChart:
    """Per preemption mode, side by side: how often it preempted and what each way of preempting cost."""
    return alt.hconcat(*(charts.metric_bars(frame, "mode", metric, metric, MODE_COLORS).properties(width=260)
                         for metric in frame.columns if metric != "mode"))


def policy_latency(frame: pd.DataFrame) -> alt.Chart:
    """Mean and longest end-to-end latency per policy."""
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("policy:N", title=None, sort=None, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("metric:N", sort=list(POLICY_METRICS)),
        y=alt.Y("steps:Q", title="end-to-end latency (steps)"),
        color=alt.Color("metric:N", scale=_scale(POLICY_METRICS), legend=_legend()),
        tooltip=["policy:N", "metric:N", alt.Tooltip("steps:Q", format=".1f")],
    ).properties(height=260)
