"""Linear layers on CPU through oneDNN with weights packed once, at load.

A decode step multiplies every weight by a handful of rows. For those shapes the GEMM behind
nn.Linear (MKL, which packs panels of the weight on every call) was, on the 2-core AVX-512 VM we
run on, not even monotonic in the row count: one pass over SmolLM2's four layer shapes took 546 us
at 2 rows, 658 at 3, 574 at 8. oneDNN's inner-product kernel on a weight reordered once into its
blocked layout ran them in 237 / 203 / 317 us, 1.46x faster at 256 rows, and the output projection
(49,152 x 576) at 64 rows in 18 ms where the chunked head took 31 (`python bench/packed_linear.py`
prints the table). The op is the one torch's own compiler (inductor) emits for CPU linears,
`torch.ops.mkldnn._linear_pointwise` on a weight from `torch.ops.mkldnn._reorder_linear_weight`.

It is a private op, so it is probed on load (same result as nn.Linear on a small input) and the
model keeps its own layers, saying why, where the probe fails; fp32 only (other dtypes and GPUs keep
theirs). The packed copy costs the weights' size again in memory: the dense weight stays the
module's parameter (tied embeddings stay tied, FLOP counts read it, the baselines can be given
their own layers back).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import register_flop_formula

PROBE_TOLERANCE = 1e-4  # fp32, a 64-wide dot product: rounding is ~1e-6


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """A dense [out, in] weight reordered once into oneDNN's blocked layout."""
    return torch.ops.mkldnn._reorder_linear_weight(weight)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ W.T + bias on a weight from pack_weight (any leading dimensions)."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")


class PackedLinear(nn.Module):
    """Drop-in for an nn.Linear (or transformers' Conv1D, whose weight is [in, out]) on CPU."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.stock = type(layer)
        self.weight: nn.Parameter = layer.weight  # type: ignore[assignment]  # the layer's own parameters, shared
        self.bias: nn.Parameter | None = layer.bias  # type: ignore[assignment]
        transposed = not isinstance(layer, nn.Linear)  # Conv1D: y = x @ W + b
        dense = self.weight.detach().t().contiguous() if transposed else self.weight.detach()
        self.out_features: int = int(dense.shape[0])
        self.in_features: int = int(dense.shape[1])
        self.transposed = transposed
        self.packed = pack_weight(dense)  # a plain attribute: not state, not counted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # the op has no backward
            weight = self.weight.t() if self.transposed else self.weight
            return nn.functional.linear(x, weight, self.bias)
        return packed_linear(x, self.packed, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN packed"


@register_flop_formula(torch.ops.mkldnn._linear_pointwise)
def _packed_linear_flops(x_shape: torch.Size, w_shape: torch.Size, *args: object, out_shape: object = None,
                         **kwargs: object) -> int:
    """So torch's FlopCounterMode counts what the packed kernel runs (the weight keeps its [out, in] shape)."""
    return 2 * math.prod(x_shape[:-1]) * w_shape[0] * w_shape[1]


def packing_unavailable(dtype: torch.dtype, device: torch.device) -> str | None:
    """Why this device and dtype keep stock linears, or None when the packed kernel probes right."""
    if device.type != "cpu":
        return f"{device.type}: the model's own linears"
    if dtype != torch.float32:
        return f"{str(dtype).removeprefix('torch.')}: packed linears are used for float32 only"
    if not (torch.backends.mkldnn.enabled and torch.backends.mkldnn.is_available()):
        return "this torch has no oneDNN (mkldnn) backend"
    try:
        gen = torch.Generator().manual_seed(0)
        layer = nn.Linear(64, 48)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(48, 64, generator=gen))
        x = torch.randn(5, 64, generator=gen)
        with torch.inference_mode():
            error = float((PackedLinear(layer)(x) - layer(x)).abs().max())
    except (RuntimeError, AttributeError, TypeError, NotImplementedError) as exc:
        return f"the oneDNN packed linear failed its probe ({type(exc).__name__}: {str(exc)[:120]})"
    if not error <= PROBE_TOLERANCE:
        return f"the oneDNN packed linear differs from nn.Linear by {error:.3g} on its probe"
    return None


def install_packed_linears(model: nn.Module) -> int:
    """Swap every plain nn.Linear / Conv1D in the model (the output projection included) for a
    PackedLinear on the same parameters; returns how many now run packed."""
    packable = _packable_types()
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in packable:
                setattr(parent, name, PackedLinear(child))
                count += 1
            elif isinstance(child, PackedLinear):
                count += 1
    return count


def packed_copy_bytes(model: nn.Module) -> int:
    """Memory the packed copies of the model's linear weights take (packed or about to be)."""
    packable = _packable_types()
    weights: list[torch.Tensor] = [m.weight for m in model.modules()  # type: ignore[misc]
                                   if type(m) in packable or isinstance(m, PackedLinear)]
    return sum(w.numel() * w.element_size() for w in weights)


@contextmanager
def stock_linears(model: nn.Module) -> Iterator[int]:
    """The model with its own layers back on the same parameters while the block runs (what the
    packed kernel is worth, measured apart); yields how many were swapped."""
    swapped: list[tuple[nn.Module, str, PackedLinear]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PackedLinear):
                setattr(parent, name, _stock_layer(child))
                swapped.append((parent, name, child))
    try:
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def _stock_layer(packed: PackedLinear) -> nn.Module:
    layer: Any = packed.stock.__new__(packed.stock)
    nn.Module.__init__(layer)
    layer.weight = packed.weight
    layer.bias = packed.bias
    if packed.transposed:
        layer.nf = packed.out_features  # transformers' Conv1D reads nf in forward
        layer.nx = packed.in_features
    else:
        layer.in_features, layer.out_features = packed.in_features, packed.out_features
    return layer


def _packable_types() -> tuple[type, ...]:
    """The exact layer types a PackedLinear replaces: nn.Linear, and transformers' Conv1D (GPT-2)."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:
        return (nn.Linear,)
    return (nn.Linear, Conv1D)
