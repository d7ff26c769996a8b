"""Calibrating a cost model from a real vLLM's iteration log (the exact line format vLLM 0.33 writes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from engine.executors.cost_model import LinearCostModel
from engine.executors.vllm_log import VllmLogError, fit_from_vllm_log, parse_vllm_log

PREFIX = "INFO 12-01 10:00:00 [loggers.py:128] "
CACHE_TOKENS = 200_000
TRUE = {"intercept": 6e-3, "num_seqs": 2e-5, "prefill_tokens": 3e-5, "decode_seqs": 1.5e-4,
        "decode_context": 2e-8, "prefill_pairs": 1e-10}


def _write_log(path: Path, steps: int = 400, seed: int = 0, state_size: bool = True) -> None:
    rng = np.random.default_rng(seed)
    lines = [PREFIX + "Initializing a V1 LLM engine (v0.33.0) with config: model='x'"]
    if state_size:
        lines.append(PREFIX + f"GPU KV cache size: {CACHE_TOKENS:,} tokens")
    for i in range(steps):
        ctx_reqs = int(rng.integers(0, 4))
        ctx_tokens = int(ctx_reqs * rng.integers(64, 2048)) if ctx_reqs else 0
        gen = int(rng.integers(1, 128))
        kv = float(rng.uniform(0.05, 0.95))
        seqs = ctx_reqs + gen
        context = kv * CACHE_TOKENS * gen / seqs
        pairs = ctx_tokens**2 / (2 * ctx_reqs) if ctx_reqs else 0.0
        t = (TRUE["intercept"] + TRUE["num_seqs"] * seqs + TRUE["prefill_tokens"] * ctx_tokens
             + TRUE["decode_seqs"] * gen + TRUE["decode_context"] * context + TRUE["prefill_pairs"] * pairs)
        t *= rng.normal(1.0, 0.02)
        tail = ", encoder inputs: 0" if i % 7 == 0 else ""
        lines.append(PREFIX + f"Engine 000: Iteration({i}): {ctx_reqs} context requests, {ctx_tokens} context tokens, "
                     f"{gen} generation requests, {gen} generation tokens, iteration elapsed time: {t * 1e3:.2f} ms, "
                     f"GPU KV cache usage: {kv * 100:.1f}%{tail}")
    path.write_text("\n".join(lines) + "\n")


def test_parses_every_iteration_line_and_the_cache_size(tmp_path: Path) -> None:
    log = tmp_path / "vllm.log"
    _write_log(log, steps=50)
    steps, size = parse_vllm_log(log)
    assert len(steps) == 50 and size == CACHE_TOKENS
    assert [s.step for s in steps] == list(range(50))
    assert all(0 <= s.kv_usage <= 1 for s in steps)


def test_recovers_the_step_costs_and_marks_what_is_approximated(tmp_path: Path) -> None:
    log = tmp_path / "vllm.log"
    _write_log(log)
    model = fit_from_vllm_log(log)
    for name in ("intercept", "prefill_tokens", "decode_seqs", "decode_context"):
        assert model.coefficients[name] == pytest.approx(TRUE[name], rel=0.2), name
    assert model.fit["source"] == "vllm-log" and len(model.fit["approximated"]) == 2
    assert model.fit["holdout"]["folds"] == 5 and model.fit["holdout"]["median_abs_pct_error"] < 5


def test_attention_costs_come_from_a_device_profile_when_given(tmp_path: Path) -> None:
    log = tmp_path / "vllm.log"
    _write_log(log, state_size=False)
    profile = LinearCostModel({"decode_context": 2e-8, "prefill_pairs": 1e-10}, name="profiled H200")
    model = fit_from_vllm_log(log, kv_cache_tokens=CACHE_TOKENS, device_profile=profile)
    assert model.coefficients["decode_context"] == 2e-8 and model.coefficients["prefill_pairs"] == 1e-10
    assert model.fit["attention_from"] == "profiled H200" and "approximated" not in model.fit
    assert model.coefficients["decode_seqs"] == pytest.approx(TRUE["decode_seqs"], rel=0.2)


def test_a_log_without_the_cache_size_needs_it_given(tmp_path: Path) -> None:
    log = tmp_path / "vllm.log"
    _write_log(log, state_size=False)
    with pytest.raises(VllmLogError, match="--kv-cache-tokens"):
        fit_from_vllm_log(log)


def test_a_file_without_iteration_lines_says_which_flag_writes_them(tmp_path: Path) -> None:
    log = tmp_path / "other.log"
    log.write_text("INFO nothing here\n")
    with pytest.raises(VllmLogError, match="--enable-logging-iteration-details"):
        parse_vllm_log(log)


def test_profile_command_writes_a_cost_model_simulate_can_use(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    log, out = tmp_path / "vllm.log", tmp_path / "h200.json"
    _write_log(log)
    assert main(["profile", "--from-vllm-log", str(log), "-o", str(out)]) == 0
    assert "approximated" in capsys.readouterr().out
    assert json.loads(out.read_text())["fit"]["source"] == "vllm-log"
    assert main(["simulate", "--cost-model-file", str(out), "--num-prompts", "20", "--no-record", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_finished"] == 20
    assert main(["profile", "--from-vllm-log", str(tmp_path / "missing.log")]) == 2
