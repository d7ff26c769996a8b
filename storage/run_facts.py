"""What the what-if service reads about a run beyond what the pages show: the step shapes a cost
model is fitted on, what the run's steps exercised, and the other runs of the same workload."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from storage.queries import read_frame

# A gap between one step's end and the next one's start up to this long is the engine loop going
# straight on (output processing, recording, the next schedule call), not an idle wait for arrivals:
# measured gaps are 0.05-0.2 ms median (p90 0.1-1.8 ms); an idle wait that short is rare.
LOOP_GAP_S = 0.002


def step_features(db: Engine, run_id: int) -> pd.DataFrame:
    """What a cost model is fitted on: each step's duration and its cost features, each the sum of
    the step columns engine/executors/cost_model.py's FEATURE_SOURCES names.

    duration is the step's period: its own time plus the loop's gap to the next step when the engine
    went straight on, so a simulated step (which starts when the previous one ends) costs what the
    real loop took per step, not only the part between its two timestamps (1-2% of a busy run's wall
    time on `tiny` fell between steps). A step followed by an idle wait, and the last one, add the
    median loop gap instead.

    wake: for a step that an arrival woke the idle engine for (one after an idle wait), the time
    from that arrival to the step's start; NaN for every other step (the first one too: the run's
    start-up, not a wake-up, comes before it)."""
    from engine.executors.cost_model import FEATURE_SOURCES

    features = ", ".join(f"{' + '.join(cols)} AS {name}" for name, cols in FEATURE_SOURCES.items() if cols)
    frame = read_frame(db, f"""
        SELECT step, start_time, end_time, model_time, {features}
        FROM steps WHERE run_id = :run ORDER BY step
    """, run=run_id)
    gap = (frame["start_time"].shift(-1) - frame["end_time"]).clip(lower=0.0)
    loop = gap <= LOOP_GAP_S  # NaN (the last step) compares False
    typical = float(gap[loop].median()) if loop.any() else 0.0
    frame["duration"] = frame["end_time"] - frame["start_time"] + gap.where(loop, typical)
    frame["wake"] = _wake_gaps(db, run_id, frame["start_time"].to_numpy(float), frame["end_time"].to_numpy(float))
    return frame.drop(columns=["start_time", "end_time"])


def _wake_gaps(db: Engine, run_id: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per step: its start less the first arrival after the previous step ended, where the engine had
    been idle (the step before ended more than LOOP_GAP_S before it) and that arrival came by the
    step's start; NaN elsewhere."""
    arrivals = np.sort(read_frame(db, "SELECT arrival_time FROM requests WHERE run_id = :run",
                                  run=run_id)["arrival_time"].to_numpy(float))
    wake = np.full(len(starts), np.nan)
    if not len(starts) or not len(arrivals):
        return wake
    previous_end = np.r_[np.nan, ends[:-1]]
    idle = starts - previous_end > LOOP_GAP_S  # NaN (the first step) compares False
    first = np.searchsorted(arrivals, np.where(idle, previous_end, np.inf), side="right")  # first arrival after it
    has = idle & (first < len(arrivals))
    woke = arrivals[np.minimum(first, len(arrivals) - 1)]
    has &= woke <= starts
    wake[has] = starts[has] - woke[has]
    return wake


def exercised(db: Engine, run_id: int) -> dict[str, float]:
    """What a run's steps exercised, for a what-if's extrapolation warnings: the largest batch and
    step, the steps at the token budget, swaps, preemptions, pad rows, peak KV use."""
    frame = read_frame(db, """
        SELECT COUNT(*) AS num_steps,
               MAX(num_prefill_seqs + num_decode_seqs) AS max_seqs,
               MAX(num_batched_tokens + num_padding_tokens) AS max_tokens,
               SUM(num_swap_blocks) AS swap_blocks, SUM(num_preemptions) AS preemptions,
               SUM(num_padding_tokens) AS padding_tokens, SUM(num_padding_seqs) AS padding_seqs,
               MAX(num_used_gpu_blocks) AS max_used_blocks,
               MAX(num_gpu_blocks) AS num_gpu_blocks, MAX(num_context_tokens) AS max_decode_context,
               SUM(num_prefill_tokens) AS prefill_tokens
        FROM steps WHERE run_id = :run
    """, run=run_id)
    return {k: float(v) if v is not None and not pd.isna(v) else 0.0 for k, v in frame.iloc[0].items()}


def runs_of_workload(db: Engine, workload_key: str, exclude_run_id: int) -> pd.DataFrame:
    """Finished real runs that served exactly the same requests (same workload key), newest first."""
    return read_frame(db, """
        SELECT id, name, config, model, executor FROM runs
        WHERE workload_key = :key AND id != :run AND mode = 'real' AND status = 'finished'
        ORDER BY id DESC
    """, key=workload_key, run=exclude_run_id)
