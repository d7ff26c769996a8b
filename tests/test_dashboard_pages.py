"""Every page, in Streamlit's AppTest, against recorded fixture runs of every kind."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import charts, launcher, run_meta
from dashboard.settings import LIVE_WINDOW_STEPS
from storage import queries
from storage.database import open_for_read
from storage.queries import get_run
from tests.dashboard_fixture import SERVED_URL, build, record_live, record_served
from tests.recording import record_simulation

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("views/runs.py", "views/live.py", "views/replay.py", "views/what_if.py", "views/curves.py", "views/tune.py")


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    path = tmp_path_factory.mktemp("dash") / "fixture.db"
    return path, build(path)


@pytest.fixture(autouse=True)
def no_real_launches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Pages may start engines (the first-launch demo starts one on an empty database): record the
    command lines instead of running them, so no page test loads a model."""
    launched: list[list[str]] = []

    def fake_launch(argv: list[str], label: str) -> launcher.Launched:
        launched.append(argv)
        return launcher.Launched(pid=999_999, log_path=tmp_path / f"{label}.log", argv=argv)

    monkeypatch.setattr(launcher, "launch", fake_launch)
    return launched


def _open(page: str, db: Path, monkeypatch: pytest.MonkeyPatch, run_id: int | None = None) -> AppTest:
    monkeypatch.setenv("BATCHSCOPE_DB", str(db))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    if run_id is not None:
        at.query_params["run"] = str(run_id)
    at.run()
    if page != PAGES[0]:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _charts(at: AppTest) -> int:
    return len(at.get("vega_lite_chart"))


def _text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    parts += [w.value for w in at.warning] + [e.value for e in at.error] + [s.value for s in at.subheader]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("kind", ["continuous", "static", "recompute", "swap", "chunked", "live", "interrupted",
                                  "what_if", "served"])
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_every_kind_of_run(page: str, kind: str, fixture_db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, ids = fixture_db
    at = _open(page, db, monkeypatch, ids[kind])
    if page in ("views/live.py", "views/replay.py"):
        assert _charts(at) >= 5
        assert f"#{ids[kind]} " in at.selectbox[0].value.__str__() or at.selectbox[0].value == ids[kind]


def test_runs_page_lists_every_run_with_its_status(fixture_db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, ids = fixture_db
    at = _open(PAGES[0], db, monkeypatch)
    table = at.dataframe[0].value
    assert set(table["id"]) >= set(ids.values())
    status = dict(zip(table["id"], table["status"], strict=True))
    assert status[ids["interrupted"]] == "interrupted"
    assert status[ids["continuous"]] == "finished"
    assert table.set_index("id").loc[ids["what_if"], "based_on"] == ids["continuous"]


def test_live_page_follows_a_rotating_server_into_its_next_part(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "rotated.db"
    first = record_served(str(db))
    second = record_served(str(db), previous_run_id=first)
    at = _open("views/live.py", db, monkeypatch, first)
    assert at.query_params["run"] == [str(second)] or at.query_params["run"] == str(second)
    assert at.selectbox(key="live_run").value == second
    paused = _open("views/live.py", db, monkeypatch, first)
    paused.toggle[0].set_value(False).run()  # not following: the page stays where it was put
    paused.selectbox(key="live_run").set_value(first).run()
    assert paused.selectbox(key="live_run").value == first


def test_live_page_explains_an_interrupted_run(fixture_db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, ids = fixture_db
    at = _open("views/live.py", db, monkeypatch, ids["interrupted"])
    assert "stopped writing without finishing" in _text(at)


def test_live_page_shows_what_a_served_run_serves_and_its_arrival_rate(fixture_db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, ids = fixture_db
    run_id = ids["served"]
    at = _open("views/live.py", db, monkeypatch, run_id)
    assert f"the OpenAI API at `{SERVED_URL}/v1`" in _text(at)
    conn = sqlite3.connect(db)  # the live window, and the arrivals in it, straight from the tables
    start, end = conn.execute("SELECT MIN(start_time), MAX(end_time) FROM (SELECT start_time, end_time FROM steps "
                              "WHERE run_id = ? ORDER BY step DESC LIMIT ?)", (run_id, LIVE_WINDOW_STEPS)).fetchone()
    arrived = conn.execute("SELECT COUNT(*) FROM requests WHERE run_id = ? AND arrival_time BETWEEN ? AND ?",
                           (run_id, start, end)).fetchone()[0]
    conn.close()
    assert arrived > 0
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["arrivals/s"].strip() == f"{arrived / (end - start):,.1f}"
    workload_run = _open("views/live.py", db, monkeypatch, ids["continuous"])
    assert "arrivals/s" not in {m.label for m in workload_run.metric}
    assert "OpenAI API" not in _text(workload_run)


def _padding_drawn(db: Path, run_id: int) -> tuple[float, float]:
    """(padding tokens the token-mix chart draws over the whole run, those the run's summary counts)."""
    reader = open_for_read(str(db))
    try:
        run = get_run(reader, run_id)
        assert run is not None
        steps = queries.steps_window(reader, run_id, 0, int(run["num_steps"]) - 1)
    finally:
        reader.dispose()
    spec = charts.token_mix(steps, run["config"].get("max_num_batched_tokens")).to_dict()
    rows = [r for values in spec["datasets"].values() for r in values if r.get("kind") == "padding"]
    return sum(r["tokens"] for r in rows), float(run["summary"]["num_padding_tokens"])


def test_the_token_mix_draws_static_batchings_padding_and_the_summary_counts_it(fixture_db) -> None:  # type: ignore[no-untyped-def]
    db, ids = fixture_db
    drawn, counted = _padding_drawn(db, ids["static"])
    assert counted > 0 and drawn == counted
    assert _padding_drawn(db, ids["continuous"]) == (0, 0)  # continuous batching pads nothing


def test_a_static_runs_headline_gives_its_padding_share(fixture_db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, ids = fixture_db
    reader = open_for_read(str(db))
    try:
        static, continuous = get_run(reader, ids["static"]), get_run(reader, ids["continuous"])
    finally:
        reader.dispose()
    headline = run_meta.headline(static)  # type: ignore[arg-type]
    assert headline is not None and headline.padding_share is not None and 0 < headline.padding_share < 1
    assert run_meta.headline(continuous).padding_share is None  # type: ignore[arg-type, union-attr]
    at = _open("views/replay.py", db, monkeypatch, ids["static"])
    assert f"{headline.padding_share:.0%}" in _text(at)


def test_replay_of_a_served_run_sets_the_clients_timing_beside_the_servers(fixture_db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, ids = fixture_db
    at = _open("views/replay.py", db, monkeypatch, ids["served"])
    assert "What the benchmark client measured" in _text(at)
    table = at.dataframe[-1].value
    ttft = table[table["metric"] == "TTFT p50"].iloc[0]
    assert ttft["requests"] == 10 and ttft["client (ms)"] == pytest.approx(14.5)  # client TTFTs 10..19 ms
    reader = open_for_read(str(db))
    try:
        served = queries.run_requests(reader, ids["served"])
    finally:
        reader.dispose()
    first_ten = served[served["request_id"].isin([f"r{i}" for i in range(10)])]
    server_ttft = (first_ten["first_token_time"] - first_ten["arrival_time"]).median() * 1000
    assert ttft["server (ms)"] == pytest.approx(server_ttft)
    assert "What the benchmark client measured" not in _text(_open("views/replay.py", db, monkeypatch,
                                                                   ids["continuous"]))


def test_what_if_with_only_a_running_run_says_what_it_waits_for(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "live-only.db"
    record_live(str(db), tmp_path)
    at = _open("views/what_if.py", db, monkeypatch)
    assert "starts from a run that has ended" in _text(at)


def test_replay_shows_the_swap_pool_for_a_swap_run(fixture_db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, ids = fixture_db
    at = _open("views/replay.py", db, monkeypatch, ids["swap"])
    assert "CPU swap pool" in _text(at)


def test_what_if_page_shows_the_self_check_before_the_prediction(fixture_db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, ids = fixture_db
    at = _open("views/what_if.py", db, monkeypatch, ids["continuous"])
    text = _text(at)
    assert text.index("How far to trust it") < text.index("Predicted vs recorded")
    assert "under its own configuration" in text
    tables = [d.value for d in at.dataframe]
    self_check = tables[0]
    assert list(self_check["metric"])[:1] == ["output tokens/s"]
    assert self_check["error %"].abs().max() < 1e-6  # a simulated base run replays exactly
    assert _charts(at) == 4


def test_curves_page_draws_the_sweep_and_the_static_comparison(fixture_db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, _ = fixture_db
    at = _open("views/curves.py", db, monkeypatch)
    assert _charts(at) == 5
    sweep_table = next(d.value for d in at.dataframe if "value_label" in d.value.columns)
    assert sorted(sweep_table["value_label"].astype(int)) == [2, 8, 32]


def test_first_launch_on_an_empty_database_starts_a_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    launched: list[list[str]] = []

    def fake_launch(argv: list[str], label: str) -> launcher.Launched:
        launched.append(argv)
        return launcher.Launched(pid=999_999, log_path=tmp_path / "demo.log", argv=argv)

    monkeypatch.setattr(launcher, "launch", fake_launch)
    monkeypatch.setattr(launcher, "early_failure", lambda launched, wait_s=2.0, ready=None: None)
    import views  # noqa: F401  (the page module reads launcher at run time)

    at = _open(PAGES[0], tmp_path / "new.db", monkeypatch)
    assert "No runs yet" in _text(at) and "Starting a demo run" in _text(at)
    assert len(launched) == 1
    argv = launched[0]
    assert argv[1:4] == ["-m", "engine", "run"] and "--model" in argv and argv[argv.index("--model") + 1] == "tiny"
    assert not (tmp_path / "new.db").exists()  # the page itself never creates the database


@pytest.mark.parametrize("page", PAGES[1:])
def test_other_pages_on_an_empty_database_say_so(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _open(page, tmp_path / "none.db", monkeypatch)
    assert "No runs recorded yet" in _text(at)


@pytest.mark.parametrize("page", PAGES)
def test_a_foreign_database_gets_a_clear_message(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    at = _open(page, db, monkeypatch)
    assert "not a Batchscope one" in _text(at)


def test_a_corrupt_database_gets_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "broken.db"
    db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    at = _open("views/replay.py", db, monkeypatch)
    assert "Cannot read the database" in _text(at)


def test_the_run_form_refuses_bad_values() -> None:
    with pytest.raises(launcher.LaunchError, match="max_num_seqs must be a whole number from 1 to 1024"):
        launcher.RunForm(max_num_seqs=0).validate()
    with pytest.raises(launcher.LaunchError, match="model must be one of tiny, smollm2"):
        launcher.RunForm(model="/etc/passwd").validate()
    with pytest.raises(launcher.LaunchError, match="preemption_mode=swap needs a CPU swap pool"):
        launcher.RunForm(preemption_mode="swap", swap_space=0).validate()
    form = launcher.RunForm(name="x; rm -rf /")
    form.validate()
    argv = form.argv("/tmp/db.sqlite")
    assert argv[argv.index("--name") + 1] == "x; rm -rf /"  # one argv element, never a shell string


def test_the_dashboard_listens_on_loopback_only() -> None:
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["allowedHosts"] == ["localhost", "127.0.0.1"]
    assert config["server"]["enableXsrfProtection"] is True and config["server"]["enableCORS"] is True
    assert config["browser"]["gatherUsageStats"] is False


def test_a_table_from_another_layout_stops_the_page_with_a_message(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "old.db"
    record_simulation(db, num_requests=20)
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE kv_block_keyframes")
    conn.commit()
    conn.close()
    at = _open("views/replay.py", db, monkeypatch, 1)
    assert "Cannot read the database: no such table: kv_block_keyframes" in _text(at)


def test_the_demo_starts_once_however_many_pages_and_tabs_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                no_real_launches: list[list[str]]) -> None:
    db = tmp_path / "new.db"
    at = _open(PAGES[0], db, monkeypatch)
    at.run()
    at.switch_page("views/live.py")
    at.run()
    _open("views/replay.py", db, monkeypatch)  # a second browser tab
    assert len(no_real_launches) == 1


def test_no_demo_starts_on_a_database_that_has_runs_or_is_not_ours(fixture_db, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                    monkeypatch, no_real_launches) -> None:
    db, _ = fixture_db
    _open(PAGES[0], db, monkeypatch)
    foreign = tmp_path / "other.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    _open(PAGES[0], foreign, monkeypatch)
    assert no_real_launches == []


def test_the_run_form_shows_the_engines_config_error_and_starts_nothing(fixture_db, monkeypatch,  # type: ignore[no-untyped-def]
                                                                         no_real_launches) -> None:
    db, _ = fixture_db
    at = _open(PAGES[0], db, monkeypatch)
    next(n for n in at.number_input if n.label == "max_num_seqs").set_value(512)
    next(n for n in at.number_input if n.label == "max_num_batched_tokens").set_value(256)
    next(b for b in at.button if b.label == "Start run").click()
    at.run()
    errors = [e.value for e in at.error]
    assert any("Raise max_num_batched_tokens or lower max_num_seqs" in e for e in errors), errors
    assert no_real_launches == []


def test_curves_compares_static_with_the_continuous_run_of_the_same_parameters(fixture_db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, ids = fixture_db
    at = _open("views/curves.py", db, monkeypatch)
    assert next(s for s in at.selectbox if s.label == "Static run").value == ids["static"]
    assert next(s for s in at.selectbox if s.label == "Continuous run").value == ids["continuous"]
