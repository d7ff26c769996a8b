"""ITL as `vllm bench serve` reports it (mean, median, p90, p99 of the pooled inter-token gaps)
reaches every place a run's figures are read: the run's summary text, `runs` (table and JSON) and
the dashboard's runs table, each the figures the run computed (engine/itl.py, tests/test_itl.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cli.main import main as engine_main


@pytest.fixture
def recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, dict[str, float]]:
    path = tmp_path / "itl.db"
    assert engine_main(["simulate", "--db", str(path), "--num-prompts", "40", "--request-rate", "30", "--json"]) == 0
    itl = json.loads(capsys.readouterr().out)["itl_s"]
    assert set(itl) == {"mean", "p50", "p90", "p99"} and itl["p50"] < itl["p90"] <= itl["p99"]
    return path, itl


def test_runs_json_and_table_carry_the_runs_itl(recorded, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    path, itl = recorded
    assert engine_main(["runs", "--db", str(path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    got = {stat: row[f"itl_{stat}"] for stat in ("mean", "p50", "p90", "p99")}
    assert got == pytest.approx(itl, rel=1e-8)  # to_json keeps 10 digits
    assert engine_main(["runs", "--db", str(path)]) == 0
    header, line = capsys.readouterr().out.splitlines()[:2]

    def cell(column: str) -> float:  # numbers are right-aligned under their header (names hold spaces)
        end = header.index(column) + len(column)
        return float(line[:end].split()[-1])

    assert cell("itl_p50_s") == pytest.approx(itl["p50"], abs=5e-4)  # printed to 3 decimals
    assert cell("itl_p99_s") == pytest.approx(itl["p99"], abs=5e-4)


def test_the_summary_text_prints_p90_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert engine_main(["simulate", "--no-record", "--num-prompts", "40", "--request-rate", "30", "--json"]) == 0
    itl = json.loads(capsys.readouterr().out)["itl_s"]
    assert engine_main(["simulate", "--no-record", "--num-prompts", "40", "--request-rate", "30"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("ITL (ms)"))
    printed = dict(re.findall(r"(mean|p50|p90|p99)\s+([\d.]+)", line))
    assert {k: float(v) for k, v in printed.items()} == pytest.approx({k: v * 1e3 for k, v in itl.items()},
                                                                      abs=0.005)


def test_the_dashboard_runs_table_shows_itl_p50_and_p99(recorded) -> None:  # type: ignore[no-untyped-def]
    from dashboard import runs_table
    from storage.database import open_for_read
    from storage.queries import list_runs

    path, itl = recorded
    shown = runs_table.display(list_runs(open_for_read(str(path))))
    assert shown["itl_ms"].iloc[0] == pytest.approx(itl["p50"] * 1e3)
    assert shown["itl_p99_ms"].iloc[0] == pytest.approx(itl["p99"] * 1e3)
    assert runs_table.COLUMN_CONFIG["itl_p99_ms"]["label"] == "ITL p99 ms"
