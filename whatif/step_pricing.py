"""How far a cost model misprices a recorded run's own steps: its predicted total over the measured
total, less 1, in percent.

A prediction applies the base's cost model to another run's steps; its error therefore holds what
the step times alone got wrong (the fit's reach beyond what the base exercised, and the machine's
speed on another minute) beside what the scheduling replay got wrong. Pricing the real run's own
recorded steps, with no replay, measures the first part alone.
"""

from __future__ import annotations

from sqlalchemy import Engine

from engine.executors.cost_model import FEATURES, CostModel
from storage.run_facts import step_features


def step_time_error_pct(db: Engine, cost_model: CostModel, run_id: int) -> float | None:
    """None when the run recorded no timed steps."""
    frame = step_features(db, run_id)
    measured = float(frame["duration"].sum()) if len(frame) else 0.0
    if measured <= 0:
        return None
    columns = [[1.0] * len(frame)] + [frame[f].astype(float).tolist() for f in FEATURES[1:]]
    predicted = sum(cost_model.predict(row) for row in zip(*columns, strict=True))
    return (predicted / measured - 1.0) * 100
