"""A faster output projection for CPUs: the same logits, computed vocabulary chunk by chunk.

On the 2-core AVX2 machines we run on, MKL's GEMM for logits = h @ W.T is slow for the shapes a
decode step has (a few dozen rows, a 32k-49k vocabulary, hidden 256-576): 40-60 GFLOP/s where
the other layers reach 100+. Computing W_chunk @ h.T (a tall, skinny GEMM MKL handles well) for
1,024 vocabulary rows at a time, transposed into a contiguous [rows, vocab] buffer while the chunk
is still in cache, measured 25-45% faster (tiny, batch 64: 21 -> 15 ms; SmolLM2: 73 -> 40 ms).
GPUs keep the model's own projection.
"""

from __future__ import annotations

import torch
from torch import nn

CHUNK_ROWS = 1024  # vocabulary rows per GEMM: the [1024, rows] result stays in L2 for the transpose


class ChunkedLMHead(nn.Module):
    """Drop-in for an nn.Linear output projection; shares its weight (tied embeddings stay tied)."""

    def __init__(self, linear: nn.Linear, chunk_rows: int = CHUNK_ROWS) -> None:
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.chunk_rows = chunk_rows

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        lead = hidden.shape[:-1]
        rows = hidden.reshape(-1, self.in_features)
        if rows.shape[0] == 0 or torch.is_grad_enabled():
            return nn.functional.linear(hidden, self.weight, self.bias)
        h_t = rows.t().contiguous()  # [hidden, rows]
        out = hidden.new_empty(rows.shape[0], self.out_features)
        weight = self.weight
        for start in range(0, self.out_features, self.chunk_rows):
            stop = min(start + self.chunk_rows, self.out_features)
            out[:, start:stop].t().copy_(torch.mm(weight[start:stop], h_t))
        if self.bias is not None:
            out += self.bias
        return out.view(*lead, self.out_features)


def install_chunked_lm_head(model: nn.Module) -> bool:
    """Swap the model's output projection for the chunked one; False when it is not a plain Linear."""
    head = model.get_output_embeddings()  # type: ignore[operator]
    if type(head) is not nn.Linear:
        return False
    model.set_output_embeddings(ChunkedLMHead(head))  # type: ignore[operator]
    return True
