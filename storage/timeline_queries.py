"""The read side's timeline queries: the Gantt's phase intervals (a window, or the whole run binned on
the server), the queues at a step, and the KV block map at a step (a keyframe plus the events after it).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from sqlalchemy import Engine, text

from storage.queries import PHASE_ORDER, read_frame
from storage.schema import OWNING_EVENTS


# -- the Gantt -------------------------------------------------------------------------------------
def phases_window(db: Engine, run_id: int, first_step: int, last_step_incl: int,
                  max_rows: int = 5_000) -> pd.DataFrame:
    """Phase intervals overlapping steps first..last, clipped to the window; open phases end at
    the window's edge. At most max_rows intervals (the most recent requests first)."""
    frame = read_frame(db, """
        SELECT p.request_id, p.row_no, p.phase, p.start_step, p.end_step, p.start_time, p.end_time,
               q.prompt_len, q.max_tokens, q.output_len, q.priority, q.arrival_time, q.finish_reason
        FROM request_phases p
        JOIN requests q ON q.run_id = p.run_id AND q.request_id = p.request_id
        WHERE p.run_id = :run AND (p.end_step IS NULL OR p.end_step > :a) AND p.start_step <= :b
        ORDER BY p.row_no DESC, p.interval_id
        LIMIT :limit
    """, run=run_id, a=first_step, b=last_step_incl, limit=max_rows)
    frame["open"] = frame["end_step"].isna()
    frame["end_step"] = frame["end_step"].fillna(last_step_incl + 1)
    frame["start_step"] = frame["start_step"].clip(lower=first_step)
    frame["end_step"] = frame["end_step"].clip(upper=last_step_incl + 1)
    return frame


def queue_contents(db: Engine, run_id: int, step: int) -> pd.DataFrame:
    """Where every live request was during a step: its phase (queued/preempted = waiting,
    prefill/decode = running, swapped, padding)."""
    return read_frame(db, """
        SELECT p.request_id, p.row_no, p.phase, p.start_step, q.prompt_len, q.max_tokens, q.priority, q.arrival_time
        FROM request_phases p
        JOIN requests q ON q.run_id = p.run_id AND q.request_id = p.request_id
        WHERE p.run_id = :run AND p.start_step <= :s AND (p.end_step IS NULL OR p.end_step > :s)
        ORDER BY p.row_no
    """, run=run_id, s=step)


def gantt_overview(db: Engine, run_id: int, step_bins: int = 240, row_bins: int = 120) -> pd.DataFrame:
    """The whole run's Gantt binned on the server: a grid of (request rows x steps) cells, each
    colored by the phase that covers most of it, with how full it is. Never more than
    step_bins x row_bins cells, whatever the run's size.

    SQL groups phase intervals by (row bin, phase, first step bin, last step bin) with the sums
    that give their exact overlap with each bin, so a few thousand groups come back instead of
    every interval; numpy spreads each group over the bins it spans.
    """
    with db.connect() as conn:
        n_steps = conn.execute(text("SELECT COALESCE(MAX(step), -1) + 1 FROM steps WHERE run_id = :run"),
                               {"run": run_id}).scalar_one()
        n_rows = conn.execute(text("SELECT COALESCE(MAX(row_no), -1) + 1 FROM requests WHERE run_id = :run"),
                              {"run": run_id}).scalar_one()
    empty = pd.DataFrame(columns=["row0", "row1", "step0", "step1", "phase", "share"])
    if n_steps == 0 or n_rows == 0:
        return empty
    step_w = max(1, -(-n_steps // step_bins))
    row_h = max(1, -(-n_rows // row_bins))
    n_sb, n_rb = -(-n_steps // step_w), -(-n_rows // row_h)
    # Phases shorter than a step (a request admitted in the step it arrived) cover no step cell.
    groups = read_frame(db, """
        SELECT row_no / :h AS rb, phase, start_step / :w AS b0, (e - 1) / :w AS b1,
               COUNT(*) AS cnt, SUM(start_step) AS sum_s, SUM(e) AS sum_e
        FROM (SELECT row_no, phase, start_step,
                     CASE WHEN end_step IS NULL OR end_step > :n THEN :n ELSE end_step END AS e
              FROM request_phases
              WHERE run_id = :run AND row_no >= 0) p
        WHERE e > start_step
        GROUP BY row_no / :h, phase, start_step / :w, (e - 1) / :w
    """, run=run_id, n=n_steps, w=step_w, h=row_h)
    if groups.empty:
        return empty
    rb = groups["rb"].to_numpy(np.int64)
    b0, b1 = groups["b0"].to_numpy(np.int64), groups["b1"].to_numpy(np.int64)
    cnt = groups["cnt"].to_numpy(np.float64)
    sum_s, sum_e = groups["sum_s"].to_numpy(np.float64), groups["sum_e"].to_numpy(np.float64)
    phase = pd.Categorical(groups["phase"], categories=PHASE_ORDER).codes.astype(np.int64)
    same = b0 == b1
    # First bin: from each start to the bin's end; last bin: from the bin's start to each end.
    first_w = np.where(same, sum_e - sum_s, cnt * (b0 + 1) * step_w - sum_s)
    last_w = np.where(same, 0.0, sum_e - cnt * b1 * step_w)
    middle = np.maximum(b1 - b0 - 1, 0)
    owner = np.repeat(np.arange(len(groups)), middle)
    mid_bins = b0[owner] + 1 + (np.arange(middle.sum()) - np.repeat(np.cumsum(middle) - middle, middle))
    cells = np.concatenate([(rb * n_sb + b0) * len(PHASE_ORDER) + phase, (rb * n_sb + b1) * len(PHASE_ORDER) + phase,
                            (rb[owner] * n_sb + mid_bins) * len(PHASE_ORDER) + phase[owner]])
    weights = np.concatenate([first_w, last_w, cnt[owner] * step_w])
    weight = np.bincount(cells, weights=weights, minlength=n_rb * n_sb * len(PHASE_ORDER))
    weight = weight.reshape(n_rb * n_sb, len(PHASE_ORDER))
    total = weight.sum(axis=1)
    filled = np.nonzero(total > 1e-9)[0]
    dominant = weight[filled].argmax(axis=1)
    rbs, sbs = filled // n_sb, filled % n_sb
    row0, row1 = rbs * row_h, np.minimum((rbs + 1) * row_h, n_rows)
    step0, step1 = sbs * step_w, np.minimum((sbs + 1) * step_w, n_steps)
    return pd.DataFrame({
        "row0": row0, "row1": row1, "step0": step0, "step1": step1,
        "phase": np.asarray(PHASE_ORDER)[dominant],
        "share": total[filled] / ((row1 - row0) * (step1 - step0)),  # how much of the cell holds live requests
    })


# -- KV blocks ---------------------------------------------------------------------------------------
def kv_block_map(db: Engine, run_id: int, step: int, device: str = "gpu") -> pd.DataFrame:
    """Every block of a pool during `step` and the request that owned it (None: free): the latest
    keyframe at or before the step, plus the at most KEYFRAME_INTERVAL steps of events after it."""
    with db.connect() as conn:
        keyframe = conn.execute(text("""
            SELECT step, owners FROM kv_block_keyframes WHERE run_id = :run AND device = :dev AND step <= :s
            ORDER BY step DESC LIMIT 1"""), {"run": run_id, "dev": device, "s": step}).first()
        if device == "gpu":
            size = conn.execute(text("SELECT MAX(num_gpu_blocks) FROM steps WHERE run_id = :run"),
                                {"run": run_id}).scalar()
        else:
            config = conn.execute(text("SELECT config FROM runs WHERE id = :run"), {"run": run_id}).scalar()
            config = json.loads(config) if isinstance(config, str) else (config or {})
            size = config.get("swap_space")
        events = conn.execute(text("""
            SELECT request_id, kind, block_ids FROM kv_block_events
            WHERE run_id = :run AND device = :dev AND step >= :from AND step <= :s ORDER BY event_id"""),
            {"run": run_id, "dev": device, "from": keyframe.step if keyframe else 0, "s": step}).all()
    owners: list[str | None] = json.loads(keyframe.owners) if keyframe else []
    owners.extend([None] * (int(size or 0) - len(owners)))
    for request_id, kind, block_ids in events:  # bounded by the keyframe interval, not the run length
        owner = request_id if (kind, device) in OWNING_EVENTS else None
        for block in json.loads(block_ids):
            if block >= len(owners):
                owners.extend([None] * (block + 1 - len(owners)))
            owners[block] = owner
    return pd.DataFrame({"block_id": np.arange(len(owners)), "request_id": pd.Series(owners, dtype="object")})
