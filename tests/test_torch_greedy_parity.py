"""Greedy outputs of the paged executor equal transformers' generate(), token for token.

Each prompt is generated alone by HF as the reference; the engine runs them all together,
flattened into one forward pass per step, under several schedules: whole prompts, chunked
prefill, preemption by recompute and by swap (forced by a small KV pool). Three architectures:
Llama (RoPE, grouped-query attention), GPT-2 (learned positions, full multi-head) and SmolLM2's
shape (tied embeddings, 9 query heads over 3 KV heads, head_dim 64). Also: contexts so different
that one step spans several length buckets, the CUDA varlen backend driven on CPU by a stand-in
with torch's contract, and Gemma-2 without soft-capping (its own attention scale).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from engine.executors.model_loading import LoadedModel
from engine.snapshot import StepSnapshot
from engine.workload.spec import RequestSpec
from tests.torch_models import (
    VOCAB,
    engine_config,
    fake_varlen,
    hf_greedy,
    load,
    run_specs,
    save_gemma2,
    save_gpt2,
    save_llama,
    save_smollm2_like,
)

NUM_PROMPTS = 10
SAVERS = {"llama": save_llama, "gpt2": save_gpt2, "smollm2": save_smollm2_like,
          "gemma2": lambda folder: save_gemma2(folder, softcapping=None)}


def _case(name: str, folder: Path, lengths: list[tuple[int, int]]
          ) -> tuple[LoadedModel, list[RequestSpec], dict[str, list[int]]]:
    """(loaded model, specs with (prompt length, max_tokens), HF generate's tokens for each alone)."""
    from transformers import AutoModelForCausalLM

    SAVERS[name](folder)
    rng = random.Random(7)
    specs = [RequestSpec(f"r{i}", 0.0, max_tokens=m, prompt_token_ids=tuple(rng.randrange(VOCAB) for _ in range(n)))
             for i, (n, m) in enumerate(lengths)]
    reference = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    expected = {s.request_id: hf_greedy(reference, list(s.prompt_token_ids or ()), s.max_tokens) for s in specs}
    return load(folder), specs, expected


@pytest.fixture(scope="module", params=["llama", "gpt2", "smollm2"])
def model_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[LoadedModel, list[RequestSpec], dict[str, list[int]]]:
    rng = random.Random(7)
    lengths = [(rng.randint(3, 70), rng.randint(1, 24)) for _ in range(NUM_PROMPTS)]
    return _case(request.param, Path(tmp_path_factory.mktemp(request.param)), lengths)


def _outputs(engine: object) -> dict[str, list[int]]:
    return {rid: list(r.output_token_ids) for rid, r in engine.requests.items()}  # type: ignore[attr-defined]


def _mixed_steps(snapshots: list[StepSnapshot]) -> int:
    return sum(1 for s in snapshots if s.counts.num_prefill_seqs and s.counts.num_decode_seqs)


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
    chunk_sizes = [s.counts.num_prefill_tokens for s in snapshots if s.counts.num_prefill_seqs]
    assert max(chunk_sizes) <= 24 and any(s.counts.num_prefill_tokens < s.counts.num_batched_tokens for s in snapshots)


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


def test_contexts_spanning_several_buckets_in_one_step_match_generate(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompts of 5 to 420 tokens decoding together: 2..53 blocks of 8, three or more buckets a step."""
    from engine.executors import torch_executor

    lengths = [(420, 12), (5, 30), (150, 20), (9, 25), (260, 10), (40, 28)]
    loaded, specs, expected = _case("llama", Path(tmp_path_factory.mktemp("mixed")), lengths)
    buckets: list[int] = []
    build = torch_executor.build_step_batch

    def spy(*args: object, **kwargs: object) -> object:
        batch = build(*args, **kwargs)  # type: ignore[arg-type]
        if batch.meta.plan is not None:
            buckets.append(len(batch.meta.plan.decodes))
        return batch

    monkeypatch.setattr(torch_executor, "build_step_batch", spy)
    engine, _ = run_specs(loaded, engine_config(max_num_seqs=8, max_model_len=512), specs)
    assert _outputs(engine) == expected
    assert max(buckets) >= 3


def test_varlen_backend_stand_in_matches_generate(model_case: tuple) -> None:
    """The CUDA path's plan and call (paged block table) on CPU, through a stand-in with torch's contract."""
    from engine.executors.varlen_attention import VarlenBackend

    loaded, specs, expected = model_case
    config = engine_config(max_num_seqs=6, max_num_batched_tokens=24, enable_chunked_prefill=True)
    engine, _ = run_specs(loaded, config, specs, attention=VarlenBackend(fake_varlen, torch.device("cpu"), True))
    assert _outputs(engine) == expected


def test_gemma2_without_soft_capping_matches_generate(tmp_path: Path) -> None:
    """Gemma-2 scales queries by query_pre_attn_scalar, not head_dim: the attention must honour `scaling`."""
    rng = random.Random(3)
    loaded, specs, expected = _case("gemma2", tmp_path, [(rng.randint(3, 40), rng.randint(1, 12)) for _ in range(5)])
    config = engine_config(max_num_seqs=4, max_num_batched_tokens=16, enable_chunked_prefill=True)
    engine, _ = run_specs(loaded, config, specs)
    assert _outputs(engine) == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_engine_serves_on_the_gpu(tmp_path: Path, dtype: str) -> None:
    """fp32: token for token with generate() on the same GPU. bf16 (where flash-style varlen kernels
    run): every request completes; the kernel's numbers are checked in test_paged_attention_backends."""
    from transformers import AutoModelForCausalLM

    from engine.executors.model_loading import load_model

    save_llama(tmp_path)
    loaded = load_model(str(tmp_path), device="cuda", dtype=dtype)
    rng = random.Random(5)
    specs = [RequestSpec(f"r{i}", 0.0, max_tokens=rng.randint(1, 16),
                         prompt_token_ids=tuple(rng.randrange(VOCAB) for _ in range(rng.randint(3, 90))))
             for i in range(8)]
    config = engine_config(max_num_seqs=4, max_num_batched_tokens=32, enable_chunked_prefill=True)
    engine, _ = run_specs(loaded, config, specs)
    print("attention:", engine.executor.describe()["attention_choice"])  # type: ignore[attr-defined]
    if dtype == "float32":
        reference = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)  # type: ignore[arg-type]
        reference = reference.to("cuda").eval()  # type: ignore[arg-type]
        expected = {}
        for s in specs:
            ids = torch.tensor([list(s.prompt_token_ids or ())], device="cuda")
            with torch.inference_mode():
                out = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=s.max_tokens,
                                         do_sample=False, pad_token_id=0)
            expected[s.request_id] = out[0, ids.shape[1]:].tolist()
        assert _outputs(engine) == expected
    else:
        assert all(len(engine.requests[s.request_id].output_token_ids) == s.max_tokens for s in specs)
