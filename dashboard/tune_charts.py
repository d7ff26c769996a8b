"""The Tune page's chart: goodput of each configuration, the frontier ringed, the chosen point marked.

Takes tune_view.chart_frame's ChartData; colours from dashboard.charts, so it reads as the other
pages' charts do.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from dashboard.charts import BLOCK_PALETTE, CURRENT_STEP, LIMIT_RULE
from dashboard.tune_view import ChartData

VERDICT_SHAPES = {"meets the SLOs": "circle", "misses them": "cross"}


def goodput_by_config(chart: ChartData, chosen_label: str, height: int = 380) -> alt.LayerChart:
    """Goodput (requests/s meeting every SLO) against the first searched parameter, every value it
    took on the axis, one line per combination of the others; the frontier points ringed in black,
    the chosen one in red, a value none of whose points has a goodput (all pruned or invalid) says
    so. Legends sit to the right: below, they would squeeze the plot."""
    frame, series_title = chart.frame, chart.series_title
    x = alt.X("x:O", title=chart.x_title, scale=alt.Scale(domain=chart.x_values), axis=alt.Axis(labelAngle=0))
    y = alt.Y("goodput:Q", title="goodput (requests/s within the SLOs)")
    offset = alt.XOffset("series:N", scale=alt.Scale(domain=chart.series_values)) if series_title else alt.XOffset()
    color = (alt.Color("series:N", title=series_title, legend=alt.Legend(labelLimit=300),
                       scale=alt.Scale(domain=chart.series_values, range=BLOCK_PALETTE))
             if series_title else alt.value(BLOCK_PALETTE[0]))
    tooltip = [alt.Tooltip("point:Q", title="point"), alt.Tooltip("x:O", title=chart.x_title),
               *([alt.Tooltip("series:N", title=series_title)] if series_title else []),
               alt.Tooltip("goodput:Q", title="goodput (req/s)", format=".2f"),
               alt.Tooltip("attainment:Q", title="within the SLOs (%)", format=".1f"),
               alt.Tooltip("output_tokens_per_s:Q", title="output tok/s", format=",.1f"),
               alt.Tooltip("e2e_p99_ms:Q", title="E2E p99 (ms)", format=",.1f"),
               alt.Tooltip("verdict:N", title="verdict")]
    base = alt.Chart(frame)
    line = base.mark_line(strokeWidth=1.5, opacity=0.6).encode(x=x, xOffset=offset, y=y, color=color,
                                                               detail="series:N", order="x_order:Q")
    dots = base.mark_point(size=70, filled=True, opacity=0.95).encode(
        x=x, xOffset=offset, y=y, color=color, tooltip=tooltip,
        shape=alt.Shape("verdict:N", title="configuration", legend=alt.Legend(),
                        scale=alt.Scale(domain=list(VERDICT_SHAPES), range=list(VERDICT_SHAPES.values()))))
    ring = alt.Chart(frame[frame["frontier"]]).mark_point(size=260, filled=False, color="black", strokeWidth=1.2
                                                          ).encode(x=x, xOffset=offset, y=y, tooltip=tooltip)
    chosen = frame[frame["chosen"]]
    mark = alt.Chart(chosen).mark_point(size=420, filled=False, color=CURRENT_STEP, strokeWidth=2.5).encode(
        x=x, xOffset=offset, y=y, tooltip=tooltip)
    label = alt.Chart(chosen.assign(label=chosen_label)).mark_text(
        dy=-20, color=CURRENT_STEP, fontWeight="bold").encode(x=x, xOffset=offset, y=y, text="label:N")
    empty = pd.DataFrame({"x": [v for v in chart.x_values if v not in set(frame["x"])]})
    none_drawn = alt.Chart(empty.assign(goodput=0.0, label="no goodput")).mark_text(
        dy=-8, color=LIMIT_RULE, fontSize=11, fontStyle="italic").encode(x=x, y=y, text="label:N")
    return alt.LayerChart(layer=[none_drawn, line, dots, ring, mark, label]).properties(height=height)
