"""The Curves page's figures: one point per run of a sweep, static vs continuous side by side."""

from __future__ import annotations

import pandas as pd

from dashboard import data

SWEEP_DEFAULTS = {"max_num_seqs": "1,2,4,8,16,32,64", "max_num_batched_tokens": "256,512,1024,2048,4096",
                  "num_gpu_blocks": "128,256,512,1024,2048", "request_rate": "2,4,8,16,32,64",
                  "batching": "static,continuous"}  # the values a new sweep starts from, per parameter
SWEEP_COLUMNS = ["value_label", "run", "output_tokens_per_s", "e2e_mean_ms", "e2e_p99_ms", "ttft_p99_ms",
                 "preemptions"]


def to_ms(seconds: float | None) -> float | None:
    return None if seconds is None or pd.isna(seconds) else float(seconds) * 1e3


def sweep_points(target: str, sweep_id: str) -> tuple[str, pd.DataFrame]:
    """The swept parameter and one row per run in value order (`order` sorts numbers as numbers)."""
    sweep = data.sweep_runs(target, sweep_id)
    points = []
    for _, row in sweep.iterrows():
        lat = data.latency_percentiles(target, int(row["id"]), int(row["num_steps"])).set_index("metric")
        points.append({"value_label": row["sweep_value"], "run": int(row["id"]),
                       "output_tokens_per_s": row["output_tokens_per_s"],
                       "e2e_mean_ms": to_ms(lat.loc["e2e", "mean"]), "e2e_p99_ms": to_ms(lat.loc["e2e", "p99"]),
                       "ttft_p99_ms": to_ms(lat.loc["ttft", "p99"]), "preemptions": row["num_preemptions"]})
    frame = pd.DataFrame(points, columns=SWEEP_COLUMNS)
    numeric = pd.to_numeric(frame["value_label"], errors="coerce")
    frame["order"] = numeric if numeric.notna().all() else range(len(frame))
    return str(sweep["sweep_param"].iloc[0]), frame.sort_values("order")


def counterpart(target: str, runs: pd.DataFrame, static_id: int) -> int | None:
    """A continuous run of the static run's workload under the same parameters but batching (the
    fair comparison), newest first; None when none was recorded."""
    static = data.run(target, static_id)
    if static is None:
        return None
    wanted = {k: v for k, v in static["config"].items() if k != "batching"}
    candidates = runs[(runs["batching"] == "continuous") & (runs["workload"] == static["workload"])]
    for rid in candidates["id"]:
        other = data.run(target, int(rid))
        if other is not None and {k: v for k, v in other["config"].items() if k != "batching"} == wanted:
            return int(rid)
    return None


def batching_comparison(target: str, static_id: int, continuous_id: int) -> pd.DataFrame:
    """Throughput, E2E p50/p99 and padding share of a static and a continuous run."""
    runs = data.runs(target).set_index("id")
    rows = []
    for label, rid in (("static", static_id), ("continuous", continuous_id)):
        row = runs.loc[rid]
        lat = data.latency_percentiles(target, rid, int(row["num_steps"])).set_index("metric")
        binned = data.steps_binned(target, rid, int(row["num_steps"]), 10_000)
        slots = (binned["batch_size"] * binned["num_steps"]).sum()
        padding = (binned["num_padding_seqs"] * binned["num_steps"]).sum()
        rows.append({"batching": label, "output tok/s": row["output_tokens_per_s"],
                     "E2E p50 (ms)": to_ms(lat.loc["e2e", "p50"]), "E2E p99 (ms)": to_ms(lat.loc["e2e", "p99"]),
                     "padding share %": 100 * padding / max(slots + padding, 1)})
    return pd.DataFrame(rows)
