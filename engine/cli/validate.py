"""--validate: run the real engine with a what-if's parameters and record how far it was off."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import update

from engine.cli.base_run import BaseRun, percent_errors, summary_metrics
from engine.cli.real_session import run_real_session
from engine.config import EngineConfig
from storage.database import open_for_write
from storage.queries import get_run
from storage.schema import Run, table_of


def validate_prediction(args: argparse.Namespace, base: BaseRun, config: EngineConfig, prediction_run_id: int | None,
                        predicted: dict[str, float | None]) -> dict[str, Any]:
    """Serve the base run's requests for real under `config`; store the errors with the prediction."""
    model = args.model or base.model or "tiny"
    result = run_real_session(args, config, base.workload, name=f"validation of run {prediction_run_id}",
                              model=model, base_run_id=base.run_id,
                              extra={"validates": prediction_run_id})
    real = summary_metrics(result.summary)
    validation = {"real_run_id": result.run_id, "model": model, "predicted": predicted, "real": real,
                  "error_pct": percent_errors(predicted, real)}
    if prediction_run_id is not None:
        writer = open_for_write(args.db)
        run = get_run(writer, prediction_run_id)
        extra = dict((run or {}).get("extra") or {}) | {"validation": validation}
        with writer.begin() as conn:
            conn.execute(update(table_of(Run)).where(table_of(Run).c.id == prediction_run_id).values(extra=extra))
    return validation
