"""Which paged-attention backend a device gets, chosen once at start-up by trying it.

CPU: power-of-two length buckets (bucket_attention), the fastest measured there. CUDA: torch's
varlen kernel when the installed torch has one and it computes the same thing here (dtype, head
size, block size and GPU all decide whether flash kernels run), else the same buckets. "The same
thing" is checked, not assumed: each candidate runs a small ragged step (decodes over 1-3 blocks,
a chunk without and one with earlier context, a non-default scale, grouped KV heads) and must match
the bucket path computed in fp32 within the dtype's rounding. A kernel that raises, aligns its
causal mask top-left, or ignores the scale is refused with the reason kept for describe().
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from engine.executors.bucket_attention import BucketBackend
from engine.executors.step_layout import StepLayout
from engine.executors.varlen_attention import VarlenBackend, VarlenFn, find_varlen_attn, supports_block_table


class AttentionBackend(Protocol):
    name: str
    description: str

    def plan(self, layout: StepLayout) -> Any:
        """Per-step tensors, built once and shared by every layer; has `padded_pairs`."""
        ...

    def attend(self, plan: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               k_cache: torch.Tensor, v_cache: torch.Tensor, scaling: float | None, out: torch.Tensor,
               timed: bool) -> float:
        """Write each request's attention output into out [T, Hq, D]; returns gather seconds when timed."""
        ...


def choose_attention_backend(device: torch.device, dtype: torch.dtype, num_heads: int, num_kv_heads: int,
                             head_dim: int, block_size: int,
                             varlen_fn: VarlenFn | None = None) -> tuple[AttentionBackend, str]:
    """(backend, why): varlen where it is present and probes right, else buckets.

    varlen_fn: a stand-in for torch's varlen_attn (tests); given, it is probed on any device."""
    buckets = BucketBackend(device)
    if varlen_fn is None:
        if device.type != "cuda":
            return buckets, "CPU: length buckets (measured fastest there)"
        varlen_fn = find_varlen_attn()
        if varlen_fn is None:
            return buckets, f"torch {torch.__version__} has no torch.nn.attention.varlen"
    failures: list[str] = []
    for paged in ((True, False) if supports_block_table(varlen_fn) else (False,)):
        candidate = VarlenBackend(varlen_fn, device, paged)
        error = probe_backend(candidate, device, dtype, num_heads, num_kv_heads, head_dim, block_size)
        if error is None:
            return candidate, f"{candidate.name}: matched the bucket path on a probe step"
        failures.append(f"{candidate.name}: {error}")
    return buckets, "varlen refused (" + "; ".join(failures) + ")"


def probe_backend(candidate: AttentionBackend, device: torch.device, dtype: torch.dtype, num_heads: int,
                  num_kv_heads: int, head_dim: int, block_size: int) -> str | None:
    """None when candidate matches the fp32 bucket path on a small ragged step, else why not."""
    layout, query, key, value, k_pool, v_pool = probe_step(num_heads, num_kv_heads, head_dim, block_size)
    scale = 0.75 / math.sqrt(head_dim)  # not the default: a kernel that drops `scale` must fail
    reference = torch.empty(layout.num_real_rows, num_heads, head_dim)
    cpu = torch.device("cpu")
    BucketBackend(cpu).attend(BucketBackend(cpu).plan(layout), query, key, value, k_pool, v_pool, scale,
                              reference, False)
    try:
        def on(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype)

        got = torch.empty(layout.num_real_rows, num_heads, head_dim, device=device, dtype=dtype)
        candidate.attend(candidate.plan(layout), on(query), on(key), on(value), on(k_pool), on(v_pool), scale, got,
                         False)
        error = float((got.float().cpu() - reference).abs().max())
    except Exception as exc:  # an unsupported dtype, head size, GPU or block size: refuse, say why
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]
    tolerance = 1e-4 if dtype == torch.float32 else 4e-2
    if not error <= tolerance:  # also catches NaN
        return f"max error {error:.3g} against the bucket path (tolerance {tolerance:g})"
    return None


def probe_step(num_heads: int, num_kv_heads: int, head_dim: int, block_size: int
               ) -> tuple[StepLayout, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decodes over 1, 2 and 3 blocks, a chunk without and one with earlier context (any block size)."""
    bs = block_size
    return random_step([(1, 0), (1, bs + 2), (1, 2 * bs), (4, 0), (5, bs + 3)], num_heads, num_kv_heads, head_dim,
                       block_size)


def random_step(seqs: list[tuple[int, int]], num_heads: int, num_kv_heads: int, head_dim: int, block_size: int,
                seed: int = 0, spare_blocks: int = 2
                ) -> tuple[StepLayout, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A step of (queries, cached tokens) requests in fp32 on the CPU, blocks scattered over a random pool:
    (layout, query, key, value, k_pool, v_pool), the step's new K/V already written into the pool."""
    gen = torch.Generator().manual_seed(seed)
    bs = block_size

    def kind(seq: tuple[int, int]) -> tuple[int, int]:  # the row order step_layout describes
        n, start = seq
        return (0, start) if n == 1 else (1, n) if start == 0 else (2, 0)

    seqs = sorted(seqs, key=kind)
    blocks_needed = [-(-(n + s) // bs) for n, s in seqs]
    num_blocks = sum(blocks_needed) + spare_blocks
    order = torch.randperm(num_blocks, generator=gen).tolist()
    starts: list[int] = []
    q_starts: list[int] = []
    row = used = 0
    for (n, _), need in zip(seqs, blocks_needed, strict=True):
        starts.append(used)
        used += need
        q_starts.append(row)
        row += n
    layout = StepLayout(block_size=bs, scratch_block=num_blocks, q_starts=q_starts, q_lens=[n for n, _ in seqs],
                        start_pos=[s for _, s in seqs], flat_blocks=torch.tensor(order[:used], dtype=torch.long),
                        block_starts=starts, num_decodes=sum(1 for n, _ in seqs if n == 1),
                        num_fresh=sum(1 for n, s in seqs if n > 1 and s == 0))
    shape = (num_blocks + 1, bs, num_kv_heads, head_dim)
    k_pool, v_pool = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    query = torch.randn(1, num_heads, row, head_dim, generator=gen)
    key = torch.randn(1, num_kv_heads, row, head_dim, generator=gen)
    value = torch.randn(1, num_kv_heads, row, head_dim, generator=gen)
    _, slots = layout.token_positions()
    k_pool.view(-1, num_kv_heads, head_dim).index_copy_(0, slots, key[0].transpose(0, 1))
    v_pool.view(-1, num_kv_heads, head_dim).index_copy_(0, slots, value[0].transpose(0, 1))
    return layout, query, key, value, k_pool, v_pool
