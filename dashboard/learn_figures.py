"""What a lesson shows once its runs are recorded: a chart, and rows of the course's figure next to
the run's; plus the small formatting every lesson shares."""

from __future__ import annotations

from dataclasses import dataclass, field

from dashboard import data
from dashboard.learn import LessonRuns
from dashboard.learn_charts import AnyChart
from dashboard.learn_plan import swept_name

NOT_RECORDED = "not recorded yet"
RECORDING = "recording…"
EXACT, HOLDS, DIFFERS = "✓ exact", "✓ holds", "✗ differs"


@dataclass(frozen=True)
class Row:
    figure: str
    course: str  # what the course states
    run: str  # what the simulated run gave
    tiny: str | None = None  # what the real `tiny` run gave; None where the lesson has no real run
    check: str = ""  # EXACT / HOLDS / DIFFERS, computed from the run


@dataclass(frozen=True)
class View:
    chart: AnyChart
    caption: str
    rows: list[Row]
    run_column: str  # "unit-cost run" or "simulated run"
    links: dict[str, int] = field(default_factory=dict)  # label -> run id, opened in Replay


def exact(run: object, course: object) -> str:
    return EXACT if run == course else DIFFERS


def holds(condition: bool) -> str:
    return HOLDS if condition else DIFFERS


def steps(n: float) -> str:
    return f"{n:,.0f} steps" if float(n).is_integer() else f"{n:,.1f} steps"


def ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:,.1f} ms"


def tok_s(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} tok/s"


def missing_tiny(runs: LessonRuns, names: tuple[str, ...]) -> str | None:
    """What the tiny column says while a real run is absent; None once every one is recorded."""
    if all(runs.id(n) is not None for n in names):
        return None
    return RECORDING if any(n in runs.recording for n in names) else NOT_RECORDED


def swept_ids(runs: LessonRuns, name: str, param: str, values: tuple[str, ...]) -> dict[str, int] | None:
    """The runs of a lesson's sweep by value, or None until every one is recorded."""
    ids = {v: runs.id(swept_name(name, param, v)) for v in values}
    return None if any(i is None for i in ids.values()) else {v: int(i) for v, i in ids.items() if i is not None}


def summary(target: str, run_id: int) -> dict[str, object]:
    """The summary a finished run stored (throughput, TTFT/ITL/TPOT/E2E percentiles in seconds)."""
    run = data.run(target, run_id)
    return dict(run["summary"] or {}) if run else {}


def p(target: str, run_id: int, metric: str, q: str = "p50") -> float | None:
    value = (summary(target, run_id).get(metric) or {}).get(q)  # type: ignore[attr-defined]
    return None if value is None else float(value)
