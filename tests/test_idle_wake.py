"""An arrival that wakes an idle engine starts its step some time after it (the loop's wake-up and
hand-over). A fit measures that from the recorded steps, and the
simulator charges it, so an under-capacity prediction's TTFT is not short by it."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from engine.clock import VirtualClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.cost_fit import MIN_WAKE_STEPS, fit_cost_model, with_idle_wake
from engine.executors.cost_model import (
    DEFAULT_COST_MODEL,
    FEATURES,
    LinearCostModel,
    cost_model_from_dict,
    idle_wake_note,
)
from engine.executors.simulated import SimulatedExecutor
from engine.workload.generators import synthetic_workload
from engine.workload.spec import Workload
from storage import run_facts
from storage.database import open_for_read, open_for_write
from tests.recording import record_pretend_real
from whatif.base_run import load_base_run, simulate_quietly, summary_metrics
from whatif.pricing import price_for_prediction

WAKE = 0.004  # the pretend device's wake-up: about a third of a lone prefill step
CONFIG = EngineConfig(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=2048), CacheConfig(num_gpu_blocks=256))
FACTS = {"executor": "torch", "device": "cpu", "dtype": "float32", "torch_threads": 2}


def _sparse() -> Workload:
    """Arrivals far enough apart that the engine idles before most of them."""
    return synthetic_workload("mixed", 30, request_rate=1.0, seed=5)


def _record(tmp_path: Path, wake: float = WAKE) -> tuple[str, int]:
    db = str(tmp_path / "wake.db")
    device = dataclasses.replace(DEFAULT_COST_MODEL, name="waking device", idle_wake_s=wake)
    return db, record_pretend_real(db, CONFIG, _sparse(), device, FACTS)


def test_a_recorded_steps_wake_is_the_time_from_the_arrival_that_woke_the_engine(tmp_path: Path) -> None:
    db, run_id = _record(tmp_path)
    frame = run_facts.step_features(open_for_read(db), run_id)
    woke = frame["wake"].dropna()
    assert len(woke) >= 10  # most arrivals find the engine idle
    assert woke.to_numpy() == pytest.approx(WAKE)
    assert math.isnan(frame["wake"].iloc[0])  # the first step follows the run's start-up, not a wake-up
    assert frame["wake"].isna().sum() > len(woke)  # busy steps (decodes going straight on) have none


def test_the_fit_prices_the_wake_and_a_prediction_of_an_idle_engine_charges_it(tmp_path: Path) -> None:
    db, run_id = _record(tmp_path)
    base = load_base_run(open_for_write(db), run_id)
    assert isinstance(base.cost_model, LinearCostModel)
    assert base.cost_model.idle_wake_s == pytest.approx(WAKE, rel=0.05)
    recorded = base.recorded["ttft_p50"]
    charged = summary_metrics(simulate_quietly(base.config, base.cost_model, base.workload))["ttft_p50"]
    uncharged = summary_metrics(simulate_quietly(base.config, dataclasses.replace(base.cost_model, idle_wake_s=0.0),
                                                 base.workload))["ttft_p50"]
    assert recorded is not None and charged is not None and uncharged is not None
    assert abs(charged - recorded) < 0.1 * WAKE
    assert recorded - uncharged > 0.8 * WAKE  # what leaving it out would miss
    # It survives being stored with the run, and pricing for a prediction (which rebuilds the model).
    assert cost_model_from_dict(base.cost_model.to_dict()) == base.cost_model
    priced = price_for_prediction(base.cost_model, "real", base.exercised, kv_bytes_per_block=2048.0, profile=None)
    assert isinstance(priced.model, LinearCostModel) and priced.model.idle_wake_s == base.cost_model.idle_wake_s
    note = idle_wake_note(base.cost_model.fit)
    assert note is not None and f"{WAKE * 1e3:.2f} ms" in note


def test_an_engine_that_never_waited_is_not_charged(tmp_path: Path) -> None:
    db, run_id = _record(tmp_path, wake=0.0)
    base = load_base_run(open_for_write(db), run_id)
    assert isinstance(base.cost_model, LinearCostModel)
    assert base.cost_model.idle_wake_s == pytest.approx(0.0, abs=1e-5)


def test_the_price_is_the_median_wait_and_needs_enough_of_them() -> None:
    model = fit_cost_model(*_linear_steps())
    wakes = np.full(200, np.nan)
    woken = np.arange(0, 200, 10)
    wakes[woken] = 0.001
    wakes[woken[0]] = 0.5  # one wake-up behind a long pause: a median shrugs it off (a mean would not)
    wakes[woken[1]] = 0.0002
    assert with_idle_wake(model, wakes).idle_wake_s == pytest.approx(0.001)
    few = np.full(200, np.nan)
    few[woken[:MIN_WAKE_STEPS - 1]] = 0.001
    sparse = with_idle_wake(model, few)
    assert sparse.idle_wake_s == 0.0 and sparse.fit["idle_wakes"] == MIN_WAKE_STEPS - 1
    assert "not priced" in (idle_wake_note(sparse.fit) or "")
    assert with_idle_wake(model, wakes).coefficients == model.coefficients  # the step prices stay as fitted


def _linear_steps() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(200), rng.integers(1, 9, 200), rng.integers(0, 300, 200)]
                        + [np.zeros(200)] * (len(FEATURES) - 3))
    return x, x @ np.array([4e-3, 1e-4, 5e-5] + [0.0] * (len(FEATURES) - 3))


def test_a_simulated_arrival_that_finds_the_engine_idle_waits_the_wake_before_its_step() -> None:
    spaced = synthetic_workload("mixed", 20, request_rate=1.0, seed=2)
    ttfts: dict[float, dict[str, float]] = {}
    for wake in (0.0, WAKE):
        model = dataclasses.replace(DEFAULT_COST_MODEL, idle_wake_s=wake)
        engine = Engine(CONFIG, SimulatedExecutor(model), VirtualClock())
        engine.run(spaced.requests)
        ttfts[wake] = {rid: r.first_token_time - r.arrival_time for rid, r in engine.requests.items()
                       if r.first_token_time is not None}
    later = [ttfts[WAKE][rid] - ttfts[0.0][rid] for rid in ttfts[0.0]]
    woken = [d for d in later if d == pytest.approx(WAKE, abs=1e-9)]
    assert len(woken) >= 5  # the lone arrivals
    assert len(woken) < len(later)  # an arrival into a busy engine joins its next step: no wake


def test_a_negative_wake_is_refused() -> None:
    with pytest.raises(ValueError, match="idle_wake_s"):
        LinearCostModel({"intercept": 1e-3}, idle_wake_s=-1.0)
