"""Static-batching pad rows: they run through the model, write only the scratch block, sample nothing,
and change no real request's tokens or KV.

SchedulerOutputs are built by hand (a prefill step, then decodes fed with the sampled tokens), the
same sequence run with and without pad rows on two executors over one model.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.executors.model_loading import LoadedModel
from engine.outputs import ScheduledRequest, SchedulerOutput
from engine.sampling_params import SamplingParams
from engine.step_counts import StepCounts
from tests.torch_models import VOCAB, engine_config, load, make_executor, save_llama

GREEDY = SamplingParams(temperature=0)
BLOCK = 8
TABLES = {"a": (5, 1, 9), "b": (2, 7)}  # owned blocks; 3, 4, 6, 8, 10.. stay unowned


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load(save_llama(Path(tmp_path_factory.mktemp("llama"))))


def _run(executor: Any, num_pad: int, steps: int = 5, finished_pads: bool = False) -> list[dict[str, int]]:
    """A prefill of a (13 tokens) and b (6), then decodes; num_pad pad rows in every step (in the
    decodes, as finished members' when finished_pads: their logits are computed too)."""
    rng = random.Random(0)
    prompts = {"a": [rng.randrange(VOCAB) for _ in range(13)], "b": [rng.randrange(VOCAB) for _ in range(6)]}
    scheduled = tuple(ScheduledRequest(r, len(p), 0, True, True, GREEDY, tuple(p), TABLES[r])
                      for r, p in prompts.items())
    sampled = []
    for step in range(steps):
        out = SchedulerOutput(step=step, scheduled=scheduled, counts=StepCounts(
            num_batched_tokens=sum(s.num_tokens for s in scheduled), num_padding_tokens=num_pad,
            num_padding_seqs=num_pad if finished_pads and step > 0 else 0))
        result = executor.execute_model(out)
        sampled.append(result.sampled_token_ids)
        scheduled = tuple(ScheduledRequest(s.request_id, 1, s.start_pos + s.num_tokens, False, True, GREEDY,
                                           (result.sampled_token_ids[s.request_id],), s.block_ids)
                          for s in scheduled)
    return sampled


def test_pad_rows_change_no_real_token_and_no_real_kv(llama: LoadedModel) -> None:
    plain = make_executor(llama, engine_config(block_size=BLOCK, num_gpu_blocks=16))
    padded = make_executor(llama, engine_config(block_size=BLOCK, num_gpu_blocks=16))
    assert _run(padded, num_pad=11) == _run(plain, num_pad=0)  # 11 > one block: pad rows share scratch slots
    blocks_p, blocks_q = plain.kv_cache.device_blocks, padded.kv_cache.device_blocks
    owned = [b for t in TABLES.values() for b in t]
    # Another row count changes the GEMMs' blocking, so real K/V may differ by rounding, no more.
    assert torch.allclose(blocks_p[:, :, owned], blocks_q[:, :, owned], atol=1e-5)
    unowned = [b for b in range(16) if b not in owned]
    assert blocks_q[:, :, unowned].abs().sum() == 0  # pad rows wrote nowhere a request could own
    scratch = padded.kv_cache.scratch_block
    assert scratch == 16 and blocks_q[:, :, scratch].abs().sum() > 0 and blocks_p[:, :, scratch].abs().sum() == 0


def test_pad_rows_run_through_the_model_and_sample_nothing(llama: LoadedModel) -> None:
    executor = make_executor(llama, engine_config(block_size=BLOCK, num_gpu_blocks=16))
    seen: dict[str, torch.Tensor] = {}

    def capture(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        seen["input_ids"], seen["position_ids"] = kwargs["input_ids"][0].clone(), kwargs["position_ids"][0].clone()

    hook = executor.model.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        sampled = _run(executor, num_pad=3, steps=2)
    finally:
        hook.remove()
    assert all(set(s) == {"a", "b"} for s in sampled)
    assert len(seen["input_ids"]) == 2 + 3  # last step: two decodes and the pad rows
    assert seen["input_ids"][2:].tolist() == [executor.pad_token_id] * 3
    assert seen["position_ids"][2:].tolist() == [0, 0, 0]


def test_a_step_of_pad_rows_only_runs_them(llama: LoadedModel) -> None:
    """Static chunked prefill can spend a whole step's budget on a member's left-padding."""
    executor = make_executor(llama, engine_config(block_size=BLOCK, num_gpu_blocks=16))
    result = executor.execute_model(SchedulerOutput(step=0, scheduled=(), counts=StepCounts(num_padding_tokens=4)))
    assert result.sampled_token_ids == {} and result.num_flops == 0
    assert result.num_padding_flops == executor.flop_model.padding_flops(4, 0) > 0
    assert executor.kv_cache.device_blocks[:, :, executor.kv_cache.scratch_block].abs().sum() > 0


def test_finished_members_pad_rows_compute_logits_as_hf_generate_does(llama: LoadedModel) -> None:
    """HF generate keeps decoding a static batch's finished rows, output projection and all: so do
    our finished members' pad rows (counted as padding FLOPs), while a prompt's pad rows compute none."""
    executor = make_executor(llama, engine_config(block_size=BLOCK, num_gpu_blocks=16))
    head_rows: list[int] = []
    hook = executor.model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: head_rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0]))
    try:
        with_logits = _run(executor, num_pad=3, steps=3, finished_pads=True)
    finally:
        hook.remove()
    assert head_rows == [2, 2 + 3, 2 + 3]  # the prefill's pad rows: none; each decode's: all three
    plain = make_executor(llama, engine_config(block_size=BLOCK, num_gpu_blocks=16))
    assert with_logits == _run(plain, num_pad=3, steps=3)  # the thrown-away logits change no sampled token

    decodes = tuple(ScheduledRequest(r, 1, 9, False, True, GREEDY, (1,), TABLES[r]) for r in TABLES)

    def padding_flops(finished: int) -> float:
        counts = StepCounts(num_batched_tokens=2, num_decode_seqs=2, num_padding_tokens=3, num_padding_seqs=finished)
        return executor.execute_model(SchedulerOutput(step=9, scheduled=decodes, counts=counts)).num_padding_flops
    head = executor.model.get_output_embeddings().weight.numel()
    assert padding_flops(3) - padding_flops(0) == 2 * head * 3
