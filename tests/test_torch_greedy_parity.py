"""Greedy outputs of the paged executor equal transformers' generate(), token for token.

Each prompt is generated alone by HF as the reference; the engine runs them all together,
flattened into one forward pass per step, under several schedules: whole prompts, chunked
prefill, preemption by recompute and by swap (forced by a small KV pool). Two architectures:
Llama (RoPE, grouped-query attention) and GPT-2 (learned positions, full multi-head).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from engine.executors.model_loading import LoadedModel
from engine.snapshot import StepSnapshot
from engine.workload.spec import RequestSpec
from tests.torch_models import VOCAB, engine_config, hf_greedy, load, run_specs, save_gpt2, save_llama

NUM_PROMPTS = 10


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[LoadedModel, list[RequestSpec], dict[str, list[int]]]:
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp(request.param)
    (save_llama if request.param == "llama" else save_gpt2)(folder)
    rng = random.Random(7)
    specs = []
    for i in range(NUM_PROMPTS):
        prompt = tuple(rng.randrange(VOCAB) for _ in range(rng.randint(3, 70)))
        specs.append(RequestSpec(f"r{i}", 0.0, max_tokens=rng.randint(1, 24), prompt_token_ids=prompt))
    reference = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    expected = {s.request_id: hf_greedy(reference, list(s.prompt_token_ids or ()), s.max_tokens) for s in specs}
    return load(Path(folder)), specs, expected


def _outputs(engine: object) -> dict[str, list[int]]:
    return {rid: list(r.output_token_ids) for rid, r in engine.requests.items()}  # type: ignore[attr-defined]


def _mixed_steps(snapshots: list[StepSnapshot]) -> int:
    return sum(1 for s in snapshots if s.num_prefill_seqs and s.num_decode_seqs)


def test_whole_prompts_match_generate(model_case: tuple) -> None:
    loaded, specs, expected = model_case
    engine, snapshots = run_specs(loaded, engine_config(max_num_seqs=4), specs)
    assert _outputs(engine) == expected
    assert _mixed_steps(snapshots) > 0  # new prompts joined running decodes in one forward pass


def test_chunked_prefill_matches_generate(model_case: tuple) -> None:
    loaded, specs, expected = model_case
    config = engine_config(max_num_seqs=6, max_num_batched_tokens=24, enable_chunked_prefill=True)
    engine, snapshots = run_specs(loaded, config, specs)
    assert _outputs(engine) == expected
    chunk_sizes = [s.num_prefill_tokens for s in snapshots if s.num_prefill_seqs]
    assert max(chunk_sizes) <= 24 and any(s.num_prefill_tokens < s.num_batched_tokens for s in snapshots)


def test_recompute_preemption_matches_generate(model_case: tuple) -> None:
    loaded, specs, expected = model_case
    config = engine_config(num_gpu_blocks=14, max_num_seqs=8)
    engine, _ = run_specs(loaded, config, specs)
    assert engine.stats.num_preemptions > 0
    assert _outputs(engine) == expected


def test_swap_preemption_matches_generate(model_case: tuple) -> None:
    loaded, specs, expected = model_case
    config = engine_config(num_gpu_blocks=14, swap_space=64, max_num_seqs=8, preemption_mode="swap")
    engine, snapshots = run_specs(loaded, config, specs)
    kinds = {e.kind for s in snapshots for e in s.kv_events}
    assert {"swap_out", "swap_in"} <= kinds  # really swapped, not fallen back to recompute
    assert _outputs(engine) == expected


def test_static_batching_matches_generate(model_case: tuple) -> None:
    loaded, specs, expected = model_case
    engine, _ = run_specs(loaded, engine_config(max_num_seqs=4, batching="static"), specs)
    assert _outputs(engine) == expected
