"""Randomized runs (hypothesis): caps (static pad rows included) hold and blocks stay consistent on every step."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.request import RequestStatus
from tests.builders import fake_result, make_request, make_scheduler

configs = st.fixed_dictionaries({
    "max_num_seqs": st.integers(1, 8),
    "block_size": st.sampled_from([1, 4, 16]),
    "num_gpu_blocks": st.integers(8, 64),
    "enable_chunked_prefill": st.booleans(),
    "policy": st.sampled_from(["fcfs", "priority", "sjf"]),
    "preemption_mode": st.sampled_from(["recompute", "swap"]),
    "batching": st.sampled_from(["continuous", "static"]),
    "budget_extra": st.integers(0, 64),
})
requests = st.lists(
    # (prompt length, max_tokens, priority, arrival step)
    st.tuples(st.integers(1, 60), st.integers(1, 30), st.integers(0, 3), st.integers(0, 5)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs, reqs=requests, abort_at=st.one_of(st.none(), st.integers(0, 40)))
def test_every_step_keeps_caps_and_block_invariants(cfg: dict, reqs: list, abort_at: int | None) -> None:
    max_model_len = 64
    chunked = cfg["enable_chunked_prefill"]
    budget = cfg["max_num_seqs"] + cfg["budget_extra"] if chunked else max_model_len + cfg["budget_extra"]
    budget = max(budget, cfg["max_num_seqs"])
    sched = make_scheduler(
        num_gpu_blocks=cfg["num_gpu_blocks"], block_size=cfg["block_size"],
        swap_space=16 if cfg["preemption_mode"] == "swap" else 0,
        max_num_seqs=cfg["max_num_seqs"], max_num_batched_tokens=budget, max_model_len=max_model_len,
        enable_chunked_prefill=chunked, policy=cfg["policy"], preemption_mode=cfg["preemption_mode"],
        batching=cfg["batching"],
    )
    all_reqs = []
    for i, (prompt, out, prio, arrive) in enumerate(reqs):
        req = make_request(f"r{i}", prompt, max_tokens=out, arrival_time=float(arrive), priority=prio)
        all_reqs.append((arrive, req))
    bm = sched.block_manager
    for step in range(2_000):
        for arrive, req in all_reqs:
            if arrive == step:
                sched.add_request(req)
        if abort_at is not None and step == abort_at and sched.requests:
            sched.abort_request(sorted(sched.requests)[0])
        if step > 5 and not sched.has_unfinished_requests():
            break
        out = sched.schedule()
        if cfg["batching"] == "continuous":
            assert out.counts.num_padding_tokens == 0 and out.padding_req_ids == ()
        else:
            # A static batch (live members + finished ones still holding a slot) fits max_num_seqs.
            assert len(sched.running) + len(out.padding_req_ids) <= cfg["max_num_seqs"]
            if out.scheduled and not any(s.is_prefill for s in out.scheduled):
                # Lockstep decode: every live member one token, every finished member one pad row.
                assert len(out.scheduled) == len(sched.running)
                assert out.counts.num_padding_tokens == len(out.padding_req_ids)
        # Every scheduled request owns the blocks for what it computes this step.
        for s in out.scheduled:
            assert len(s.block_ids) >= bm.blocks_needed(s.start_pos + s.num_tokens)
            assert list(s.block_ids) == bm.block_table(s.request_id)
        bm.check_invariants()
        sched.update_from_output(out, fake_result(out))
        assert len(out.scheduled) <= cfg["max_num_seqs"]
        # Static pad rows are computed too: they count against the budget with the requests' tokens.
        assert out.total_num_scheduled_tokens + out.counts.num_padding_tokens <= budget
        assert out.total_num_scheduled_tokens == sum(s.num_tokens for s in out.scheduled)
        assert len({s.request_id for s in out.scheduled}) == len(out.scheduled)
        assert out.counts.num_used_gpu_blocks <= out.counts.num_gpu_blocks
        bm.check_invariants()
    else:
        raise AssertionError("did not finish in 2,000 steps")
    assert bm.num_free_gpu_blocks == bm.num_gpu_blocks
    assert bm.num_used_cpu_blocks == 0
    pool_tokens = cfg["num_gpu_blocks"] * cfg["block_size"]
    for _, req in all_reqs:
        assert req.status.is_finished
        if req.status == RequestStatus.FINISHED_LENGTH:
            # EOS is ignored, so a request ends exactly at max_tokens unless max_model_len or the pool caps it.
            params = req.sampling_params
            assert req.num_tokens == min(req.num_prompt_tokens + params.max_tokens, max_model_len, pool_tokens + 1)
        else:
            assert req.status in (RequestStatus.FINISHED_ABORTED, RequestStatus.FINISHED_REJECTED)
