"""Fit a LinearCostModel to measured step times: non-negative least squares (scipy's NNLS).

Negative coefficients would let the simulator predict negative or shrinking step times outside
the shapes it saw, so the fit is constrained to coefficients >= 0 (Lawson-Hanson NNLS on
column-scaled features). Steps far off the fit (a GC pause, another process on the machine) are
trimmed once, robustly, so they cannot bend the shape of the model; then the model is scaled so
its total over every step equals the measured total, because queueing (TTFT, E2E) follows the
sum of step times, slow steps included.

On top of the linear part, every row count (prefill tokens + decodes + pad rows in a step) seen in
at least MIN_ROW_STEPS steps gets a factor: the median ratio of its measured to its linear time.
Matmul kernels are not linear in the row count, and the steps of a saturated batch all share one
row count, so this is where a linear model's error would pile up in a queue.

How well a fit predicts steps it did not see is measured apart (holdout_quality): the whole fit is
redone on all but one contiguous block of the run and scored on that block, for every block.

What an idle engine's wake-up costs is priced apart (with_idle_wake): it is not a step shape but
the time from an arrival to the start of the step it wakes the engine for.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
from scipy.optimize import nnls

from engine.errors import UserError
from engine.executors.cost_model import FEATURES, LinearCostModel

MIN_STEPS = 8
OUTLIER_MADS = 6.0
MIN_ROW_STEPS = 20  # steps needed at one row count to trust its factor
MIN_WAKE_STEPS = 5  # idle wake-ups needed to price one
# 2: row factors; 3: static padding charged; 4: true NNLS, held-out quality; 5: a step's duration
# includes the engine loop's gap to the next step (storage.run_facts.step_features); 6: idle wake-ups
# priced (with_idle_wake); 7: the wake price is the wait alone. Older fits are refitted.
FIT_VERSION = 7
HOLDOUT_FOLDS = 5  # contiguous blocks of the run, each predicted by a fit to the others


class CostModelFitError(UserError, ValueError):
    """Too little or unusable data to fit a cost model."""


def _nonnegative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin ||x c - y|| subject to c >= 0."""
    coef, _ = nnls(x, y, maxiter=50 * x.shape[1])
    return np.asarray(coef, dtype=float)


def fit_cost_model(features: np.ndarray, durations: np.ndarray, name: str = "fitted",
                   provenance: dict[str, Any] | None = None) -> LinearCostModel:
    """features: [steps, len(FEATURES)] in FEATURES order (intercept column of ones first);
    durations: measured seconds per step."""
    x = np.asarray(features, dtype=float)
    y = np.asarray(durations, dtype=float)
    if x.ndim != 2 or x.shape[1] != len(FEATURES) or len(y) != len(x):
        raise CostModelFitError(f"expected a [steps, {len(FEATURES)}] feature matrix and one duration per step")
    keep = np.isfinite(y) & (y > 0) & np.isfinite(x).all(axis=1)
    x, y = x[keep], y[keep]
    if len(y) < MIN_STEPS:
        raise CostModelFitError(f"need at least {MIN_STEPS} timed steps to fit a cost model, got {len(y)}")
    # Scale columns so the solver sees comparable magnitudes (pairs reach 1e6 while seqs stay < 1e3).
    scale = np.where(np.abs(x).max(axis=0) > 0, np.abs(x).max(axis=0), 1.0)
    coef = _nonnegative_lstsq(x / scale, y)
    residual = y - (x / scale) @ coef
    mad = np.median(np.abs(residual - np.median(residual))) or 1e-12
    inliers = np.abs(residual) <= OUTLIER_MADS * 1.4826 * mad
    if inliers.sum() >= MIN_STEPS and inliers.sum() < len(y):
        coef = _nonnegative_lstsq(x[inliers] / scale, y[inliers])
    coef = coef / scale
    linear = np.maximum(x @ coef, 0.0)
    rows = (x[:, 2] + x[:, 3] + x[:, 7]).astype(int)  # prefill tokens + decodes + pad rows: the matmuls' rows
    row_factors = _row_factors(rows, y, linear)
    factor = np.array([row_factors.get(int(r), 1.0) for r in rows])
    raw_total = float((linear * factor).sum())
    total_scale = float(y.sum()) / raw_total if raw_total > 0 else 1.0
    coef = coef * total_scale
    predicted = np.maximum(x @ coef, 0.0) * factor
    rel_err = np.abs(predicted - y) / y
    ss_res = float(((y - predicted) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum()) or 1e-24
    fit = {
        "num_steps": len(y),
        "num_outliers_trimmed": int(len(y) - inliers.sum()),
        "r2": 1.0 - ss_res / ss_tot,
        "median_abs_pct_error": float(np.median(rel_err) * 100),
        "p90_abs_pct_error": float(np.percentile(rel_err, 90) * 100),
        "total_time_pct_error": float((predicted.sum() - y.sum()) / y.sum() * 100),
        "total_scale": total_scale,  # how much the trimmed fit was scaled to match the measured total
        "num_row_factors": len(row_factors),
        "version": FIT_VERSION,
        **(provenance or {}),
    }
    return LinearCostModel(coefficients={f: float(c) for f, c in zip(FEATURES, coef, strict=True)}, name=name,
                           fit=fit, row_factors=row_factors)


def with_idle_wake(model: LinearCostModel, wakes: np.ndarray) -> LinearCostModel:
    """The model with idle_wake_s measured on the steps an arrival woke the idle engine for. wakes:
    per step, the time from that arrival to the step's start (NaN for every other step). The price is
    their median; with fewer than MIN_WAKE_STEPS such steps it is 0, and the fit says how many there
    were. The woken step's own excess over its shape's price (a first step on cold caches) is left
    out: adding it made the default fit's held-out TTFTs worse (BENCHMARKS.md, what-if fidelity)."""
    w = np.asarray(wakes, dtype=float)
    waits = w[np.isfinite(w) & (w >= 0)]
    price = float(np.median(waits)) if len(waits) >= MIN_WAKE_STEPS else 0.0
    fit = dict(model.fit) | {"idle_wakes": len(waits), "idle_wake_s": price}
    return dataclasses.replace(model, idle_wake_s=price, fit=fit)


def _row_factors(rows: np.ndarray, y: np.ndarray, linear: np.ndarray) -> dict[int, float]:
    """Median measured / linear time per row count seen in at least MIN_ROW_STEPS steps (every step
    counts: a whole row count off the line is what this is for, and a median shrugs off pauses)."""
    ok = linear > 0
    rows = rows[ok]
    ratios = y[ok] / linear[ok]
    factors = {}
    for r in np.unique(rows):
        at = ratios[rows == r]
        if len(at) >= MIN_ROW_STEPS:
            factors[int(r)] = float(np.median(at))
    return factors


def holdout_quality(features: np.ndarray, durations: np.ndarray, folds: int = HOLDOUT_FOLDS) -> dict[str, Any]:
    """Out-of-sample fit quality: the run is cut into `folds` contiguous blocks of steps; each block
    is predicted by a model fitted (trimming, row factors, total scaling and all) to the other
    blocks. Returns R^2 and median / p90 relative step-time error over every held-out step, or
    {"folds": 0, ...} with a reason when the run is too short to hold steps out."""
    x = np.asarray(features, dtype=float)
    y = np.asarray(durations, dtype=float)
    keep = np.isfinite(y) & (y > 0) & np.isfinite(x).all(axis=1)
    x, y = x[keep], y[keep]
    if len(y) < folds * MIN_STEPS:
        return {"folds": 0, "reason": f"{len(y)} timed steps are too few to hold {folds} blocks out"}
    edges = np.linspace(0, len(y), folds + 1).astype(int)
    predicted = np.empty(len(y))
    for a, b in itertools.pairwise(edges):
        train = np.r_[0:a, b:len(y)]
        model = fit_cost_model(x[train], y[train])
        predicted[a:b] = [model.predict(tuple(row)) for row in x[a:b]]
    rel_err = np.abs(predicted - y) / y
    ss_tot = float(((y - y.mean()) ** 2).sum()) or 1e-24
    return {
        "folds": folds,
        "num_steps": len(y),
        "r2": 1.0 - float(((y - predicted) ** 2).sum()) / ss_tot,
        "median_abs_pct_error": float(np.median(rel_err) * 100),
        "p90_abs_pct_error": float(np.percentile(rel_err, 90) * 100),
        "total_time_pct_error": float((predicted.sum() - y.sum()) / y.sum() * 100),
    }
