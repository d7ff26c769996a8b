"""`python -m engine runs` leaves out the runs of configuration searches unless --all, and says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main as engine_main
from cli.tune import main as tune_main


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, int, int, int]:
    """Run 1 recorded, a search over it, and its recommended point recorded as a run: db, search,
    point, that run."""
    path = tmp_path / "t.db"
    assert engine_main(["simulate", "--db", str(path), "--num-prompts", "30", "--request-rate", "20"]) == 0
    capsys.readouterr()
    assert tune_main(["--from-run", "1", "--slo", "e2e=3000", "--search", "max_num_seqs=2,8", "--db", str(path),
                      "--json", "--jobs", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    sid, point = report["search_id"], report["recommended"]["index"]
    assert tune_main(["--materialize", f"{sid}:{point}", "--db", str(path), "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    return path, sid, point, run_id


def _ids(text: str) -> list[int]:
    """The run ids of a printed table: its rows' first column (a row's second is the run's status)."""
    rows = [line.split() for line in text.splitlines()[1:]]
    return [int(r[0]) for r in rows if len(r) > 1 and r[1] in ("finished", "running", "failed", "aborted")]


def test_runs_hides_the_runs_of_searches_and_says_how_many(db, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    path = db[0]
    assert engine_main(["runs", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert _ids(out) == [1]
    assert out.splitlines()[-1] == ("1 run of configuration searches not shown (--all shows them; the dashboard "
                                    "lists them under their search)")
    assert "source" in out.splitlines()[0] and "search" not in out.splitlines()[0].split()


def test_runs_all_lists_them_with_their_search_and_point(db, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    path, sid, point, run_id = db
    assert engine_main(["runs", "--db", str(path), "--all"]) == 0
    out = capsys.readouterr().out
    assert sorted(_ids(out)) == [1, run_id]
    assert out.splitlines()[0].split()[-1] == "search"
    row = next(line for line in out.splitlines() if line.split()[0] == str(run_id))
    assert row.split()[-1] == f"{sid}:{point}"
    assert "not shown" not in out


def test_runs_json_follows_the_same_rule(db, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    path, sid, point, run_id = db
    assert engine_main(["runs", "--db", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    assert [r["id"] for r in json.loads(captured.out)] == [1]
    assert "1 run of configuration searches not shown" in captured.err
    assert engine_main(["runs", "--db", str(path), "--json", "--all"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[run_id]["search"] == f"{sid}:{point}" and rows[1]["search"] is None
