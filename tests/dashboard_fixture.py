"""A database holding one run of every kind the dashboard must show, for page tests and screenshots.

    python -m tests.dashboard_fixture PATH     # build one by hand
"""

from __future__ import annotations

import itertools
import math
import sys
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from cli.main import main as cli
from dashboard import demo_workload as demo
from dashboard import launcher, learn_plan
from engine.clock import VirtualClock
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine_loop import Engine
from engine.executors.cost_model import DEFAULT_COST_MODEL
from engine.executors.simulated import SimulatedExecutor
from engine.snapshot import RunInfo
from engine.workload.files import load_jsonl
from engine.workload.generators import synthetic_workload
from engine.workload.spec import Workload
from storage.client_results import ClientRequest, save_benchmark
from storage.database import open_for_write
from storage.recorder import Recorder
from storage.schema import Run, table_of

COMMON = ["--workload", "mixed", "--num-prompts", "120", "--request-rate", "40", "--seed", "7"]
SERVED_URL = "http://127.0.0.1:8000"


def _record_partial(db: str, name: str, config: EngineConfig, workload: Workload, heartbeat_at: datetime,
                    until_s: float = math.inf, max_iterations: int | None = None) -> int:
    """A run recorded up to simulated time until_s (or for max_iterations of the loop) and left with
    status running: with a stale heartbeat it is what a killed engine leaves, with one in the future
    it reads as live."""
    info = RunInfo(name=name, mode="simulated", batching="continuous", config=config.to_dict(),
                   workload=workload.description)
    engine_db = open_for_write(db)
    recorder = Recorder(engine_db, info, {"executor": "simulated", "cost_model": DEFAULT_COST_MODEL.to_dict()},
                        heartbeat_interval_s=3600)
    engine = Engine(config, SimulatedExecutor(DEFAULT_COST_MODEL), VirtualClock(), recorder)
    pending = deque(sorted(workload.requests, key=lambda s: s.arrival_time))
    for _ in itertools.count() if max_iterations is None else range(max_iterations):
        if engine.clock.now() >= until_s:
            break
        engine.add_arrivals(pending, engine.clock.now())
        if engine.step() is None:
            engine.clock.wait_until(pending[0].arrival_time)
    recorder.flush()
    with engine_db.begin() as conn:
        conn.execute(update(table_of(Run)).where(table_of(Run).c.id == recorder.run_id)
                     .values(heartbeat_at=heartbeat_at))
    engine_db.dispose()
    return recorder.run_id


def _record_interrupted(db: str) -> int:
    """What a killed engine leaves: some steps written, status running, a heartbeat long stale."""
    config = EngineConfig(SchedulerConfig(max_num_seqs=16), CacheConfig(num_gpu_blocks=256))
    workload = synthetic_workload("mixed", 200, request_rate=40.0, seed=9)
    return _record_partial(db, "killed mid-run", config, workload, datetime(2020, 1, 1, tzinfo=UTC), max_iterations=150)


def record_live(db: str, folder: Path) -> int:
    """The first-launch demo's configuration and bursty workload, caught in its fourth burst as a
    live run (its heartbeat is kept fresh for a day), for the Live page's screenshot."""
    config = demo.FORM.engine_args().create_engine_config()
    workload = load_jsonl(replace(demo.WORKLOAD, num_bursts=4).write(folder / "demo-workload.jsonl"))
    # 0.7 s into the fourth burst the last 150 steps hold a queue, a full batch and preemptions.
    caught = 3 * demo.WORKLOAD.period_s + 0.7
    return _record_partial(db, "demo (simulated)", config, workload,
                           datetime.now(UTC) + timedelta(days=1), until_s=caught)


def record_served(db: str, previous_run_id: int | None = None) -> int:
    """What `serve` records: a finished run marked as served, with the URL it listened on, whose
    requests arrived as clients sent them (Poisson here, on the simulator's clock); with
    previous_run_id, the next part of a rotating server's recording."""
    config = EngineConfig(SchedulerConfig(max_num_seqs=16), CacheConfig(num_gpu_blocks=256))
    workload = synthetic_workload("mixed", 80, request_rate=20.0, seed=11)
    info = RunInfo(name="serve sim (continuous, 16 seqs)", mode="simulated", batching="continuous",
                   config=config.to_dict(), model="sim", workload=f"served at {SERVED_URL} as `sim`",
                   source="served", served_url=SERVED_URL, previous_run_id=previous_run_id)
    engine_db = open_for_write(db)
    recorder = Recorder(engine_db, info, {"executor": "simulated", "cost_model": DEFAULT_COST_MODEL.to_dict()},
                        heartbeat_interval_s=3600)
    summary = Engine(config, SimulatedExecutor(DEFAULT_COST_MODEL), VirtualClock(), recorder).run(workload.requests)
    recorder.finish("finished", summary=summary.to_dict())
    # A benchmark client's own timing of ten of its requests, stored as `bench serve --db` stores it.
    clients = [ClientRequest(f"r{i}", recorder.run_id, True, None, 16, 4, 0.05 * i, 0.010 + 0.001 * i, 0.02,
                             0.400 + 0.01 * i, [0.02] * 3) for i in range(10)]
    save_benchmark(engine_db, SERVED_URL, "sim", "mixed", {"request_rate": 20.0}, {"completed": 10}, clients)
    engine_db.dispose()
    return recorder.run_id


def build(path: Path) -> dict[str, int]:
    db = str(path)
    ids: dict[str, int] = {}
    plan = [
        ("continuous", ["--max-num-seqs", "16", "--name", "continuous"]),
        ("static", ["--batching", "static", "--max-num-seqs", "16", "--name", "static"]),
        ("recompute", ["--num-gpu-blocks", "48", "--name", "preemption by recompute"]),
        ("swap", ["--num-gpu-blocks", "48", "--preemption-mode", "swap", "--swap-space", "128",
                  "--name", "preemption by swap"]),
        ("chunked", ["--enable-chunked-prefill", "--max-num-batched-tokens", "128", "--name", "chunked prefill"]),
    ]
    for key, extra in plan:
        assert cli(["simulate", "--db", db, *COMMON, *extra]) == 0
        ids[key] = len(ids) + 1
    ids["live"] = record_live(db, path.parent)
    ids["interrupted"] = _record_interrupted(db)
    assert cli(["simulate", "--db", db, "--from-run", str(ids["continuous"]), "--max-num-seqs", "4"]) == 0
    ids["what_if"] = ids["interrupted"] + 1
    assert cli(["sweep", "--db", db, "--param", "max_num_seqs", "--values", "2,8,32", *COMMON]) == 0
    ids["served"] = record_served(db)
    assert cli(["tune", "--db", db, "--from-run", str(ids["continuous"]), "--slo", "ttft=200,e2e=2000",
                "--search", "max_num_seqs=4,8,16,32", "num_gpu_blocks=256,2048"]) == 0
    return ids


def build_lessons(path: Path) -> None:
    """Every Learn lesson's simulated runs, recorded through the launcher's own command lines. The
    lessons' real `tiny` runs are left out (too slow for page tests): the page says they are not
    recorded yet."""
    folder = path.parent / "learn"
    for lesson in learn_plan.LESSON_KEYS:
        learn_plan.write_workloads(lesson, folder)
        for command in launcher.LessonRun(lesson).commands(str(path), folder):
            if not command.real:
                assert cli(command.argv[3:]) == 0, command.argv


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
