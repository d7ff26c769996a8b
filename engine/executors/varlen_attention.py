"""Paged attention through torch's own variable-length kernel (torch.nn.attention.varlen), CUDA only.

One call per layer serves every request, decodes and prefill chunks alike, with no padding: each
request's queries attend its own keys, causal aligned bottom-right (a chunk's queries are the last
of its context). Two ways to hand over the keys, depending on what the installed torch offers:

- paged: the whole block pool plus a block table and per-request key counts (`block_table` and
  `seqused_k`, in recent torch); nothing is copied.
- packed: each request's context slots gathered into one packed K/V (older torch); the copy is
  the context actually attended, nothing more.

torch's signature has changed between releases (scale, window_size, enable_gqa came later), so
the keywords are chosen from the installed function's signature, and attention_backend probes
every candidate against the bucket path before trusting it.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from engine.executors.step_layout import StepLayout

VarlenFn = Callable[..., Any]


def find_varlen_attn() -> VarlenFn | None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn  # type: ignore[no-any-return]


def parameters_of(fn: VarlenFn) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return frozenset()


def supports_block_table(fn: VarlenFn) -> bool:
    return {"block_table", "seqused_k"} <= parameters_of(fn)


@dataclass(slots=True)
class VarlenPlan:
    num_rows: int  # real rows [0, num_rows); pad rows after them are not attention's business
    cu_seq_q: torch.Tensor  # [N + 1] int32
    cu_seq_k: torch.Tensor  # [N + 1] int32
    max_q: int
    max_k: int
    seqused_k: torch.Tensor | None  # paged: [N] int32 keys per request
    block_table: torch.Tensor | None  # paged: [N, longest table] int32
    slots: torch.Tensor | None  # packed: [sum of contexts] long cache slots
    padded_pairs: int = 0  # the kernel computes exactly the attended pairs


class VarlenBackend:
    def __init__(self, fn: VarlenFn, device: torch.device, paged: bool) -> None:
        self.fn = fn
        self.device = device
        self.paged = paged
        self.name = "varlen-paged" if paged else "varlen-packed"
        how = "block table over the KV pool" if paged else "each request's context slots gathered"
        self.description = f"paged, torch varlen_attn ({how}), one call per layer"
        params = parameters_of(fn)
        self._has_scale = "scale" in params
        self._has_window = "window_size" in params
        self._has_gqa = "enable_gqa" in params

    def plan(self, layout: StepLayout) -> VarlenPlan:
        n = layout.num_seqs
        ctx = [layout.context_len(i) for i in range(n)]
        q_lens = torch.tensor(layout.q_lens, dtype=torch.int32)
        k_lens = torch.tensor(ctx, dtype=torch.int32)
        zero = torch.zeros(1, dtype=torch.int32)
        cu_q = torch.cat([zero, torch.cumsum(q_lens, 0, dtype=torch.int32)])
        cu_k = torch.cat([zero, torch.cumsum(k_lens, 0, dtype=torch.int32)])
        dev = self.device
        table = used = slots = None
        if self.paged:
            width = max(layout.num_blocks(i) for i in range(n))
            table = layout.padded_tables(0, n, width).to(torch.int32).to(dev, non_blocking=True)
            used = k_lens.to(dev, non_blocking=True)
        else:
            slots = layout.context_slots().to(dev, non_blocking=True)
        return VarlenPlan(layout.num_real_rows, cu_q.to(dev, non_blocking=True), cu_k.to(dev, non_blocking=True),
                          max(layout.q_lens), max(ctx), used, table, slots)

    def attend(self, plan: VarlenPlan, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               k_cache: torch.Tensor, v_cache: torch.Tensor, scaling: float | None, out: torch.Tensor,
               timed: bool) -> float:
        del key, value  # already written into the cache, which is what the kernel reads
        _, _, num_kv_heads, head_dim = k_cache.shape
        rows = plan.num_rows
        q = query[0, :, :rows].transpose(0, 1).contiguous()  # [R, Hq, D]
        kwargs: dict[str, Any] = {}
        if scaling is not None:
            if self._has_scale:
                kwargs["scale"] = scaling
            else:  # the oldest signature always scales by 1/sqrt(D)
                q = q * (scaling * math.sqrt(head_dim))
        if self._has_window:
            kwargs["window_size"] = (-1, 0)  # causal
        else:
            kwargs["is_causal"] = True
        if self._has_gqa:
            kwargs["enable_gqa"] = q.shape[1] != num_kv_heads
        gather_s = 0.0
        if self.paged:
            keys, values = k_cache, v_cache
            kwargs["seqused_k"] = plan.seqused_k
            kwargs["block_table"] = plan.block_table
        else:
            g0 = time.perf_counter() if timed else 0.0
            keys = k_cache.view(-1, num_kv_heads, head_dim).index_select(0, plan.slots)  # type: ignore[arg-type]
            values = v_cache.view(-1, num_kv_heads, head_dim).index_select(0, plan.slots)  # type: ignore[arg-type]
            if timed:
                gather_s = time.perf_counter() - g0
        result = self.fn(q, keys, values, plan.cu_seq_q, plan.cu_seq_k, plan.max_q, plan.max_k, **kwargs)
        out[:rows] = result[0] if isinstance(result, tuple) else result
        return gather_s
