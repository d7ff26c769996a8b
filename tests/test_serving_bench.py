"""`bench serve` against `serve --simulate`: every request completes, and the request ids, counts and
token totals agree exactly with the run the server recorded; the client's figures are stored beside it."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from cli.main import main
from serving.bench_metrics import parse_goodput, send_times
from storage.database import open_for_read
from tests.serving_helpers import recorded_requests, recorded_run, serve, simulated


def test_bench_serve_agrees_with_the_recorded_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "b.db"
    result_file = tmp_path / "result.json"
    with serve(simulated(step_s=0.002, max_num_seqs=16), db) as server:
        code = main(["bench", "serve", "--base-url", server.url, "--workload", "mixed", "--num-prompts", "12",
                     "--request-rate", "40", "--max-concurrency", "8", "--goodput", "ttft:5000", "e2el:60000",
                     "--save-result", str(result_file), "--db", str(db)])
        run_id = server.run_id
    assert code == 0
    printed = capsys.readouterr().out
    assert "Serving Benchmark Result" in printed and "Mean TTFT (ms):" in printed and "P99 E2EL (ms):" in printed
    result = json.loads(result_file.read_text())
    assert result["completed"] == 12 and result["failed"] == 0
    for key in ("request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
                "mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "mean_itl_ms",
                "p99_e2el_ms"):
        assert isinstance(result[key], float), key
    assert result["run_ids"] == [run_id]

    rows = recorded_requests(db, run_id)  # type: ignore[arg-type]
    assert sorted(rows["request_id"]) == sorted(f"r{i}" for i in range(12)) == sorted(result["request_ids"])
    assert (rows["finish_reason"] == "length").all()
    assert rows["output_len"].sum() == result["total_output_tokens"] == rows["max_tokens"].sum()
    assert rows["prompt_len"].sum() == result["total_input_tokens"]
    assert recorded_run(db, run_id)["status"] == "finished"  # type: ignore[arg-type]

    reader = open_for_read(str(db))
    with reader.connect() as conn:
        stored = conn.execute(text("SELECT request_id, run_id, success, output_len FROM client_requests")).all()
        bench = conn.execute(text("SELECT run_ids, result FROM client_benchmarks")).one()
    reader.dispose()
    assert sorted(r.request_id for r in stored) == sorted(rows["request_id"])
    assert {r.run_id for r in stored} == {run_id} and all(r.success for r in stored)
    by_id = dict(zip(rows["request_id"], rows["output_len"], strict=True))
    assert all(r.output_len == by_id[r.request_id] for r in stored)
    assert json.loads(bench.run_ids) == [run_id] and json.loads(bench.result)["completed"] == 12


def test_bench_arrivals_and_goodput_parsing() -> None:
    assert send_times(3, float("inf"), 1.0, 0) == [0.0, 0.0, 0.0]
    times = send_times(200, 50.0, 0.5, 1)
    assert times[0] == 0.0 and all(b >= a for a, b in itertools.pairwise(times))
    assert 2.0 < times[-1] < 6.0  # about 199 gaps of 20 ms on average
    assert parse_goodput(["ttft:200", "tpot:50"]) == {"ttft": 200.0, "tpot": 50.0}
    with pytest.raises(ValueError, match="--goodput"):
        parse_goodput(["latency:3"])


def test_bench_serve_against_a_server_that_is_not_there(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "serve", "--base-url", "http://127.0.0.1:9", "--model", "m", "--num-prompts", "2"])
    assert code == 1
    out = capsys.readouterr()
    assert "Failed requests:                         2" in out.out and "ClientConnectorError" in out.err
