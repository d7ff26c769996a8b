"""Static batching as HF generate does it: a batch of min(max_num_seqs, waiting) forms only when the
last one has finished, whatever the budget; membership is fixed; prompts are left-padded to the
longest; decode is lockstep, finished members computing a pad row each; the pool limits the batch."""

from __future__ import annotations

import pytest

from engine.outputs import SchedulerOutput
from engine.request import RequestStatus
from engine.scheduler import Scheduler
from engine.snapshot import StepSnapshot
from engine.workload.spec import RequestSpec
from tests.builders import make_engine, make_request, make_scheduler, run_step


def _run(sched: Scheduler, max_steps: int = 1000) -> list[SchedulerOutput]:
    outs = []
    while sched.has_unfinished_requests():
        outs.append(run_step(sched)[0])
        assert len(outs) < max_steps
    return outs


def test_a_batch_takes_max_num_seqs_members_whatever_the_chunked_budget() -> None:
    # 100 waiting, 64 sequences, budget 256 with chunked prefill: the batch has 64 members (not the 3
    # whose prompts fit one step). 64 rows of 80 (prompts left-padded to the longest) take exactly 20
    # full steps; no member decodes before step 20, where all 64 do.
    sched = make_scheduler(batching="static", max_num_seqs=64, max_num_batched_tokens=256,
                           enable_chunked_prefill=True, max_model_len=256, num_gpu_blocks=1000)
    prompts = [60 + (i * 5) % 21 for i in range(100)]  # 60..80
    for i, n in enumerate(prompts):
        sched.add_request(make_request(f"r{i:03d}", n, max_tokens=3))
    longest = max(prompts[:64])
    assert longest == 80
    outs = [run_step(sched)[0] for _ in range(22)]
    assert (outs[0].counts.num_running, outs[0].counts.num_waiting) == (64, 36)
    for out in outs[:20]:
        assert out.counts.num_decode_seqs == 0
        assert out.total_num_scheduled_tokens + out.counts.num_padding_tokens == 256
    assert sum(o.counts.num_prefill_tokens for o in outs[:20]) == sum(prompts[:64])
    assert sum(o.counts.num_padding_tokens for o in outs[:20]) == sum(longest - n for n in prompts[:64])
    assert {s.request_id for o in outs[:20] for s in o.scheduled if s.do_sample} == {f"r{i:03d}" for i in range(64)}
    assert [(o.counts.num_decode_seqs, o.counts.num_prefill_seqs, o.counts.num_padding_tokens)
            for o in outs[20:]] == [(64, 0, 0)] * 2


def test_without_chunking_the_whole_batch_forms_and_prefills_over_several_steps() -> None:
    # Budget 2,048 without chunking: the 8 members' padded prompts (8 x 500 rows) go 4 to a step,
    # whole; then the 8 decode in lockstep and all finish at their 3rd token.
    prompts = [500, 400, 450, 300, 500, 200, 350, 480]
    sched = make_scheduler(batching="static", max_num_seqs=8, max_num_batched_tokens=2048, max_model_len=1024)
    for i, n in enumerate(prompts):
        sched.add_request(make_request(f"r{i}", n, max_tokens=3))
    outs = _run(sched)
    shape = [(o.counts.num_prefill_seqs, o.total_num_scheduled_tokens, o.counts.num_padding_tokens,
              o.counts.num_decode_seqs) for o in outs]
    assert shape == [(4, 1650, 350, 0), (4, 1530, 470, 0), (0, 8, 0, 8), (0, 8, 0, 8)]
    assert [s.request_id for s in outs[0].scheduled] == ["r0", "r1", "r2", "r3"]
    assert [s.request_id for s in outs[1].scheduled] == ["r4", "r5", "r6", "r7"]


def test_membership_is_fixed_until_the_batch_has_finished() -> None:
    # A and B form a batch with room for 4. C arrives after step 1: it waits until both have finished
    # (A after step 2, B after step 4) and forms the next batch, alone, at step 5.
    sched = make_scheduler(batching="static", max_num_seqs=4)
    sched.add_request(make_request("A", 8, max_tokens=3))
    sched.add_request(make_request("B", 8, max_tokens=5))
    outs = [run_step(sched)[0] for _ in range(2)]
    sched.add_request(make_request("C", 8, max_tokens=2, arrival_time=1.0))
    outs += _run(sched)
    assert [sorted(o.num_scheduled_tokens) for o in outs] == [["A", "B"], ["A", "B"], ["A", "B"], ["B"], ["B"],
                                                             ["C"], ["C"]]
    assert [o.counts.num_padding_tokens for o in outs] == [0, 0, 0, 1, 1, 0, 0]
    assert [o.counts.num_waiting for o in outs[:5]] == [0, 0, 1, 1, 1]


def test_prompts_are_left_padded_to_the_longest_and_pads_count_against_the_budget() -> None:
    # Budget 16, chunked. Prompts 10, 4, 7: pads 0, 6, 3. Step 0: A's 10 tokens, then B's 6 pad rows
    # fill the budget. Step 1: B's 4 tokens, C's 3 pad rows and 7 tokens. Step 2: lockstep decode.
    sched = make_scheduler(batching="static", max_num_seqs=4, max_num_batched_tokens=16,
                           enable_chunked_prefill=True, max_model_len=64)
    for rid, n in [("A", 10), ("B", 4), ("C", 7)]:
        sched.add_request(make_request(rid, n, max_tokens=2))
    outs = _run(sched)
    assert [(o.num_scheduled_tokens, o.counts.num_padding_tokens) for o in outs] == [
        ({"A": 10}, 6), ({"B": 4, "C": 7}, 3), ({"A": 1, "B": 1, "C": 1}, 0)]
    assert [(s.start_pos, s.do_sample) for s in outs[1].scheduled] == [(0, True), (0, True)]
    assert sum(o.counts.num_padding_tokens for o in outs) == (10 - 10) + (10 - 4) + (10 - 7)


def test_finished_members_compute_one_pad_row_each_until_the_batch_ends() -> None:
    # Prompts 8, 4, 6, 2 (pads 0, 4, 2, 6) and outputs 3, 1, 2, 5: one prefill step, then each step
    # one token per live member and one pad row per finished one.
    sched = make_scheduler(batching="static", max_num_seqs=4)
    for rid, n, out in [("r0", 8, 3), ("r1", 4, 1), ("r2", 6, 2), ("r3", 2, 5)]:
        sched.add_request(make_request(rid, n, max_tokens=out))
    outs = _run(sched)
    assert [o.total_num_scheduled_tokens for o in outs] == [20, 3, 2, 1, 1]
    assert [o.counts.num_padding_tokens for o in outs] == [12, 1, 2, 3, 3]
    assert [o.padding_req_ids for o in outs[1:]] == [("r1",), ("r1", "r2"), ("r1", "r2", "r0"),
                                                     ("r1", "r2", "r0")]


@pytest.mark.parametrize("status", [RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_ABORTED])
def test_a_member_stopped_from_outside_holds_its_slot_as_padding(status: RequestStatus) -> None:
    # A stop string (found once the text is decoded) or a client that went away ends a member
    # through abort_request; like one that ran out of tokens, it computes a pad row until the batch ends.
    sched = make_scheduler(batching="static", max_num_seqs=2)
    sched.add_request(make_request("A", 4, max_tokens=5))
    sched.add_request(make_request("B", 4, max_tokens=5))
    run_step(sched)  # the prefill
    assert sched.abort_request("A", status)
    outs = _run(sched)
    assert [o.padding_req_ids for o in outs] == [("A",)] * 4
    assert [o.counts.num_padding_seqs for o in outs] == [1] * 4


@pytest.mark.parametrize("fast_forward", [False, True])
def test_run_summary_padding_equals_a_hand_count(fast_forward: bool) -> None:
    # The case above through the engine: 12 + 1 + 2 + 3 + 3 = 21 pad rows of 27 + 21 computed.
    engine = make_engine(batching="static", max_num_seqs=4, max_model_len=512, fast_forward=fast_forward)
    snapshots: list[StepSnapshot] = []
    specs = [RequestSpec(rid, 0.0, max_tokens=out, prompt_len=n)
             for rid, n, out in [("r0", 8, 3), ("r1", 4, 1), ("r2", 6, 2), ("r3", 2, 5)]]
    summary = engine.run(specs, on_step=snapshots.append)
    assert [s.counts.num_padding_tokens for s in snapshots] == [12, 1, 2, 3, 3]
    assert [s.counts.num_padding_seqs for s in snapshots[1:]] == [1, 2, 3, 3]
    assert summary.num_padding_tokens == 21
    assert summary.padding_share == 21 / (27 + 21)
    assert summary.num_steps == 5


def test_a_batch_is_as_large_as_the_pool_can_reserve() -> None:
    # Each member reserves prompt + max_tokens - 1 = 8 + 25 - 1 = 32 slots (the last token needs
    # none): 2 blocks of 16. 7 blocks hold 3 members; the 4th forms the next batch.
    sched = make_scheduler(batching="static", max_num_seqs=4, num_gpu_blocks=7)
    for i in range(4):
        sched.add_request(make_request(f"r{i}", 8, max_tokens=25))
    outs = _run(sched)
    assert (outs[0].counts.num_running, outs[0].counts.num_waiting, outs[0].counts.num_used_gpu_blocks) == (3, 1, 6)
    assert all(not o.preempted_req_ids for o in outs)
    assert [o.counts.num_running for o in outs] == [3] * 25 + [1] * 25
    assert all(len(sched.block_manager.block_table(f"r{i}")) == 0 for i in range(4))


def test_a_batch_forms_in_policy_order() -> None:
    sched = make_scheduler(batching="static", max_num_seqs=2, policy="priority")
    for rid, priority in [("low", 2), ("high", 0), ("mid", 1)]:
        sched.add_request(make_request(rid, 8, max_tokens=2, priority=priority))
    outs = _run(sched)
    assert [sorted(o.num_scheduled_tokens) for o in outs] == [["high", "mid"], ["high", "mid"], ["low"], ["low"]]
