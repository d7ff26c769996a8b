"""The Learn page's reads: each lesson's runs found again by name, and the figures the lessons
state, computed in SQL from the recorded runs (bound parameters only).

The figures count steps from the recorded step indexes (phases and steps), so under unit cost
they are exactly the textbook's step counts, and on a real run of the same workload they read the
same way. Lesson runs are finished and never change, so each is read once.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.learn_plan import LEARN_PREFIX
from storage import queries
from storage.database import DatabaseMissingError, EmptyDatabaseError


@dataclass(frozen=True)
class LessonRuns:
    """The newest finished run of every lesson run name, and the names being recorded now."""

    finished: dict[str, int]
    recording: frozenset[str]

    def id(self, name: str) -> int | None:
        return self.finished.get(name)


def lesson_runs(target: str) -> LessonRuns:
    try:
        runs = data.runs(target)
    except (DatabaseMissingError, EmptyDatabaseError):
        return LessonRuns({}, frozenset())
    if runs.empty:
        return LessonRuns({}, frozenset())
    ours = runs[runs["name"].fillna("").str.startswith(LEARN_PREFIX)]
    done = ours[ours["status"] == "finished"]
    newest = done.groupby("name")["id"].max()
    return LessonRuns({str(k): int(v) for k, v in newest.items()},
                      frozenset(ours.loc[ours["status"] == "running", "name"]))


def _frame(target: str, sql: str, **params: object) -> pd.DataFrame:
    return queries.read_frame(data.reader(target), sql, **params)


def _one(target: str, sql: str, **params: object) -> pd.Series:
    return _frame(target, sql, **params).iloc[0]


_cached = st.cache_data(ttl=300, max_entries=128, show_spinner=False)


@dataclass(frozen=True)
class FirstBatch:
    """The requests that started in the run's first step, and how their slots were used until the last ended."""

    finish_steps: tuple[int, ...]  # the step count at which each member had its last token, in order
    idle_steps: tuple[int, ...]  # steps each member's slot computed padding after it finished
    working_slots: int  # slot-steps that computed a real token, from the first step to the last finish
    padding_slots: int

    @property
    def mean_idle_steps(self) -> float:
        return sum(self.idle_steps) / len(self.idle_steps)

    @property
    def useful_share(self) -> float:
        return self.working_slots / (self.working_slots + self.padding_slots)


@_cached
def first_batch(target: str, run_id: int) -> FirstBatch:
    members = _frame(target, """
        WITH first_step AS (SELECT MIN(start_step) AS s FROM request_phases WHERE run_id = :run AND phase = 'prefill'),
             members AS (SELECT request_id FROM request_phases
                         WHERE run_id = :run AND phase = 'prefill' AND start_step = (SELECT s FROM first_step))
        SELECT p.request_id,
               MAX(CASE WHEN p.phase IN ('prefill', 'decode') THEN p.end_step END) AS finish_step,
               COALESCE(SUM(CASE WHEN p.phase = 'padding' THEN p.end_step - p.start_step END), 0) AS idle_steps,
               (SELECT s FROM first_step) AS first_step
        FROM request_phases p WHERE p.run_id = :run AND p.request_id IN (SELECT request_id FROM members)
        GROUP BY p.request_id ORDER BY finish_step, p.request_id
    """, run=run_id)
    slots = _one(target, """
        SELECT SUM(num_prefill_seqs + num_decode_seqs) AS working, SUM(num_padding_seqs) AS padding
        FROM steps WHERE run_id = :run AND step >= :first AND step < :end
    """, run=run_id, first=int(members["first_step"].min()), end=int(members["finish_step"].max()))
    return FirstBatch(tuple(int(s) for s in members["finish_step"]), tuple(int(s) for s in members["idle_steps"]),
                      int(slots["working"]), int(slots["padding"]))


@dataclass(frozen=True)
class LateStarts:
    """The requests that could not start in the run's first step: when they came and got a slot."""

    count: int
    first_arrival_step: int
    first_start_step: int
    mean_latency_steps: float  # arrival to last token
    mean_e2e_s: float  # the same in the run's seconds


@_cached
def late_starts(target: str, run_id: int) -> LateStarts:
    row = _one(target, """
        WITH per AS (
            SELECT p.request_id,
                   MIN(CASE WHEN p.phase = 'queued' THEN p.start_step END) AS arrived,
                   MIN(CASE WHEN p.phase = 'prefill' THEN p.start_step END) AS started,
                   MAX(CASE WHEN p.phase IN ('prefill', 'decode') THEN p.end_step END) AS finished
            FROM request_phases p WHERE p.run_id = :run GROUP BY p.request_id)
        SELECT COUNT(*) AS n, MIN(per.arrived) AS arrived, MIN(per.started) AS started,
               AVG(per.finished - per.arrived) AS steps, AVG(q.finish_time - q.arrival_time) AS e2e
        FROM per JOIN requests q ON q.run_id = :run AND q.request_id = per.request_id
        WHERE per.started > (SELECT MIN(started) FROM per) AND q.finish_reason IN ('stopped', 'length')
    """, run=run_id)
    return LateStarts(int(row["n"]), int(row["arrived"]), int(row["started"]),
                      float(row["steps"]), float(row["e2e"]))


@_cached
def num_steps(target: str, run_id: int) -> int:
    return int(_one(target, "SELECT COUNT(*) AS n FROM steps WHERE run_id = :run", run=run_id)["n"])


@dataclass(frozen=True)
class TraceStep:
    """One step of the scheduler trace: its budget and blocks, and one waiting request's share."""

    blocks_held_before: int  # blocks owned when the step was scheduled
    free_blocks_before: int
    num_batched_tokens: int
    num_decode_seqs: int
    num_prefill_tokens: int
    blocks_taken: int  # blocks allocated in this step
    num_waiting: int  # requests left waiting after it
    request_first_step: int | None  # the request's first prefill step
    request_tokens: int  # the request's prefill tokens in this step: the rest after whole prompts


@_cached
def trace_step(target: str, run_id: int, step: int, request_id: str) -> TraceStep:
    row = _one(target, """
        SELECT s.num_batched_tokens, s.num_decode_seqs, s.num_prefill_tokens, s.num_waiting,
               prev.num_used_gpu_blocks AS held_before, s.num_gpu_blocks - prev.num_used_gpu_blocks AS free_before,
               s.num_used_gpu_blocks - prev.num_used_gpu_blocks AS taken,
               (SELECT MIN(start_step) FROM request_phases
                WHERE run_id = :run AND request_id = :rid AND phase = 'prefill') AS first_step,
               (SELECT COALESCE(SUM(q.prompt_len), 0) FROM request_phases p
                JOIN requests q ON q.run_id = p.run_id AND q.request_id = p.request_id
                WHERE p.run_id = :run AND p.phase = 'prefill' AND p.start_step = :step AND p.end_step = :step + 1
                  AND p.request_id != :rid) AS whole_prompts
        FROM steps s JOIN steps prev ON prev.run_id = s.run_id AND prev.step = s.step - 1
        WHERE s.run_id = :run AND s.step = :step
    """, run=run_id, step=step, rid=request_id)
    first = None if pd.isna(row["first_step"]) else int(row["first_step"])
    values = {k: int(row[k]) for k in ("num_batched_tokens", "num_decode_seqs", "num_prefill_tokens",
                                       "num_waiting", "held_before", "free_before", "taken", "whole_prompts")}
    share = values["num_prefill_tokens"] - values["whole_prompts"] if first == step else 0
    return TraceStep(values["held_before"], values["free_before"], values["num_batched_tokens"],
                     values["num_decode_seqs"], values["num_prefill_tokens"], values["taken"], values["num_waiting"],
                     first, share)


@_cached
def mean_slots(target: str, run_id: int, first: int, end: int) -> tuple[float, float]:
    """Sequences computing a token, and padding rows, per step over steps first..end-1."""
    row = _one(target, """
        SELECT AVG(num_prefill_seqs + num_decode_seqs) AS working, AVG(num_padding_seqs) AS padding
        FROM steps WHERE run_id = :run AND step >= :first AND step < :end
    """, run=run_id, first=first, end=end)
    return float(row["working"]), float(row["padding"])


@dataclass(frozen=True)
class PreemptionCost:
    num_preemptions: int
    recomputed_tokens: int  # prefill tokens beyond the prompts: prompts and outputs computed again
    swapped_blocks: int  # blocks copied out to the CPU pool and back


@_cached
def preemption_cost(target: str, run_id: int) -> PreemptionCost:
    row = _one(target, """
        SELECT SUM(num_preemptions) AS preemptions, SUM(num_swap_blocks) AS swapped,
               SUM(num_prefill_tokens) - (SELECT SUM(prompt_len) FROM requests
                                          WHERE run_id = :run AND finish_reason IN ('stopped', 'length')) AS recomputed
        FROM steps WHERE run_id = :run
    """, run=run_id)
    return PreemptionCost(int(row["preemptions"]), int(row["recomputed"]), int(row["swapped"]))


@_cached
def latency_by_priority(target: str, run_id: int) -> pd.DataFrame:
    """Mean end-to-end latency per priority value, and over all requests (priority None)."""
    return _frame(target, """
        SELECT priority, COUNT(*) AS requests, AVG(finish_time - arrival_time) AS e2e_mean,
               MAX(finish_time - arrival_time) AS e2e_max
        FROM requests WHERE run_id = :run AND finish_reason IN ('stopped', 'length') GROUP BY priority
        UNION ALL
        SELECT NULL, COUNT(*), AVG(finish_time - arrival_time), MAX(finish_time - arrival_time)
        FROM requests WHERE run_id = :run AND finish_reason IN ('stopped', 'length')
    """, run=run_id)


@_cached
def step_times(target: str, run_id: int) -> pd.DataFrame:
    """Each step's start and duration (ms): the gap every decoding request waits for its next token."""
    return _frame(target, """
        SELECT step, start_time, (end_time - start_time) * 1000.0 AS ms, num_prefill_tokens
        FROM steps WHERE run_id = :run ORDER BY step
    """, run=run_id)


@_cached
def short_vs_long(target: str, run_id: int, split_tokens: int) -> pd.DataFrame:
    return queries.latency_by_length(data.reader(target), run_id, split_tokens)
