"""--validate: run the real engine with a what-if's parameters and record how far it was off."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from engine.config import EngineConfig
from sessions.real import run_real_session
from storage.database import open_for_write
from storage.run_meta import Comparison, ValidationNote, write_validation
from whatif.base_run import BaseRun, percent_errors, summary_metrics


def validate_prediction(args: argparse.Namespace, base: BaseRun, config: EngineConfig, prediction_run_id: int | None,
                        predicted: dict[str, float | None]) -> dict[str, Any]:
    """Serve the base run's requests for real under `config`; store the errors with the prediction."""
    # A simulated base names no loadable model (a simulated server records its served name).
    model = args.model or (base.model if base.mode == "real" else None) or "tiny"
    result = run_real_session(args, config, base.workload, name=f"validation of run {prediction_run_id}",
                              model=model, base_run_id=base.run_id, source="validation",
                              validates_run_id=prediction_run_id)
    real = summary_metrics(result.summary)
    note = ValidationNote(result.run_id or 0, model, Comparison(predicted, real, percent_errors(predicted, real)))
    if prediction_run_id is not None and result.run_id is not None:
        write_validation(open_for_write(args.db), prediction_run_id, note)
    return {"real_run_id": result.run_id, "model": model, "predicted": predicted, "real": real,
            "error_pct": note.check.error_pct, "note": asdict(note)}
