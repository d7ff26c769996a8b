"""A run's metadata, read in one place: the engine's pid, what-if notes, the self-check, a
validation, the fitted cost model, the stored summary.

The typed records are storage's (storage.run_meta); these accessors shape them for pages, which
never dig into a run row themselves. Every accessor takes the run as `data.run()` returns it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.executors.cost_model import idle_wake_note
from storage.run_meta import RunMeta, Trust, WhatIfNote, run_meta

RunRow = Mapping[str, Any]
Figures = Mapping[str, float | None]  # headline metrics by key (output_tokens_per_s, ttft_p50, ...): s, tokens/s


@dataclass(frozen=True)
class Comparison:
    """Two sets of the same headline figures, e.g. recorded vs simulated."""

    first: Figures
    second: Figures


@dataclass(frozen=True)
class Validation:
    """A prediction checked against a real run with the same parameters."""

    real_run_id: int
    predicted: Figures
    real: Figures


@dataclass(frozen=True)
class CostFit:
    """How well the cost model fitted to a run explains that run's step times."""

    num_steps: int | None
    median_abs_pct_error: float
    r2: float
    num_row_factors: int  # measured corrections for step sizes off the linear trend
    idle_wake: str | None  # engine.executors.cost_model.idle_wake_note of the fit


@dataclass(frozen=True)
class Headline:
    """A finished run's summary figures (seconds, tokens/s)."""

    output_tokens_per_s: float | None
    ttft_p50: float | None
    itl_p50: float | None
    tpot_p50: float | None
    e2e_p50: float | None
    num_preemptions: int
    padding_share: float | None  # of computed tokens; None without static batching's padding


def meta(run: RunRow) -> RunMeta:
    """The run's typed metadata (source, pid, notes)."""
    return run_meta(dict(run))


def engine_pid(run: RunRow) -> int | None:
    """The process recording the run (lets the dashboard stop it)."""
    pid = meta(run).pid
    return int(pid) if pid else None


def what_if_changes(run: RunRow) -> dict[str, Any]:
    """The parameters a what-if prediction changed from its base run; {} for other runs."""
    note = meta(run).what_if
    return dict(note.changes) if note else {}


def what_if_fit(run: RunRow) -> str:
    """A prediction's step costs: "run" (its base's own fit) or "pooled"; "run" for other runs."""
    note = meta(run).what_if
    return note.fit if note else "run"


def what_if_note(run: RunRow) -> WhatIfNote | None:
    """What a what-if prediction recorded about itself (its base, changes, trust, cost model)."""
    return meta(run).what_if


def self_check(run: RunRow) -> Comparison | None:
    """A prediction's replay of its base run under the base's own configuration: recorded vs simulated
    (a consistency check of the replay, in sample: not an accuracy figure)."""
    note = meta(run).what_if
    check = note.trust.consistency if note else None
    return Comparison(check.actual, check.predicted) if check else None


def trust(run: RunRow) -> Trust | None:
    """A prediction's trust figures (held out, extrapolations, track record), recorded before it ran."""
    note = meta(run).what_if
    return note.trust if note else None


def validation(run: RunRow) -> Validation | None:
    """The real run that checked this prediction, when one did."""
    found = meta(run).validation
    if found is None:
        return None
    return Validation(found.real_run_id, found.check.predicted, found.check.actual)


def cost_fit(run: RunRow) -> CostFit | None:
    """The step-time model fitted to this run (stored on the first what-if of it), if any."""
    model = run.get("cost_model")
    if not model:
        return None
    fit = model.get("fit") or {}
    return CostFit(fit.get("num_steps"), float(fit.get("median_abs_pct_error", float("nan"))),
                   float(fit.get("r2", float("nan"))), len(model.get("row_factors") or {}), idle_wake_note(fit))


def headline(run: RunRow) -> Headline | None:
    """The summary a finished run stored; None while it runs."""
    summary = run.get("summary")
    if not summary:
        return None

    def p50(key: str) -> float | None:
        return (summary.get(key) or {}).get("p50")

    padding = summary.get("padding_share") if summary.get("num_padding_tokens") else None
    return Headline(summary.get("output_tokens_per_s"), p50("ttft_s"), p50("itl_s"), p50("tpot_s"), p50("e2e_s"),
                    int(summary.get("num_preemptions") or 0), padding)
