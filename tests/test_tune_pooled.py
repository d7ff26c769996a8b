"""`tune --fit pooled`: a search priced by one cost model fitted to every real run of the base's
model and device, so the batch sizes a small base never ran are priced from runs that did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from storage.database import open_for_write
from storage.queries import get_run
from tests.test_pooled_fit import _real_run, spy_on_pools

SEARCH = ["--slo", "e2e=600000", "--search", "max_num_seqs=2,16,64", "--prune", "none", "--jobs", "1", "--json"]


def _tune(db: Path, base: int, capsys: pytest.CaptureFixture[str], *flags: str) -> dict[str, Any]:
    assert main(["tune", "--db", str(db), "--from-run", str(base), *SEARCH, *flags]) == 0
    return json.loads(capsys.readouterr().out)


def _point(report: dict[str, Any], max_num_seqs: int) -> dict[str, Any]:
    (point,) = [p for p in report["points"] if p["params"]["max_num_seqs"] == max_num_seqs]
    return point


def test_a_pooled_search_prices_a_batch_size_the_base_never_ran_closer_to_the_truth(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    base, wide = _real_run(db, 2), _real_run(db, 64)
    truth_db = tmp_path / "truth.db"  # the 16 run is recorded apart: it is what the search predicts, not pooled
    truth = get_run(open_for_write(str(truth_db)), _real_run(truth_db, 16))
    assert truth is not None
    real_e2e = float(truth["summary"]["e2e_s"]["p50"])

    own = _tune(db, base, capsys)
    pooled = _tune(db, base, capsys, "--fit", "pooled")
    assert own["fit"] == "run" and own["pooled_runs"] == []
    assert pooled["fit"] == "pooled" and pooled["pooled_runs"] == [base, wide]
    assert pooled["cost_model"].startswith("fitted to 2 runs")
    own_error = abs(_point(own, 16)["e2e_p50"] / real_e2e - 1)
    pooled_error = abs(_point(pooled, 16)["e2e_p50"] / real_e2e - 1)
    assert own_error > 0.15  # the max_num_seqs 2 run's straight line overprices 16-sequence steps
    assert pooled_error < own_error / 2


def test_the_trust_figures_of_a_pooled_search_leave_the_answer_s_configuration_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "t.db"
    base, wide, sixteen = _real_run(db, 2), _real_run(db, 64), _real_run(db, 16)
    pools = spy_on_pools(monkeypatch)
    report = _tune(db, base, capsys, "--fit", "pooled")
    assert report["pooled_runs"] == [base, wide, sixteen]  # the search itself leaves none out
    answer = report["recommended"]["params"]["max_num_seqs"]
    answer_run = {16: sixteen, 64: wide}[answer]
    # The trust figures: the answer from a pool without its runs, then each track-record run from a
    # pool without its own (newest first).
    assert [e["real_run_id"] for e in report["trust"]["track_record"]] == [sixteen, wide]
    without = {run: tuple(r for r in (base, wide, sixteen) if r != run) for run in (wide, sixteen)}
    assert pools == [without[answer_run], without[sixteen], without[wide]]


def test_fit_pooled_needs_a_recorded_real_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    assert main(["tune", "--db", str(db), "--fit", "pooled", *SEARCH]) == 2
    assert "--fit needs --from-run" in capsys.readouterr().err
    assert main(["simulate", "--db", str(db), "--num-prompts", "20", "--json"]) == 0
    capsys.readouterr()
    assert main(["tune", "--db", str(db), "--from-run", "1", "--fit", "pooled", *SEARCH]) == 2
    assert "simulated" in capsys.readouterr().err
    real = _real_run(db, 2)
    assert main(["tune", "--db", str(db), "--from-run", str(real), "--fit", "pooled", "--cost-model", "unit",
                 *SEARCH]) == 2
    assert "both choose the step costs" in capsys.readouterr().err
    with open_for_write(str(db)).connect() as conn:  # nothing was recorded by the refused commands
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM searches").scalar() == 0


def test_the_text_report_names_the_pooled_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    base, wide = _real_run(db, 2), _real_run(db, 64)
    text_flags = [f for f in SEARCH if f != "--json"]
    assert main(["tune", "--db", str(db), "--from-run", str(base), "--fit", "pooled", *text_flags]) == 0
    out = capsys.readouterr().out
    assert f"cost model: fitted to 2 runs of this model and device (runs {base}, {wide})" in out
    assert "the 2 pooled runs never ran more than" in out  # the warnings speak of the pool, not the base
