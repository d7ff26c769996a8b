"""Sampling: per-request seeds reproduce, top-k=1 and a tiny top-p are greedy, state is dropped."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from engine.executors.model_loading import LoadedModel
from engine.executors.sampler import Sampler
from engine.outputs import SchedulerOutput
from engine.request import Request
from engine.sampling_params import SamplingParams, SamplingParamsError
from tests.torch_models import VOCAB, engine_config, load, make_executor, run_requests, save_llama


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load(save_llama(Path(tmp_path_factory.mktemp("llama"))))


def _prompt(seed: int, n: int = 12) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(VOCAB) for _ in range(n)]


def _tokens(engine: object, rid: str) -> list[int]:
    return list(engine.requests[rid].output_token_ids)  # type: ignore[attr-defined]


def test_seeded_request_repeats_whatever_shares_its_batch(llama: LoadedModel) -> None:
    params = SamplingParams(max_tokens=20, temperature=0.9, top_p=0.95, seed=42, ignore_eos=True)
    alone = run_requests(llama, engine_config(), [Request("a", _prompt(1), params)])
    companions = [Request(f"c{i}", _prompt(10 + i, 5 + 7 * i), SamplingParams(max_tokens=15, temperature=1.0, seed=i))
                  for i in range(5)]
    crowded = run_requests(llama, engine_config(num_gpu_blocks=12, max_num_seqs=3),
                           [*companions[:2], Request("a", _prompt(1), params), *companions[2:]], seed=99)
    assert crowded.stats.num_preemptions > 0  # even recomputed after preemption
    assert _tokens(crowded, "a") == _tokens(alone, "a")
    other_seed = run_requests(llama, engine_config(), [Request("a", _prompt(1), SamplingParams(
        max_tokens=20, temperature=0.9, top_p=0.95, seed=43, ignore_eos=True))])
    assert _tokens(other_seed, "a") != _tokens(alone, "a")


def test_top_k_one_and_tiny_top_p_equal_greedy(llama: LoadedModel) -> None:
    prompts = {f"r{i}": _prompt(i, 4 + 9 * i) for i in range(4)}

    def run(params: SamplingParams) -> dict[str, list[int]]:
        engine = run_requests(llama, engine_config(), [Request(rid, p, params) for rid, p in prompts.items()])
        return {rid: _tokens(engine, rid) for rid in prompts}

    greedy = run(SamplingParams(max_tokens=12, temperature=0))
    assert run(SamplingParams(max_tokens=12, temperature=1.5, top_k=1, seed=5)) == greedy
    assert run(SamplingParams(max_tokens=12, temperature=1.0, top_p=1e-6, seed=5)) == greedy


def test_greedy_and_sampled_rows_mix_in_one_batch() -> None:
    sampler = Sampler(torch.device("cpu"))
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    params = [SamplingParams(temperature=0), SamplingParams(temperature=1.0, top_k=1, seed=1),
              SamplingParams(temperature=0), SamplingParams(temperature=2.0, seed=2)]
    tokens = sampler.sample(logits, ["g0", "k1", "g2", "s3"], params)
    argmax = logits.argmax(-1).tolist()
    assert tokens[:3] == argmax[:3]
    assert 0 <= tokens[3] < 50
    assert sampler.num_generators == 2  # only the seeded, non-greedy requests own one


def test_finished_requests_drop_their_generators(llama: LoadedModel) -> None:
    executor = make_executor(llama, engine_config())
    logits = torch.zeros(2, VOCAB)
    executor.sampler.sample(logits, ["a", "b"], [SamplingParams(seed=1), SamplingParams(seed=2)])
    assert executor.sampler.num_generators == 2
    executor.execute_model(SchedulerOutput(step=0, scheduled=(), finished_req_ids=("a",)))
    assert executor.sampler.num_generators == 1


def test_max_tokens_below_one_is_rejected() -> None:
    with pytest.raises(SamplingParamsError, match="max_tokens must be at least 1"):
        SamplingParams(max_tokens=0)
    with pytest.raises(SamplingParamsError):
        SamplingParams(max_tokens=-3)


def test_top_p_keeps_the_smallest_set_reaching_the_mass() -> None:
    from engine.executors.sampler import _apply_top_p

    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3], [0.2, 0.5, 0.3]]))
    kept = _apply_top_p(logits, torch.tensor([0.7, 0.5])).isfinite().tolist()
    assert kept == [[False, True, True], [False, True, False]]


def test_min_tokens_holds_stop_tokens_off_the_sampler_as_vllm_does(llama: LoadedModel) -> None:
    prompt = _prompt(7)

    def run(params: SamplingParams) -> Request:
        engine = run_requests(llama, engine_config(), [Request("a", prompt, params)])
        return engine.requests["a"]  # type: ignore[attr-defined,no-any-return]

    greedy = list(run(SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)).output_token_ids)
    first = greedy[0]
    plain = run(SamplingParams(max_tokens=8, temperature=0, stop_token_ids=(first,)))
    assert list(plain.output_token_ids) == [first]  # without min_tokens it ends at once
    held = run(SamplingParams(max_tokens=8, temperature=0, stop_token_ids=(first,), min_tokens=3))
    # Masked, not kept: greedy draws another token, so none of the first three is the stop token.
    assert first not in held.output_token_ids[:3] and len(held.output_token_ids) > 3
    # The boundary, exactly: a token greedy first draws at output k (0-based) may end the request
    # there with min_tokens = k (k outputs before it), and is masked there with min_tokens = k + 1.
    k = next(i for i in range(1, len(greedy)) if greedy[i] not in greedy[:i])
    at_k = run(SamplingParams(max_tokens=12, temperature=0, stop_token_ids=(greedy[k],), min_tokens=k))
    assert list(at_k.output_token_ids) == greedy[:k + 1]
    past_k = run(SamplingParams(max_tokens=12, temperature=0, stop_token_ids=(greedy[k],), min_tokens=k + 1))
    assert list(past_k.output_token_ids[:k]) == greedy[:k] and past_k.output_token_ids[k] != greedy[k]


def test_held_off_tokens_are_never_drawn_and_other_rows_are_untouched() -> None:
    sampler = Sampler(torch.device("cpu"))
    logits = torch.zeros(3, 20)
    logits[:, 5] = 8.0  # token 5 is by far the likeliest in every row
    params = [SamplingParams(temperature=1.0, seed=s) for s in range(3)]
    draws = [sampler.sample(logits, [f"r{i}-{k}" for i in range(3)], params, [(5, 99), (), (5,)])
             for k in range(200)]
    assert all(d[0] != 5 and d[2] != 5 for d in draws)
    assert sum(d[1] == 5 for d in draws) > 150  # the row without held-off tokens still draws it
    assert sampler.sample(logits, ["g"], [SamplingParams(temperature=0)], [(5,)]) != [5]
    assert logits[:, 5].eq(8.0).all()  # the caller's logits are not written


def test_which_tokens_min_tokens_holds_off() -> None:
    def req(**kw: object) -> Request:
        return Request("r", [1, 2], SamplingParams(max_tokens=9, stop_token_ids=(7,), **kw), eos_token_id=2)

    assert req(min_tokens=2).held_off_token_ids() == (2, 7)
    one_short = req(min_tokens=2)
    one_short.output_token_ids.append(4)  # one output, two asked for: the next sample is still held
    assert one_short.held_off_token_ids() == (2, 7)
    assert req(min_tokens=2, ignore_eos=True).held_off_token_ids() == (7,)  # EOS does not stop it anyway
    done = req(min_tokens=2)
    done.output_token_ids.extend([4, 4])
    assert done.held_off_token_ids() == () and req().held_off_token_ids() == ()
