"""The Tune page (and the Runs page's search groups) in Streamlit's AppTest, on a database holding
a recorded run, a search that meets its SLOs with its winner recorded as a run, and one that cannot."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from cli.main import main as engine_main
from cli.tune import main as tune_main
from dashboard import data, launcher
from tests.fake_launches import record_launches

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ("--search", "max_num_seqs=2,8,32", "enable_chunked_prefill=true,false")


def _stdout(main: Any, *argv: str) -> str:
    """Run a command's main and return what it printed (a module-scoped fixture has no capsys)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


def _simulated_run(db: Path, num_prompts: int) -> None:
    _stdout(engine_main, "simulate", "--db", str(db), "--num-prompts", str(num_prompts), "--request-rate", "20")


@pytest.fixture(scope="module")
def tune_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Run 1 recorded; search `met` over it meets its SLOs and its winner is recorded as a run;
    search `missed` (a 1 ms TTFT) cannot."""
    db = tmp_path_factory.mktemp("tune-page") / "tune.db"
    _simulated_run(db, 40)

    def tune(*argv: str) -> dict[str, Any]:
        return dict(json.loads(_stdout(tune_main, *argv, "--db", str(db), "--json", "--jobs", "1")))

    met = tune("--from-run", "1", "--slo", "e2e=3000", *SEARCH)
    missed = tune("--from-run", "1", "--slo", "ttft=1", "--name", "too tight", *SEARCH)
    done = _stdout(tune_main, "--materialize", f"{met['search_id']}:{met['recommended']['index']}", "--db", str(db),
                   "--json")
    return db, {"met": met, "missed": missed, "materialized": json.loads(done)["run_id"]}


@pytest.fixture(autouse=True)
def launched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Buttons start engines: record the command lines instead, as if each had finished."""
    started = record_launches(tmp_path, monkeypatch)
    return started


def _open(db: Path, monkeypatch: pytest.MonkeyPatch, page: str = "views/tune.py",
          search: int | None = None) -> AppTest:
    monkeypatch.setenv("BATCHSCOPE_DB", str(db))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    if search is not None:
        at.query_params["search"] = str(search)
    at.run()
    if page != "views/runs.py":
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    parts += [w.value for w in at.warning] + [e.value for e in at.error] + [s.value for s in at.success]
    return "\n".join(str(p) for p in [*parts, *(s.value for s in at.subheader)])


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: str(m.value) for m in at.metric}


def _counts_in_db(db: Path, search_id: int) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT status, COUNT(*) FROM search_points WHERE search_id = ? GROUP BY status",
                            (search_id,)).fetchall()
    return dict(rows)


def test_the_page_opens_on_the_newest_search_with_the_databases_counts(tune_db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, made = tune_db
    at = _open(db, monkeypatch)
    missed = made["missed"]["search_id"]
    assert at.selectbox[0].value == missed
    metrics = _metrics(at)
    in_db = _counts_in_db(db, missed)
    assert {s: int(metrics[s]) for s in ("complete", "pruned", "invalid", "failed")} == \
        {s: in_db.get(s, 0) for s in ("complete", "pruned", "invalid", "failed")}
    assert metrics["configurations"] == "6 / 6" and metrics["meet the SLOs"] == "0"
    assert len(at.get("vega_lite_chart")) == 1
    assert "TTFT ≤ 1 ms for 99% of requests" in _text(at)
    assert f"**Step costs**: “{made['missed']['cost_model']}”" in _text(at)  # what every point was priced with


def test_a_search_named_in_the_url_shows_its_recommended_point_and_the_run_it_was_recorded_as(
        tune_db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, made = tune_db
    met = made["met"]
    with sqlite3.connect(db) as conn:
        recommended, = conn.execute("SELECT recommended_point FROM searches WHERE id = ?",
                                    (met["search_id"],)).fetchone()
        goodput, = conn.execute("SELECT goodput FROM search_points WHERE search_id = ? AND point = ?",
                                (met["search_id"], recommended)).fetchone()
    at = _open(db, monkeypatch, search=met["search_id"])
    assert at.selectbox[0].value == met["search_id"]
    assert len(at.success) == 1 and at.success[0].value.startswith(f"**Recommended: point {recommended}**: ")
    assert _metrics(at)["goodput"] == f"{goodput:,.2f} req/s"
    assert not any("No configuration meets" in w.value for w in at.warning)
    in_db = _counts_in_db(db, met["search_id"])
    assert int(_metrics(at)["complete"]) == in_db.get("complete", 0)
    assert at.selectbox(key=f"tune_point_{met['search_id']}").value == recommended
    link = f"Open point {recommended} in Replay (run #{made['materialized']})"
    assert link in [p.proto.label for p in at.get("page_link")]
    assert at.dataframe[0].value["point"].tolist() == list(range(6))


def test_when_nothing_meets_the_slos_the_page_shows_the_closest_point_and_by_how_much(
        tune_db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, made = tune_db
    missed = made["missed"]
    closest = missed["closest"]
    at = _open(db, monkeypatch, search=missed["search_id"])
    assert len(at.success) == 0
    warning = at.warning[0].value
    assert warning.startswith("**No configuration meets the SLOs.** Closest: **point "
                              f"{closest['index']}**")
    assert f"{closest['miss']['short_by']} more of 40 requests would have to meet them" in warning
    table = at.dataframe[0].value
    assert table["SLO"].tolist() == ["TTFT"]
    assert table["threshold (ms)"].tolist() == [1.0]
    assert table["over by (%)"].iloc[0] == pytest.approx(closest["miss"]["per_slo"]["ttft"]["over_pct"])


def test_recording_a_point_launches_tune_materialize_for_it(tune_db, monkeypatch, launched) -> None:  # type: ignore[no-untyped-def]
    db, made = tune_db
    missed = made["missed"]
    at = _open(db, monkeypatch, search=missed["search_id"])
    at.button(key="tune_materialize").click()
    at.run()
    assert launched == [launcher.materialize_argv(missed["search_id"], missed["closest"]["index"], str(db))]


def test_the_form_starts_a_search_from_a_recorded_run(tune_db, monkeypatch, launched) -> None:  # type: ignore[no-untyped-def]
    db, _ = tune_db
    at = _open(db, monkeypatch)
    at.text_input(key="tune_seqs").set_value("4, 8")
    at.button[-1].click()
    at.run()
    assert not at.error
    assert len(launched) == 1
    argv = launched[0]
    assert argv[argv.index("--from-run") + 1] == "1"
    assert argv[argv.index("--slo") + 1] == "ttft=500,e2e=5000"
    assert argv[argv.index("--search") + 1:] == ["max_num_seqs=4,8", "max_num_batched_tokens=256,512,1024,2048",
                                                 "enable_chunked_prefill=true,false"]  # the default: any base works
    assert argv[argv.index("--fit") + 1] == "run"


def test_the_form_can_price_a_search_with_the_pooled_fit(tune_db, monkeypatch, launched) -> None:  # type: ignore[no-untyped-def]
    db, _ = tune_db
    at = _open(db, monkeypatch)
    at.radio(key="tune_fit").set_value("pooled")
    at.button[-1].click()
    at.run()
    argv = launched[0]
    assert argv[argv.index("--fit") + 1] == "pooled"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("tune_seqs", "4,lots", "Not started: values of max_num_seqs must be numbers in the form's range; got 'lots'"),
    ("tune_ttft", 0.0, "Not started: give at least one SLO threshold"),
])
def test_a_bad_search_request_says_what_is_wrong_and_starts_nothing(
        field: str, value: Any, message: str, tune_db, monkeypatch, launched) -> None:  # type: ignore[no-untyped-def]
    db, _ = tune_db
    at = _open(db, monkeypatch)
    if field == "tune_ttft":
        at.number_input(key="tune_e2e").set_value(0.0)
        at.number_input(key=field).set_value(value)
    else:
        at.text_input(key=field).set_value(value)
    at.button[-1].click()
    at.run()
    assert [e.value for e in at.error] and at.error[0].value.startswith(message)
    assert launched == []


def test_without_searches_the_page_says_how_to_start_one(tmp_path: Path, monkeypatch, launched) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "runs-only.db"
    _simulated_run(db, 20)
    at = _open(db, monkeypatch)
    assert "No searches yet" in [s.value for s in at.subheader]
    assert "python -m engine tune --from-run RUN --slo" in at.info[0].value
    assert at.expander[0].proto.expanded
    assert len(at.get("vega_lite_chart")) == 0 and not at.metric
    at.button[-1].click()
    at.run()
    assert launched and launched[0][2:4] == ["engine", "tune"]


def test_the_runs_page_lists_a_materialized_point_under_its_search_not_in_the_main_list(
        tune_db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, made = tune_db
    at = _open(db, monkeypatch, page="views/runs.py")
    assert at.dataframe[0].value["id"].tolist() == [1]
    sid = made["met"]["search_id"]
    assert [e.label for e in at.expander][:1] == [f"search {sid}: 1 run · tune replay of run 1: 40 recorded requests"]
    grouped = at.dataframe[1].value
    assert grouped["id"].tolist() == [made["materialized"]]
    assert grouped["point"].tolist() == [made["met"]["recommended"]["index"]]
    assert grouped["role"].tolist() == ["point"]
    assert grouped["replay"].tolist() == [f"Replay?run={made['materialized']}"]
    assert at.dataframe[0].value["source"].tolist() == ["workload"]


def test_a_running_search_is_followed_as_its_points_are_written(tune_db, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from storage.searches import utcnow

    source, made = tune_db
    db = tmp_path / "copy.db"  # the module's database stays as it is (copied with its WAL)
    with sqlite3.connect(source) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    search_id = made["met"]["search_id"]
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE searches SET status = 'running', recommended_point = NULL, heartbeat_at = ? WHERE id = ?",
                     (utcnow().isoformat(sep=" "), search_id))
    at = _open(db, monkeypatch, search=search_id)
    assert "This search is still running: its points appear here as they are written." in _text(at)
    assert not at.success  # nothing is recommended while it runs
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE searches SET status = 'finished', recommended_point = ? WHERE id = ?",
                     (made["met"]["recommended"]["index"], search_id))
    data.search.clear()  # what the page's next refresh reads once the cache's second has passed
    at.run()
    assert "still running" not in _text(at) and len(at.success) == 1
