"""What the recorder writes matches what the engine did, step by step."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text

from engine.clock import VirtualClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.cost_model import DEFAULT_COST_MODEL
from engine.executors.simulated import SimulatedExecutor
from engine.snapshot import RunInfo
from engine.workload.generators import synthetic_workload
from storage import queries, timeline_queries
from storage.database import open_for_read, open_for_write
from storage.recorder import Recorder
from tests.recording import record_simulation


@pytest.fixture(scope="module", params=[
    {},
    {"enable_chunked_prefill": True, "max_num_batched_tokens": 128},
    {"num_gpu_blocks": 40, "preemption_mode": "swap", "swap_space": 64},
    {"num_gpu_blocks": 40},
    {"batching": "static", "max_num_seqs": 8},
], ids=["plain", "chunked", "swap", "recompute", "static"])
def recorded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    db = tmp_path_factory.mktemp("rec") / "runs.db"
    run_id, engine, summary = record_simulation(db, **request.param)
    return open_for_read(str(db)), run_id, engine, summary, request.param


def test_every_step_and_request_is_written(recorded) -> None:  # type: ignore[no-untyped-def]
    db, run_id, engine, summary, _ = recorded
    steps = queries.steps_window(db, run_id, 0, 10**9)
    assert list(steps["step"]) == list(range(engine.stats.num_steps))
    assert int(steps["num_batched_tokens"].sum()) == engine.stats.sum_batched_tokens
    assert int(steps["num_output_tokens"].sum()) == summary.output_tokens
    reqs = queries.run_requests(db, run_id)
    assert len(reqs) == summary.num_requests
    for row in reqs.itertuples():
        live = engine.requests[row.request_id]
        assert row.output_len == len(live.output_token_ids)
        assert row.finish_time == pytest.approx(live.finish_time)
        assert row.num_preemptions == live.num_preemptions
    run = queries.get_run(db, run_id)
    assert run is not None and run["status"] == "finished" and run["num_steps"] == engine.stats.num_steps


def test_percentiles_from_sql_match_the_engine_summary(recorded) -> None:  # type: ignore[no-untyped-def]
    db, run_id, _, summary, _ = recorded
    lat = queries.latency_percentiles(db, run_id).set_index("metric")
    assert lat.loc["ttft", "p50"] == pytest.approx(summary.ttft_s.p50)
    assert lat.loc["e2e", "p99"] == pytest.approx(summary.e2e_s.p99)
    assert lat.loc["tpot", "mean"] == pytest.approx(summary.tpot_s.mean)
    assert lat.loc["queue_time", "p90"] == pytest.approx(summary.queue_time_s.p90)


def test_phase_intervals_are_contiguous_and_closed(recorded) -> None:  # type: ignore[no-untyped-def]
    db, run_id, engine, _, config = recorded
    with db.connect() as conn:
        rows = conn.execute(text("""
            SELECT request_id, phase, start_step, end_step, start_time, end_time FROM request_phases
            WHERE run_id = :r ORDER BY request_id, interval_id"""), {"r": run_id}).all()
    by_request: dict[str, list] = {}
    for r in rows:
        by_request.setdefault(r.request_id, []).append(r)
    assert set(by_request) == set(engine.requests)
    for rid, intervals in by_request.items():
        req = engine.requests[rid]
        assert intervals[0].phase == "queued" and intervals[0].start_time == pytest.approx(req.arrival_time)
        for a, b in itertools.pairwise(intervals):
            assert a.end_step == b.start_step and a.end_time == pytest.approx(b.start_time)
            assert a.phase != b.phase
        assert all(i.end_step is not None and i.end_step >= i.start_step for i in intervals)
        last = intervals[-1]
        if config.get("batching") != "static":
            assert last.phase in ("decode", "prefill") and last.end_time == pytest.approx(req.finish_time)
        phases = {i.phase for i in intervals}
        if req.num_preemptions and config.get("preemption_mode") == "swap":
            assert "swapped" in phases or "preempted" in phases
        elif req.num_preemptions:
            assert "preempted" in phases


def test_scheduled_requests_are_exactly_the_running_phases_of_each_step(recorded) -> None:  # type: ignore[no-untyped-def]
    db, run_id, _, _, config = recorded
    if config.get("enable_chunked_prefill"):
        pytest.skip("with chunking a running request may sit out a step when the budget is spent")
    with db.connect() as conn:
        mismatches = conn.execute(text("""
            SELECT s.step, s.num_prefill_seqs + s.num_decode_seqs AS scheduled,
                   (SELECT COUNT(*) FROM request_phases p WHERE p.run_id = s.run_id
                      AND p.phase IN ('prefill', 'decode') AND p.start_step <= s.step
                      AND (p.end_step IS NULL OR p.end_step > s.step)) AS covered,
                   (SELECT COUNT(*) FROM request_phases p WHERE p.run_id = s.run_id AND p.phase = 'padding'
                      AND p.start_step <= s.step AND (p.end_step IS NULL OR p.end_step > s.step)) AS padding,
                   s.num_padding_seqs
            FROM steps s WHERE s.run_id = :r"""), {"r": run_id}).all()
    bad = [m for m in mismatches if m.scheduled != m.covered or m.padding != m.num_padding_seqs]
    assert not bad, bad[:5]


def test_block_map_matches_the_pool_usage_of_every_step(recorded) -> None:  # type: ignore[no-untyped-def]
    db, run_id, _, _, config = recorded
    steps = queries.steps_window(db, run_id, 0, 10**9)
    for step in [*range(0, len(steps), max(1, len(steps) // 25)), len(steps) - 1]:
        blocks = timeline_queries.kv_block_map(db, run_id, step)
        assert len(blocks) == steps["num_gpu_blocks"].iloc[step]
        assert blocks["request_id"].notna().sum() == steps["num_used_gpu_blocks"].iloc[step], step
        if config.get("preemption_mode") == "swap":
            cpu = timeline_queries.kv_block_map(db, run_id, step, device="cpu")
            assert cpu["request_id"].notna().sum() == steps["num_used_cpu_blocks"].iloc[step], step
    # After the run, every block is free again (frees of the last step are recorded after it).
    final = timeline_queries.kv_block_map(db, run_id, len(steps))
    assert final["request_id"].isna().all()


def test_gantt_window_and_overview(recorded) -> None:  # type: ignore[no-untyped-def]
    db, run_id, engine, _, _ = recorded
    n = engine.stats.num_steps
    window = timeline_queries.phases_window(db, run_id, n // 3, n // 2)
    assert not window.empty
    assert (window["start_step"] >= n // 3).all() and (window["end_step"] <= n // 2 + 1).all()
    overview = timeline_queries.gantt_overview(db, run_id, step_bins=50, row_bins=10)
    assert len(overview) <= 50 * 10
    assert set(overview["phase"]) <= set(queries.PHASE_ORDER)
    assert ((overview["share"] > 0) & (overview["share"] <= 1.0 + 1e-9)).all()


def test_reading_never_changes_the_file(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    run_id, _, _ = record_simulation(db, num_requests=10)
    before = db.read_bytes()
    reader = open_for_read(str(db))
    queries.list_runs(reader)
    timeline_queries.kv_block_map(reader, run_id, 3)
    timeline_queries.gantt_overview(reader, run_id)
    reader.dispose()
    assert db.read_bytes() == before


class _OwnerCapturingExecutor(SimulatedExecutor):
    """Notes the block owners the scheduler handed out for every step, to check the recorded map."""

    def __init__(self) -> None:
        super().__init__(DEFAULT_COST_MODEL)
        self.engine: Engine | None = None
        self.gpu: list[dict[int, str]] = []
        self.cpu: list[dict[int, str]] = []

    def execute_model(self, out):  # type: ignore[no-untyped-def]
        if out.scheduled:
            bm = self.engine.scheduler.block_manager  # type: ignore[union-attr]
            self.gpu.append(bm.owners())
            self.cpu.append({b: rid for rid, table in bm._cpu_tables.items() for b in table})
        return super().execute_model(out)


@pytest.mark.parametrize("interval", [5, 256])
def test_block_map_equals_the_schedulers_blocks_at_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              interval: int) -> None:
    import storage.recorder as recorder_module

    monkeypatch.setattr(recorder_module, "KEYFRAME_INTERVAL", interval)
    config = EngineConfig(SchedulerConfig(max_num_seqs=16), CacheConfig(num_gpu_blocks=40, swap_space=64,
                                                                         block_size=16))
    config = config.replace(preemption_mode="swap")
    executor = _OwnerCapturingExecutor()
    info = RunInfo(name="owners", mode="simulated", batching="continuous", config=config.to_dict())
    recorder = Recorder(open_for_write(str(tmp_path / "o.db")), info, {}, flush_every_steps=9)
    engine = Engine(config, executor, VirtualClock(), recorder, fast_forward=False)  # see every step
    executor.engine = engine
    engine.run(synthetic_workload("mixed", 60, request_rate=80.0, seed=11).requests)
    recorder.finish()
    reader = open_for_read(str(tmp_path / "o.db"))
    assert engine.stats.num_preemptions > 0
    for step in range(len(executor.gpu)):
        for device, expected in (("gpu", executor.gpu[step]), ("cpu", executor.cpu[step])):
            frame = timeline_queries.kv_block_map(reader, recorder.run_id, step, device)
            got = {int(b): r for b, r in zip(frame["block_id"], frame["request_id"], strict=True) if r is not None}
            assert got == expected, (device, step)


def test_gantt_overview_matches_a_step_by_step_count(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    run_id, _, _ = record_simulation(db, num_requests=70, num_gpu_blocks=40)
    reader = open_for_read(str(db))
    overview = timeline_queries.gantt_overview(reader, run_id, step_bins=17, row_bins=6)
    with reader.connect() as conn:
        n = conn.execute(text("SELECT MAX(step) + 1 FROM steps")).scalar_one()
        rows = conn.execute(text("SELECT row_no, phase, start_step, COALESCE(end_step, :n) FROM request_phases"),
                            {"n": n}).all()
    step_w, row_h = -(-n // 17), -(-70 // 6)
    weights: dict[tuple[int, int], dict[str, int]] = {}
    for row_no, phase, start, end in rows:
        for step in range(start, min(end, n)):
            cell = weights.setdefault((row_no // row_h, step // step_w), {})
            cell[phase] = cell.get(phase, 0) + 1
    assert len(overview) == len(weights)
    for r in overview.itertuples():
        cell = weights[(r.row0 // row_h, r.step0 // step_w)]
        assert cell[r.phase] == max(cell.values())
        assert r.share == pytest.approx(sum(cell.values()) / ((r.row1 - r.row0) * (r.step1 - r.step0)))


def _fold_every_step(reader, run_id: int, width: int):  # type: ignore[no-untyped-def]
    steps = queries.steps_window(reader, run_id, 0, 10**9)
    steps["bin"] = steps["step"] // width * width
    steps["batch_size"] = steps["num_prefill_seqs"] + steps["num_decode_seqs"]
    means = ["num_waiting", "num_running", "num_swapped", "batch_size", "num_padding_seqs", "num_used_gpu_blocks",
             "num_used_cpu_blocks"]
    grouped = steps.groupby("bin")
    folded = grouped[means].mean()
    folded["num_preemptions"] = grouped["num_preemptions"].sum()
    folded["num_steps"] = grouped.size()
    folded["start_time"] = grouped["start_time"].min()
    return folded.reset_index().rename(columns={"bin": "step"})


def test_whole_run_bins_from_rollups_equal_folding_every_step(tmp_path: Path) -> None:
    db = tmp_path / "long.db"
    run_id, _, summary = record_simulation(db, num_requests=120, num_gpu_blocks=40, preemption_mode="swap",
                                           swap_space=64, max_num_seqs=4)
    assert summary.num_steps > 5 * 64
    reader = open_for_read(str(db))
    with reader.connect() as conn:
        chunks = conn.execute(text("SELECT COUNT(*) FROM step_rollups WHERE run_id = :r"), {"r": run_id}).scalar_one()
    assert chunks == -(-summary.num_steps // 64)  # the last, partial chunk is written at finish

    def check(max_points: int, whole_chunks: bool = True) -> None:
        binned = queries.steps_binned(reader, run_id, max_points)
        width = int(binned["step"].iloc[1] - binned["step"].iloc[0])
        assert (width % 64 == 0) == whole_chunks and len(binned) <= max_points
        expected = _fold_every_step(reader, run_id, width)
        pd.testing.assert_frame_equal(binned[expected.columns], expected, check_dtype=False)

    check(3)  # bins of whole rollup chunks
    # A run whose last rollups are missing (the engine was killed): its tail is folded from steps.
    writer = open_for_write(str(db))
    with writer.begin() as conn:
        conn.execute(text("DELETE FROM step_rollups WHERE chunk >= 2"))
    check(3)
    # A file from before rollups existed reads the same, from its steps.
    with writer.begin() as conn:
        conn.execute(text("DROP TABLE step_rollups"))
    writer.dispose()
    reader = open_for_read(str(db))
    check(3, whole_chunks=False)
    # The next writer adds the missing table without touching the recorded runs.
    open_for_write(str(db)).dispose()
    reader = open_for_read(str(db))
    check(3)  # the table is back, empty for the old run: its bins are folded from its steps
    assert queries.get_run(open_for_read(str(db)), run_id)["num_steps"] == summary.num_steps  # type: ignore[index]
