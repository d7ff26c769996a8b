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
    prefix = result["request_ids"][0].removesuffix("r0") if result["request_ids"][0].endswith("r0") else "?"
    assert prefix.startswith("bench-")  # a prefix new to each benchmark: a rerun reuses no id
    assert sorted(rows["request_id"]) == sorted(f"{prefix}r{i}" for i in range(12)) == sorted(result["request_ids"])
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


def test_a_second_bench_against_the_same_server_completes_and_num_prompts_caps_a_trace(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "b.db"
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps({"request_id": f"q{i}", "arrival_time": i * 0.01, "prompt_len": 8,
                                         "max_tokens": 4}) + "\n" for i in range(9)))
    results = [tmp_path / "first.json", tmp_path / "second.json"]
    with serve(simulated(step_s=0.001, max_num_seqs=16), db) as server:
        for result_file in results:
            code = main(["bench", "serve", "--base-url", server.url, "--workload", str(trace), "--num-prompts", "5",
                         "--request-rate", "inf", "--save-result", str(result_file)])
            assert code == 0, capsys.readouterr().err
        run_id = server.run_id
    first, second = (json.loads(f.read_text()) for f in results)
    assert first["completed"] == second["completed"] == first["num_prompts"] == 5
    assert not set(first["request_ids"]) & set(second["request_ids"])
    assert len(recorded_requests(db, run_id)) == 10  # type: ignore[arg-type]
    assert "5 of 9 requests" in capsys.readouterr().err


def test_peak_throughput_and_concurrency_count_whole_seconds_as_vllm_does() -> None:
    from serving.bench_client import RequestResult
    from serving.bench_metrics import calculate

    a = RequestResult("a", success=True, output_tokens=3, ttft=0.2, itl=[0.3, 0.3], latency=0.8, start_time=0.0)
    b = RequestResult("b", success=True, output_tokens=2, ttft=0.5, itl=[1.0], latency=1.5, start_time=0.4)
    c = RequestResult("c", success=True, output_tokens=1, ttft=0.1, latency=0.1, start_time=1.2)
    result = calculate([a, b, c], 2.0)
    # second 0: a's 3 tokens (0.2, 0.5, 0.8) and b's first (0.9); second 1: b's second (1.9) and c's (1.3)
    assert result["max_output_tokens_per_s"] == 4.0
    # active during second 0: a (0-0.8) and b (0.4-1.9); during second 1: b and c (1.2-1.3); as vLLM
    # counts, a request in every second from its start's to its end's
    assert result["max_concurrent_requests"] == 2
    # seconds counted from the first request's start, not the benchmark's: the same requests 0.7 s later
    later = [RequestResult(r.request_id, success=True, output_tokens=r.output_tokens, ttft=r.ttft, itl=r.itl,
                           latency=r.latency, start_time=r.start_time + 0.7) for r in (a, b, c)]
    shifted = calculate(later, 2.7)
    assert (shifted["max_output_tokens_per_s"], shifted["max_concurrent_requests"]) == (4.0, 2)
    d = RequestResult("d", success=True, output_tokens=1, ttft=0.1, latency=0.2, start_time=2.5)
    assert calculate([a, b, c, d], 3.0)["max_concurrent_requests"] == 2  # d alone in second 2


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
