"""The What-if page's figures: which run to open, how far to trust the simulator, and the
comparison tables (recorded vs simulated, recorded vs predicted, predicted vs real)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import data, launcher, run_meta
from storage.run_meta import Trust

LABELS = {"output_tokens_per_s": ("output tokens/s", 1.0), "ttft_p50": ("TTFT p50 (ms)", 1e3),
          "ttft_p99": ("TTFT p99 (ms)", 1e3), "e2e_p50": ("E2E p50 (ms)", 1e3), "e2e_p99": ("E2E p99 (ms)", 1e3)}
COLUMN_FORMATS = {c: st.column_config.NumberColumn(format="%.1f")
                  for c in ("recorded", "simulated", "predicted", "real")}
COLUMN_FORMATS |= {c: st.column_config.NumberColumn(format="%+.1f%%") for c in ("error %", "change %")}
BLOCK_SIZES = [8, 16, 32, 64]  # the block sizes the form offers


def recorded_runs(runs: pd.DataFrame) -> pd.Series:
    """Runs a what-if can start from: done (or stopped) and not themselves predictions."""
    return runs["status"].isin(["finished", "aborted", "interrupted"]) & runs["base_run_id"].isna()


def default_base(runs: pd.DataFrame) -> int | None:
    """Open on a run that already has predictions, else the latest real run."""
    predicted_bases = runs["base_run_id"].dropna().astype(int)
    if not predicted_bases.empty:
        return int(predicted_bases.iloc[0])
    real = runs[recorded_runs(runs) & (runs["mode"] == "real")]
    return int(real["id"].iloc[0]) if not real.empty else None


def predictions_of(runs: pd.DataFrame, base_id: int) -> dict[int, str]:
    """The simulated predictions made from base_id, newest first: id -> label."""
    children = runs[(runs["base_run_id"] == base_id) & (runs["mode"] == "simulated")]
    return {int(r["id"]): f"#{r['id']} {r['name']}" for _, r in children.iterrows()}


FITS = {"run": "this run's own fit", "pooled": "every real run of this model on this device (pooled)"}


def fit_line(prediction: run_meta.RunRow) -> str:
    """Which steps the prediction's cost model was fitted to."""
    note = run_meta.what_if_note(prediction)
    if note is None:
        return "Not a what-if prediction: no cost model recorded."
    if note.fit == "pooled" and note.pooled_runs:
        return (f"Step costs fitted to the steps of {len(note.pooled_runs)} real runs of this model on this device "
                f"(#{', #'.join(map(str, note.pooled_runs))}), none of them of the predicted configuration.")
    return f"Step costs from the cost model “{note.cost_model}”."


def trust_note(base: run_meta.RunRow) -> str:
    """One line on the cost model behind predictions from this run."""
    fit = run_meta.cost_fit(base)
    if fit is not None:
        rows_note = (f", plus measured corrections for {fit.num_row_factors} step sizes (token rows) off the "
                     "linear trend" if fit.num_row_factors else "")
        wake = f" Idle wake-ups: {fit.idle_wake}." if fit.idle_wake else ""
        return (f"Cost model fitted to {fit.num_steps or '?'} recorded steps{rows_note}: median step-time error "
                f"{fit.median_abs_pct_error:.1f}%, R² {fit.r2:.3f}.{wake}")
    if base["mode"] == "simulated":
        return "A simulated run: the what-if re-uses the cost model that produced it."
    return "The cost model is fitted to this run's steps on the first prediction, then stored with it."


def metric_table(first: run_meta.Figures, second: run_meta.Figures, first_name: str, second_name: str,
                 diff_name: str) -> pd.DataFrame:
    """Two sets of headline figures (seconds, tokens/s) side by side in display units with the % difference."""
    rows = []
    for key, (label, scale) in LABELS.items():
        a, b = first.get(key), second.get(key)
        rows.append({"metric": label, first_name: None if a is None else a * scale,
                     second_name: None if b is None else b * scale,
                     diff_name: None if a in (None, 0) or b is None else (b - a) / a * 100})
    return pd.DataFrame(rows)


def self_check_table(check: run_meta.Comparison) -> pd.DataFrame:
    return metric_table(check.first, check.second, "recorded", "simulated", "error %")


def holdout_line(trust: Trust) -> str:
    """The step-time fit on steps it never saw, in one line."""
    held = trust.holdout
    if not held.get("folds"):
        return f"No held-out fit figures: {held.get('reason', 'none recorded')}."
    return (f"Step-time fit on **held-out** steps ({held['folds']} contiguous blocks of the fitted steps, each "
            f"predicted by a fit to the others): median error **{held['median_abs_pct_error']:.1f}%**, p90 "
            f"{held['p90_abs_pct_error']:.1f}%, R² {held['r2']:.2f}.")


TRACK_KEYS = {"output_tokens_per_s": "tok/s", "ttft_p50": "TTFT p50", "e2e_p50": "E2E p50", "e2e_p99": "E2E p99"}


def track_record_table(trust: Trust) -> pd.DataFrame:
    """Each real run of the same requests under another configuration: the simulator's error and the
    "nothing changes" error (the base's own figure), in %, and the cost model's error on that run's
    own recorded steps (what of the simulator's error is step times)."""
    rows = []
    for entry in trust.track_record:
        row: dict[str, Any] = {"real run": entry.real_run_id, "its changes": describe_changes(entry.changes)}
        for key, label in TRACK_KEYS.items():
            row[f"{label} sim %"] = entry.simulated.error_pct.get(key)
            row[f"{label} null %"] = entry.null_error_pct.get(key)
        row[STEP_TIMES] = entry.step_time_error_pct
        rows.append(row)
    return pd.DataFrame(rows)


def show_trust(trust: Trust, track_intro: str | None = None) -> bool:
    """The trust figures as the What-if and Tune pages show them: the held-out fit, borrowed costs,
    extrapolation warnings, then the track record table (after track_intro, if given), if there is
    one; whether there was."""
    st.markdown(holdout_line(trust))
    for line in trust.borrowed:
        st.caption(f"Cost: {line}")
    for line in trust.warnings:
        st.warning(line, icon=":material/warning:")
    if not trust.track_record:
        return False
    if track_intro:
        st.markdown(track_intro)
    st.dataframe(track_record_table(trust), hide_index=True, column_config=TRACK_FORMATS)
    return True


STEP_TIMES = "step times %"
TRACK_FORMATS = {f"{label} {kind} %": st.column_config.NumberColumn(format="%+.1f%%")
                 for label in TRACK_KEYS.values() for kind in ("sim", "null")} | {
    STEP_TIMES: st.column_config.NumberColumn(
        format="%+.1f%%", help="the cost model on this real run's own recorded steps: predicted over measured "
                               "total time. What of the sim error is step times, not the schedule")}


def validation_table(validation: run_meta.Validation) -> pd.DataFrame:
    return metric_table(validation.real, validation.predicted, "real", "predicted", "error %")


def prediction_table(target: str, base_id: int, pred_id: int) -> pd.DataFrame:
    """Recorded vs predicted: throughput, TTFT and E2E percentiles, preemptions, with the change in %."""
    runs = data.runs(target).set_index("id")
    base_row, pred_row = runs.loc[base_id], runs.loc[pred_id]
    rec = data.latency_percentiles(target, base_id, int(base_row["num_steps"])).set_index("metric")
    new = data.latency_percentiles(target, pred_id, int(pred_row["num_steps"])).set_index("metric")
    table = pd.DataFrame([
        {"metric": "output tokens/s", "recorded": base_row["output_tokens_per_s"],
         "predicted": pred_row["output_tokens_per_s"]},
        *({"metric": f"{m.upper()} {p} (ms)", "recorded": rec.loc[m, p] * 1e3, "predicted": new.loc[m, p] * 1e3}
          for m in ("ttft", "e2e") for p in ("p50", "p99")),
        {"metric": "preemptions", "recorded": base_row["num_preemptions"], "predicted": pred_row["num_preemptions"]},
    ])
    change = (table["predicted"] - table["recorded"]) / table["recorded"].where(table["recorded"] != 0) * 100
    table["change %"] = change.where(table["predicted"] != table["recorded"], 0.0)  # 0 -> 0 is no change
    return table


def bounds(name: str, config: dict[str, Any]) -> tuple[int, int]:
    """A number input's range for a parameter: the form's, widened to hold the recorded value."""
    lo, hi = launcher.LIMITS[name]
    value = int(config[name])
    return min(lo, value), max(hi, value)


def changed(values: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The form's values that differ from the recorded config."""
    return {k: v for k, v in values.items() if v != config.get(k)}


def describe_changes(changes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in changes.items()) or "none"
