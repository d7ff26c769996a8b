"""What-if replays of recorded runs, sweeps, and their command-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import update

from cli.main import main
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.executors.cost_fit import FIT_VERSION
from engine.executors.cost_model import DEFAULT_COST_MODEL
from engine.workload.generators import synthetic_workload
from storage import queries
from storage.database import open_for_read, open_for_write
from storage.run_meta import run_meta
from storage.schema import Run, table_of
from tests.recording import record_pretend_real


def _run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _record_fake_real_run(db: Path) -> int:
    """A run recorded as mode=real whose step times come from a known model, so fitting has a truth."""
    config = EngineConfig(SchedulerConfig(max_num_seqs=16), CacheConfig(num_gpu_blocks=300))
    return record_pretend_real(db, config, synthetic_workload("mixed", 120, request_rate=30.0, seed=3),
                               DEFAULT_COST_MODEL, {"executor": "torch"})


def test_what_if_of_a_simulated_run_is_exact_on_itself_and_records_a_linked_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "w.db")
    assert _run_cli(capsys, "simulate", "--db", db, "--num-prompts", "80", "--request-rate", "40")[0] == 0
    code, out, _ = _run_cli(capsys, "simulate", "--db", db, "--from-run", "1", "--max-num-seqs", "4", "--json")
    assert code == 0
    report = json.loads(out)
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in report["trust"]["consistency"]["error_pct"].values())
    assert report["changes"] == {"max_num_seqs": 4}
    assert report["predicted"]["e2e_p99"] > report["recorded"]["e2e_p99"]  # fewer seqs: longer tails
    run = queries.get_run(open_for_read(db), report["run_id"])
    assert run is not None and run["base_run_id"] == 1 and run["mode"] == "simulated"
    note = run_meta(run).what_if
    assert run["config"]["max_num_seqs"] == 4 and note is not None and note.changes == {"max_num_seqs": 4}
    assert queries.run_requests(open_for_read(db), report["run_id"])["arrival_time"].tolist() == \
        queries.run_requests(open_for_read(db), 1)["arrival_time"].tolist()


def test_text_report_shows_the_self_check_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "w.db")
    _run_cli(capsys, "simulate", "--db", db, "--num-prompts", "30")
    code, out, _ = _run_cli(capsys, "simulate", "--db", db, "--from-run", "1", "--batching", "static")
    assert code == 0
    assert out.index("consistency check") < out.index("what-if: batching=static") < out.index("recorded as run 2")


def test_a_real_run_gets_a_fitted_cost_model_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "real.db"
    run_id = _record_fake_real_run(db)
    code, out, _ = _run_cli(capsys, "simulate", "--db", str(db), "--from-run", str(run_id), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["cost_model"]["name"] == f"fitted to run {run_id}"
    # The steps came from DEFAULT_COST_MODEL, so the fit reproduces them and the self-check is tight.
    assert report["cost_model"]["fit"]["median_abs_pct_error"] < 1.0
    assert abs(report["trust"]["consistency"]["error_pct"]["output_tokens_per_s"]) < 2.0
    stored = queries.get_run(open_for_read(str(db)), run_id)["cost_model"]  # type: ignore[index]
    assert stored == report["cost_model"]
    _run_cli(capsys, "simulate", "--db", str(db), "--from-run", str(run_id), "--max-num-seqs", "2")
    assert queries.get_run(open_for_read(str(db)), run_id)["cost_model"] == stored  # type: ignore[index]


def test_a_model_stored_by_an_older_fitter_is_fitted_again(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "real.db"
    run_id = _record_fake_real_run(db)
    old = {"name": "fitted to run 1", "coefficients": {"intercept": 1.0}, "fit": {"num_steps": 9}}  # no version
    writer = open_for_write(str(db))
    with writer.begin() as conn:
        conn.execute(update(table_of(Run)).where(table_of(Run).c.id == run_id).values(cost_model=old))
    code, out, _ = _run_cli(capsys, "simulate", "--db", str(db), "--from-run", str(run_id), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["cost_model"]["fit"]["version"] == FIT_VERSION
    assert report["cost_model"]["coefficients"]["intercept"] < 0.1  # fitted to the steps, not the stale 1 s
    assert queries.get_run(open_for_read(str(db)), run_id)["cost_model"] == report["cost_model"]  # type: ignore[index]


def test_sweep_records_one_run_per_value_in_one_group(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.db")
    code, out, _ = _run_cli(capsys, "sweep", "--db", db, "--param", "max_num_seqs", "--values", "1,4,16",
                            "--num-prompts", "40", "--json")
    assert code == 0
    report = json.loads(out)
    runs = queries.list_runs(open_for_read(db), sweep_id=report["sweep_id"])
    assert sorted(runs["sweep_value"].astype(int)) == [1, 4, 16]
    assert set(runs["sweep_param"]) == {"max_num_seqs"}
    throughputs = [r["output_tokens_per_s"] for r in report["runs"]]
    assert throughputs == sorted(throughputs)  # more sequences per step, more tokens per second
    groups = queries.sweep_groups(open_for_read(db))
    assert list(groups["num_runs"]) == [3]


def test_sweep_static_vs_continuous(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.db")
    code, out, _ = _run_cli(capsys, "sweep", "--db", db, "--param", "batching", "--values", "static,continuous",
                            "--num-prompts", "64", "--json")
    assert code == 0
    static, continuous = json.loads(out)["runs"]
    assert continuous["output_tokens_per_s"] > static["output_tokens_per_s"]


@pytest.mark.parametrize(("argv", "message"), [
    (["simulate", "--validate"], "--validate needs --from-run"),
    (["sweep", "--param", "max_num_seqs", "--values", "4,x"], "must be whole numbers"),
    (["sweep", "--param", "batching", "--values", "dynamic"], "must be among continuous, static"),
    (["simulate", "--from-run", "99"], "there is no run 99"),
])
def test_what_if_and_sweep_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                               message: str) -> None:
    db = str(tmp_path / "e.db")
    _run_cli(capsys, "simulate", "--db", db, "--num-prompts", "5")
    code, _, err = _run_cli(capsys, *argv, "--db", db)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(("mode", "recorded_model", "given", "loaded"), [
    ("simulated", "sim", None, "tiny"),  # a simulated server records its served name, not a loadable model
    ("real", "smollm2", None, "smollm2"),
    ("simulated", "sim", "smollm2", "smollm2"),
])
def test_validate_loads_the_bases_model_only_when_the_base_ran_one(monkeypatch: pytest.MonkeyPatch, mode: str,
                                                                   recorded_model: str, given: str | None,
                                                                   loaded: str) -> None:
    import argparse
    from types import SimpleNamespace

    from engine.config import EngineConfig
    from engine.metrics import LatencyStats
    from whatif import validate

    seen: list[str] = []

    def fake_real_session(args, config, workload, *, model, **_: object):  # type: ignore[no-untyped-def]
        seen.append(model)
        stats = LatencyStats.of([0.1])
        return SimpleNamespace(run_id=None, summary=SimpleNamespace(output_tokens_per_s=1.0, ttft_s=stats,
                                                                    e2e_s=stats))

    monkeypatch.setattr(validate, "run_real_session", fake_real_session)
    base = SimpleNamespace(mode=mode, model=recorded_model, run_id=1, workload=None)
    validate.validate_prediction(argparse.Namespace(model=given, db="unused.db"), base, EngineConfig(), None,  # type: ignore[arg-type]
                                 {"output_tokens_per_s": 1.0})
    assert seen == [loaded]
