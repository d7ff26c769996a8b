"""Model FLOPs per step and the device's measured peak, for compute utilization.

FLOPs of a step = 2 x (weights every token multiplies) x tokens
                + 2 x (output projection) x rows whose logits are computed
                + 4 x layers x (heads x head_dim) x (query, key) pairs attended.
Embedding lookups cost no FLOPs. The peak is a timed square matmul in the model's dtype, so
utilization says how close a step came to what this device really does, not to a datasheet.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from engine.outputs import ScheduledRequest


@dataclass(frozen=True)
class FlopModel:
    body_params: int  # weights multiplied by every token: all but embeddings and the output projection
    lm_head_params: int  # output projection (vocab x hidden), run only for rows that sample
    num_layers: int
    attention_width: int  # num_heads x head_dim

    @classmethod
    def of(cls, model: torch.nn.Module, num_layers: int, num_heads: int, head_dim: int) -> FlopModel:
        lm_head = model.get_output_embeddings()  # type: ignore[operator]
        lm_head_weight = lm_head.weight
        seen: set[int] = set()
        embedding = 0
        total = 0
        for module in model.modules():
            for p in module.parameters(recurse=False):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                total += p.numel()
                if isinstance(module, torch.nn.Embedding) and p is not lm_head_weight:
                    embedding += p.numel()
        lm = lm_head_weight.numel()
        return cls(total - embedding - lm, lm, num_layers, num_heads * head_dim)

    def step_flops(self, scheduled: Iterable[ScheduledRequest], num_logit_rows: int) -> float:
        tokens = 0
        pairs = 0  # sum over query tokens of the keys each attends to (causal, own request only)
        for s in scheduled:
            n = s.num_tokens
            tokens += n
            pairs += n * s.start_pos + n * (n + 1) // 2
        return float(2 * self.body_params * tokens + 2 * self.lm_head_params * num_logit_rows
                     + 4 * self.num_layers * self.attention_width * pairs)


def measure_peak_flops(device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 5) -> float:
    """Best FLOP/s of a size x size matmul over a few runs (one warm-up first)."""
    if size is None:
        size = 4096 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(a, b)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
