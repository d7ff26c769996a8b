"""Fitting step-time cost models: recovers known coefficients, never goes negative."""

from __future__ import annotations

import numpy as np
import pytest

from engine.executors.cost_fit import CostModelFitError, fit_cost_model
from engine.executors.cost_model import FEATURES, LinearCostModel, cost_model_from_dict


def _shapes(n: int, rng: np.random.Generator) -> np.ndarray:
    num_seqs = rng.integers(1, 64, n)
    decode = np.minimum(num_seqs, rng.integers(0, 64, n))
    prefill_tokens = rng.integers(0, 2048, n) * (num_seqs > decode)
    context = decode * rng.integers(16, 600, n)
    pairs = prefill_tokens * rng.integers(8, 300, n)
    swaps = rng.integers(0, 3, n) * rng.integers(0, 10, n)
    return np.column_stack([np.ones(n), num_seqs, prefill_tokens, decode, context, pairs, swaps]).astype(float)


TRUE = {"intercept": 4e-3, "num_seqs": 5e-5, "prefill_tokens": 4e-5, "decode_seqs": 1e-4,
        "decode_context": 3e-7, "prefill_pairs": 2e-9, "swap_blocks": 2e-5}


def test_recovers_known_coefficients_from_noisy_steps() -> None:
    rng = np.random.default_rng(0)
    x = _shapes(2000, rng)
    truth = np.array([TRUE[f] for f in FEATURES])
    y = x @ truth * rng.normal(1.0, 0.03, len(x))
    y[::97] *= 5  # a few GC pauses / noisy neighbours
    model = fit_cost_model(x, y)
    for name in ("intercept", "prefill_tokens", "decode_seqs"):
        assert model.coefficients[name] == pytest.approx(TRUE[name], rel=0.15), name
    assert model.fit["num_outliers_trimmed"] >= 15
    assert model.fit["median_abs_pct_error"] < 5
    assert model.fit["r2"] > 0.6  # reported over every step, the 5x outliers included


def test_coefficients_are_never_negative() -> None:
    rng = np.random.default_rng(1)
    x = _shapes(300, rng)
    y = 0.01 - 1e-6 * x[:, 2] + 3e-5 * x[:, 3]  # a decreasing feature must not become a negative cost
    y = np.maximum(y, 1e-4)
    model = fit_cost_model(x, y)
    assert all(v >= 0 for v in model.coefficients.values())
    assert model.predict(tuple(x[0])) >= 0


def test_round_trips_through_its_dict() -> None:
    model = LinearCostModel(coefficients=TRUE, name="fitted", fit={"r2": 0.9})
    again = cost_model_from_dict(model.to_dict())
    assert again.to_dict() == model.to_dict()


def test_too_few_steps_is_a_clear_error() -> None:
    x = _shapes(3, np.random.default_rng(2))
    with pytest.raises(CostModelFitError, match="at least 8 timed steps"):
        fit_cost_model(x, np.ones(3) * 0.01)
