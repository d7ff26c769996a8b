"""The first-launch demo: a real run on the `tiny` model that shows what the product is for.

Bursts of requests arrive over a steady trickle, so within each burst the batch fills, a queue
forms and drains, new prompts' prefill chunks cut into running decodes, and the small KV pool
forces a preemption now and then; between bursts the engine catches up. A steady Poisson rate
near capacity would show the same only while the machine's speed holds: on a shared CPU a
slower spell makes such a queue grow for good, whereas bursts still drain.

The entry file calls `ensure_started` on every rerun of every page, so it is idempotent: one
demo per dashboard process and database, decided once. Stopping the dashboard stops the demo
it started (the engine marks the run aborted); runs started from the form keep running.
"""

from __future__ import annotations

import atexit
import json
import random
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from dashboard import data, launcher, settings
from engine.workload.generators import synthetic_workload
from storage import queries
from storage.database import DatabaseMissingError, EmptyDatabaseError, StorageError

STOP_WAIT_S = 10.0  # how long the dashboard waits at exit for the demo engine to flush and exit


@dataclass(frozen=True)
class BurstyWorkload:
    """Bursts of arrivals every period_s over a Poisson trickle; lengths from the `mixed` workload."""

    num_bursts: int = 40
    period_s: float = 6.0
    burst_size: int = 36
    burst_spread_s: float = 0.5  # a burst's arrivals fall within this long
    trickle_rate: float = 6.0  # requests/s between bursts
    seed: int = 0

    def arrival_times(self) -> list[float]:
        rng = random.Random(self.seed)
        times: list[float] = []
        for burst in range(self.num_bursts):
            start = burst * self.period_s
            times += [start + rng.uniform(0, self.burst_spread_s) for _ in range(self.burst_size)]
            t = start + rng.expovariate(self.trickle_rate)
            while t < start + self.period_s:
                times.append(t)
                t += rng.expovariate(self.trickle_rate)
        return sorted(times)

    def write(self, path: Path) -> Path:
        """A JSONL workload file `python -m engine run --workload` reads."""
        times = self.arrival_times()
        specs = synthetic_workload("mixed", len(times), seed=self.seed).requests
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as out:
            for i, (t, spec) in enumerate(zip(times, specs, strict=True)):
                out.write(json.dumps({"request_id": f"r{i}", "arrival_time": round(t, 4),
                                      "prompt_len": spec.prompt_len, "max_tokens": spec.max_tokens}) + "\n")
        return path


WORKLOAD = BurstyWorkload()
NUM_GPU_BLOCKS = 120  # ~1,900 token slots: a full batch of long answers overflows it
FORM = launcher.RunForm(
    mode="real", model="tiny", max_num_seqs=16, max_num_batched_tokens=256, max_model_len=1024,
    num_gpu_blocks=NUM_GPU_BLOCKS, enable_chunked_prefill=True,
    name=f"demo: tiny model, bursts of {WORKLOAD.burst_size} requests every {WORKLOAD.period_s:g} s",
)


def demo_form(workload_file: Path) -> launcher.RunForm:
    """The demo's run, reading the workload written to workload_file."""
    return replace(FORM, workload_file=workload_file)


def describe() -> str:
    w = WORKLOAD
    minutes = w.num_bursts * w.period_s / 60
    return (f"bursts of {w.burst_size} requests every {w.period_s:g} s over a trickle of {w.trickle_rate:g}/s, "
            f"for about {minutes:.0f} minutes, into a batch of {FORM.max_num_seqs} sequences and a KV pool of "
            f"{NUM_GPU_BLOCKS} blocks")


@dataclass
class _Demos:
    """Per dashboard process: the demo launched for each database, and which were decided."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    decided: set[str] = field(default_factory=set)
    launched: dict[str, launcher.Launched] = field(default_factory=dict)


@st.cache_resource(show_spinner=False)
def _demos() -> _Demos:
    return _Demos()


def _has_runs(target: str) -> bool | None:
    """Whether the database holds runs; None when it cannot be read (then no demo is written into it)."""
    try:
        return not queries.list_runs(data.reader(target)).empty
    except (DatabaseMissingError, EmptyDatabaseError):
        return False
    except (StorageError, SQLAlchemyError):
        return None


def ensure_started(target: str) -> launcher.Launched | None:
    """Start the demo if this database has never held a run; the demo this process started, if any."""
    demos = _demos()
    with demos.lock:
        if target not in demos.decided:
            demos.decided.add(target)
            if _has_runs(target) is False:
                workload = WORKLOAD.write(settings.log_dir() / "demo-workload.jsonl")
                launched = launcher.launch(demo_form(workload).argv(target), "demo")
                demos.launched[target] = launched
                atexit.register(_stop, launched.pid)
        return demos.launched.get(target)


def launched(target: str) -> launcher.Launched | None:
    """The demo this dashboard process started on this database, if it did."""
    return _demos().launched.get(target)


def _stop(pid: int) -> None:
    """At dashboard exit: one SIGTERM (the engine flushes and marks the run aborted), then reap it."""
    if launcher.stop(pid):
        launcher.wait_for_exit(pid, STOP_WAIT_S)
