"""Paged attention plugged into transformers through its public AttentionInterface.

The executor runs ONE forward pass per step over every scheduled token of every request,
flattened into a single sequence of length T (decodes first, then prefill chunks). transformers
computes projections, RoPE and MLPs; this function, called once per layer, writes the new K/V
into the paged blocks and lets each request attend to its own blocks only:

- decodes (one query each): one padded SDPA call for all of them, keys gathered block by block
  with index_select, and a length mask. A per-sequence loop costs ~2 ms per layer more on CPU.
- prefill chunks: one SDPA call each; a chunk with earlier context reads it from the cache and
  needs a bottom-right-aligned causal mask (SDPA's is_causal aligns top-left).

The metadata arrives as the `paged_meta` keyword given to `model(...)`; transformers passes
unknown keywords through to the attention function unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from engine.executors.kv_cache import PagedKVCache

ATTENTION_NAME = "batchscope_paged"


@dataclass(slots=True)
class PrefillChunk:
    """One request's chunk of more than one token, at rows [q_start, q_start + q_len) of the batch."""

    q_start: int
    q_len: int
    start_pos: int  # tokens of this request already in the cache before this chunk
    block_ids: torch.Tensor | None = None  # only with earlier context: the blocks to read
    mask: torch.Tensor | None = None  # only with earlier context: [1, 1, q_len, context] bottom-right causal


@dataclass(slots=True)
class PagedAttentionMetadata:
    """Everything the attention needs about one step; built once per step, shared by all layers."""

    kv_cache: PagedKVCache
    slot_mapping: torch.Tensor  # [T] long: flat cache slot (block * block_size + offset) of each token
    num_decodes: int  # rows [0, num_decodes) are single-token queries, one per request
    decode_block_tables: torch.Tensor | None  # [num_decodes, max_blocks] long, padded with block 0
    decode_mask: torch.Tensor | None  # [num_decodes, 1, 1, max_blocks * block_size] bool, True = attend
    prefills: list[PrefillChunk]
    max_context_len: int  # longest context any query sees this step
    timed: bool = False  # accumulate seconds per part into timings (CPU: exact; CUDA: would need syncs)
    timings: dict[str, float] = field(default_factory=dict)


def paged_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    dropout: float = 0.0,
    scaling: float | None = None,
    paged_meta: PagedAttentionMetadata | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """q [1, Hq, T, D] and k/v [1, Hkv, T, D] (RoPE applied) -> ([1, T, Hq, D], None)."""
    meta = paged_meta
    if meta is None:
        raise RuntimeError(f"{ATTENTION_NAME} attention needs paged_meta: run the model through TorchExecutor")
    window = kwargs.get("sliding_window")
    if isinstance(window, int) and window < meta.max_context_len:
        raise NotImplementedError(f"sliding-window attention (window {window}) is not supported by paged attention")
    timed = meta.timed
    t0 = time.perf_counter() if timed else 0.0

    k_cache, v_cache = meta.kv_cache.layer(module.layer_idx)  # type: ignore[arg-type]
    _, block_size, num_kv_heads, head_dim = k_cache.shape
    num_heads, num_tokens = query.shape[1], query.shape[2]
    new_k = key[0].transpose(0, 1)  # [T, Hkv, D]
    new_v = value[0].transpose(0, 1)
    k_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, meta.slot_mapping, new_k)
    v_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, meta.slot_mapping, new_v)
    t1 = time.perf_counter() if timed else 0.0
    gather_s = 0.0

    out = query.new_empty(num_tokens, num_heads, head_dim)
    q = query[0]  # [Hq, T, D]
    nd = meta.num_decodes
    if nd:
        tables = meta.decode_block_tables
        assert tables is not None and meta.decode_mask is not None
        g0 = time.perf_counter() if timed else 0.0
        flat = tables.reshape(-1)
        ctx = tables.shape[1] * block_size
        keys = k_cache.index_select(0, flat).view(nd, ctx, num_kv_heads, head_dim).transpose(1, 2)
        values = v_cache.index_select(0, flat).view(nd, ctx, num_kv_heads, head_dim).transpose(1, 2)
        if timed:
            gather_s += time.perf_counter() - g0
        # Grouped-query attention without repeating K/V: the G query heads that share a KV head
        # become G query rows of that head (exact for one-token queries).
        group = num_heads // num_kv_heads
        qd = q[:, :nd].reshape(num_kv_heads, group, nd, head_dim).permute(2, 0, 1, 3)  # [nd, Hkv, G, D]
        od = F.scaled_dot_product_attention(qd, keys, values, attn_mask=meta.decode_mask, scale=scaling)
        out[:nd] = od.reshape(nd, num_heads, head_dim)

    for chunk in meta.prefills:
        s, n = chunk.q_start, chunk.q_len
        qc = q[:, s : s + n].unsqueeze(0)  # [1, Hq, n, D]
        if chunk.block_ids is None:  # no earlier context: the chunk attends to itself only
            kc, vc = key[:, :, s : s + n], value[:, :, s : s + n]
            oc = F.scaled_dot_product_attention(qc, kc, vc, is_causal=True, scale=scaling,
                                                enable_gqa=num_heads != num_kv_heads)
        else:
            g0 = time.perf_counter() if timed else 0.0
            ctx = chunk.start_pos + n
            kc = k_cache.index_select(0, chunk.block_ids).view(1, -1, num_kv_heads, head_dim)[:, :ctx].transpose(1, 2)
            vc = v_cache.index_select(0, chunk.block_ids).view(1, -1, num_kv_heads, head_dim)[:, :ctx].transpose(1, 2)
            if timed:
                gather_s += time.perf_counter() - g0
            oc = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=chunk.mask, scale=scaling,
                                                enable_gqa=num_heads != num_kv_heads)
        out[s : s + n] = oc[0].transpose(0, 1)

    if timed:
        t2 = time.perf_counter()
        tm = meta.timings
        tm["kv_write"] = tm.get("kv_write", 0.0) + (t1 - t0)
        tm["kv_gather"] = tm.get("kv_gather", 0.0) + gather_s
        tm["attention"] = tm.get("attention", 0.0) + (t2 - t1 - gather_s)
    return out.unsqueeze(0), None


def bottom_right_causal_mask(q_len: int, context_len: int, device: torch.device) -> torch.Tensor:
    """[1, 1, q_len, context_len] bool: query i (at position context_len - q_len + i) sees keys <= it."""
    rows = torch.arange(q_len, device=device).unsqueeze(1) + (context_len - q_len)
    cols = torch.arange(context_len, device=device).unsqueeze(0)
    return (cols <= rows).view(1, 1, q_len, context_len)


_registered = False


def register_paged_attention() -> str:
    """Register the function with transformers once; returns the attn_implementation name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTENTION_NAME, paged_attention)
        _registered = True
    return ATTENTION_NAME
