"""The search space: `--search NAME=VALUES ...`, one axis per engine parameter, and its grid.

VALUES is a comma-separated list; for whole-number parameters an item may also be a range
START:STOP (every number), START:STOP:+STEP (arithmetic) or START:STOP:xFACTOR (geometric, e.g.
8:256:x2), STOP included when reached. Every combination of the axes is a point, numbered in
the order the axes and values were given; a combination that is not a valid configuration (a
token budget below max_model_len without chunked prefill, say) is kept as an invalid point with
the engine's reason, so the numbering never depends on what was valid.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from engine.config import BATCHING_MODES, POLICIES, PREEMPTION_MODES, ConfigError, EngineConfig
from engine.errors import UserError

INT_PARAMS = ("max_num_seqs", "max_num_batched_tokens", "num_gpu_blocks", "swap_space", "block_size")
FLOAT_PARAMS = ("scheduler_delay_factor",)
CHOICE_PARAMS: dict[str, tuple[str, ...]] = {
    "enable_chunked_prefill": ("true", "false"), "policy": POLICIES, "preemption_mode": PREEMPTION_MODES,
    "batching": BATCHING_MODES,
}
SEARCHABLE = INT_PARAMS + FLOAT_PARAMS + tuple(CHOICE_PARAMS)
MAX_RANGE_VALUES = 100_000  # a range that would enumerate more is a typo, not a search


class SearchSpaceError(UserError, ValueError):
    """A --search that cannot be read; the message names the parameter and what is expected."""


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Point:
    """One combination of the axes; config is None when the combination is not a valid configuration."""

    index: int
    params: dict[str, Any]  # the searched values, by parameter
    config: dict[str, Any] | None  # EngineConfig.to_dict() of the point
    invalid_reason: str | None = None


def parse_axis(text: str) -> Axis:
    """`NAME=VALUES` into an Axis (argparse type: raises SearchSpaceError with one line)."""
    name, sep, raw = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep:
        raise SearchSpaceError(f"--search takes NAME=VALUES, got {text!r}")
    if name not in SEARCHABLE:
        raise SearchSpaceError(f"unknown search parameter {name!r}; searchable: {', '.join(SEARCHABLE)}")
    items = [v.strip() for v in raw.split(",") if v.strip()]
    if not items:
        raise SearchSpaceError(f"--search {name}= has no values (empty range)")
    values: list[Any] = []
    for item in items:
        for value in _values_of(name, item):
            if value not in values:
                values.append(value)
    return Axis(name, tuple(values))


def _values_of(name: str, item: str) -> list[Any]:
    if name in INT_PARAMS:
        return _int_values(name, item)
    if name in FLOAT_PARAMS:
        try:
            value = float(item)
        except ValueError:
            raise SearchSpaceError(f"--search {name} values must be numbers, got {item!r}") from None
        if not math.isfinite(value) or value < 0:
            raise SearchSpaceError(f"--search {name} values must be numbers >= 0, got {item!r}")
        return [value]
    choices = CHOICE_PARAMS[name]
    word = item.lower()
    if word not in choices:
        raise SearchSpaceError(f"--search {name} values must be among {', '.join(choices)}, got {item!r}")
    return [word == "true"] if name == "enable_chunked_prefill" else [word]


def _int_values(name: str, item: str) -> list[int]:
    parts = item.split(":")
    try:
        if len(parts) == 1:
            return [_whole(name, parts[0])]
        if len(parts) not in (2, 3):
            raise SearchSpaceError(f"--search {name}: a range is START:STOP[:STEP], got {item!r}")
        start, stop = _whole(name, parts[0]), _whole(name, parts[1])
        step = parts[2].strip() if len(parts) == 3 else "+1"
    except ValueError:
        raise SearchSpaceError(f"--search {name} values must be whole numbers or ranges, got {item!r}") from None
    if stop < start:
        raise SearchSpaceError(f"--search {name}={item} is an empty range (STOP {stop} < START {start})")
    geometric = step.startswith(("x", "*"))
    try:
        size = float(step[1:]) if geometric else int(step.lstrip("+"))
    except ValueError:
        raise SearchSpaceError(f"--search {name}: a range step is +N or xFACTOR, got {step!r}") from None
    if (geometric and size <= 1) or (not geometric and size < 1):
        raise SearchSpaceError(f"--search {name}: a range step must move forward (+N >= 1, xFACTOR > 1), got {step!r}")
    values: list[int] = []
    current: float = start
    while current <= stop:
        value = round(current)
        if not values or value != values[-1]:
            values.append(value)
        current = current * size if geometric else current + size
        if len(values) > MAX_RANGE_VALUES:
            raise SearchSpaceError(f"--search {name}={item} has over {MAX_RANGE_VALUES:,} values")
    return values


def _whole(name: str, text: str) -> int:
    value = int(text.strip())
    if value < (0 if name == "swap_space" else 1):
        raise SearchSpaceError(f"--search {name} values must be >= {0 if name == 'swap_space' else 1}, got {value}")
    return value


def check_axes(axes: list[Axis], given_flags: dict[str, Any]) -> None:
    """Each parameter searched once, and not also fixed by its own flag."""
    seen: set[str] = set()
    for axis in axes:
        if axis.name in seen:
            raise SearchSpaceError(f"--search gives {axis.name} twice; list all its values in one NAME=VALUES")
        seen.add(axis.name)
        if axis.name in given_flags:
            flag = "--" + axis.name.replace("_", "-")
            raise SearchSpaceError(f"{axis.name} is both searched and fixed by {flag}; drop one of them")


def grid(axes: list[Axis], base: EngineConfig) -> list[Point]:
    """Every combination of the axes over the base configuration, valid or not."""
    points: list[Point] = []
    names = [a.name for a in axes]
    for index, combo in enumerate(itertools.product(*(a.values for a in axes))):
        params = dict(zip(names, combo, strict=True))
        try:
            points.append(Point(index, params, base.replace(**params).to_dict()))
        except ConfigError as exc:
            points.append(Point(index, params, None, str(exc)))
    return points


def grid_size(axes: list[Axis]) -> int:
    return math.prod(len(a.values) for a in axes)


def describe_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
