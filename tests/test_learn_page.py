"""The Learn page in Streamlit's AppTest: every lesson's chart and figures on a database holding
every lesson's simulated runs, its buttons starting the lesson's recording, and an empty or
foreign database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import launcher, learn_view
from dashboard.learn_lessons import LESSONS
from tests.dashboard_fixture import build_lessons
from tests.fake_launches import record_launches

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lessons_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("learn-page") / "lessons.db"
    build_lessons(path)
    return path


@pytest.fixture(autouse=True)
def launched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Buttons start engines: record the command lines instead, as if each were still running."""
    started = record_launches(tmp_path, monkeypatch)
    monkeypatch.setattr(launcher, "wait_for_exit", lambda pid, timeout_s: False)  # still running
    return started


def _open(db: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("BATCHSCOPE_DB", str(db))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("views/learn.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    return "\n".join(str(p) for p in [*parts, *(e.value for e in at.error)])


def test_every_lesson_shows_its_chart_and_the_courses_figures_next_to_its_runs(
        lessons_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _open(lessons_db, monkeypatch)
    assert [h.value for h in at.header] == [f"{n}. {lesson.title}" for n, lesson in enumerate(LESSONS, 1)] + \
        ["Five questions"]
    assert len(at.get("vega_lite_chart")) == len(LESSONS)
    tables = [t.value for t in at.table]
    assert len(tables) == len(LESSONS)
    assert all("the course" in t.columns and not t["check"].str.startswith("✗").any() for t in tables)
    loop = tables[1]
    assert list(loop["the course"][:2]) == ["190", "100"] and list(loop["unit-cost run"][:2]) == ["190 steps",
                                                                                                    "100 steps"]
    assert "tiny (real model)" not in loop.columns  # the fixture records no real runs, and the page says so
    assert _text(at).count("The real `tiny` runs: not recorded yet") == 5
    assert "Not recorded yet" not in _text(at)
    assert _text(at).count("Replay?run=") >= len(LESSONS) + 5  # each lesson's runs, and the five answers


def test_a_lessons_button_starts_its_runs_in_the_background_and_the_lesson_follows_them(
        lessons_db: Path, monkeypatch: pytest.MonkeyPatch, launched: list[list[str]]) -> None:
    at = _open(lessons_db, monkeypatch)
    button = at.button(key="learn_continuous_loop")
    button.click()
    at.run()
    assert not at.exception
    folder = lessons_db.parent / "batchscope-logs" / "learn"
    assert launched == [launcher.LessonRun("continuous_loop").argv(str(lessons_db), folder)]
    assert at.button(key="learn_continuous_loop").disabled
    assert not at.button(key="learn_static_waste").disabled
    assert "Recording: the simulated runs first" in _text(at)


def test_a_recording_that_fails_says_why(lessons_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _open(lessons_db, monkeypatch)
    at.button(key="learn_policies").click()
    monkeypatch.setattr(launcher, "early_failure",
                        lambda launched, wait_s=2.0, ready=None: "error: no space left on device")
    at.run()
    assert "Recording stopped: error: no space left on device" in _text(at)


def test_on_an_empty_database_every_lesson_offers_its_button(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _open(tmp_path / "none.db", monkeypatch)
    assert len([b for b in at.button if b.label == "Record this lesson"]) == len(LESSONS)
    assert _text(at).count("Not recorded yet") == len(LESSONS)
    assert _text(at).count("to see the answer in its runs") == 5
    assert not at.get("vega_lite_chart") and not at.table
    assert learn_view.VIEWS.keys() == {lesson.key for lesson in LESSONS}


def test_a_foreign_database_gets_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    at = _open(db, monkeypatch)
    assert "not a Batchscope one" in _text(at)
