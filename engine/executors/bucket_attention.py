"""Paged attention as padded SDPA calls over length buckets: the CPU path, and the CUDA fallback.

One SDPA call padded to the longest block table costs decodes x longest context: 32 decodes at
context 64 plus one at 2,000 took 10x the step of 33 even decodes. Here decodes are grouped by
block count rounded up to a power of two, one padded call per group, so padding stays under 2x
of the context each request attends (measured on 2 cores: 8.0 -> 1.3 ms a layer for that mix,
and no slower than one call where contexts are even; an exact per-token segmented softmax was
3-10x slower than SDPA). Prefill chunks without earlier context are grouped the same way by
length and run right-padded under one causal call: a real query never sees a padded key, since
padding only follows it. Chunks with context read their blocks and need a bottom-right mask.

Exact: padded keys are masked out (or sit after every real query, under the causal mask), so each
request's softmax runs over its own keys only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F

from engine.executors.step_layout import StepLayout

# Decode buckets narrower than this many keys join the next one: a call costs ~20-40 us a layer on
# CPU; measured on tiny's shape, 64 was at least as fast as 16, 128 and 256 for 8-64 decodes.
MIN_BUCKET_KEYS = 64
# Fresh chunks are grouped only up to this length: measured on 2 cores, 32 prompts of 8-32 tokens
# took 0.80 ms a layer grouped vs 1.15 one call each, 16 of 16-64 0.60 vs 0.77; but 8 of 16-128
# 0.96 vs 0.75 and 4 of 200-500 7.6 vs 5.6 (the gathers and padded work outweigh the saved calls).
MAX_GROUPED_LEN = 64


@dataclass(slots=True)
class DecodeBucket:
    row_start: int  # decodes [row_start, row_start + num) of the batch, one query each
    num: int
    blocks: torch.Tensor  # [num * width] long: the block tables, padded with the scratch block
    width: int  # blocks per request in this bucket
    mask: torch.Tensor | None  # [num, 1, 1, width * block_size] bool, True = attend; None: nothing padded


@dataclass(slots=True)
class CausalGroup:
    row_start: int  # chunks without earlier context at rows [row_start, row_start + num_rows)
    num: int
    num_rows: int
    max_len: int
    gather: torch.Tensor | None  # [num * max_len] rows of the batch, right-padded; None: one chunk, sliced
    keep: torch.Tensor | None  # [num_rows] positions of the real rows in the padded [num * max_len] output


@dataclass(slots=True)
class ContextChunk:
    q_start: int
    q_len: int
    context_len: int
    blocks: torch.Tensor  # the blocks holding its whole context, this chunk included
    mask: torch.Tensor  # [1, 1, q_len, context_len] bottom-right causal


@dataclass(slots=True)
class BucketPlan:
    decodes: list[DecodeBucket] = field(default_factory=list)
    groups: list[CausalGroup] = field(default_factory=list)
    chunks: list[ContextChunk] = field(default_factory=list)
    padded_pairs: int = 0  # query-key pairs computed per layer beyond those attended


def power_of_two_at_least(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def bucket_sizes(sizes: list[int], minimum: int) -> list[int]:
    """Each size rounded up to a power of two, and to at least `minimum` (a power of two too)."""
    return [max(power_of_two_at_least(s), minimum) for s in sizes]


def runs(keys: list[int]) -> list[tuple[int, int, int]]:
    """(start, stop, key) of each run of equal keys in a sorted list."""
    out: list[tuple[int, int, int]] = []
    start = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            out.append((start, i, keys[start]))
            start = i
    return out


class BucketBackend:
    name = "buckets"
    description = "paged, power-of-two length buckets, one padded SDPA call per bucket"

    def __init__(self, device: torch.device, min_bucket_keys: int = MIN_BUCKET_KEYS,
                 max_grouped_len: int = MAX_GROUPED_LEN) -> None:
        self.device = device
        self.min_bucket_keys = min_bucket_keys
        self.max_grouped_len = max_grouped_len

    def plan(self, layout: StepLayout) -> BucketPlan:
        plan = BucketPlan()
        self._plan_decodes(layout, plan)
        self._plan_groups(layout, plan)
        for i in range(layout.num_decodes + layout.num_fresh, layout.num_seqs):
            n, ctx = layout.q_lens[i], layout.context_len(i)
            plan.chunks.append(ContextChunk(layout.q_starts[i], n, ctx, layout.block_table(i).to(self.device),
                                            bottom_right_causal_mask(n, ctx, self.device)))
            plan.padded_pairs += n * (n - 1) // 2  # the dense mask's upper triangle is computed, then dropped
        return plan

    def _plan_decodes(self, layout: StepLayout, plan: BucketPlan) -> None:
        nd, bs = layout.num_decodes, layout.block_size
        if not nd:
            return
        min_blocks = power_of_two_at_least(max(self.min_bucket_keys // bs, 1))
        widths = bucket_sizes([layout.num_blocks(i) for i in range(nd)], min_blocks)
        for first, stop, width in runs(widths):
            tables = layout.padded_tables(first, stop, width)
            ctx = torch.tensor([layout.context_len(i) for i in range(first, stop)], dtype=torch.long)
            padded = (stop - first) * width * bs - int(ctx.sum())
            mask = None
            if padded:
                keys = torch.arange(width * bs).unsqueeze(0) < ctx.unsqueeze(1)
                mask = keys.view(stop - first, 1, 1, width * bs).to(self.device, non_blocking=True)
            plan.decodes.append(DecodeBucket(layout.q_starts[first], stop - first,
                                             tables.view(-1).to(self.device, non_blocking=True), width, mask))
            plan.padded_pairs += padded

    def _plan_groups(self, layout: StepLayout, plan: BucketPlan) -> None:
        first_fresh = layout.num_decodes
        lens = layout.q_lens[first_fresh : first_fresh + layout.num_fresh]
        # Padded to the group's longest, not the power of two. A chunk too long to gain gets a key of its
        # own (-i never equals a neighbour's), so it runs alone, unpadded.
        sizes = [size if size <= self.max_grouped_len else -i for i, size in enumerate(bucket_sizes(lens, 1))]
        for a, b, _ in runs(sizes):
            group_lens = lens[a:b]
            row_start = layout.q_starts[first_fresh + a]
            num_rows = sum(group_lens)
            if b - a == 1:
                plan.groups.append(CausalGroup(row_start, 1, num_rows, group_lens[0], None, None))
                continue
            max_len = max(group_lens)
            lens_t = torch.tensor(group_lens, dtype=torch.long)
            starts = torch.cumsum(lens_t, 0) - lens_t
            cols = torch.arange(max_len)
            real = cols.unsqueeze(0) < lens_t.unsqueeze(1)  # [num, max_len]
            # Padded positions repeat the chunk's last row: any finite values do, the causal mask hides them.
            src = starts.unsqueeze(1) + torch.minimum(cols.unsqueeze(0), (lens_t - 1).unsqueeze(1))
            keep = real.view(-1).nonzero().view(-1)
            plan.groups.append(CausalGroup(row_start, b - a, num_rows, max_len,
                                           (src.view(-1) + row_start).to(self.device, non_blocking=True),
                                           keep.to(self.device, non_blocking=True)))
            plan.padded_pairs += (b - a) * max_len * (max_len + 1) // 2 - sum(n * (n + 1) // 2 for n in group_lens)

    def attend(self, plan: BucketPlan, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               k_cache: torch.Tensor, v_cache: torch.Tensor, scaling: float | None, out: torch.Tensor,
               timed: bool) -> float:
        """Fill out[rows] for every request's queries; returns seconds spent gathering (when timed)."""
        _, block_size, num_kv_heads, head_dim = k_cache.shape
        num_heads = query.shape[1]
        group = num_heads // num_kv_heads
        q = query[0]  # [Hq, T, D]
        gather_s = 0.0
        for bucket in plan.decodes:
            g0 = time.perf_counter() if timed else 0.0
            n, ctx = bucket.num, bucket.width * block_size
            keys = k_cache.index_select(0, bucket.blocks).view(n, ctx, num_kv_heads, head_dim).transpose(1, 2)
            values = v_cache.index_select(0, bucket.blocks).view(n, ctx, num_kv_heads, head_dim).transpose(1, 2)
            if timed:
                gather_s += time.perf_counter() - g0
            # Grouped-query attention without repeating K/V: the G query heads that share a KV head
            # become G query rows of that head (exact for one-token queries).
            s = bucket.row_start
            qd = q[:, s : s + n].reshape(num_kv_heads, group, n, head_dim).permute(2, 0, 1, 3)  # [n, Hkv, G, D]
            od = F.scaled_dot_product_attention(qd, keys, values, attn_mask=bucket.mask, scale=scaling)
            out[s : s + n] = od.reshape(n, num_heads, head_dim)
        gqa = num_heads != num_kv_heads
        for g in plan.groups:
            s = g.row_start
            if g.gather is None:
                qc, kc, vc = q[:, s : s + g.num_rows].unsqueeze(0), key[:, :, s : s + g.num_rows], \
                    value[:, :, s : s + g.num_rows]
            else:
                qc = q.index_select(1, g.gather).view(num_heads, g.num, g.max_len, head_dim).transpose(0, 1)
                kc = key[0].index_select(1, g.gather).view(num_kv_heads, g.num, g.max_len, head_dim).transpose(0, 1)
                vc = value[0].index_select(1, g.gather).view(num_kv_heads, g.num, g.max_len, head_dim).transpose(0, 1)
            oc = F.scaled_dot_product_attention(qc, kc, vc, is_causal=True, scale=scaling, enable_gqa=gqa)
            rows = oc.transpose(1, 2).reshape(-1, num_heads, head_dim)  # [num * max_len, Hq, D]
            out[s : s + g.num_rows] = rows if g.keep is None else rows.index_select(0, g.keep)
        for c in plan.chunks:
            g0 = time.perf_counter() if timed else 0.0
            kc = k_cache.index_select(0, c.blocks).view(1, -1, num_kv_heads, head_dim)[:, : c.context_len]
            vc = v_cache.index_select(0, c.blocks).view(1, -1, num_kv_heads, head_dim)[:, : c.context_len]
            if timed:
                gather_s += time.perf_counter() - g0
            qc = q[:, c.q_start : c.q_start + c.q_len].unsqueeze(0)
            oc = F.scaled_dot_product_attention(qc, kc.transpose(1, 2), vc.transpose(1, 2), attn_mask=c.mask,
                                                scale=scaling, enable_gqa=gqa)
            out[c.q_start : c.q_start + c.q_len] = oc[0].transpose(0, 1)
        return gather_s


def bottom_right_causal_mask(q_len: int, context_len: int, device: torch.device) -> torch.Tensor:
    """[1, 1, q_len, context_len] bool: query i (at position context_len - q_len + i) sees keys <= it.

    Cached by shape: chunked prefill repeats the same (chunk, context) shapes across requests."""
    return _cached_mask(q_len, context_len, str(device))


@lru_cache(maxsize=64)
def _cached_mask(q_len: int, context_len: int, device: str) -> torch.Tensor:
    rows = torch.arange(q_len).unsqueeze(1) + (context_len - q_len)
    cols = torch.arange(context_len).unsqueeze(0)
    return (cols <= rows).view(1, 1, q_len, context_len).to(device)
