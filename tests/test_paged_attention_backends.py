"""Paged-attention backends against an independent float64 softmax, request by request.

The bucket path (CPU) must be exact whatever mix of contexts shares a step, and pad by less than
2x; the varlen path (CUDA) is exercised on CPU through stand-ins for torch's varlen_attn that
follow its documented contract, plus broken stand-ins the start-up probe must refuse. A real CUDA
test runs where a GPU is present.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from engine.executors.attention_backend import choose_attention_backend, random_step
from engine.executors.bucket_attention import BucketBackend, bucket_sizes
from engine.executors.step_layout import StepLayout
from engine.executors.varlen_attention import VarlenBackend
from tests.torch_models import fake_varlen, fake_varlen_oldest, fake_varlen_packed_only, signature_without_top_left

HEADS, KV_HEADS, DIM, BS = 6, 2, 16, 4
CPU = torch.device("cpu")
# Decodes over 1..40 blocks (several power-of-two buckets), chunks without context of similar and
# very different lengths, chunks with context.
MIXED = [(1, 0), (1, 3), (1, 4), (1, 9), (1, 30), (1, 31), (1, 64), (1, 159), (3, 0), (4, 0), (7, 0), (20, 0),
         (5, 2), (2, 13)]


def reference(layout: StepLayout, query: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor,
              scale: float) -> torch.Tensor:
    """Each request's causal softmax over its own context slots, in float64, one request at a time."""
    out = torch.empty(layout.num_real_rows, HEADS, DIM, dtype=torch.float64)
    keys, values = k_pool.reshape(-1, KV_HEADS, DIM).double(), v_pool.reshape(-1, KV_HEADS, DIM).double()
    group = HEADS // KV_HEADS
    for i in range(layout.num_seqs):
        ctx, n, s = layout.context_len(i), layout.q_lens[i], layout.q_starts[i]
        slots = [int(layout.block_table(i)[p // BS]) * BS + p % BS for p in range(ctx)]
        k = keys[slots].repeat_interleave(group, dim=1)  # [ctx, Hq, D]
        v = values[slots].repeat_interleave(group, dim=1)
        q = query[0, :, s : s + n].transpose(0, 1).double()  # [n, Hq, D]
        scores = torch.einsum("qhd,khd->hqk", q, k) * scale
        visible = torch.arange(ctx).unsqueeze(0) <= (torch.arange(n) + ctx - n).unsqueeze(1)
        weights = scores.masked_fill(~visible, -math.inf).softmax(-1)
        out[s : s + n] = torch.einsum("hqk,khd->qhd", weights, v)
    return out


def run_backend(backend: Any, seqs: list[tuple[int, int]], scale: float = 0.3, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor, Any]:
    layout, query, key, value, k_pool, v_pool = random_step(seqs, HEADS, KV_HEADS, DIM, BS, seed=seed)
    plan = backend.plan(layout)
    out = torch.full((layout.num_real_rows, HEADS, DIM), math.nan)
    backend.attend(plan, query, key, value, k_pool, v_pool, scale, out, True)
    return out, reference(layout, query, k_pool, v_pool, scale), plan


@pytest.mark.parametrize("min_keys", [BS, 128])
def test_buckets_are_exact_for_a_mix_of_very_different_contexts(min_keys: int) -> None:
    out, expected, plan = run_backend(BucketBackend(CPU, min_bucket_keys=min_keys), MIXED)
    assert torch.allclose(out.double(), expected, atol=1e-5)
    if min_keys == BS:  # the mix really spreads over several buckets and groups
        assert len(plan.decodes) >= 4 and len(plan.groups) >= 2 and len(plan.chunks) == 2


def test_bucket_padding_stays_under_twice_the_attended_blocks() -> None:
    blocks = [1, 2, 3, 4, 5, 8, 9, 17, 100, 126, 127, 128, 129]
    for need, width in zip(blocks, bucket_sizes(blocks, 1), strict=True):
        assert need <= width < 2 * need or need == width == 1
    assert bucket_sizes([3, 20], 8) == [8, 32]  # narrow buckets join the minimum width


def test_padded_pairs_of_a_hand_counted_step() -> None:
    # block 4: decodes at contexts 1 and 6 (1 and 2 blocks -> widths 1 and 2: 4 + 8 keys, 7 attended),
    # fresh chunks of 5 and 7 (one group padded to 7: 2 x 28 pairs computed, 15 + 28 attended),
    # a chunk of 4 after 3 cached tokens (dense mask: 4 x 7 computed, 4 x 3 + 10 attended).
    _, _, plan = run_backend(BucketBackend(CPU, min_bucket_keys=1), [(1, 0), (1, 5), (5, 0), (7, 0), (4, 3)])
    assert plan.padded_pairs == (12 - 7) + (56 - 43) + (28 - 22)


def test_long_fresh_chunks_run_alone_and_short_ones_together() -> None:
    out, expected, plan = run_backend(BucketBackend(CPU, max_grouped_len=64), [(100, 0), (120, 0), (9, 0), (12, 0)])
    assert [(g.num, g.max_len) for g in plan.groups] == [(2, 12), (1, 100), (1, 120)]
    assert plan.padded_pairs == 2 * 12 * 13 // 2 - (9 * 10 // 2 + 12 * 13 // 2)
    assert torch.allclose(out.double(), expected, atol=1e-5)


def test_varlen_paged_and_packed_give_the_exact_answer() -> None:
    for fake in (fake_varlen, fake_varlen_packed_only, fake_varlen_oldest):
        backend, why = choose_attention_backend(CPU, torch.float32, HEADS, KV_HEADS, DIM, BS, varlen_fn=fake)
        assert isinstance(backend, VarlenBackend), why
        assert backend.paged == (fake is fake_varlen)
        out, expected, plan = run_backend(backend, MIXED)
        assert torch.allclose(out.double(), expected, atol=1e-5)
        assert plan.padded_pairs == 0


@pytest.mark.parametrize("broken", ["top_left", "ignores_scale", "raises"])
def test_probe_refuses_a_kernel_that_computes_something_else(broken: str) -> None:
    def fake(*args: Any, **kwargs: Any) -> torch.Tensor:
        if broken == "raises":
            raise RuntimeError("FlashAttention only supports Ampere GPUs or newer.")
        if broken == "ignores_scale":
            kwargs["scale"] = None
        return fake_varlen(*args, top_left=broken == "top_left", **kwargs)

    fake.__signature__ = signature_without_top_left(fake_varlen)  # type: ignore[attr-defined]
    backend, why = choose_attention_backend(CPU, torch.float32, HEADS, KV_HEADS, DIM, BS, varlen_fn=fake)
    assert isinstance(backend, BucketBackend)
    assert "varlen-paged" in why and "varlen-packed" in why
    if broken == "raises":
        assert "Ampere" in why


def test_cpu_without_a_stand_in_uses_buckets() -> None:
    backend, why = choose_attention_backend(CPU, torch.float32, HEADS, KV_HEADS, DIM, BS)
    assert isinstance(backend, BucketBackend) and why.startswith("CPU")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_cuda_backend_matches_the_exact_answer(dtype: torch.dtype) -> None:
    cuda = torch.device("cuda")
    for block_size in (16, 256):
        backend, why = choose_attention_backend(cuda, dtype, HEADS, KV_HEADS, 64, block_size)
        print(f"{dtype} block {block_size}: {backend.name} ({why})")
        layout, query, key, value, k_pool, v_pool = random_step(MIXED, HEADS, KV_HEADS, 64, block_size)
        def on(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=cuda, dtype=dtype)

        out = torch.empty(layout.num_real_rows, HEADS, 64, device=cuda, dtype=dtype)
        backend.attend(backend.plan(layout), on(query), on(key), on(value), on(k_pool), on(v_pool), 0.125, out, False)
        expected = BucketBackend(torch.device("cpu"))
        ref = torch.empty(layout.num_real_rows, HEADS, 64)
        expected.attend(expected.plan(layout), query, key, value, k_pool, v_pool, 0.125, ref, False)
        tolerance = 1e-4 if dtype == torch.float32 else 4e-2
        assert (out.float().cpu() - ref).abs().max() <= tolerance
