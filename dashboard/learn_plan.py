"""What each Learn lesson records, as typed data: its workload and its runs (names, engine arguments).

The launcher turns a lesson's steps into `python -m engine` command lines (launcher.LessonRun);
the Learn page finds the recorded runs again by these names. Under the unit cost model every step
costs one time unit, so times in those runs are step counts and the course's numbers come out
exactly; lessons about time (batch size, chunked prefill, preemption) use the cost model fitted
to `tiny` instead, since under unit cost a big step costs no more than a small one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.engine_args import EngineArgs

LEARN_PREFIX = "learn: "
LESSON_KEYS = ("static_waste", "continuous_loop", "scheduler_trace", "production", "batch_sweep", "short_long",
               "chunked_prefill", "preemption", "policies")


@dataclass(frozen=True)
class FileRequest:
    """One line of a lesson's own JSONL workload."""

    request_id: str
    prompt_len: int
    max_tokens: int
    arrival_time: float = 0.0

    def to_json(self) -> dict[str, object]:
        # ignore_eos: every request produces exactly max_tokens, on the random-weight tiny model too.
        return {"request_id": self.request_id, "arrival_time": self.arrival_time, "prompt_len": self.prompt_len,
                "max_tokens": self.max_tokens, "ignore_eos": True}


@dataclass(frozen=True)
class Generated:
    """A generated workload (the engine's `--workload mixed|uniform` with its flags)."""

    kind: str
    num_prompts: int
    request_rate: float | None = None  # None: all at t=0
    prompt_lens: tuple[int, int] | None = None
    output_lens: tuple[int, int] | None = None
    priority_levels: int | None = None
    max_tokens_cap: int | None = None  # every request declares this max_tokens (sjf no longer knows lengths)


@dataclass(frozen=True)
class Sweep:
    param: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class LessonStep:
    """One command of a lesson: a simulated or real run, or a sweep of them."""

    name: str
    workload: str | Generated  # str: one of FILES, written by write_workloads
    engine: EngineArgs
    real: bool = False  # the real `tiny` model instead of a simulation
    cost_model: str = "unit"  # simulated steps: unit | default (fitted to tiny)
    sweep: Sweep | None = None

    def run_names(self) -> tuple[str, ...]:
        if self.sweep is None:
            return (self.name,)
        return tuple(swept_name(self.name, self.sweep.param, v) for v in self.sweep.values)


def swept_name(name: str, param: str, value: str) -> str:
    """The name `python -m engine sweep --name NAME` gives the run of one value."""
    return f"{name} {param}={value}"


# -- the lessons' own workloads (prompt lengths are short: these lessons are about outputs) ---------------
LOOP_OUTPUTS = (10, 20, 15, 100, 25, 30, 15, 50, 40, 10)
WASTE_OUTPUTS = (10, 20, 50, 100)
LATE_ARRIVAL = 5.0  # the newcomers of lesson 1 arrive at step 5 (unit cost: one time unit per step)
TRACE_DECODING = {"D": (50, 8), "E": (30, 3)}  # prompt, max_tokens: still decoding at step 1, in their blocks
TRACE_WAITING = {"A": 200, "B": 150, "C": 100}  # prompts arriving at step 1
TRACE_ARRIVAL = 1.0
TRACE_MAX_NUM_SEQS, TRACE_BUDGET = 5, 300
BATCH, SHORT, LONG = 32, 50, 500  # the production scenario

FILES: dict[str, tuple[FileRequest, ...]] = {
    "static_waste": (*(FileRequest(f"r{i + 1}", 8, n) for i, n in enumerate(WASTE_OUTPUTS)),
                     *(FileRequest(f"late{i + 1}", 8, n, LATE_ARRIVAL) for i, n in enumerate((10, 20)))),
    "continuous_loop": tuple(FileRequest(f"r{i + 1}", 8, n) for i, n in enumerate(LOOP_OUTPUTS)),
    "scheduler_trace": (*(FileRequest(rid, p, m) for rid, (p, m) in TRACE_DECODING.items()),
                        *(FileRequest(rid, p, 4, TRACE_ARRIVAL) for rid, p in TRACE_WAITING.items())),
    "production": (FileRequest("long", 16, LONG), *(FileRequest(f"short{i + 1}", 16, SHORT) for i in range(BATCH - 1)),
                   *(FileRequest(f"waiting{i + 1}", 16, SHORT) for i in range(BATCH - 1))),
}


def workload_path(folder: Path, key: str) -> Path:
    return folder / f"learn-{key}.jsonl"


def write_workloads(lesson: str, folder: Path) -> None:
    """Write the workload files a lesson's commands read."""
    for key in {s.workload for s in PLANS[lesson] if isinstance(s.workload, str)}:
        path = workload_path(folder, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in FILES[key]), encoding="utf-8")


# -- the runs ------------------------------------------------------------------------------------------
BATCHING = Sweep("batching", ("static", "continuous"))
WASTE = LEARN_PREFIX + "static waste"
LOOP, LOOP_TINY = LEARN_PREFIX + "continuous loop", LEARN_PREFIX + "continuous loop (tiny)"
TRACE_BLOCKS_HELD = 4 + 2  # D's 50 tokens and E's 30 in 16-token blocks
TRACE = {  # name -> (chunked prefill, free blocks when A, B, C arrive)
    LEARN_PREFIX + "scheduler trace, 20 free blocks": (False, 20),
    LEARN_PREFIX + "scheduler trace, chunked, 20 free blocks": (True, 20),
    LEARN_PREFIX + "scheduler trace, chunked, 30 free blocks": (True, 30),
}
PRODUCTION, PRODUCTION_TINY = LEARN_PREFIX + "production batch", LEARN_PREFIX + "production batch (tiny)"
BATCH_SIZES, BATCH_SIZES_TINY = ("1", "2", "4", "8", "16", "32", "64"), ("1", "4", "16", "64")
SIZES, SIZES_TINY = LEARN_PREFIX + "batch size", LEARN_PREFIX + "batch size (tiny)"
SHORT_LONG = LEARN_PREFIX + "short vs long"
MIXED_SPLIT = 50  # the mixed workload's answers are 10-20 or 80-100 tokens
CHUNK_BUDGET = 256
CHUNKED_OFF, CHUNKED_ON = LEARN_PREFIX + "chunked prefill off", LEARN_PREFIX + "chunked prefill on"
CHUNKED = {CHUNKED_OFF: False, CHUNKED_ON: True}
CHUNKED_TINY = {f"{name} (tiny)": on for name, on in CHUNKED.items()}
PREEMPTION, PREEMPTION_TINY = LEARN_PREFIX + "preemption", LEARN_PREFIX + "preemption (tiny)"
PREEMPTION_MODES = Sweep("preemption_mode", ("recompute", "swap"))
POLICIES = LEARN_PREFIX + "policies"
POLICY_VALUES = Sweep("policy", ("fcfs", "priority", "sjf", "sjf-oracle"))
DECLARED_CAP = 128

_PROMPT_HEAVY = Generated("uniform", 48, request_rate=8.0, prompt_lens=(256, 1024), output_lens=(64, 128))
_SMALL_POOL = EngineArgs(max_num_seqs=16, num_gpu_blocks=48, swap_space=128)


def _chunking(on: bool) -> EngineArgs:
    return EngineArgs(max_num_seqs=16, enable_chunked_prefill=True, max_num_batched_tokens=CHUNK_BUDGET) if on \
        else EngineArgs(max_num_seqs=16)


PLANS: dict[str, tuple[LessonStep, ...]] = {
    "static_waste": (LessonStep(WASTE, "static_waste", EngineArgs(max_num_seqs=4, batching="static")),),
    "continuous_loop": (LessonStep(LOOP, "continuous_loop", EngineArgs(max_num_seqs=4), sweep=BATCHING),
                        LessonStep(LOOP_TINY, "continuous_loop", EngineArgs(max_num_seqs=4), real=True,
                                   sweep=BATCHING)),
    "scheduler_trace": tuple(
        LessonStep(name, "scheduler_trace", EngineArgs(max_num_seqs=TRACE_MAX_NUM_SEQS,
                                                       max_num_batched_tokens=TRACE_BUDGET, max_model_len=TRACE_BUDGET,
                                                       enable_chunked_prefill=chunked,
                                                       num_gpu_blocks=free + TRACE_BLOCKS_HELD))
        for name, (chunked, free) in TRACE.items()),
    "production": (LessonStep(PRODUCTION, "production", EngineArgs(max_num_seqs=BATCH), sweep=BATCHING),
                   LessonStep(PRODUCTION_TINY, "production", EngineArgs(max_num_seqs=BATCH), real=True,
                              sweep=BATCHING)),
    "batch_sweep": (LessonStep(SIZES, Generated("mixed", 256), EngineArgs(), cost_model="default",
                               sweep=Sweep("max_num_seqs", BATCH_SIZES)),
                    LessonStep(SIZES_TINY, Generated("mixed", 64), EngineArgs(), real=True,
                               sweep=Sweep("max_num_seqs", BATCH_SIZES_TINY))),
    "short_long": (LessonStep(SHORT_LONG, Generated("mixed", 64), EngineArgs(max_num_seqs=16), sweep=BATCHING),),
    "chunked_prefill": (*(LessonStep(name, _PROMPT_HEAVY, _chunking(on), cost_model="default")
                          for name, on in CHUNKED.items()),
                        *(LessonStep(name, _PROMPT_HEAVY, _chunking(on), real=True)
                          for name, on in CHUNKED_TINY.items())),
    "preemption": (LessonStep(PREEMPTION, Generated("mixed", 64), _SMALL_POOL, cost_model="default",
                              sweep=PREEMPTION_MODES),
                   LessonStep(PREEMPTION_TINY, Generated("mixed", 64), _SMALL_POOL, real=True, sweep=PREEMPTION_MODES)),
    "policies": (LessonStep(POLICIES, Generated("mixed", 64, priority_levels=3, max_tokens_cap=DECLARED_CAP),
                            EngineArgs(max_num_seqs=8), sweep=POLICY_VALUES),),
}
