"""Sampled tokens' log-probabilities: the model's raw log-softmax, checked against HF's own forward
pass over the same tokens (no paged attention, no sampler), through preemption and chunked prefill."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from engine.clock import VirtualClock
from engine.engine_loop import Engine
from engine.executors.cost_model import UnitCostModel
from engine.executors.model_loading import LoadedModel
from engine.executors.simulated import SimulatedExecutor
from engine.request import Request, RequestStatus
from engine.sampling_params import SamplingParams, SamplingParamsError
from engine.token_logprobs import MAX_LOGPROBS
from tests.torch_models import VOCAB, engine_config, load, run_requests, save_llama


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_llama(Path(tmp_path_factory.mktemp("llama")))


@pytest.fixture(scope="module")
def llama(folder: Path) -> LoadedModel:
    return load(folder)


@pytest.fixture(scope="module")
def reference(folder: Path) -> torch.nn.Module:
    """The same weights in transformers' own model: its attention, its linears."""
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def _prompt(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(VOCAB) for _ in range(n)]


def _hf_logprobs(reference: torch.nn.Module, prompt: list[int], output: list[int]) -> torch.Tensor:
    """log-softmax of HF's logits at each position that predicted an output token: [len(output), V]."""
    ids = torch.tensor([prompt + output])
    with torch.inference_mode():
        logits = reference(input_ids=ids, use_cache=False).logits[0].float()
    return torch.log_softmax(logits[len(prompt) - 1: len(prompt) - 1 + len(output)], dim=-1)


def test_sampled_logprobs_are_the_models_raw_log_softmax(llama: LoadedModel, reference: torch.nn.Module) -> None:
    # Sampled with temperature, top-k and top-p: the logprobs must still be the untransformed model's.
    prompts = {f"r{i}": _prompt(i, 6 + 11 * i) for i in range(4)}
    params = {rid: SamplingParams(max_tokens=12, temperature=0.7, top_k=8, top_p=0.9, seed=i, ignore_eos=True,
                                  logprobs=3) for i, rid in enumerate(prompts)}
    # A small pool and budget: chunked prefills and preemption by recompute along the way.
    engine = run_requests(llama, engine_config(num_gpu_blocks=10, max_num_seqs=3, max_num_batched_tokens=16,
                                               enable_chunked_prefill=True),
                          [Request(rid, p, params[rid]) for rid, p in prompts.items()])
    assert engine.stats.num_preemptions > 0
    for rid, prompt in prompts.items():
        req = engine.requests[rid]
        output = list(req.output_token_ids)
        assert len(req.output_logprobs) == len(output) == 12
        expected = _hf_logprobs(reference, prompt, output)
        for pos, (token, entry) in enumerate(zip(output, req.output_logprobs, strict=True)):
            row = expected[pos]
            assert entry.token_id == token
            assert entry.logprob == pytest.approx(float(row[token]), abs=1e-4)
            assert entry.rank == 1 + int((row > row[token] + 1e-5).sum())
            top_lp, top_ids = row.topk(3)
            assert [t for t, _ in entry.top] == top_ids.tolist()
            assert [lp for _, lp in entry.top] == pytest.approx(top_lp.tolist(), abs=1e-4)


def test_greedy_tokens_rank_first_and_zero_asks_for_the_sampled_token_only(llama: LoadedModel) -> None:
    engine = run_requests(llama, engine_config(), [
        Request("g", _prompt(7, 9), SamplingParams(max_tokens=6, temperature=0, logprobs=0, ignore_eos=True)),
        Request("none", _prompt(8, 9), SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))])
    entries = engine.requests["g"].output_logprobs
    assert len(entries) == 6 and all(e.rank == 1 and e.top == () and e.logprob < 0 for e in entries)
    assert [e.as_dict() for e in entries] == [{e.token_id: (e.logprob, 1)} for e in entries]
    assert engine.requests["none"].output_logprobs == []  # nothing computed for who did not ask


@pytest.mark.parametrize("bad", [-1, MAX_LOGPROBS + 1, True, 1.5, "3"])
def test_logprobs_out_of_range_are_refused(bad: object) -> None:
    with pytest.raises(SamplingParamsError, match=f"logprobs must be an integer from 0 to {MAX_LOGPROBS}"):
        SamplingParams(logprobs=bad)  # type: ignore[arg-type]


def test_a_cost_model_engine_rejects_a_logprobs_request_with_a_reason() -> None:
    engine = Engine(engine_config(), SimulatedExecutor(UnitCostModel()), VirtualClock())
    engine.add_request(Request("lp", list(range(1, 9)), SamplingParams(max_tokens=4, logprobs=1)))
    engine.add_request(Request("plain", list(range(1, 9)), SamplingParams(max_tokens=4)))
    req = engine.requests["lp"]
    assert req.status == RequestStatus.FINISHED_REJECTED
    assert req.reject_reason is not None and "no log-probabilities" in req.reject_reason
    assert engine.requests["plain"].status == RequestStatus.WAITING
