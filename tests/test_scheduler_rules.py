"""Scheduler rules, each pinned by an exact trace that a mutation of the rule changes.

No admission or swap-in in a step that preempted; a recompute victim goes back to the front of the
waiting queue and recomputes prompt + outputs; swapped requests come back before new admissions;
a waiting prompt needs blocks for its whole prompt even with chunked prefill; chunks split to the
remaining budget; scheduler_delay_factor with vLLM V0's clock; prompts with token ids outside the
vocabulary are rejected per request.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import ConfigError, EngineConfig, SchedulerConfig
from engine.request import RequestStatus
from engine.scheduler import Scheduler
from engine.snapshot import RequestFinish
from engine.workload.files import load_jsonl
from engine.workload.spec import RequestSpec
from tests.builders import FakeClock, make_engine, make_request, make_scheduler, run_step


def _trace(sched: Scheduler, steps: int, clock: FakeClock | None = None,
           arrivals: dict[int, list[tuple[str, int, int, float, int]]] | None = None) -> list[dict[str, int]]:
    """Run `steps` steps (the clock reads the step index); arrivals[k]: (id, prompt, max_tokens,
    arrival, priority) added before step k. Returns each step's tokens per request."""
    trace = []
    for k in range(steps):
        if clock is not None:
            clock.t = float(k)
        for rid, prompt, max_tokens, arrival, priority in (arrivals or {}).get(k, []):
            sched.add_request(make_request(rid, prompt, max_tokens=max_tokens, arrival_time=arrival,
                                           priority=priority))
        out, _ = run_step(sched)
        trace.append(out.num_scheduled_tokens)
    return trace


# -- 1. no admissions and no swap-ins in a step that preempted -------------------------------------

def test_a_waiting_request_that_fits_the_freed_blocks_is_not_admitted_in_the_preempting_step() -> None:
    # Block size 4, 4 blocks. A (priority 0, 1 block) and B (priority 1, 3 blocks) fill the pool in
    # step 0; C (priority 0, 1 block) arrives and waits. In step 1 A crosses into a second block:
    # B, the lowest priority, is preempted and frees 3 blocks, A takes one. C would fit the other two
    # but the step preempted, so C is admitted in step 2.
    sched = make_scheduler(num_gpu_blocks=4, block_size=4, policy="priority", max_model_len=64,
                           max_num_batched_tokens=64)
    sched.add_request(make_request("A", 4, max_tokens=20, arrival_time=0.0, priority=0))
    sched.add_request(make_request("B", 12, max_tokens=20, arrival_time=1.0, priority=1))
    run_step(sched)
    sched.add_request(make_request("C", 4, max_tokens=20, arrival_time=2.0, priority=0))
    out1, _ = run_step(sched)
    assert out1.preempted_req_ids == ("B",)
    assert out1.num_scheduled_tokens == {"A": 1}
    assert sched.block_manager.num_free_gpu_blocks == 2
    assert [r.request_id for r in sched.waiting] == ["C", "B"]
    out2, _ = run_step(sched)
    assert out2.preempted_req_ids == ()
    assert out2.num_scheduled_tokens == {"A": 1, "C": 4}
    assert [r.request_id for r in sched.waiting] == ["B"]  # B needs ceil(13 / 4) = 4 blocks, 1 is free


def test_a_swapped_request_that_fits_is_not_swapped_in_in_the_preempting_step() -> None:
    # Block size 4, 5 blocks, a 1-block CPU pool. A (1 block), V (3) and S (1) fill the pool in step 0.
    # Step 1: A crosses into a new block, S (latest) is swapped out and A takes its block; V crosses
    # too, the CPU pool is full, so V preempts itself by recompute and frees 3 blocks. S needs one
    # block to come back but waits for step 2.
    sched = make_scheduler(num_gpu_blocks=5, block_size=4, swap_space=1, preemption_mode="swap",
                           max_model_len=64, max_num_batched_tokens=64)
    for i, (rid, prompt) in enumerate([("A", 4), ("V", 12), ("S", 2)]):
        sched.add_request(make_request(rid, prompt, max_tokens=20, arrival_time=float(i)))
    out0, _ = run_step(sched)
    assert out0.num_scheduled_tokens == {"A": 4, "V": 12, "S": 2}
    out1, _ = run_step(sched)
    assert (out1.swapped_out_req_ids, out1.preempted_req_ids, out1.swapped_in_req_ids) == (("S",), ("V",), ())
    assert out1.num_scheduled_tokens == {"A": 1}
    assert sched.block_manager.num_free_gpu_blocks == 3
    out2, _ = run_step(sched)
    assert out2.swapped_in_req_ids == ("S",)
    assert out2.num_scheduled_tokens == {"A": 1, "S": 1}
    assert sched.requests["V"].status == RequestStatus.PREEMPTED  # 13 tokens need 4 blocks, 2 are free


# -- 5. what comes back first, and how -------------------------------------------------------------

def test_a_recompute_victim_goes_back_in_front_of_requests_that_arrived_before_its_preemption() -> None:
    # Block size 4, 3 blocks. B is preempted in step 1 (time 1.0) while W (arrived at 0.5) waits:
    # B keeps its place by arrival, ahead of W, and is re-admitted first with prompt + its 1 output.
    clock = FakeClock()
    sched = make_scheduler(num_gpu_blocks=3, block_size=4, clock=clock, max_model_len=64, max_num_batched_tokens=64)
    sched.add_request(make_request("A", 4, max_tokens=6, arrival_time=0.0))
    sched.add_request(make_request("B", 4, max_tokens=20, arrival_time=0.2))
    trace = _trace(sched, 7, clock, arrivals={1: [("W", 8, 3, 0.5, 0)]})
    assert trace == [{"A": 4, "B": 4}] + [{"A": 1}] * 5 + [{"B": 5}]
    assert sched.requests["B"].num_preemptions == 1
    assert [r.request_id for r in sched.waiting] == ["W"]  # 2 blocks needed, 1 free


def test_swapped_requests_come_back_before_a_waiting_request_that_would_fit() -> None:
    # Block size 4, 3 blocks, CPU pool of 4. A and B (1 block each) run; in step 1 both cross a block
    # boundary: A takes the free block and B, the latest arrival, swaps itself out. W (prompt 4, one
    # block) arrives. In step 2 one block is free: W would fit, but B (2 blocks to come back) is still
    # swapped, so nothing is admitted. A finishes and frees 2 blocks; in step 3 B comes back first and
    # W is admitted behind it in the same step.
    sched = make_scheduler(num_gpu_blocks=3, block_size=4, swap_space=4, preemption_mode="swap",
                           max_model_len=64, max_num_batched_tokens=64)
    a = make_request("A", 4, max_tokens=3, arrival_time=0.0)
    sched.add_request(a)
    sched.add_request(make_request("B", 4, max_tokens=10, arrival_time=1.0))
    run_step(sched)
    out1, _ = run_step(sched)
    assert out1.swapped_out_req_ids == ("B",)
    sched.add_request(make_request("W", 4, max_tokens=3, arrival_time=2.0))
    assert sched.block_manager.num_free_gpu_blocks == 1
    out2, _ = run_step(sched)
    assert out2.num_scheduled_tokens == {"A": 1}
    assert (out2.swapped_in_req_ids, out2.counts.num_waiting, out2.counts.num_swapped) == ((), 1, 1)
    assert a.status == RequestStatus.FINISHED_LENGTH
    out3, _ = run_step(sched)
    assert out3.swapped_in_req_ids == ("B",)
    assert [(s.request_id, s.num_tokens, s.start_pos, s.is_prefill) for s in out3.scheduled] == [
        ("B", 1, 4, False), ("W", 4, 0, True)]


def test_recompute_prefill_target_is_prompt_plus_outputs_and_splits_to_the_budget() -> None:
    # Chunked prefill, budget 8, block size 4, 6 blocks. A (prompt 4) and B (prompt 8) run; in step 6
    # B crosses into a fourth block with none free and preempts itself, holding 5 outputs. When A
    # finishes (step 8) B is re-admitted: it recomputes 8 + 5 = 13 tokens as a prefill of 8 (the
    # budget) then 5, which samples its sixth token.
    sched = make_scheduler(num_gpu_blocks=6, block_size=4, enable_chunked_prefill=True, max_model_len=64,
                           max_num_batched_tokens=8, max_num_seqs=2)
    sched.add_request(make_request("A", 4, max_tokens=9, arrival_time=0.0))
    b = make_request("B", 8, max_tokens=20, arrival_time=1.0)
    sched.add_request(b)
    outs = [run_step(sched)[0] for _ in range(12)]
    assert [o.num_scheduled_tokens for o in outs] == (
        [{"A": 4, "B": 4}, {"A": 1, "B": 4}] + [{"A": 1, "B": 1}] * 4 + [{"A": 1}] * 3
        + [{"B": 8}, {"B": 5}, {"B": 1}])
    assert outs[6].preempted_req_ids == ("B",)
    assert [(s.start_pos, s.is_prefill, s.do_sample) for s in outs[9].scheduled] == [(0, True, False)]
    assert [(s.start_pos, s.is_prefill, s.do_sample) for s in outs[10].scheduled] == [(8, True, True)]
    assert [(s.start_pos, s.is_prefill, s.do_sample) for s in outs[11].scheduled] == [(13, False, True)]
    assert b.prefill_target == 13 and b.num_preemptions == 1
    assert len(b.output_token_ids) == 7


# -- 4. whole-prompt admission, even with chunked prefill ------------------------------------------

def test_a_chunked_prompt_is_admitted_only_when_blocks_hold_all_of_it() -> None:
    # Block size 4, 6 blocks, budget 8. R holds 2 blocks; L (prompt 20, 5 blocks) would get a first
    # chunk of 7 tokens (2 blocks) but must wait until 5 blocks are free: R's finish frees them.
    sched = make_scheduler(num_gpu_blocks=6, block_size=4, enable_chunked_prefill=True, max_model_len=64,
                           max_num_batched_tokens=8, max_num_seqs=2)
    sched.add_request(make_request("R", 5, max_tokens=4, arrival_time=0.0))
    run_step(sched)
    sched.add_request(make_request("L", 20, max_tokens=2, arrival_time=1.0))
    trace = _trace(sched, 5)
    assert trace == [{"R": 1}, {"R": 1}, {"R": 1}, {"L": 8}, {"L": 8}]
    assert sched.block_manager.num_gpu_blocks_of("L") == 5


# -- 3. chunks split to the remaining budget -------------------------------------------------------

@pytest.mark.parametrize("policy", ["fcfs", "priority", "sjf"])
def test_without_chunking_a_short_prompt_never_jumps_one_that_exceeds_the_budget(policy: str) -> None:
    # Budget 64, no chunking. D decodes (1 token) and A's 40-token prompt is admitted: 23 tokens left.
    # L (30 tokens) is next in every policy's order (earlier, higher priority, fewer outputs) and does
    # not fit; S (5 tokens) would, but waits behind L. Next step both go in, L first.
    sched = make_scheduler(policy=policy, max_model_len=64, max_num_batched_tokens=64, max_num_seqs=8)
    sched.add_request(make_request("D", 4, max_tokens=20, arrival_time=0.0))
    run_step(sched)
    sched.add_request(make_request("A", 40, max_tokens=1, arrival_time=0.5, priority=0))
    sched.add_request(make_request("L", 30, max_tokens=5, arrival_time=1.0, priority=0))
    sched.add_request(make_request("S", 5, max_tokens=10, arrival_time=2.0, priority=1))
    out1, _ = run_step(sched)
    assert out1.num_scheduled_tokens == {"D": 1, "A": 40}
    assert [r.request_id for r in sched.waiting] == ["L", "S"]
    out2, _ = run_step(sched)
    assert [(s.request_id, s.num_tokens) for s in out2.scheduled] == [("D", 1), ("L", 30), ("S", 5)]


def test_chunked_prefill_gives_each_prompt_what_the_budget_leaves() -> None:
    # Budget 10: D decodes 1 token, P (prompt 23) gets 9, then 9 more, then the last 5 and samples;
    # Q (prompt 6) arrived with P and gets the 4 tokens left in P's last step, then its last 2.
    sched = make_scheduler(enable_chunked_prefill=True, max_num_batched_tokens=10, max_model_len=64, max_num_seqs=4)
    sched.add_request(make_request("D", 3, max_tokens=10, arrival_time=0.0))
    run_step(sched)
    sched.add_request(make_request("P", 23, max_tokens=5, arrival_time=1.0))
    sched.add_request(make_request("Q", 6, max_tokens=5, arrival_time=2.0))
    outs = [run_step(sched)[0] for _ in range(4)]
    assert [o.num_scheduled_tokens for o in outs] == [
        {"D": 1, "P": 9}, {"D": 1, "P": 9}, {"D": 1, "P": 5, "Q": 4}, {"D": 1, "P": 1, "Q": 2}]
    assert [(s.request_id, s.start_pos, s.do_sample) for s in outs[2].scheduled] == [
        ("D", 5, True), ("P", 18, True), ("Q", 0, False)]


# -- 8. scheduler_delay_factor with vLLM V0's clock ------------------------------------------------

def _admission_times(sched: Scheduler, clock: FakeClock, steps: int,
                     arrivals: dict[int, list[tuple[str, int, int, float, int]]]) -> dict[str, int]:
    admitted: dict[str, int] = {}
    for k in range(steps):
        clock.t = float(k)
        for rid, prompt, max_tokens, arrival, priority in arrivals.get(k, []):
            sched.add_request(make_request(rid, prompt, max_tokens=max_tokens, arrival_time=arrival,
                                           priority=priority))
        out, _ = run_step(sched)
        for s in out.scheduled:
            if s.is_prefill:
                admitted.setdefault(s.request_id, k)
    return admitted


def test_delay_clock_ticks_on_steps_without_waiting_requests() -> None:
    # A's prompt step (time 0) is followed by a schedule call at time 1: the last prompt latency is 1 s.
    # Decode-only steps follow, nothing waiting. B arrives at 10 and is held until it has waited more
    # than 1 x 1 s: admitted at 12. (Ticking only while requests wait would measure 10 s since A's
    # prompt and hold B until 21.)
    clock = FakeClock()
    sched = make_scheduler(clock=clock, scheduler_delay_factor=1.0)
    sched.add_request(make_request("A", 8, max_tokens=100))
    admitted = _admission_times(sched, clock, 25, {10: [("B", 8, 3, 10.0, 0)]})
    assert admitted == {"A": 0, "B": 12}


def test_delay_clock_ticks_in_a_step_that_preempted() -> None:
    # Block size 4, 3 blocks. A (prompt 4), C (prompt 3, 2 outputs) and P (prompt 2) are admitted in
    # step 0 (time 0; nothing ran before). Step 1 (time 1): A crosses into a new block and P, the latest
    # arrival, is preempted; C finishes and frees a block. That schedule call ends the prompt step's
    # latency: 1 s. In step 2 P has waited 2 s > 1 x 1 s and is re-admitted (prompt + 1 output). (Not
    # ticking in the preempting step measures 2 s, from time 0 to step 2, and holds P until step 3.)
    clock = FakeClock()
    sched = make_scheduler(num_gpu_blocks=3, block_size=4, clock=clock, scheduler_delay_factor=1.0,
                           max_model_len=64, max_num_batched_tokens=64)
    for rid, prompt, max_tokens in [("A", 4, 20), ("C", 3, 2), ("P", 2, 20)]:
        sched.add_request(make_request(rid, prompt, max_tokens=max_tokens, arrival_time=0.0))
    outs = []
    for k in range(4):
        clock.t = float(k)
        outs.append(run_step(sched)[0])
    assert outs[1].preempted_req_ids == ("P",)
    assert [o.num_scheduled_tokens for o in outs[:3]] == [{"A": 4, "C": 3, "P": 2}, {"A": 1, "C": 1},
                                                         {"A": 1, "P": 3}]


def test_delay_clock_ticks_in_a_step_that_began_with_swapped_requests() -> None:
    # Swap mode, block size 4, 4 blocks, delay factor 1. A (prompt 4, 3 outputs) and B (prompt 8) run;
    # in step 1 B swaps itself out. W (prompt 2, 1 output) arrives at 1.5. Step 3 (time 3) begins with
    # B swapped: B comes back, then W is admitted and finishes. W's prompt step took 1 s, so X (arrived
    # at 4, one block free) is admitted once it has waited more than 1 s: at 6. (Not ticking the clock in
    # step 3 measures W's prompt latency from the tick at time 1, 3 s, and holds X past step 6.)
    clock = FakeClock()
    sched = make_scheduler(num_gpu_blocks=4, block_size=4, swap_space=8, preemption_mode="swap", clock=clock,
                           scheduler_delay_factor=1.0, max_model_len=64, max_num_batched_tokens=64)
    sched.add_request(make_request("A", 4, max_tokens=3, arrival_time=0.0))
    sched.add_request(make_request("B", 8, max_tokens=30, arrival_time=0.0))
    outs = []
    for k in range(7):
        clock.t = float(k)
        if k == 2:
            sched.add_request(make_request("W", 2, max_tokens=1, arrival_time=1.5))
        if k == 4:
            sched.add_request(make_request("X", 2, max_tokens=30, arrival_time=4.0))
        outs.append(run_step(sched)[0])
    assert outs[1].swapped_out_req_ids == ("B",)
    assert outs[3].swapped_in_req_ids == ("B",)
    assert [o.num_scheduled_tokens for o in outs[3:]] == [{"B": 1, "W": 2}, {"B": 1}, {"B": 1}, {"B": 1, "X": 2}]


def test_delay_is_checked_before_each_admission() -> None:
    # Last prompt latency 1 s. At time 4, B (arrived 2) has waited 2 s and is admitted; then C (arrived
    # 3) is the oldest waiting and has waited only 1 s, so it is held to the next step.
    clock = FakeClock()
    sched = make_scheduler(clock=clock, scheduler_delay_factor=1.0)
    sched.add_request(make_request("A", 8, max_tokens=100))
    admitted = _admission_times(sched, clock, 8, {2: [("B", 8, 3, 2.0, 0)], 3: [("C", 8, 3, 3.0, 0)]})
    assert admitted == {"A": 0, "B": 4, "C": 5}


def test_delay_does_not_hold_prompts_when_nothing_ran_before_the_step() -> None:
    # A finished in step 0. B and C arrive together at 2 while nothing runs: both are admitted on
    # arrival (V0 asks whether anything ran before this step, not whether B now runs).
    clock = FakeClock()
    sched = make_scheduler(clock=clock, scheduler_delay_factor=100.0)
    sched.add_request(make_request("A", 8, max_tokens=1))
    admitted = _admission_times(sched, clock, 4, {2: [("B", 8, 3, 2.0, 0), ("C", 8, 3, 2.0, 0)]})
    assert admitted == {"A": 0, "B": 2, "C": 2}


def test_static_batching_refuses_a_delay_factor_it_would_ignore() -> None:
    # A static batch forms only when the last one is done: a delay would silently do nothing.
    with pytest.raises(ConfigError, match=r"scheduler_delay_factor .* continuous batching only"):
        SchedulerConfig(batching="static", scheduler_delay_factor=0.5)
    SchedulerConfig(batching="static", scheduler_delay_factor=0.0)
    # A static run recorded with a delay (before it was refused) ran without one, and loads so.
    recorded = EngineConfig.from_record({"batching": "static", "scheduler_delay_factor": 0.5, "device": "cpu"})
    assert recorded.scheduler.scheduler_delay_factor == 0.0
    assert EngineConfig.from_record({"scheduler_delay_factor": 0.5}).scheduler.scheduler_delay_factor == 0.5


# -- 10. token ids outside the vocabulary ----------------------------------------------------------

def test_prompt_token_ids_outside_the_vocabulary_are_rejected_per_request_and_the_run_goes_on() -> None:
    engine = make_engine(max_num_seqs=4, max_model_len=256)
    vocab = engine.executor.vocab_size
    specs = [
        RequestSpec("too-high", 0.0, max_tokens=3, prompt_token_ids=(5, vocab, 6)),
        RequestSpec("negative", 0.0, max_tokens=3, prompt_token_ids=(-1, 5)),
        RequestSpec("edges", 0.0, max_tokens=3, prompt_token_ids=(0, vocab - 1)),
        RequestSpec("synthetic", 0.0, max_tokens=3, prompt_len=8),
    ]
    summary = engine.run(specs)
    reqs = engine.requests
    outside = "is outside the model's vocabulary (0..31999)"
    assert vocab == 32_000
    assert reqs["too-high"].status == RequestStatus.FINISHED_REJECTED
    assert reqs["too-high"].reject_reason == f"prompt token id 32000 {outside}"
    assert reqs["negative"].status == RequestStatus.FINISHED_REJECTED
    assert reqs["negative"].reject_reason == f"prompt token id -1 {outside}"
    assert reqs["edges"].status == RequestStatus.FINISHED_LENGTH and len(reqs["edges"].output_token_ids) == 3
    assert reqs["synthetic"].status == RequestStatus.FINISHED_LENGTH
    assert (summary.num_rejected, summary.num_finished) == (2, 2)
    assert reqs["too-high"].output_token_ids == [] and reqs["too-high"].first_scheduled_time is None


def test_jsonl_prompt_with_an_out_of_vocabulary_id_is_rejected_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    rows = [{"request_id": "bad", "max_tokens": 2, "prompt_token_ids": [1, 2, 10**6]},
            {"request_id": "good", "max_tokens": 2, "prompt_token_ids": [1, 2, 3]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    engine = make_engine(max_model_len=256)
    finishes: list[RequestFinish] = []
    engine.run(load_jsonl(path).requests, on_step=lambda snap: finishes.extend(snap.finishes))
    reject = next(f for f in finishes if f.request_id == "bad")
    assert reject.finish_reason == "rejected"
    assert reject.reject_reason == "prompt token id 1000000 is outside the model's vocabulary (0..31999)"
    assert engine.requests["good"].status == RequestStatus.FINISHED_LENGTH


def test_scheduler_rejects_with_the_reason_the_caller_gives() -> None:
    sched = make_scheduler()
    req = make_request("r", 8, max_tokens=3)
    sched.add_request(req, reject_reason="prompt token id 99 is outside the model's vocabulary (0..9)")
    sched.add_request(make_request("ok", 8, max_tokens=3))
    assert req.status == RequestStatus.FINISHED_REJECTED
    out, _ = run_step(sched)
    assert [(r.request_id, r.reason) for r in out.rejected] == [
        ("r", "prompt token id 99 is outside the model's vocabulary (0..9)")]
    assert out.num_scheduled_tokens == {"ok": 8}
    assert "r" not in sched.requests
