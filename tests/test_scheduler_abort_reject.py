"""Abort frees everything at once; over-long prompts are rejected with a reason and the run goes on."""

from __future__ import annotations

from engine.request import RequestStatus
from tests.builders import make_request, make_scheduler, run_step, run_to_completion


def test_abort_of_a_running_request_frees_its_blocks_at_once() -> None:
    sched = make_scheduler(num_gpu_blocks=20, block_size=16)
    req = make_request("victim", 100, max_tokens=50)
    sched.add_request(req)
    sched.add_request(make_request("other", 20, max_tokens=3))
    run_step(sched)
    assert sched.block_manager.num_gpu_blocks_of("victim") == 7
    free_before = sched.block_manager.num_free_gpu_blocks
    assert sched.abort_request("victim")
    assert sched.block_manager.num_free_gpu_blocks == free_before + 7
    assert req.status == RequestStatus.FINISHED_ABORTED
    out, _ = run_step(sched)
    assert "victim" in out.finished_req_ids
    assert next(e for e in out.kv_events if e.request_id == "victim").kind == "free"
    assert all(s.request_id != "victim" for s in out.scheduled)
    run_to_completion(sched)
    assert sched.block_manager.num_free_gpu_blocks == 20


def test_abort_of_waiting_and_swapped_requests() -> None:
    sched = make_scheduler(num_gpu_blocks=6, block_size=4, swap_space=8, preemption_mode="swap",
                           max_model_len=64, max_num_batched_tokens=64)
    for i, rid in enumerate("ABC"):
        sched.add_request(make_request(rid, 4, max_tokens=12, arrival_time=float(i)))
    while sched.requests["C"].status != RequestStatus.SWAPPED:
        run_step(sched)
    sched.add_request(make_request("W", 8, max_tokens=2, arrival_time=9.0))  # waits: C swaps back in first
    run_step(sched)
    assert sched.requests["W"].status == RequestStatus.WAITING
    assert sched.block_manager.num_used_cpu_blocks > 0
    assert sched.abort_request("C") and sched.abort_request("W")
    assert sched.block_manager.num_used_cpu_blocks == 0
    assert len(sched.swapped) == 0 and len(sched.waiting) == 0
    assert not sched.abort_request("C")  # already gone
    run_to_completion(sched)
    sched.block_manager.check_invariants()


def test_prompt_longer_than_max_model_len_is_rejected_and_others_complete() -> None:
    sched = make_scheduler(max_model_len=128, max_num_batched_tokens=256)
    too_long = make_request("too-long", 200, max_tokens=5)
    sched.add_request(too_long)
    sched.add_request(make_request("fine", 20, max_tokens=5))
    assert too_long.status == RequestStatus.FINISHED_REJECTED
    assert "200 tokens" in (too_long.reject_reason or "") and "max_model_len=128" in (too_long.reject_reason or "")
    out, _ = run_step(sched)
    assert [r.request_id for r in out.rejected] == ["too-long"]
    run_to_completion(sched)
    assert sched.get_num_unfinished_requests() == 0


def test_prompt_larger_than_the_whole_pool_is_rejected_with_a_reason() -> None:
    sched = make_scheduler(num_gpu_blocks=4, block_size=16, max_model_len=1024)
    big = make_request("big", 100, max_tokens=5)  # 7 blocks > 4
    sched.add_request(big)
    assert big.status == RequestStatus.FINISHED_REJECTED
    assert "needs 7 KV blocks" in (big.reject_reason or "") and "pool has 4" in (big.reject_reason or "")


def test_empty_prompt_is_rejected() -> None:
    sched = make_scheduler()
    req = make_request("empty", 0)
    sched.add_request(req)
    assert req.status == RequestStatus.FINISHED_REJECTED and req.reject_reason == "the prompt is empty"


def test_stop_on_eos_unless_ignored_and_on_stop_tokens() -> None:
    sched = make_scheduler()
    stops = make_request("stops", 8, max_tokens=50, eos_token_id=7, ignore_eos=False)
    ignores = make_request("ignores", 8, max_tokens=5, eos_token_id=7, ignore_eos=True)
    sched.add_request(stops)
    sched.add_request(ignores)
    run_to_completion(sched)  # the fake executor always samples token 7
    assert stops.status == RequestStatus.FINISHED_STOPPED and stops.output_token_ids == [7]
    assert ignores.status == RequestStatus.FINISHED_LENGTH and len(ignores.output_token_ids) == 5


def test_generation_stops_at_max_model_len() -> None:
    sched = make_scheduler(max_model_len=20)
    req = make_request("capped", 15, max_tokens=100)
    sched.add_request(req)
    run_to_completion(sched)
    assert req.status == RequestStatus.FINISHED_LENGTH and req.num_tokens == 20


def test_a_failed_step_aborts_its_requests_and_the_engine_goes_on() -> None:
    """An executor that raises on one step: that step's requests end aborted (with their blocks
    freed and recorded), the others are served, and the pool is whole at the end."""
    from engine.clock import VirtualClock
    from engine.config import CacheConfig, EngineConfig, SchedulerConfig
    from engine.engine_loop import Engine, StepFailedError
    from engine.executors.cost_model import UnitCostModel
    from engine.executors.simulated import SimulatedExecutor
    from engine.outputs import ModelRunnerOutput, SchedulerOutput

    class FailsOnce(SimulatedExecutor):
        def execute_model(self, out: SchedulerOutput) -> ModelRunnerOutput:
            if out.step == 2:
                raise RuntimeError("device lost")
            return super().execute_model(out)

    config = EngineConfig(SchedulerConfig(max_num_seqs=2, max_num_batched_tokens=64, max_model_len=64),
                          CacheConfig(block_size=4, num_gpu_blocks=40))
    engine = Engine(config, FailsOnce(UnitCostModel()), VirtualClock(), fast_forward=False)
    for rid in ("a", "b", "c"):
        engine.add_request(make_request(rid, 8, max_tokens=4))
    failed = None
    while engine.scheduler.has_unfinished_requests():
        try:
            engine.step()
        except StepFailedError as exc:
            failed = exc
    assert failed is not None and failed.step == 2 and failed.request_ids == ("a", "b")
    assert [engine.requests[r].status for r in "abc"] == [RequestStatus.FINISHED_ABORTED] * 2 + [
        RequestStatus.FINISHED_LENGTH]
    assert engine.scheduler.block_manager.num_free_gpu_blocks == 40
