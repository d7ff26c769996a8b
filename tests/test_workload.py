"""Workloads: generators, JSONL files and Azure-format trace CSVs, and their error messages."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine.workload import BUNDLED_AZURE_TRACE, WorkloadError, WorkloadOptions, resolve_workload
from engine.workload.files import load_azure_csv, load_jsonl
from engine.workload.generators import poisson_arrivals, synthetic_workload
from engine.workload.synthetic import SyntheticPrompt


def test_mixed_outputs_are_70_percent_short_and_30_percent_long() -> None:
    w = synthetic_workload("mixed", 4000, seed=3)
    short = sum(10 <= s.max_tokens <= 20 for s in w.requests)
    long = sum(80 <= s.max_tokens <= 100 for s in w.requests)
    assert short + long == 4000
    assert 0.67 < short / 4000 < 0.73
    assert all(16 <= (s.prompt_len or 0) <= 128 for s in w.requests)


def test_generators_are_deterministic_per_seed() -> None:
    a = synthetic_workload("uniform", 50, request_rate=5.0, seed=1)
    b = synthetic_workload("uniform", 50, request_rate=5.0, seed=1)
    c = synthetic_workload("uniform", 50, request_rate=5.0, seed=2)
    assert a.requests == b.requests != c.requests


def test_poisson_arrivals_have_the_requested_rate() -> None:
    import random

    times = poisson_arrivals(20_000, 50.0, random.Random(0))
    assert times == sorted(times) and times[0] == 0.0
    assert 48 < (len(times) - 1) / times[-1] < 52
    assert poisson_arrivals(3, math.inf, random.Random(0)) == [0.0, 0.0, 0.0]


def test_synthetic_prompts_are_stable_and_in_vocab() -> None:
    p = SyntheticPrompt(500, salt=7, vocab_size=32_000)
    assert len(p) == 500 and list(p[:5]) == [p[i] for i in range(5)] and p[-1] == p[499]
    assert all(1000 <= t < 32_000 for t in p[0:500])
    with pytest.raises(IndexError):
        p[500]


def test_jsonl_reads_every_field(tmp_path: Path) -> None:
    f = tmp_path / "w.jsonl"
    f.write_text('{"arrival_time": 0.5, "prompt_len": 12, "max_tokens": 4, "priority": 2}\n\n'
                 '{"arrival_time": 1, "prompt": "Hello there", "max_tokens": 3, "request_id": "greet"}\n'
                 '{"prompt_token_ids": [5, 6, 7], "max_tokens": 2, "ignore_eos": false}\n')
    w = load_jsonl(f)
    assert [s.request_id for s in w.requests] == ["r0", "greet", "r2"]
    assert w.requests[0].priority == 2 and w.requests[0].ignore_eos
    assert w.requests[1].prompt == "Hello there" and not w.requests[1].ignore_eos
    assert w.requests[2].prompt_token_ids == (5, 6, 7) and w.requests[2].arrival_time == 0.0


@pytest.mark.parametrize(("line", "message"), [
    ('{"prompt_len": 5}', "line 1: max_tokens is missing"),
    ('{"prompt_len": 5, "max_tokens": 0}', r"line 1: max_tokens must be a whole number from 1 to 2\*\*63 - 1"),
    # Past 64 bits a number cannot be recorded (the database's INTEGER): once a traceback mid-run.
    ('{"prompt_len": 5, "max_tokens": 1180591620717411303424}', "max_tokens must be a whole number from 1"),
    ('{"prompt_len": 5, "max_tokens": 3, "priority": -1180591620717411303424}', "priority must be a whole number"),
    ('{"prompt_token_ids": [1, 9223372036854775808], "max_tokens": 3}', "prompt_token_ids must be a non-empty"),
    ('{"prompt_len": 5, "max_tokens": 3, "temperature": 1e309}', "temperature must be a number >= 0"),
    ('{"max_tokens": 3}', "exactly one of prompt_len, prompt, prompt_token_ids"),
    ('{"prompt_len": 5, "prompt": "x", "max_tokens": 3}', "exactly one of"),
    ('{"prompt_len": 5, "max_tokens": 3, "arrival_time": -1}', "arrival_time must be a number of seconds >= 0"),
    ("not json", "line 1: not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
])
def test_jsonl_errors_name_the_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(line + "\n")
    with pytest.raises(WorkloadError, match=message):
        load_jsonl(f)


def test_the_bundled_azure_trace_scales_lengths_and_time() -> None:
    full = load_azure_csv(BUNDLED_AZURE_TRACE, max_requests=100)
    small = load_azure_csv(BUNDLED_AZURE_TRACE, length_scale=0.1, time_scale=0.5, max_requests=100)
    assert len(full) == 100 and full.requests[0].prompt_len == 374 and full.requests[0].max_tokens == 44
    assert small.requests[0].prompt_len == 37 and small.requests[0].max_tokens == 4
    assert small.requests[1].arrival_time == pytest.approx(full.requests[1].arrival_time * 0.5, abs=1e-6)
    assert "CC-BY 4.0" in full.description


@pytest.mark.parametrize(("content", "message"), [
    ("a,b,c\n1,2,3\n", "missing column"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n", "line 2: cannot read"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "holds no requests"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1180591620717411303424,2\n",
     r"line 2: token counts must be from 0 to 2\*\*63 - 1"),
])
def test_trace_csv_errors(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "trace.csv"
    f.write_text(content)
    with pytest.raises(WorkloadError, match=message):
        load_azure_csv(f)


def test_resolve_names_and_paths(tmp_path: Path) -> None:
    assert len(resolve_workload("mixed", WorkloadOptions(num_requests=7))) == 7
    assert len(resolve_workload("azure", WorkloadOptions(max_requests=5))) == 5
    with pytest.raises(WorkloadError, match="unknown workload 'spiky'"):
        resolve_workload("spiky", WorkloadOptions())
    with pytest.raises(WorkloadError, match="workload file not found"):
        resolve_workload(str(tmp_path / "missing.jsonl"), WorkloadOptions())


def test_simulate_says_why_requests_were_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import main

    trace = tmp_path / "long.jsonl"
    trace.write_text('{"arrival_time": 0, "prompt_len": 40, "max_tokens": 4}\n'
                     '{"arrival_time": 0, "prompt_len": 300, "max_tokens": 4}\n')
    assert main(["simulate", "--workload", str(trace), "--max-model-len", "128", "--no-record"]) == 0
    out = capsys.readouterr()
    assert "1 finished, 1 rejected" in out.out
    assert "rejected r1: the prompt has 300 tokens" in out.err and "max_model_len=128" in out.err


def test_max_concurrency_is_a_closed_loop_client() -> None:
    """At most C requests are unfinished; a held request arrives when it is let in, and the fast path
    keeps to the same cap."""
    from engine.clock import VirtualClock
    from engine.config import CacheConfig, EngineConfig, SchedulerConfig
    from engine.engine_loop import Engine
    from engine.executors.cost_model import UnitCostModel
    from engine.executors.simulated import SimulatedExecutor
    from engine.workload.generators import synthetic_workload

    config = EngineConfig(SchedulerConfig(max_num_seqs=16), CacheConfig(num_gpu_blocks=400))
    workload = synthetic_workload("mixed", 30, seed=2)  # all at t=0
    runs = []
    for fast in (False, True):
        engine = Engine(config, SimulatedExecutor(UnitCostModel()), VirtualClock(), fast_forward=fast)
        seen: list[int] = []
        engine.run(workload.requests, on_step=lambda s, seen=seen: seen.append(  # type: ignore[misc]
            s.counts.num_running + s.counts.num_waiting), max_concurrency=3)
        runs.append((engine, seen))
    for engine, seen in runs:
        assert max(seen) == 3 and all(r.finish_time is not None for r in engine.requests.values())
        arrivals = sorted(r.arrival_time for r in engine.requests.values())
        assert arrivals[:3] == [0.0, 0.0, 0.0] and arrivals[3] > 0  # the fourth is sent when one finished
    finishes = [[r.finish_time for r in engine.requests.values()] for engine, _ in runs]
    assert finishes[0] == finishes[1]
