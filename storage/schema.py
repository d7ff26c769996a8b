"""The recorded-run schema (SQLAlchemy 2). Times are seconds since the run started unless named *_at.

The README documents these tables for users who query them with SQL; change them only with a
new SCHEMA_VERSION.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from engine.step_counts import ROLLUP_SUM_FIELDS, STEP_COUNT_FIELDS

# 1: the first release. 2: steps.num_padding_tokens (static batching's pad rows). 3: typed run metadata
# (source, pid, served URL, rotation, declared lengths, workload key, what-if and validation notes) in
# place of the free-form `extra` JSON, and the schema each run was recorded under; steps and rollups
# follow StepCounts (steps.num_decode_tokens, always num_decode_seqs, dropped; rollups rebuilt). Older files are
# upgraded in place by the next writer, a copy kept beside them (storage/migration.py).
SCHEMA_VERSION = 3
APP_ID = "batchscope"


class Base(DeclarativeBase):
    pass


def table_of(model: type[Base]) -> Table:
    """A model's Table (declarative models type __table__ as a bare FromClause)."""
    return cast(Table, model.__table__)


class Meta(Base):
    """Marks a database as Batchscope's and says which schema it holds."""

    __tablename__ = "batchscope_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # UTC
    # running | finished | aborted | failed; a running run whose heartbeat is stale reads as interrupted
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)  # why a failed run failed
    mode: Mapped[str] = mapped_column(String(16))  # real | simulated
    batching: Mapped[str] = mapped_column(String(16))  # continuous | static
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # every engine parameter by vLLM name
    executor: Mapped[dict[str, Any]] = mapped_column(JSON)  # model, device, dtype, peak FLOP/s or cost model
    model: Mapped[str | None] = mapped_column(String(200))
    workload: Mapped[str] = mapped_column(Text)  # one-line description
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # refreshed every few seconds
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    base_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))  # what-if source
    sweep_id: Mapped[str | None] = mapped_column(String(64), index=True)
    sweep_param: Mapped[str | None] = mapped_column(String(64))
    sweep_value: Mapped[str | None] = mapped_column(String(64))
    num_steps: Mapped[int] = mapped_column(Integer, default=0)  # steps written so far
    last_time: Mapped[float] = mapped_column(Float, default=0.0)  # run time of the last written step
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # RunSummary once finished
    cost_model: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # fitted step-time model (what-if)
    # Typed metadata (storage/run_meta.py reads and writes these; nothing else does).
    source: Mapped[str] = mapped_column(String(16), default="workload")  # workload | served | what-if | validation
    pid: Mapped[int | None] = mapped_column(Integer)  # the engine process, so the dashboard can stop it
    served_url: Mapped[str | None] = mapped_column(String(200))  # served runs: where the server listened
    previous_run_id: Mapped[int | None] = mapped_column(Integer)  # a rotated recording's previous part
    lengths_declared: Mapped[bool | None] = mapped_column(Boolean)  # every max_tokens = true length (sjf knows)
    workload_key: Mapped[str | None] = mapped_column(String(40), index=True)  # same requests, same key
    recorded_schema: Mapped[int] = mapped_column(Integer, default=SCHEMA_VERSION)  # schema it was recorded under
    validates_run_id: Mapped[int | None] = mapped_column(Integer)  # a validation: the prediction it checks
    what_if: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # a prediction: base, changes, trust figures
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # a prediction checked by a real run


class RequestRow(Base):
    __tablename__ = "requests"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    row_no: Mapped[int] = mapped_column(Integer)  # arrival order within the run, 0-based (the Gantt's row)
    arrival_time: Mapped[float] = mapped_column(Float)
    prompt_len: Mapped[int] = mapped_column(Integer)
    max_tokens: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer)
    output_len: Mapped[int | None] = mapped_column(Integer)
    first_scheduled_time: Mapped[float | None] = mapped_column(Float)
    first_token_time: Mapped[float | None] = mapped_column(Float)
    finish_time: Mapped[float | None] = mapped_column(Float)
    finish_reason: Mapped[str | None] = mapped_column(String(16))  # stopped | length | aborted | rejected
    num_preemptions: Mapped[int] = mapped_column(Integer, default=0)
    reject_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_requests_run_row", "run_id", "row_no"),)


class StepRow(Base):
    """One row per engine step: its times, its StepCounts (engine/step_counts.py; a test pins these
    columns to STEP_COUNT_FIELDS), and what the executor measured."""

    __tablename__ = "steps"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    start_time: Mapped[float] = mapped_column(Float)
    end_time: Mapped[float] = mapped_column(Float)
    num_waiting: Mapped[int] = mapped_column(Integer)
    num_running: Mapped[int] = mapped_column(Integer)
    num_swapped: Mapped[int] = mapped_column(Integer)
    num_prefill_seqs: Mapped[int] = mapped_column(Integer)
    num_prefill_tokens: Mapped[int] = mapped_column(Integer)
    num_decode_seqs: Mapped[int] = mapped_column(Integer)  # one token each
    num_batched_tokens: Mapped[int] = mapped_column(Integer)  # prefill + decode tokens
    num_padding_seqs: Mapped[int] = mapped_column(Integer)  # static batching: finished members decoding a pad row
    num_padding_tokens: Mapped[int] = mapped_column(Integer, default=0)  # static batching: pad rows computed
    num_context_tokens: Mapped[int] = mapped_column(Integer)  # tokens attended by decodes
    num_prefill_pairs: Mapped[int] = mapped_column(Integer)  # query-key pairs attended by prefill chunks
    num_swap_blocks: Mapped[int] = mapped_column(Integer)  # blocks copied GPU <-> CPU
    num_preemptions: Mapped[int] = mapped_column(Integer)
    num_used_gpu_blocks: Mapped[int] = mapped_column(Integer)
    num_gpu_blocks: Mapped[int] = mapped_column(Integer)
    num_used_cpu_blocks: Mapped[int] = mapped_column(Integer)
    num_output_tokens: Mapped[int] = mapped_column(Integer)  # tokens sampled this step
    model_time: Mapped[float] = mapped_column(Float)  # executor seconds (measured or predicted)
    model_flops: Mapped[float | None] = mapped_column(Float)  # useful FLOPs (real runs)
    compute_utilization: Mapped[float | None] = mapped_column(Float)  # useful FLOP/s over the measured peak

    __table_args__ = (Index("ix_steps_run_end", "run_id", "end_time"),)


STEP_TIME_COLUMNS = ("run_id", "step", "start_time", "end_time")
STEP_RESULT_COLUMNS = ("num_output_tokens", "model_time", "model_flops", "compute_utilization")
STEP_COLUMNS = (*STEP_TIME_COLUMNS, *STEP_COUNT_FIELDS, *STEP_RESULT_COLUMNS)  # the recorder's insert order


class PhaseRow(Base):
    """One row per phase change of a request; end_step is NULL while the phase lasts."""

    __tablename__ = "request_phases"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    interval_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128))
    row_no: Mapped[int] = mapped_column(Integer)  # the request's row_no, so the Gantt needs no join
    phase: Mapped[str] = mapped_column(String(16))  # queued | prefill | decode | preempted | swapped | padding
    start_step: Mapped[int] = mapped_column(Integer)  # first step in this phase
    end_step: Mapped[int | None] = mapped_column(Integer)  # first step after it (exclusive)
    start_time: Mapped[float] = mapped_column(Float)
    end_time: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        Index("ix_phases_run_end", "run_id", "end_step"),
        Index("ix_phases_run_start", "run_id", "start_step"),
        Index("ix_phases_run_request", "run_id", "request_id"),
    )


class KVBlockEventRow(Base):
    """One row per ownership change: a request took or released some blocks of one pool.

    Appended in order (event_id), never updated, so recording stays cheap at 100,000s of events.
    """

    __tablename__ = "kv_block_events"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # order within the run
    step: Mapped[int] = mapped_column(Integer)  # in effect from this step on
    request_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # allocate | free | swap_out | swap_in
    device: Mapped[str] = mapped_column(String(8))  # gpu | cpu
    num_blocks: Mapped[int] = mapped_column(Integer)
    block_ids: Mapped[str] = mapped_column(Text)  # JSON array of block ids, e.g. [12, 13, 40]

    __table_args__ = (Index("ix_kv_events_run_step", "run_id", "device", "step"),)


class KVKeyframeRow(Base):
    """The owner of every block of a pool at the start of a step, every KEYFRAME_INTERVAL steps, so
    the block map at any step is one keyframe plus the few events after it (derived data)."""

    __tablename__ = "kv_block_keyframes"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    device: Mapped[str] = mapped_column(String(8), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)  # state before this step's events
    owners: Mapped[str] = mapped_column(Text)  # JSON array: owning request id per block, null when free


KEYFRAME_INTERVAL = 256


class StepRollupRow(Base):
    """Sums over ROLLUP_STEPS consecutive steps (chunk k holds steps k*ROLLUP_STEPS ..), written
    with the steps, so the whole-run view of a 100,000-step run folds ~1,600 rows instead of 100,000
    (derived data: sum_<field> for every field of ROLLUP_SUM_FIELDS, a test pins them; a run
    recorded without them is read from its steps)."""

    __tablename__ = "step_rollups"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True)
    num_steps: Mapped[int] = mapped_column(Integer)
    start_time: Mapped[float] = mapped_column(Float)  # of its first step
    sum_num_waiting: Mapped[int] = mapped_column(Integer)
    sum_num_running: Mapped[int] = mapped_column(Integer)
    sum_num_swapped: Mapped[int] = mapped_column(Integer)
    sum_num_prefill_seqs: Mapped[int] = mapped_column(Integer)
    sum_num_decode_seqs: Mapped[int] = mapped_column(Integer)
    sum_num_padding_seqs: Mapped[int] = mapped_column(Integer)
    sum_num_padding_tokens: Mapped[int] = mapped_column(Integer)
    sum_num_used_gpu_blocks: Mapped[int] = mapped_column(Integer)
    sum_num_used_cpu_blocks: Mapped[int] = mapped_column(Integer)
    sum_num_preemptions: Mapped[int] = mapped_column(Integer)
    max_num_gpu_blocks: Mapped[int] = mapped_column(Integer)


ROLLUP_COLUMNS = ("run_id", "chunk", "num_steps", "start_time", *(f"sum_{f}" for f in ROLLUP_SUM_FIELDS),
                  "max_num_gpu_blocks")
ROLLUP_STEPS = 64


class DeviceProfileRow(Base):
    """A step-time cost model measured by `python -m engine profile` for one model on one device: what
    a what-if takes the costs of features its base run never exercised from (swaps, pad rows)."""

    __tablename__ = "device_profiles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # UTC
    model: Mapped[str] = mapped_column(String(200))
    device: Mapped[str] = mapped_column(String(32))  # cpu, cuda:0, ...
    dtype: Mapped[str] = mapped_column(String(16))
    torch_threads: Mapped[int] = mapped_column(Integer)
    cost_model: Mapped[dict[str, Any]] = mapped_column(JSON)  # LinearCostModel.to_dict()

    __table_args__ = (Index("ix_device_profiles_match", "model", "device", "dtype", "torch_threads"),)
# Which (kind, device) events leave the blocks owned by the event's request.
OWNING_EVENTS = {("allocate", "gpu"), ("swap_in", "gpu"), ("swap_out", "cpu")}
