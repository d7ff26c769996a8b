"""Queue order per policy: strict fcfs, priority with arrival tie-break, shortest job first."""

from __future__ import annotations

from engine.request import RequestStatus
from tests.builders import FakeClock, make_request, make_scheduler, run_step, run_to_completion


def _admission_order(sched) -> list[str]:  # type: ignore[no-untyped-def]
    order: list[str] = []
    for out in run_to_completion(sched):
        order += [s.request_id for s in out.scheduled if s.is_prefill and s.start_pos == 0]
    return order


def test_fcfs_long_prompt_that_does_not_fit_blocks_the_short_one_behind_it() -> None:
    sched = make_scheduler(num_gpu_blocks=10, block_size=16, max_num_seqs=8)
    sched.add_request(make_request("running", 100, max_tokens=50))  # 7 blocks
    run_step(sched)
    sched.add_request(make_request("long", 100, max_tokens=5, arrival_time=1))  # needs 7 > 3 free
    sched.add_request(make_request("short", 10, max_tokens=5, arrival_time=2))  # would fit in 1
    out, _ = run_step(sched)
    assert out.num_scheduled_tokens == {"running": 1}
    assert [r.request_id for r in sched.waiting] == ["long", "short"]


def test_priority_lower_value_first_then_arrival() -> None:
    sched = make_scheduler(max_num_seqs=1, policy="priority")
    for rid, prio, t in [("p2", 2, 0.0), ("p0-early", 0, 1.0), ("p1", 1, 2.0), ("p0-late", 0, 3.0)]:
        sched.add_request(make_request(rid, 8, max_tokens=3, arrival_time=t, priority=prio))
    assert _admission_order(sched) == ["p0-early", "p0-late", "p1", "p2"]


def test_sjf_orders_by_remaining_output() -> None:
    sched = make_scheduler(max_num_seqs=1, policy="sjf")
    for rid, n in [("long", 50), ("short", 5), ("mid", 20)]:
        sched.add_request(make_request(rid, 8, max_tokens=n))
    assert _admission_order(sched) == ["short", "mid", "long"]


def test_fcfs_serves_in_arrival_order_even_when_added_out_of_order() -> None:
    sched = make_scheduler(max_num_seqs=1)
    sched.add_request(make_request("later", 8, max_tokens=2, arrival_time=5.0))
    sched.add_request(make_request("earlier", 8, max_tokens=2, arrival_time=1.0))
    assert _admission_order(sched) == ["earlier", "later"]


def test_max_num_seqs_caps_the_running_set() -> None:
    sched = make_scheduler(max_num_seqs=3)
    for i in range(5):
        sched.add_request(make_request(f"r{i}", 8, max_tokens=4))
    out, _ = run_step(sched)
    assert [s.request_id for s in out.scheduled] == ["r0", "r1", "r2"]
    assert out.counts.num_waiting == 2 and out.counts.num_running == 3


def test_scheduler_delay_factor_holds_new_prompts_while_others_run() -> None:
    clock = FakeClock()
    sched = make_scheduler(clock=clock, scheduler_delay_factor=1.0)
    sched.add_request(make_request("A", 8, max_tokens=10, arrival_time=0.0))
    admitted_at: dict[str, float] = {}
    for t in range(6):
        clock.t = float(t)
        if t == 1:
            sched.add_request(make_request("B", 8, max_tokens=3, arrival_time=1.0))
        out, _ = run_step(sched)
        for s in out.scheduled:
            if s.is_prefill:
                admitted_at.setdefault(s.request_id, clock.t)
    # The last prompt step took 1 s, so B waits until it has waited more than 1 x 1 s.
    assert admitted_at == {"A": 0.0, "B": 3.0}
    assert sched.requests["A"].status == RequestStatus.RUNNING


def test_sjf_waiting_queue_orders_a_recomputed_request_by_its_remaining_output() -> None:
    # Block size 1, 24 blocks, 2 sequences. P (max_tokens 30) runs alone for 20 steps; then K
    # (max_tokens 5) and N (max_tokens 15) arrive: K joins P, N waits for a sequence slot. In step 21
    # K needs a block and P (9 left, the most) is preempted. Now P (9 left, declared 30) is ahead of N
    # (15 left): N would fit the free blocks, but waits behind P until K has finished.
    sched = make_scheduler(num_gpu_blocks=24, block_size=1, policy="sjf", max_num_seqs=2, max_model_len=64,
                           max_num_batched_tokens=64)
    sched.add_request(make_request("P", 2, max_tokens=30, arrival_time=0.0))
    admissions: list[tuple[int, str]] = []
    for step in range(27):
        if step == 20:
            sched.add_request(make_request("K", 2, max_tokens=5, arrival_time=1.0))
            sched.add_request(make_request("N", 4, max_tokens=15, arrival_time=2.0))
        out, _ = run_step(sched)
        admissions += [(step, s.request_id) for s in out.scheduled if s.is_prefill and s.start_pos == 0]
        if step == 21:
            assert out.preempted_req_ids == ("P",)
            assert [r.request_id for r in sched.waiting] == ["P", "N"]
    assert admissions == [(0, "P"), (20, "K"), (25, "P")]
    assert sched.requests["N"].status == RequestStatus.WAITING
