"""Bad input a new user might give: one line `error: ...`, exit status 2, nothing created or half-written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from cli.main import main
from storage.database import open_for_read
from storage.queries import list_runs
from tests.recording import record_simulation


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """Root ignores permission bits, so there the immutable attribute (which binds root too) stands in."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
        pytest.skip("running as root on a filesystem without the immutable attribute")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    db = tmp_path / "runs.db"
    record_simulation(db, num_requests=5)
    return db


# -- databases ----------------------------------------------------------------------------------
def test_recording_into_a_read_only_database_is_refused_before_anything_runs(
        recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = recorded.read_bytes()
    with _read_only(recorded):
        code, err = _cli(capsys, "simulate", "--num-prompts", "3", "--db", str(recorded))
        assert code == 2
        assert _one_error_line(err) == (f"error: {recorded} is read-only: point --db at a file you can write, "
                                        "or make this one writable")
        code, err = _cli(capsys, "delete", "1", "--db", str(recorded))
        assert code == 2 and "read-only" in _one_error_line(err)
        assert _cli(capsys, "runs", "--db", str(recorded))[0] == 0  # reading still works
    assert recorded.read_bytes() == before


def test_a_new_database_in_a_read_only_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    with _read_only(folder):
        code, err = _cli(capsys, "simulate", "--num-prompts", "3", "--db", str(folder / "new.db"))
    assert code == 2
    assert _one_error_line(err) == f"error: cannot create {folder / 'new.db'}: folder {folder} is read-only"
    assert list(folder.iterdir()) == []


def test_a_database_in_a_read_only_folder_can_still_be_read(recorded: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    shutil.copy(recorded, folder / "old.db")
    with _read_only(folder):
        code = main(["runs", "--db", str(folder / "old.db")])
        out = capsys.readouterr().out
        assert code == 0 and "test run" in out
    assert sorted(p.name for p in folder.iterdir()) == ["old.db"]


@pytest.mark.parametrize(("url", "says"), [
    ("foo://x", "unknown database kind 'foo'"),
    ("postgresql://a:b@[::1", "neither a file path nor a database URL SQLAlchemy can parse"),
    ("sqlite://x/y", "is not a usable database URL (Invalid SQLite URL"),
])
@pytest.mark.parametrize("command", [["simulate", "--num-prompts", "3"], ["runs"], ["delete", "1"],
                                     ["export", "1", "-o", "t.json"]])
def test_database_urls_that_cannot_work_get_one_line(url: str, says: str, command: list[str], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _cli(capsys, *command, "--db", url)
    assert code == 2
    assert says in _one_error_line(err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [
    ["delete", "1"],
    ["export", "1", "-o", "run1.json"],
    ["simulate", "--from-run", "1"],
    ["sweep", "--param", "max_num_seqs", "--values", "2,4", "--from-run", "1"],
    ["tune", "--materialize", "1:0"],
])
def test_commands_that_read_or_delete_never_create_a_database(command: list[str], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _cli(capsys, *command, "--db", "mistyped.db")
    assert code == 2
    assert "mistyped.db" in _one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_listing_runs_of_a_missing_database_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _cli(capsys, "runs", "--db", "mistyped.db")
    assert code == 0 and "no runs recorded yet (no database at" in err
    assert list(tmp_path.iterdir()) == []


# -- sweeps -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("param", "values", "says"), [
    ("max_num_seqs", "4,0", "max_num_seqs=0 is not a valid configuration, so no run was started"),
    ("max_num_batched_tokens", "4096,100", "max_num_batched_tokens=100 is not a valid configuration"),
    ("request_rate", "4,nan", "request_rate values must be > 0"),
])
def test_a_sweep_checks_every_value_before_any_run(param: str, values: str, says: str, recorded: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(capsys, "sweep", "--param", param, "--values", values, "--num-prompts", "3",
                     "--db", str(recorded))
    assert code == 2
    assert says in _one_error_line(err)
    assert len(list_runs(open_for_read(str(recorded)))) == 1  # only the run recorded before


# -- exports ------------------------------------------------------------------------------------
def test_export_into_a_missing_folder_says_so_and_creates_nothing(recorded: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for fmt, out in (("chrome-trace", tmp_path / "no" / "run.json"), ("csv", tmp_path / "no" / "csv")):
        code, err = _cli(capsys, "export", "1", "--format", fmt, "-o", str(out), "--db", str(recorded))
        assert code == 2
        assert _one_error_line(err) == (f"error: cannot write {out}: folder {out.parent} does not exist "
                                        "(create it first)")
    assert not (tmp_path / "no").exists()


def test_export_into_a_read_only_folder_says_so(recorded: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    with _read_only(folder):
        code, err = _cli(capsys, "export", "1", "-o", str(folder / "run.json"), "--db", str(recorded))
    assert code == 2
    assert _one_error_line(err) == f"error: cannot write {folder / 'run.json'}: folder {folder} is read-only"
    assert list(folder.iterdir()) == []


def test_export_keeps_an_existing_file_unless_forced(recorded: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "notes.json"
    out.write_text("my notes")
    code, err = _cli(capsys, "export", "1", "-o", str(out), "--db", str(recorded))
    assert code == 2 and "already exists; pass --force" in _one_error_line(err)
    assert out.read_text() == "my notes"
    assert _cli(capsys, "export", "1", "-o", str(out), "--force", "--db", str(recorded))[0] == 0
    assert json.loads(out.read_text())["otherData"]["run_id"] == 1


def test_export_never_overwrites_the_database_it_reads(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = recorded.read_bytes()
    for extra in ([], ["--force"]):
        code, err = _cli(capsys, "export", "1", "-o", str(recorded), *extra, "--db", str(recorded))
        assert code == 2 and "is the database being exported from" in _one_error_line(err)
    assert recorded.read_bytes() == before


def test_csv_export_keeps_existing_csv_files_unless_forced(recorded: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "steps.csv").write_text("mine")
    code, err = _cli(capsys, "export", "1", "--format", "csv", "-o", str(folder), "--db", str(recorded))
    assert code == 2 and "already holds steps.csv; pass --force" in _one_error_line(err)
    assert (folder / "steps.csv").read_text() == "mine"
    code, err = _cli(capsys, "export", "1", "--format", "csv", "-o", str(recorded), "--db", str(recorded))
    assert code == 2 and "is the database being exported from" in _one_error_line(err)
    assert _cli(capsys, "export", "1", "--format", "csv", "-o", str(folder), "--force", "--db", str(recorded))[0] == 0
    assert len(pd.read_csv(folder / "requests.csv")) == 5


def test_a_failed_export_leaves_the_old_file_and_no_partial_one(recorded: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run.json"
    out.write_text("previous export")

    def disk_full(obj: object, f: object, **kwargs: object) -> None:
        f.write("{\"traceEvents\": [")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("storage.export.json.dump", disk_full)
    code, err = _cli(capsys, "export", "1", "-o", str(out), "--force", "--db", str(recorded))
    assert code == 2 and "No space left on device; nothing was written" in _one_error_line(err)
    assert out.read_text() == "previous export"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_failed_csv_export_leaves_no_folder_behind(recorded: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    written = []
    real_to_csv = pd.DataFrame.to_csv

    def fails_third(self: pd.DataFrame, path: object, **kwargs: object) -> None:
        written.append(path)
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        real_to_csv(self, path, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(pd.DataFrame, "to_csv", fails_third)
    folder = tmp_path / "csv"
    code, err = _cli(capsys, "export", "1", "--format", "csv", "-o", str(folder), "--db", str(recorded))
    assert code == 2 and "No space left on device" in _one_error_line(err)
    assert len(written) == 3 and not folder.exists()


@pytest.mark.parametrize(("value", "says"), [("-1", "expected a number > 0, got -1"),
                                             ("0", "expected a number > 0, got 0"),
                                             ("soon", "expected a number, got 'soon'")])
def test_a_flag_that_must_be_positive_says_so_for_every_bad_value(value: str, says: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """One rule, one message: -1 used to be told '>= 0' and then 0 '> 0'."""
    with pytest.raises(SystemExit) as exited:  # argparse's own exit
        main(["serve", "--simulate", "--drain-timeout", value])
    assert exited.value.code == 2
    assert f"argument --drain-timeout: {says}" in _one_error_line(capsys.readouterr().err)
