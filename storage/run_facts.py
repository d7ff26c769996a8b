"""What the what-if service reads about a run beyond what the pages show: the step shapes a cost
model is fitted on, what the run's steps exercised, and the other runs of the same workload."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine

from storage.queries import read_frame


def step_features(db: Engine, run_id: int) -> pd.DataFrame:
    """What a cost model is fitted on: each step's measured duration and its cost features, each the
    sum of the step columns engine/executors/cost_model.py's FEATURE_SOURCES names."""
    from engine.executors.cost_model import FEATURE_SOURCES

    features = ", ".join(f"{' + '.join(cols)} AS {name}" for name, cols in FEATURE_SOURCES.items() if cols)
    return read_frame(db, f"""
        SELECT step, end_time - start_time AS duration, model_time, {features}
        FROM steps WHERE run_id = :run ORDER BY step
    """, run=run_id)


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
