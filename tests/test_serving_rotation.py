"""`serve --rotate-every`: steps or a duration (90s, 30m, 1h) parsed, bad values refused in one line,
and a duration that rotates a simulated server's recording by the clock."""

from __future__ import annotations

import time
from pathlib import Path

import httpx2
import pytest

from cli.main import build_parser
from engine.online import Rotation
from serving.generation import RUN_ID_HEADER
from tests.serving_helpers import previous_run, recorded_requests, recorded_run, serve, simulated


def _rotation(value: str) -> Rotation:
    rotation = build_parser().parse_args(["serve", "--rotate-every", value]).rotate_every
    assert isinstance(rotation, Rotation)
    return rotation


@pytest.mark.parametrize(("value", "steps", "seconds"), [
    ("500", 500, None), ("3s", None, 3.0), ("0.5s", None, 0.5), ("90s", None, 90.0), ("30m", None, 1800.0),
    ("1h", None, 3600.0), ("1.5h", None, 5400.0),
])
def test_rotate_every_takes_steps_or_a_duration(value: str, steps: int | None, seconds: float | None) -> None:
    rotation = _rotation(value)
    assert (rotation.every_steps, rotation.every_seconds) == (steps, seconds)


@pytest.mark.parametrize("value", ["0", "0s", "-5", "-5s", "1.5", "1d", "1H", "h", "1 h", "", "1e3s", "²", "inf"])
def test_a_bad_rotate_every_is_refused_in_one_line(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["serve", f"--rotate-every={value}"])  # = keeps "-5s" from looking like a flag
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: argument --rotate-every: ")
    assert "expected a number of steps or a duration such as 90s, 30m or 1h" in err and repr(value) in err


def test_a_duration_rotates_the_recording_by_the_clock(tmp_path: Path) -> None:
    db = tmp_path / "rot.db"
    every_s = 1.0
    with serve(simulated(), db, rotation=_rotation(f"{every_s:g}s")) as server:
        url = f"{server.url}/v1/completions"

        def run_of(rid: str) -> int:
            response = httpx2.post(url, json={"prompt": "hi", "max_tokens": 2}, headers={"x-request-id": rid},
                                   timeout=30)
            assert response.status_code == 200, response.text
            return int(response.headers[RUN_ID_HEADER])

        started = time.monotonic()
        first = run_of("a")
        second = run_of("b")
        assert time.monotonic() - started < every_s, "too slow a machine to see both in the first second"
        assert second == first  # within the duration: the same run
        time.sleep(every_s - (time.monotonic() - started) + 0.1)
        third = run_of("c")
        assert third == first + 1  # past it: the next request opens a new run
        assert run_of("d") == third
        assert "a new run every 1 s" in (server.run_description()["workload"])
    assert list(recorded_requests(db, first)["request_id"]) == ["a", "b"]
    assert list(recorded_requests(db, third)["request_id"]) == ["c", "d"]
    assert previous_run(recorded_run(db, third)) == first
    assert recorded_run(db, first)["status"] == "finished"
