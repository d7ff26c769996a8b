"""The dashboard's launcher: typed inputs validated without a model, and command lines that mean
to `python -m engine` exactly what the form said (read back with the engine's own parser)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from cli.main import build_parser
from dashboard import demo_workload as demo
from dashboard import launcher
from engine.workload.files import load_jsonl

DB = "/tmp/batchscope-test.db"


def _parsed(argv: list[str]) -> argparse.Namespace:
    assert argv[:3] == [sys.executable, "-m", "engine"]
    return build_parser().parse_args(argv[3:])


def test_a_real_run_form_becomes_the_engine_arguments_it_shows() -> None:
    form = launcher.RunForm(mode="real", model="tiny", workload="mixed", num_prompts=50, request_rate=4.0,
                            max_num_seqs=8, max_num_batched_tokens=256, num_gpu_blocks=96,
                            enable_chunked_prefill=True, policy="priority", name="mine")
    form.validate()
    args = _parsed(form.argv(DB))
    assert (args.command, args.db, args.model, args.workload) == ("run", DB, "tiny", "mixed")
    assert (args.num_prompts, args.request_rate, args.name) == (50, 4.0, "mine")
    assert (args.max_num_seqs, args.max_num_batched_tokens, args.max_model_len) == (8, 256, 1024)
    assert (args.num_gpu_blocks, args.enable_chunked_prefill, args.policy) == (96, True, "priority")
    assert (args.preemption_mode, args.swap_space, args.batching) == ("recompute", 0, "continuous")


def test_a_simulated_run_takes_the_config_flags_without_a_model() -> None:
    form = launcher.RunForm(mode="simulated", request_rate=None, enable_chunked_prefill=False,
                            max_num_batched_tokens=2048)
    argv = form.argv(DB)
    assert "--model" not in argv
    args = _parsed(argv)
    assert args.command == "simulate" and args.from_run is None
    assert args.enable_chunked_prefill is False and args.max_num_batched_tokens == 2048
    assert args.request_rate == float("inf")  # all at t=0: the flag is left out


def test_the_engines_config_rules_refuse_a_form_with_the_fix_named() -> None:
    with pytest.raises(launcher.LaunchError, match="Raise max_num_batched_tokens or lower max_num_seqs"):
        launcher.RunForm(max_num_seqs=512, max_num_batched_tokens=256).validate()
    with pytest.raises(launcher.LaunchError, match="pass --enable-chunked-prefill"):
        launcher.RunForm(enable_chunked_prefill=False, max_num_batched_tokens=512, max_model_len=1024).validate()


def test_a_what_if_passes_only_its_changes_and_is_checked_against_the_recorded_config() -> None:
    recorded = {"max_num_seqs": 16, "max_num_batched_tokens": 256, "max_model_len": 1024, "block_size": 16,
                "num_gpu_blocks": 128, "swap_space": 0, "enable_chunked_prefill": True, "policy": "fcfs",
                "preemption_mode": "recompute", "batching": "continuous", "model": "tiny", "device": "cpu"}
    with pytest.raises(launcher.LaunchError, match="Raise max_num_batched_tokens or lower max_num_seqs"):
        launcher.WhatIfRequest(3, recorded, {"max_num_seqs": 512}).validate()  # over the recorded budget of 256
    # Chunking turned off without a new budget: the budget follows, as the command line derives it.
    unchunked = launcher.WhatIfRequest(3, recorded, {"enable_chunked_prefill": False}).validate()
    assert unchunked.scheduler.max_num_batched_tokens == 2048
    request = launcher.WhatIfRequest(3, recorded, {"max_num_seqs": 8, "policy": "sjf"}, validate_for_real=True)
    assert request.validate().scheduler.max_num_seqs == 8
    args = _parsed(request.argv(DB))
    assert (args.command, args.from_run, args.validate) == ("simulate", 3, True)
    assert (args.max_num_seqs, args.policy) == (8, "sjf")
    assert args.max_num_batched_tokens is None and args.num_gpu_blocks is None  # unchanged: not passed
    assert args.fit == "run"
    assert _parsed(launcher.WhatIfRequest(3, recorded, {}, fit="pooled").argv(DB)).fit == "pooled"
    with pytest.raises(launcher.LaunchError, match="needs a CPU swap pool"):
        launcher.WhatIfRequest(3, recorded, {"preemption_mode": "swap"}).validate()


def test_a_sweep_refuses_values_that_are_not_the_parameters_and_loads_the_batch() -> None:
    with pytest.raises(launcher.LaunchError, match="values of max_num_seqs must be numbers"):
        launcher.SweepRequest("max_num_seqs", "1,2;rm -rf /").cleaned_values()
    with pytest.raises(launcher.LaunchError, match="values of batching must be static or continuous"):
        launcher.SweepRequest("batching", "static,dynamic").cleaned_values()
    args = _parsed(launcher.SweepRequest("max_num_seqs", " 2, 8 ,32", 120).argv(DB))
    assert (args.command, args.param, args.values, args.num_prompts) == ("sweep", "max_num_seqs", "2,8,32", 120)
    assert args.request_rate == launcher.SWEEP_REQUEST_RATE
    args = _parsed(launcher.SweepRequest("request_rate", "2,4.5").argv(DB))
    assert args.values == "2,4.5" and args.request_rate == float("inf")  # the sweep sets each run's rate


def test_delete_names_one_run() -> None:
    args = _parsed(launcher.delete_run_argv(7, DB))
    assert (args.command, args.run_id, args.db) == ("delete", 7, DB)


def test_the_demo_is_a_real_tiny_run_of_its_own_bursty_workload(tmp_path: Path) -> None:
    path = demo.WORKLOAD.write(tmp_path / "demo.jsonl")
    workload = load_jsonl(path)
    w = demo.WORKLOAD
    assert len(workload) == len(w.arrival_times())
    first_burst = [s for s in workload.requests if s.arrival_time < w.burst_spread_s]
    assert len(first_burst) >= w.burst_size
    assert max(s.arrival_time for s in workload.requests) < w.num_bursts * w.period_s
    assert json.loads(path.read_text().splitlines()[0])["request_id"] == "r0"
    form = demo.demo_form(path)
    form.validate()
    args = _parsed(form.argv(DB))
    assert (args.command, args.model, args.workload) == ("run", "tiny", str(path))
    assert (args.max_num_seqs, args.num_gpu_blocks, args.enable_chunked_prefill) == (16, demo.NUM_GPU_BLOCKS, True)


def test_waiting_for_a_command_stops_once_what_the_page_waits_for_is_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal
    import time

    monkeypatch.setenv("BATCHSCOPE_DB", str(tmp_path / "b.db"))  # the logs go beside it
    sleeper = launcher.launch([sys.executable, "-c", "import time; time.sleep(60)"], "sleeper")
    try:
        calls: list[float] = []

        def ready() -> bool:
            calls.append(time.monotonic())
            return len(calls) >= 2  # there on the second look

        t0 = time.monotonic()
        assert launcher.early_failure(sleeper, wait_s=30, ready=ready) is None
        assert len(calls) == 2 and time.monotonic() - t0 < 10  # not the 30 s, nor the command's 60
    finally:
        os.kill(sleeper.pid, signal.SIGKILL)
        launcher.wait_for_exit(sleeper.pid, 10)
    failing = launcher.launch([sys.executable, "-c", "raise SystemExit('error: no such run')"], "failing")
    assert launcher.early_failure(failing, wait_s=30, ready=lambda: False) == "error: no such run"
