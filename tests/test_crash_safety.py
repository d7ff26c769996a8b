"""A killed engine leaves a readable, consistent database; signals and concurrent writers behave."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from storage import queries, timeline_queries
from storage.database import StorageError, open_for_read

ROOT = Path(__file__).resolve().parents[1]
LONG_SIMULATION = ["--workload", "uniform", "--num-prompts", "30000", "--prompt-lens", "16:64",
                   "--output-lens", "50:200", "--request-rate", "3000"]


def _start(db: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "engine", "simulate", "--db", str(db), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_steps(db: Path, minimum: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "engine exited early"
        try:
            runs = queries.list_runs(open_for_read(str(db)))
            if not runs.empty and int(runs["num_steps"].iloc[0]) >= minimum:
                return
        except StorageError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"fewer than {minimum} steps recorded in {timeout} s")


@pytest.mark.slow
def test_kill_9_mid_run_leaves_whole_steps_and_an_interrupted_run(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "killed.db"
    proc = _start(db, *LONG_SIMULATION)
    try:
        _wait_for_steps(db, 2000, proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    reader = open_for_read(str(db))
    monkeypatch.setattr(queries, "STALE_AFTER_S", 0.0)  # no need to wait 15 s for the heartbeat to go stale
    runs = queries.list_runs(reader)
    assert list(runs["status"]) == ["interrupted"]
    run_id, num_steps = int(runs["id"].iloc[0]), int(runs["num_steps"].iloc[0])
    assert num_steps >= 2000
    with reader.connect() as conn:
        steps = [r.step for r in conn.execute(text("SELECT step FROM steps WHERE run_id = :r ORDER BY step"),
                                              {"r": run_id})]
        orphans = conn.execute(text("""
            SELECT COUNT(*) FROM request_phases p LEFT JOIN requests q
              ON q.run_id = p.run_id AND q.request_id = p.request_id
            WHERE p.run_id = :r AND q.request_id IS NULL"""), {"r": run_id}).scalar_one()
        mismatched = conn.execute(text("""
            SELECT COUNT(*) FROM steps s WHERE s.run_id = :r AND s.step >= :from AND
              s.num_prefill_seqs + s.num_decode_seqs != (
                SELECT COUNT(*) FROM request_phases p WHERE p.run_id = s.run_id
                  AND p.phase IN ('prefill', 'decode') AND p.start_step <= s.step
                  AND (p.end_step IS NULL OR p.end_step > s.step))"""),
            {"r": run_id, "from": num_steps - 200}).scalar_one()
    assert steps == list(range(num_steps))  # no holes, nothing past the last flush
    assert orphans == 0  # every phase row has its request row
    assert mismatched == 0  # the last steps have exactly their phase rows
    last = queries.step_at(reader, run_id, num_steps - 1)
    assert last is not None
    blocks = timeline_queries.kv_block_map(reader, run_id, num_steps - 1)
    assert blocks["request_id"].notna().sum() == last["num_used_gpu_blocks"]


@pytest.mark.slow
def test_sigterm_flushes_and_marks_the_run_aborted(tmp_path: Path) -> None:
    db = tmp_path / "stopped.db"
    proc = _start(db, *LONG_SIMULATION)
    _wait_for_steps(db, 500, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    reader = open_for_read(str(db))
    runs = queries.list_runs(reader)
    assert list(runs["status"]) == ["aborted"]
    reqs = queries.run_requests(reader, int(runs["id"].iloc[0]))
    assert reqs["finish_reason"].notna().all()
    assert (reqs["finish_reason"] == "aborted").sum() > 0
    with reader.connect() as conn:
        open_phases = conn.execute(text("SELECT COUNT(*) FROM request_phases WHERE end_step IS NULL")).scalar_one()
    assert open_phases == 0


@pytest.mark.slow
def test_two_engines_write_different_runs_into_one_file_at_once(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    args = ["--workload", "uniform", "--num-prompts", "3000", "--output-lens", "20:60", "--request-rate", "500"]
    procs = [_start(db, *args, "--seed", str(seed), "--name", f"writer {seed}") for seed in (1, 2)]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()
    runs = queries.list_runs(open_for_read(str(db)))
    assert sorted(runs["name"]) == ["writer 1", "writer 2"]
    assert list(runs["status"]) == ["finished", "finished"]
    assert list(runs["num_requests"]) == [3000, 3000]


# Signals that land inside the recorder's writes, placed there deterministically: the engine runs in
# a subprocess whose Recorder sends itself the signals from inside a write, as a user's second
# Ctrl-C or a supervisor's second SIGTERM would arrive while a flush or the finish is writing.
_SIGNALLING_ENGINE = """
import os, signal, sys
import storage.recorder as rec
from cli.main import main

where, sig = sys.argv[1], getattr(signal, sys.argv[2])
calls = {"writes": 0, "finishing": False}
write, finish = rec.Recorder._write, rec.Recorder.finish

def _write(self, conn):  # inside the transaction of a flush or of finish()
    calls["writes"] += 1
    if (where == "flush" and calls["writes"] == 2) or (where == "finish" and calls["finishing"]):
        os.kill(os.getpid(), sig)  # mid-run, the first stops the run gracefully
        os.kill(os.getpid(), sig)  # and the second arrives while this write is still going on
    write(self, conn)

def _finish(self, *args, **kwargs):
    calls["finishing"] = True
    finish(self, *args, **kwargs)

rec.Recorder._write, rec.Recorder.finish = _write, _finish
sys.exit(main(sys.argv[3:]))
"""


def _run_signalling(db: Path, where: str, sig: str) -> subprocess.CompletedProcess[str]:
    args = ["simulate", "--db", str(db), "--workload", "uniform", "--num-prompts", "400", "--output-lens", "50:100",
            "--request-rate", "200"]
    return subprocess.run([sys.executable, "-c", _SIGNALLING_ENGINE, where, sig, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_second_signal_during_a_flush_ends_the_run_cleanly_and_aborted(tmp_path: Path, sig: str) -> None:
    db = tmp_path / "twice.db"
    proc = _run_signalling(db, "flush", sig)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    reader = open_for_read(str(db))
    runs = queries.list_runs(reader)
    assert list(runs["status"]) == ["aborted"]
    reqs = queries.run_requests(reader, int(runs["id"].iloc[0]))
    assert len(reqs) == 400 and reqs["finish_reason"].notna().all()  # stopped gracefully, nothing left open
    with reader.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM request_phases WHERE end_step IS NULL")).scalar_one() == 0


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signals_while_the_run_is_being_finished_do_not_leave_it_running(tmp_path: Path, sig: str) -> None:
    db = tmp_path / "finishing.db"
    proc = _run_signalling(db, "finish", sig)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    runs = queries.list_runs(open_for_read(str(db)))
    assert list(runs["status"]) == ["finished"]  # every request had finished when the signals came
    assert list(runs["num_finished"]) == [400]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_two_signals_in_a_row_stop_the_engine_and_mark_the_run_aborted(tmp_path: Path, sig: int) -> None:
    db = tmp_path / "impatient.db"
    proc = _start(db, *LONG_SIMULATION)
    _wait_for_steps(db, 500, proc)
    proc.send_signal(sig)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130), err.decode()  # 130: the second stopped a step at once
    assert b"Traceback" not in err
    assert list(queries.list_runs(open_for_read(str(db)))["status"]) == ["aborted"]


@pytest.mark.slow
def test_a_signal_stops_a_sweep_not_only_its_current_run(tmp_path: Path) -> None:
    db = tmp_path / "sweep.db"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "sweep", "--param", "max_num_seqs", "--values",
                             "32,64,128", "--db", str(db), *LONG_SIMULATION], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_steps(db, 500, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert b"sweep stopped by a signal after 1 of 3 runs" in err
    runs = queries.list_runs(open_for_read(str(db)))
    assert list(runs["status"]) == ["aborted"]
