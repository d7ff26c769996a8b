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
    padding = rng.integers(0, 2, n) * rng.integers(0, 512, n)
    finished = np.minimum(padding, rng.integers(0, 2, n) * rng.integers(0, 64, n))  # pad rows with logits
    return np.column_stack([np.ones(n), num_seqs, prefill_tokens, decode, context, pairs, swaps,
                            padding, finished]).astype(float)


TRUE = {"intercept": 4e-3, "num_seqs": 5e-5, "prefill_tokens": 4e-5, "decode_seqs": 1e-4,
        "decode_context": 3e-7, "prefill_pairs": 2e-9, "swap_blocks": 2e-5, "padding_tokens": 4e-5,
        "padding_seqs": 6e-5}


def test_recovers_known_coefficients_from_noisy_steps() -> None:
    rng = np.random.default_rng(0)
    x = _shapes(2000, rng)
    truth = np.array([TRUE[f] for f in FEATURES])
    y = x @ truth * rng.normal(1.0, 0.03, len(x))
    y[::97] *= 5  # a few GC pauses / noisy neighbours
    model = fit_cost_model(x, y)
    for name in ("intercept", "prefill_tokens", "decode_seqs", "padding_tokens", "padding_seqs"):
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


def test_row_counts_off_the_line_get_their_own_factor() -> None:
    """Steps of exactly 8 rows run 25% faster than the linear trend (as CPU matmul kernels can):
    the fit learns that factor from the steps, and row counts it saw rarely stay linear."""
    rng = np.random.default_rng(3)
    decode = rng.integers(1, 17, 3000).astype(float)
    decode[:5] = 30  # a row count seen too rarely to get a factor
    x = np.column_stack([np.ones(len(decode)), decode, np.zeros(len(decode)), decode, decode * 100.0,
                         np.zeros(len(decode)), np.zeros(len(decode)), np.zeros(len(decode)), np.zeros(len(decode))])
    linear = 4e-3 + 1e-4 * decode + 3e-7 * decode * 100
    y = linear * np.where(decode == 8, 0.75, 1.0) * rng.normal(1.0, 0.01, len(decode))
    model = fit_cost_model(x, y)
    assert model.row_factors[8] / model.row_factors[7] == pytest.approx(0.75, rel=0.03)
    assert 30 not in model.row_factors
    eight, nine = tuple(x[decode == 8][0]), tuple(x[decode == 9][0])
    assert model.predict(eight) == pytest.approx(float(linear[decode == 8][0]) * 0.75, rel=0.05)
    assert model.predict(nine) == pytest.approx(float(linear[decode == 9][0]), rel=0.05)
    assert model.fit["median_abs_pct_error"] < 3
    assert cost_model_from_dict(model.to_dict()).row_factors == model.row_factors


def test_a_row_factor_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        LinearCostModel(coefficients=TRUE, row_factors={8: 0.0})


def _best_nonnegative_fit(x: np.ndarray, y: np.ndarray) -> float:
    """The least residual over every subset of features solved without the others (the NNLS
    optimum is one of them), by brute force."""
    from itertools import combinations

    best = float(np.sum(y**2))
    n = x.shape[1]
    for k in range(1, n + 1):
        for cols in combinations(range(n), k):
            sol, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
            if (sol >= -1e-12).all():
                best = min(best, float(np.sum((x[:, cols] @ sol - y) ** 2)))
    return best


def test_the_fit_is_true_nonnegative_least_squares() -> None:
    """A greedy "drop the most negative coefficient and refit" can drop a term NNLS keeps and
    settle on a worse fit; the solver must reach the constrained optimum on every problem."""
    from engine.executors.cost_fit import _nonnegative_lstsq

    rng = np.random.default_rng(7)
    for _ in range(40):
        x = rng.normal(size=(30, 5))
        y = x @ rng.normal(size=5) + rng.normal(scale=0.5, size=30)
        coef = _nonnegative_lstsq(x, y)
        assert (coef >= 0).all()
        assert float(np.sum((x @ coef - y) ** 2)) == pytest.approx(_best_nonnegative_fit(x, y), rel=1e-6)


def test_held_out_quality_is_worse_than_in_sample_when_the_model_misses_a_term() -> None:
    """Steps whose time depends on something the features miss: the held-out error is measured on
    steps the fit never saw, so it cannot be shrunk by the fit, unlike the in-sample figure."""
    from engine.executors.cost_fit import holdout_quality

    rng = np.random.default_rng(4)
    x = _shapes(400, rng)
    hidden = np.sin(np.arange(400) / 15.0) * 0.01  # drifts along the run: contiguous blocks differ
    y = x @ np.array([TRUE[f] for f in FEATURES]) + 0.012 + hidden
    in_sample = fit_cost_model(x, y).fit
    held = holdout_quality(x, y)
    assert held["folds"] == 5 and held["num_steps"] == 400
    assert held["median_abs_pct_error"] > in_sample["median_abs_pct_error"]
    exact = holdout_quality(x, x @ np.array([TRUE[f] for f in FEATURES]))
    assert exact["median_abs_pct_error"] < 1.0  # a model that can be right is right out of sample too


def test_holdout_needs_enough_steps() -> None:
    from engine.executors.cost_fit import holdout_quality

    x = _shapes(20, np.random.default_rng(5))
    assert holdout_quality(x, np.ones(20) * 0.01)["folds"] == 0
