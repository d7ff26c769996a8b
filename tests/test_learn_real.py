"""A Learn lesson's real runs: the `tiny` model, recorded through the lesson's own command lines,
takes exactly the steps the unit-cost simulation took (one scheduler), and the page puts them
beside the course's figures with the seconds they cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main as cli
from dashboard import launcher, learn, learn_plan
from dashboard import learn_textbook as textbook
from dashboard.learn_view import figures_table

pytestmark = pytest.mark.slow


def test_the_tiny_model_takes_the_same_190_and_100_steps_and_the_page_shows_their_seconds(tmp_path: Path) -> None:
    db, folder = str(tmp_path / "lessons.db"), tmp_path / "learn"
    learn_plan.write_workloads("continuous_loop", folder)
    commands = launcher.LessonRun("continuous_loop").commands(db, folder)
    assert [c.real for c in commands] == [False, True]
    for command in commands:
        assert cli(command.argv[3:]) == 0
    runs = learn.lesson_runs(db)
    assert textbook.loop_steps(db, runs, learn_plan.LOOP_TINY) == {"static": 190, "continuous": 100}
    view = textbook.loop_view(db, runs)
    assert view is not None
    table = figures_table(view)
    tiny = list(table["tiny (real model)"])
    assert tiny[0].startswith("190 steps in ") and tiny[1].startswith("100 steps in ") and "less time" in tiny[2]
    assert {"static (tiny)", "continuous (tiny)"} <= set(view.links)
