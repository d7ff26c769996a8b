"""The Learn lessons: each lesson's runs, recorded through the launcher's own command lines, give the
course's numbers exactly where the course's number is exact (unit cost), and bear out its stated
directions elsewhere; the command lines and the background runner do what the page says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import build_parser
from dashboard import launcher, learn, learn_lessons, learn_plan, learn_questions, learn_runner
from dashboard import learn_textbook as textbook
from dashboard import learn_tradeoffs as tradeoffs
from dashboard.learn_figures import DIFFERS, EXACT
from dashboard.learn_view import VIEWS
from tests.dashboard_fixture import build_lessons


@pytest.fixture(scope="module")
def lessons(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, learn.LessonRuns]:
    path = tmp_path_factory.mktemp("learn") / "lessons.db"
    build_lessons(path)
    return str(path), learn.lesson_runs(str(path))


def test_static_batching_wastes_55_steps_a_slot_and_does_45_percent_useful_work(lessons) -> None:  # type: ignore[no-untyped-def]
    found = textbook.waste_numbers(*lessons)
    assert found is not None
    assert found.batch.finish_steps == (10, 20, 50, 100)
    assert found.batch.idle_steps == (90, 80, 50, 0)
    assert found.batch.mean_idle_steps == 55
    assert (found.batch.working_slots, found.batch.padding_slots) == (180, 220)
    assert found.batch.useful_share == 0.45
    # The newcomers arrive at step 5 and wait for the whole batch, though a slot idles from step 10.
    assert (found.late.count, found.late.first_arrival_step, found.late.first_start_step) == (2, 5, 100)


def test_the_continuous_loop_takes_100_steps_where_static_batching_takes_190(lessons) -> None:  # type: ignore[no-untyped-def]
    assert textbook.loop_steps(*lessons) == {"static": 190, "continuous": 100}


def test_the_scheduler_trace_admits_a_in_202_tokens_and_b_only_with_30_free_blocks_and_chunking(lessons) -> None:  # type: ignore[no-untyped-def]
    found = textbook.trace_numbers(*lessons)
    assert found is not None
    no_chunking, chunked_20, chunked_30 = (found[name] for name in learn_plan.TRACE)
    for step in (no_chunking, chunked_20):
        assert (step.free_blocks_before, step.num_batched_tokens, step.num_decode_seqs) == (20, 202, 2)
        assert (step.blocks_taken, step.request_tokens, step.num_waiting) == (13, 0, 2)  # A's 13; B and C wait
        assert step.request_first_step is not None and step.request_first_step > learn_lessons.TRACE_STEP
    assert (chunked_30.free_blocks_before, chunked_30.num_batched_tokens) == (30, 300)
    assert (chunked_30.request_tokens, chunked_30.request_first_step) == (98, 1)  # B's chunk fills the budget
    assert (chunked_30.blocks_taken, chunked_30.num_waiting) == (13 + 10, 1)  # B's whole prompt; C waits


def test_the_production_batch_refills_31_slots_at_step_50_instead_of_500(lessons) -> None:  # type: ignore[no-untyped-def]
    found = textbook.production_numbers(*lessons)
    assert found is not None
    static, continuous = found["static"], found["continuous"]
    assert (static.working, static.padding) == (1, 31)
    assert (continuous.working, continuous.padding) == (32, 0)
    assert (static.waiting.count, static.waiting.first_start_step, static.waiting.mean_latency_steps) == (31, 500, 550)
    assert (continuous.waiting.first_start_step, continuous.waiting.mean_latency_steps) == (50, 100)


@pytest.mark.parametrize("key", ["static_waste", "continuous_loop", "scheduler_trace", "production"])
def test_the_page_puts_the_courses_exact_figures_next_to_equal_run_figures(key: str, lessons) -> None:  # type: ignore[no-untyped-def]
    view = VIEWS[key](*lessons)
    assert view is not None
    checks = [row.check for row in view.rows]
    assert EXACT in checks and DIFFERS not in checks
    assert all(row.course and row.run for row in view.rows)


@pytest.mark.parametrize("key", ["batch_sweep", "short_long", "chunked_prefill", "preemption", "policies"])
def test_the_runs_bear_out_every_direction_the_course_states(key: str, lessons) -> None:  # type: ignore[no-untyped-def]
    view = VIEWS[key](*lessons)
    assert view is not None
    assert DIFFERS not in [row.check for row in view.rows]
    assert all(row.tiny is None or row.tiny == "not recorded yet" for row in view.rows)


def test_sjf_on_declared_caps_orders_as_fcfs_and_the_oracle_is_the_lower_bound(lessons) -> None:  # type: ignore[no-untyped-def]
    found = tradeoffs.policy_numbers(*lessons)
    assert found is not None
    mean = {policy: frame.loc[frame["priority"].isna(), "e2e_mean"].item() for policy, frame in found.items()}
    assert mean["sjf"] == mean["fcfs"]
    assert mean["sjf-oracle"] < min(mean["fcfs"], mean["priority"])


def test_chunked_prefill_lowers_the_stalls_and_costs_first_tokens(lessons) -> None:  # type: ignore[no-untyped-def]
    found = tradeoffs.chunked_numbers(*lessons)
    assert found is not None
    off, on = found[False], found[True]
    assert on.itl_p99 is not None and off.itl_p99 is not None and on.itl_p99 < off.itl_p99
    assert on.ttft_p50 is not None and off.ttft_p50 is not None and on.ttft_p50 > off.ttft_p50


def test_recompute_prefills_again_where_swap_copies_blocks(lessons) -> None:  # type: ignore[no-untyped-def]
    found = tradeoffs.preemption_numbers(*lessons)
    assert found is not None
    recompute, swap = found["recompute"][0], found["swap"][0]
    assert recompute.num_preemptions > 0 and swap.num_preemptions > 0
    assert recompute.recomputed_tokens > 0 and recompute.swapped_blocks == 0
    assert swap.swapped_blocks > 0 and swap.recomputed_tokens == 0


def test_each_of_the_five_questions_points_at_recorded_runs(lessons) -> None:  # type: ignore[no-untyped-def]
    target, runs = lessons
    answers = learn_questions.answers(target, runs)
    assert len(answers) == 5
    recorded = set(runs.finished.values())
    for answer in answers:
        assert answer.answer is not None
        linked = {int(part.split(")")[0]) for part in answer.answer.split("Replay?run=")[1:]}
        assert linked and linked <= recorded


def test_every_lesson_command_is_recorded_under_the_name_the_page_looks_for(lessons) -> None:  # type: ignore[no-untyped-def]
    target, runs = lessons
    simulated = {name for key in learn_plan.LESSON_KEYS for command in launcher.LessonRun(key).commands(target, Path())
                 if not command.real for name in command.names}
    assert simulated == set(runs.finished)


def _parsed(argv: list[str]):  # type: ignore[no-untyped-def]
    assert argv[:3] == [sys.executable, "-m", "engine"]
    return build_parser().parse_args(argv[3:])


@pytest.mark.parametrize("key", learn_plan.LESSON_KEYS)
def test_a_lessons_commands_parse_simulated_first_and_its_real_twins_run_tiny_on_the_same_workload(key: str) -> None:
    commands = launcher.LessonRun(key).commands("/tmp/learn.db", Path("/tmp/learn"))
    assert [c.real for c in commands] == sorted(c.real for c in commands)
    simulated = {args.name: args for args in (_parsed(c.argv) for c in commands if not c.real)}
    assert all(a.cost_model in ("unit", "default") and a.db == "/tmp/learn.db" for a in simulated.values())
    for command in (c for c in commands if c.real):
        args = _parsed(command.argv)
        twin = simulated[args.name.removesuffix(" (tiny)")]
        assert args.model == "tiny" and (args.command == "run" or args.real)
        assert (args.workload, args.max_num_seqs, args.num_gpu_blocks) == (twin.workload, twin.max_num_seqs,
                                                                         twin.num_gpu_blocks)
        assert (args.enable_chunked_prefill, args.max_num_batched_tokens) == (twin.enable_chunked_prefill,
                                                                            twin.max_num_batched_tokens)


def test_an_unknown_lesson_is_refused_with_the_choices() -> None:
    with pytest.raises(launcher.LaunchError, match="the lesson must be one of static_waste, continuous_loop"):
        launcher.LessonRun("advanced").argv("/tmp/learn.db", Path("/tmp"))


def test_the_runner_writes_the_workloads_then_runs_each_command_and_stops_at_the_first_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> subprocess.CompletedProcess[bytes]:
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 3 if len(ran) == 2 else 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    db, folder = str(tmp_path / "l.db"), tmp_path / "learn"
    assert learn_runner.main(["--db", db, "--folder", str(folder), "scheduler_trace"]) == 3
    commands = launcher.LessonRun("scheduler_trace").commands(db, folder)
    assert ran == [c.argv for c in commands[:2]]
    lines = learn_plan.workload_path(folder, "scheduler_trace").read_text().splitlines()
    assert len(lines) == len(learn_plan.FILES["scheduler_trace"])
    assert launcher.LessonRun("scheduler_trace").argv(db, folder)[1:3] == ["-m", "dashboard.learn_runner"]
