"""The trust figures shown before a prediction: held out, extrapolations named, a measured track record."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cli.main import main
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.executors.cost_model import DEFAULT_COST_MODEL, LinearCostModel
from engine.workload.generators import synthetic_workload
from storage.database import open_for_write
from storage.device_profiles import save_profile
from tests.recording import record_pretend_real

FACTS = {"executor": "torch", "device": "cpu", "dtype": "float32", "torch_threads": 2, "kv_bytes_per_block": 65536}
# What the pretend device really costs: DEFAULT_COST_MODEL, plus a block copy it charges for.
SWAP_COST = 4e-4
DEVICE = LinearCostModel({**DEFAULT_COST_MODEL.coefficients, "swap_blocks": SWAP_COST}, name="pretend device")


def _real_run(db: Path, max_num_seqs: int, num_gpu_blocks: int = 300, device: LinearCostModel = DEVICE,
              **sched: object) -> int:
    """A run recorded as mode=real whose step times come from a known model (the pretend device)."""
    config = EngineConfig(SchedulerConfig(max_num_seqs=max_num_seqs, **sched),  # type: ignore[arg-type]
                          CacheConfig(num_gpu_blocks=num_gpu_blocks, swap_space=64))
    return record_pretend_real(db, config, synthetic_workload("mixed", 120, request_rate=30.0, seed=3), device, FACTS,
                               name=f"pretend real {max_num_seqs}")


def _what_if(capsys: pytest.CaptureFixture[str], db: Path, *flags: str) -> dict:  # type: ignore[type-arg]
    assert main(["simulate", "--db", str(db), "--from-run", "1", "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_a_real_base_shows_its_fit_on_held_out_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    _real_run(db, 16)
    held = _what_if(capsys, db, "--max-num-seqs", "8")["trust"]["holdout"]
    assert held["folds"] == 5 and held["num_steps"] > 100
    assert held["median_abs_pct_error"] < 1.0  # the steps follow a linear model exactly: right out of sample too


def test_every_extrapolation_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    _real_run(db, 16)
    warnings = _what_if(capsys, db, "--max-num-seqs", "64", "--num-gpu-blocks", "40", "--preemption-mode", "swap",
                        "--enable-chunked-prefill")["trust"]["warnings"]
    text = "\n".join(warnings)
    assert re.search(r"max_num_seqs 64: the base never ran more than \d+ sequences in a step", text)
    assert "the base never preempted" in text
    assert "swapping was never measured" in text and "python -m engine profile" in text
    assert "chunked prefill: the base never split a prompt" in text
    assert _what_if(capsys, db, "--max-num-seqs", "8")["trust"]["warnings"] == []  # inside what it exercised


def test_unexercised_costs_come_from_a_matching_device_profile(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Without a profile a never-swapping base prices swaps at an assumed bandwidth, with a warning;
    with a profile of the same model, device, dtype and threads, at the measured cost, marked so."""
    db = tmp_path / "t.db"
    _real_run(db, 16)
    flags = ("--num-gpu-blocks", "40", "--preemption-mode", "swap")
    guessed = _what_if(capsys, db, *flags)
    assert guessed["prediction_cost_model"]["coefficients"]["swap_blocks"] == pytest.approx(65536 / 5e9)
    profile_id = save_profile(open_for_write(str(db)), "tiny", "cpu", "float32", 2, DEVICE.to_dict())
    other = save_profile(open_for_write(str(db)), "tiny", "cpu", "float32", 4, {"name": "x", "coefficients": {}})
    assert other != profile_id
    measured = _what_if(capsys, db, *flags)
    assert measured["prediction_cost_model"]["coefficients"]["swap_blocks"] == SWAP_COST
    assert any(f"device profile #{profile_id}" in b for b in measured["borrowed_costs"])
    assert not any("never measured" in w for w in measured["trust"]["warnings"])
    assert measured["predicted"]["e2e_p99"] > guessed["predicted"]["e2e_p99"]  # swaps now cost what they cost


def test_static_batching_prices_pad_rows_as_prompt_tokens_of_the_base(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    _real_run(db, 16)
    report = _what_if(capsys, db, "--batching", "static")
    coefficients = report["prediction_cost_model"]["coefficients"]
    assert coefficients["padding_tokens"] == coefficients["prefill_tokens"] > 0
    # A finished member's pad row computes its logits too: priced as what a decode costs beyond a prompt token.
    head = max(coefficients["decode_seqs"] - coefficients["prefill_tokens"], 0.0)
    assert coefficients["padding_seqs"] == pytest.approx(head)
    warnings = report["trust"]["warnings"]
    assert any("static batching: the base computed no pad rows" in w for w in warnings)
    assert any("no finished members decoding pad rows; finished members' pad-row logits priced as a decode's" in w
               for w in warnings)


def test_the_track_record_predicts_every_real_run_of_the_same_requests(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    _real_run(db, 16)
    second = _real_run(db, 2)  # same requests, a much smaller batch: its outcome differs a lot
    record = _what_if(capsys, db, "--max-num-seqs", "4")["trust"]["track_record"]
    assert [e["real_run_id"] for e in record] == [second]
    entry = record[0]
    assert entry["changes"] == {"max_num_seqs": 2}
    sim, null = entry["simulated"]["error_pct"], entry["null_error_pct"]
    for key in ("output_tokens_per_s", "e2e_p50", "e2e_p99"):
        assert abs(sim[key]) < 2.0  # the cost model is the device's own, so the simulator is right...
        assert abs(null[key]) > 20.0  # ...where "nothing changes" is far off


def test_the_track_record_says_what_of_its_error_is_step_times(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A real run on another minute of the machine, 10% slower: the base's cost model prices its own
    recorded steps 9.1% low (1 / 1.1 - 1), while a run at the base's speed is priced right."""
    db = tmp_path / "t.db"
    _real_run(db, 16)
    same_speed = _real_run(db, 2)
    slower = LinearCostModel({k: 1.1 * v for k, v in DEVICE.coefficients.items()}, name="slower minute")
    slow = _real_run(db, 4, device=slower)
    record = {e["real_run_id"]: e for e in _what_if(capsys, db, "--max-num-seqs", "8")["trust"]["track_record"]}
    assert abs(record[same_speed]["step_time_error_pct"]) < 0.5
    assert record[slow]["step_time_error_pct"] == pytest.approx(100 * (1 / 1.1 - 1), abs=0.5)
    assert main(["simulate", "--db", str(db), "--from-run", "1", "--max-num-seqs", "8"]) == 0
    assert re.search(rf"^\s+{slow} .*-9\.\d%$", capsys.readouterr().out, re.M)  # the text report's last column

    from dashboard.what_if import STEP_TIMES, track_record_table
    from storage.run_meta import trust_from_json

    trust = trust_from_json(_what_if(capsys, db, "--max-num-seqs", "8")["trust"])
    assert trust is not None
    table = track_record_table(trust).set_index("real run")
    assert table.loc[slow, STEP_TIMES] == pytest.approx(100 * (1 / 1.1 - 1), abs=0.5)  # the What-if page's column


def test_the_text_report_puts_trust_before_the_prediction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    _real_run(db, 16)
    _real_run(db, 2)
    assert main(["simulate", "--db", str(db), "--from-run", "1", "--max-num-seqs", "64"]) == 0
    out = capsys.readouterr().out
    order = [out.index(s) for s in ("held-out steps", "warning: max_num_seqs 64", "track record", "consistency check",
                                    "what-if: max_num_seqs=64")]
    assert order == sorted(order)
