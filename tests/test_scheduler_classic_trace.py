"""The classic trace: D and E decode while A, B, C wait (budget 300, 5 seqs, block 16)."""

from __future__ import annotations

import pytest

from tests.builders import make_request, make_scheduler, run_step

DECODING = {"D": 50, "E": 30}  # tokens computed so far
WAITING = {"A": 200, "B": 150, "C": 100}  # prompt lengths, in arrival order
BLOCKS_HELD_BY_D_AND_E = 4 + 2  # ceil(50/16) + ceil(30/16); their next token fits in these


def _trace(free_blocks: int, chunked: bool):
    sched = make_scheduler(
        num_gpu_blocks=free_blocks + BLOCKS_HELD_BY_D_AND_E,
        max_num_seqs=5,
        max_num_batched_tokens=300,
        max_model_len=300,
        enable_chunked_prefill=chunked,
    )
    for rid, n in DECODING.items():
        sched.add_request(make_request(rid, n))
    run_step(sched)  # D and E prefill and sample their first token: now decoding
    assert sched.block_manager.num_free_gpu_blocks == free_blocks
    for rid, n in WAITING.items():
        sched.add_request(make_request(rid, n, arrival_time=1.0))
    return sched, sched.schedule()


@pytest.mark.parametrize("chunked", [False, True])
def test_a_is_admitted_whole_and_b_waits_with_20_free_blocks(chunked: bool) -> None:
    sched, out = _trace(free_blocks=20, chunked=chunked)
    assert out.num_scheduled_tokens == {"D": 1, "E": 1, "A": 200}
    assert out.total_num_scheduled_tokens == 202
    assert [s.request_id for s in out.scheduled if s.is_prefill] == ["A"]
    # A took ceil(200/16) = 13 blocks; B needs 10 > 7 left, so it waits even when chunking.
    assert sched.block_manager.num_free_gpu_blocks == 7
    assert [r.request_id for r in sched.waiting] == ["B", "C"]


def test_without_chunking_b_does_not_fit_the_budget_and_c_does_not_jump_it() -> None:
    sched, out = _trace(free_blocks=100, chunked=False)
    assert out.num_scheduled_tokens == {"D": 1, "E": 1, "A": 200}  # 202 + 150 > 300
    assert [r.request_id for r in sched.waiting] == ["B", "C"]  # C (100) would fit, but order is strict


def test_with_30_free_blocks_b_gets_a_98_token_chunk() -> None:
    sched, out = _trace(free_blocks=30, chunked=True)
    assert out.num_scheduled_tokens == {"D": 1, "E": 1, "A": 200, "B": 98}
    assert out.total_num_scheduled_tokens == 300
    b = next(s for s in out.scheduled if s.request_id == "B")
    assert b.is_prefill and not b.do_sample and b.start_pos == 0
    # B's whole prompt was allocated on admission: 13 (A) + 10 (B) of 30.
    assert sched.block_manager.num_free_gpu_blocks == 7
    assert [r.request_id for r in sched.waiting] == ["C"]


def test_b_finishes_its_prompt_in_the_next_step() -> None:
    sched, out = _trace(free_blocks=30, chunked=True)
    from tests.builders import fake_result

    sched.update_from_output(out, fake_result(out))
    out2 = sched.schedule()
    assert out2.num_scheduled_tokens["B"] == 150 - 98
    b = next(s for s in out2.scheduled if s.request_id == "B")
    assert b.start_pos == 98 and b.do_sample
