"""Searches in the database: summary-only points, a point materialized into a normal recorded run
(its summary equal to the point's), and the runs of a search kept out of the Runs list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from cli.main import main as engine_main
from cli.tune import main
from storage import queries
from storage.admin import delete_run
from storage.database import open_for_read, open_for_write
from storage.run_meta import run_meta
from storage.searches import get_point, grouped_runs, list_searches, runs_outside_searches, search_points

SEARCH = ("--search", "max_num_seqs=2,8,32", "enable_chunked_prefill=true,false")


def _tune(capsys: pytest.CaptureFixture[str], db: Path, *argv: str) -> dict[str, Any]:
    assert main([*argv, "--db", str(db), "--json", "--jobs", "1"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_search_records_every_point_without_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    report = _tune(capsys, db, "--workload", "mixed", "--num-prompts", "60", "--request-rate", "30",
                   "--slo", "ttft=200,e2e=2000", "--prune", "slo", *SEARCH)
    reader = open_for_read(str(db))
    searches = list_searches(reader)
    assert searches["id"].tolist() == [report["search_id"]]
    row = searches.iloc[0]
    assert row["status"] == "finished" and row["num_points"] == row["points_written"] == 6
    assert row["recommended_point"] == report["recommended"]["index"]
    points = search_points(reader, report["search_id"])
    assert points["point"].tolist() == list(range(6))
    assert points["run_id"].isna().all()  # summary-only: no run, no steps
    assert queries.list_runs(reader).empty
    by_point = {p["index"]: p for p in report["points"]}
    for p in points.itertuples():
        assert p.status == by_point[p.point]["status"]
        assert (None if pd.isna(p.goodput) else p.goodput) == by_point[p.point]["goodput"]


def test_a_materialized_point_is_a_normal_run_with_the_points_summary(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    report = _tune(capsys, db, "--workload", "mixed", "--num-prompts", "60", "--request-rate", "30",
                   "--slo", "ttft=200,e2e=2000", *SEARCH)
    sid, point = report["search_id"], report["recommended"]["index"]
    assert main(["--materialize", f"{sid}:{point}", "--db", str(db), "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    reader = open_for_read(str(db))
    run = queries.get_run(reader, done["run_id"])
    stored = get_point(reader, sid, point)
    assert run is not None and stored is not None
    assert run["status"] == "finished" and run["mode"] == "simulated" and run["num_steps"] > 0
    assert run["config"] == stored["config"]
    # Deterministic: the recorded run's summary is the point's, figure for figure.
    assert run["summary"] == stored["summary"] == done["summary"]
    assert len(queries.run_requests(reader, done["run_id"])) == 60
    assert stored["run_id"] == done["run_id"]
    # Asking again returns the same run; no second run is recorded.
    assert main(["--materialize", f"{sid}:{point}", "--db", str(db)]) == 0
    assert f"was already recorded as run {done['run_id']}" in capsys.readouterr().out
    assert len(queries.list_runs(reader)) == 1


def test_runs_of_a_search_are_grouped_under_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    assert engine_main(["simulate", "--db", str(db), "--num-prompts", "40", "--request-rate", "20"]) == 0
    capsys.readouterr()
    report = _tune(capsys, db, "--from-run", "1", "--slo", "e2e=3000", *SEARCH)
    assert report["base_run_id"] == 1 and report["trust"] is not None
    sid, point = report["search_id"], report["recommended"]["index"]
    assert main(["--materialize", f"{sid}:{point}", "--db", str(db), "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    reader = open_for_read(str(db))
    grouped = grouped_runs(reader)
    assert grouped.to_dict("records") == [{"run_id": run_id, "search_id": sid, "point": point, "role": "point"}]
    assert runs_outside_searches(reader)["id"].tolist() == [1]  # the base run stays in the Runs list
    assert sorted(queries.list_runs(reader)["id"]) == [1, run_id]
    # A point of a --from-run search is a what-if of its base, note and all.
    run = queries.get_run(reader, run_id)
    assert run is not None and run["base_run_id"] == 1
    note = run_meta(run).what_if
    assert note is not None and note.base_run_id == 1
    # The materialized run's summary equals the point's here too (replayed from the base run's requests).
    stored = get_point(reader, sid, point)
    assert stored is not None and run["summary"] == stored["summary"]
    # Deleting the run keeps the point and clears its link.
    delete_run(open_for_write(str(db)), run_id)
    again = get_point(open_for_read(str(db)), sid, point)
    assert again is not None and again["run_id"] is None and again["summary"] == stored["summary"]


def test_materialize_refuses_what_it_cannot_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    jsonl = tmp_path / "w.jsonl"
    jsonl.write_text("".join(json.dumps({"arrival_time": i * 0.05, "prompt_len": 20 + i, "max_tokens": 8}) + "\n"
                             for i in range(20)))
    report = _tune(capsys, db, "--workload", str(jsonl), "--slo", "e2e=5000", "--search", "max_num_seqs=2,4")
    sid = report["search_id"]
    for target, message in ((f"{sid}:9", "has no point 9"), (f"{sid + 5}:0", f"there is no search {sid + 5}")):
        assert main(["--materialize", target, "--db", str(db)]) == 2
        assert message in capsys.readouterr().err
    jsonl.write_text(jsonl.read_text().replace('"max_tokens": 8', '"max_tokens": 9', 1))
    assert main(["--materialize", f"{sid}:0", "--db", str(db)]) == 2
    assert "is not what it was when the search ran" in capsys.readouterr().err
    assert queries.list_runs(open_for_read(str(db))).empty  # nothing half-recorded
    with pytest.raises(SystemExit) as exited:
        main(["--materialize", "3"])
    assert exited.value.code == 2


def test_no_record_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "none.db"
    assert main(["--db", str(db), "--no-record", "--json", "--jobs", "1", "--num-prompts", "20",
                 "--slo", "e2e=5000", "--search", "max_num_seqs=2,4"]) == 0
    assert json.loads(capsys.readouterr().out)["search_id"] is None
    assert not db.exists()


@pytest.mark.slow
def test_validate_records_the_winner_and_a_real_run_of_it_under_the_search(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    report = _tune(capsys, db, "--workload", "mixed", "--num-prompts", "6", "--request-rate", "20",
                   "--slo", "e2e=60000", "--search", "max_num_seqs=2,4", "--validate", "--model", "tiny",
                   "--device", "cpu")
    v = report["validation"]
    assert v["point"] == report["recommended"]["index"]
    reader = open_for_read(str(db))
    real = queries.get_run(reader, v["real_run_id"])
    simulated = queries.get_run(reader, v["simulated_run_id"])
    assert real is not None and real["mode"] == "real" and real["status"] == "finished"
    assert simulated is not None and run_meta(simulated).validation is not None
    assert run_meta(real).validates_run_id == v["simulated_run_id"]
    roles = {r["run_id"]: r["role"] for r in grouped_runs(reader).to_dict("records")}
    assert roles == {v["simulated_run_id"]: "point", v["real_run_id"]: "validation"}
    assert runs_outside_searches(reader).empty
    assert set(v["error_pct"]) == {"output_tokens_per_s", "ttft_p50", "ttft_p99", "e2e_p50", "e2e_p99"}
    search = list_searches(reader).iloc[0]
    assert search["points_materialized"] == 1


def test_the_tune_view_helpers_read_a_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dashboard import launcher, tune_view

    db = tmp_path / "t.db"
    report = _tune(capsys, db, "--workload", "mixed", "--num-prompts", "60", "--request-rate", "30",
                   "--slo", "ttft=200,e2e=2000", "--prune", "slo", *SEARCH)
    reader = open_for_read(str(db))
    table = tune_view.points_table(reader, report["search_id"])
    assert {"max_num_seqs", "enable_chunked_prefill", "goodput", "meets_slo"} <= set(table.columns)
    assert len(table) == 6
    assert tune_view.frontier_table(table)["point"].tolist() == [p["index"] for p in report["frontier"]]
    assert tune_view.search_table(reader)["id"].tolist() == [report["search_id"]]
    assert tune_view.runs_of_search(reader, report["search_id"]).empty
    argv = launcher.materialize_argv(report["search_id"], 3, str(db))
    assert argv[-4:] == ["--materialize", f"{report['search_id']}:3", "--db", str(db)]


def test_a_fresh_process_creates_the_search_tables(tmp_path: Path) -> None:
    """In a new interpreter nothing imported storage.searches before the writer was opened (in this
    test session every module is already loaded, which once hid that the tables were never created)."""
    import subprocess
    import sys

    db = tmp_path / "fresh.db"
    code = ("import sys; from cli.tune import main; sys.exit(main(['--db', sys.argv[1], '--num-prompts', '20', "
            "'--slo', 'e2e=5000', '--search', 'max_num_seqs=2,4', '--jobs', '1']))")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code, str(db)], cwd=root, capture_output=True, text=True,
                          timeout=60, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    searches = list_searches(open_for_read(str(db)))
    assert searches["points_written"].tolist() == [2]


def test_a_point_written_twice_in_one_batch_keeps_its_last_row(tmp_path: Path) -> None:
    """A pruned point simulated again in full can reach write_points in the same batch as its first
    row: one row is kept, the last one, and the other points are untouched."""
    from storage.searches import create_search, write_points

    db = open_for_write(str(tmp_path / "t.db"))
    sid = create_search(db, {"name": "s", "pid": None, "base_run_id": None, "workload": "w",
                             "workload_source": {}, "workload_digest": "d", "base_config": {}, "cost_model": {},
                             "cost_notes": {}, "space": {"max_num_seqs": [2, 4]}, "slo": {}, "backend": "b",
                             "prune": "best", "num_points": 2})

    def row(point: int, status: str, goodput: float | None) -> dict[str, Any]:
        return {"point": point, "params": {"max_num_seqs": 2 + 2 * point}, "config": {}, "status": status,
                "reason": None, "meets_slo": goodput is not None, "goodput": goodput, "attainment": None,
                "output_tokens_per_s": None, "e2e_p99": None, "ttft_p99": None, "tpot_p99": None, "result": {},
                "summary": None}

    write_points(db, sid, [row(0, "pruned", None), row(1, "complete", 3.0), row(0, "complete", 5.0)])
    points = search_points(open_for_read(str(tmp_path / "t.db")), sid)
    assert points[["point", "status", "goodput"]].to_dict("records") == [
        {"point": 0, "status": "complete", "goodput": 5.0}, {"point": 1, "status": "complete", "goodput": 3.0}]
