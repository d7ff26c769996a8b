"""Preemption under block pressure: the policy's victim, recompute, swap, and what comes back first."""

from __future__ import annotations

from engine.request import RequestStatus
from tests.builders import make_request, make_scheduler, run_step, run_to_completion

# Block size 4 and 6 blocks: three 4-token prompts fit, then decodes run out of blocks.


def _pressure(**kw: object):  # type: ignore[no-untyped-def]
    kw.setdefault("num_gpu_blocks", 6)
    sched = make_scheduler(block_size=4, max_model_len=64, max_num_batched_tokens=64, **kw)  # type: ignore[arg-type]
    for i, rid in enumerate("ABC"):
        priority = {"A": 2, "B": 1, "C": 0}[rid]
        sched.add_request(make_request(rid, 4, max_tokens=12, arrival_time=float(i), priority=priority))
    return sched


def _first_preemption(sched):  # type: ignore[no-untyped-def]
    for _ in range(100):
        out, _ = run_step(sched)
        if out.preempted_req_ids or out.swapped_out_req_ids:
            return out
    raise AssertionError("no preemption happened")


def test_fcfs_preempts_the_latest_arrival() -> None:
    sched = _pressure()
    out = _first_preemption(sched)
    assert out.preempted_req_ids == ("C",)
    assert sched.requests["C"].status == RequestStatus.PREEMPTED
    assert sched.block_manager.num_gpu_blocks_of("C") == 0
    assert sched.requests["C"].num_computed_tokens == 0


def test_priority_preempts_the_lowest_priority() -> None:
    sched = _pressure(policy="priority")
    out = _first_preemption(sched)
    assert out.preempted_req_ids == ("A",)  # priority 2 is the lowest


def test_recompute_resumes_with_prompt_and_generated_tokens_recomputed() -> None:
    sched = _pressure()
    _first_preemption(sched)
    c = sched.requests["C"]
    generated = len(c.output_token_ids)
    assert generated > 0
    while True:
        out, _ = run_step(sched)
        entry = next((s for s in out.scheduled if s.request_id == "C"), None)
        if entry is not None:
            break
    # Re-admitted as one prefill of prompt + everything it had generated, which then samples the next token.
    assert entry.is_prefill and entry.start_pos == 0
    assert entry.num_tokens == 4 + generated
    assert entry.do_sample
    assert len(c.output_token_ids) == generated + 1
    run_to_completion(sched)
    assert len(c.output_token_ids) == 12
    assert c.num_preemptions >= 1


def test_swap_moves_blocks_to_the_cpu_pool_and_back_before_new_admissions() -> None:
    sched = _pressure(preemption_mode="swap", swap_space=8)
    out = _first_preemption(sched)
    assert out.swapped_out_req_ids == ("C",)
    c = sched.requests["C"]
    assert c.status == RequestStatus.SWAPPED
    held = len(out.blocks_to_swap_out)
    assert held == 2 and sched.block_manager.num_used_cpu_blocks == held
    assert {e.kind for e in out.kv_events if e.request_id == "C"} == {"swap_out"}
    computed = c.num_computed_tokens
    sched.add_request(make_request("D", 4, max_tokens=2, arrival_time=10.0))
    admitted_d_while_c_swapped = False
    while c.status == RequestStatus.SWAPPED:
        out, _ = run_step(sched)
        if any(s.request_id == "D" for s in out.scheduled) and "C" not in out.swapped_in_req_ids:
            admitted_d_while_c_swapped = True
    assert not admitted_d_while_c_swapped
    assert out.swapped_in_req_ids == ("C",)
    assert len(out.blocks_to_swap_in) == held
    entry = next(s for s in out.scheduled if s.request_id == "C")
    assert not entry.is_prefill and entry.start_pos == computed  # its KV came back: no recompute
    run_to_completion(sched)
    assert len(c.output_token_ids) == 12
    assert sched.block_manager.num_used_cpu_blocks == 0


def test_swap_falls_back_to_recompute_when_the_cpu_pool_is_full() -> None:
    sched = _pressure(preemption_mode="swap", swap_space=1)
    out = _first_preemption(sched)
    assert out.preempted_req_ids == ("C",) and out.swapped_out_req_ids == ()


def test_a_request_that_outgrows_the_whole_pool_stops_at_its_capacity() -> None:
    # 4 blocks x 4 tokens = 16 KV slots: the request ends by length at 16 + 1 tokens (the last sampled
    # token needs no slot) instead of preempting itself forever.
    sched = make_scheduler(num_gpu_blocks=4, block_size=4, max_model_len=64, max_num_batched_tokens=64)
    req = make_request("only", 4, max_tokens=100)
    sched.add_request(req)
    outputs = run_to_completion(sched)
    assert req.status == RequestStatus.FINISHED_LENGTH
    assert req.num_tokens == 17 and len(req.output_token_ids) == 13
    assert not any(out.preempted_req_ids for out in outputs)
    assert sched.block_manager.num_free_gpu_blocks == 4


def test_fcfs_victim_is_the_latest_arrival_not_the_last_added() -> None:
    # C is added last but arrived before B: B is the latest arrival, so B is preempted.
    sched = make_scheduler(num_gpu_blocks=6, block_size=4, max_model_len=64, max_num_batched_tokens=64)
    for rid, arrival in [("A", 0.0), ("B", 2.0), ("C", 1.0)]:
        sched.add_request(make_request(rid, 4, max_tokens=12, arrival_time=arrival))
    out = _first_preemption(sched)
    assert out.preempted_req_ids == ("B",)


def test_priority_victim_is_the_latest_arrival_among_the_lowest_priority() -> None:
    # 4 blocks of 4, one per request. In step 1 only A (prompt 4) crosses into a second block. B and C
    # share the lowest priority (1); C arrived later, so C is preempted: not B, and not D, the latest
    # arrival overall, which has priority 0.
    sched = make_scheduler(num_gpu_blocks=4, block_size=4, policy="priority", max_model_len=64,
                           max_num_batched_tokens=64)
    for i, (rid, prompt, priority) in enumerate([("A", 4, 0), ("B", 2, 1), ("C", 2, 1), ("D", 2, 0)]):
        sched.add_request(make_request(rid, prompt, max_tokens=12, arrival_time=float(i), priority=priority))
    out = _first_preemption(sched)
    assert out.step == 1
    assert out.preempted_req_ids == ("C",)
    assert [r.request_id for r in sched.running] == ["A", "D", "B"]


def test_sjf_victim_is_the_most_remaining_output_not_the_latest_or_the_longest_declared() -> None:
    # Block size 1, 21 blocks. Y (max_tokens 50) runs alone for 15 steps (35 left). Then X (max_tokens
    # 40) and Z (max_tokens 10) arrive and fill the pool. In step 16 the first running request (Z)
    # needs a block: the victim is X, the most remaining output (39), although Z arrived later and
    # Y declared more (50).
    sched = make_scheduler(num_gpu_blocks=21, block_size=1, policy="sjf", max_model_len=64,
                           max_num_batched_tokens=64)
    sched.add_request(make_request("Y", 2, max_tokens=50, arrival_time=0.0))
    for _ in range(15):
        run_step(sched)
    sched.add_request(make_request("X", 2, max_tokens=40, arrival_time=1.0))
    sched.add_request(make_request("Z", 2, max_tokens=10, arrival_time=2.0))
    out15, _ = run_step(sched)
    assert out15.num_scheduled_tokens == {"Y": 1, "Z": 2, "X": 2}
    assert sched.block_manager.num_free_gpu_blocks == 0
    assert [(r.request_id, r.remaining_output_tokens) for r in sched.running] == [("Z", 9), ("Y", 34), ("X", 39)]
    out16, _ = run_step(sched)
    assert out16.preempted_req_ids == ("X",)
    assert out16.num_scheduled_tokens == {"Z": 1, "Y": 1}
