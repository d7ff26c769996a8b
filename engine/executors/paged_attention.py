"""Paged attention plugged into transformers through its public AttentionInterface.

The executor runs ONE forward pass per step over every scheduled token of every request,
flattened into a single sequence of length T (see step_layout for the row order). transformers
computes projections, RoPE and MLPs; this function, called once per layer, writes the new K/V
into the paged blocks and hands the queries to the step's attention backend (length buckets on
CPU, torch's varlen kernel on CUDA where it probes right), which lets each request attend to its
own blocks only, at a cost proportional to the context it attends.

Static-batching pad rows (the last rows) write their K/V into the scratch block and attend only
to their own key, so their output is their own value: softmax over one key is exactly 1.

The metadata arrives as the `paged_meta` keyword given to `model(...)`; transformers passes
unknown keywords through to the attention function unchanged, which is also how features this
function does not implement would slip through: attention_support refuses those keywords.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.executors.attention_support import check_attention_kwargs
from engine.executors.bucket_attention import bottom_right_causal_mask
from engine.executors.kv_cache import PagedKVCache

ATTENTION_NAME = "batchscope_paged"

__all__ = ["ATTENTION_NAME", "PagedAttentionMetadata", "bottom_right_causal_mask", "paged_attention",
           "register_paged_attention"]


@dataclass(slots=True)
class PagedAttentionMetadata:
    """Everything the attention needs about one step; built once per step, shared by all layers."""

    kv_cache: PagedKVCache
    slot_mapping: torch.Tensor  # [T] long: flat cache slot (block * block_size + offset) of each row
    backend: Any  # an attention_backend.AttentionBackend
    plan: Any  # what backend.plan() built for this step
    num_real_rows: int  # rows [num_real_rows, T) are static-batching pad rows
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
    check_attention_kwargs(kwargs, attention_mask, is_cross=key.shape[2] != query.shape[2])
    window = kwargs.get("sliding_window")
    if isinstance(window, int) and window < meta.max_context_len:
        raise NotImplementedError(f"sliding-window attention (window {window}) is not supported by paged attention")
    timed = meta.timed
    t0 = time.perf_counter() if timed else 0.0

    k_cache, v_cache = meta.kv_cache.layer(module.layer_idx)  # type: ignore[arg-type]
    num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    num_heads, num_tokens = query.shape[1], query.shape[2]
    k_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, meta.slot_mapping, key[0].transpose(0, 1))
    v_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, meta.slot_mapping, value[0].transpose(0, 1))
    t1 = time.perf_counter() if timed else 0.0

    out = query.new_empty(num_tokens, num_heads, head_dim)
    real = meta.num_real_rows
    gather_s = meta.backend.attend(meta.plan, query, key, value, k_cache, v_cache, scaling, out, timed) if real \
        else 0.0
    if real < num_tokens:  # pad rows: their own value, repeated over the query heads sharing it
        own = value[0, :, real:].repeat_interleave(num_heads // num_kv_heads, dim=0)  # [Hq, P, D]
        out[real:] = own.transpose(0, 1)

    if timed:
        t2 = time.perf_counter()
        tm = meta.timings
        tm["kv_write"] = tm.get("kv_write", 0.0) + (t1 - t0)
        tm["kv_gather"] = tm.get("kv_gather", 0.0) + gather_s
        tm["attention"] = tm.get("attention", 0.0) + (t2 - t1 - gather_s)
    return out.unsqueeze(0), None


_registered = False


def register_paged_attention() -> str:
    """Register the function with transformers once; returns the attn_implementation name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTENTION_NAME, paged_attention)
        _registered = True
    return ATTENTION_NAME
