"""Model FLOPs per step and the device's measured peak, for compute utilization.

Useful FLOPs of a step = 2 x (matrix weights every token multiplies) x tokens
                       + 2 x (output projection) x rows whose logits are computed
                       + 4 x layers x (heads x head_dim) x (query, key) pairs attended.
Only matrix weights count (a norm's or bias's elementwise work is not a matmul), embedding lookups
cost nothing, so the count equals what torch's FlopCounterMode sees in the real forward. Padding
(static pad rows, keys a length bucket pads with) is counted apart, never as useful work.

The peak is timed square matmuls in the model's dtype, on the fastest kernel the engine runs
(torch.matmul, and on CPU the packed oneDNN one its linears use), so utilization says how close a step came
to what this device really does, not to a datasheet; a single timing at start-up read 54, 117 and
184 GFLOP/s in three runs on a shared VM, hence warm-up, several sizes and medians.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from engine.executors.packed_linear import pack_weight, packed_linear, packing_unavailable
from engine.outputs import ScheduledRequest


@dataclass(frozen=True)
class FlopModel:
    body_params: int  # matrix weights multiplied by every token: all but embeddings and the output projection
    lm_head_params: int  # output projection (vocab x hidden), run only for rows that sample
    num_layers: int
    attention_width: int  # num_heads x head_dim

    @classmethod
    def of(cls, model: torch.nn.Module, num_layers: int, num_heads: int, head_dim: int) -> FlopModel:
        lm_head_weight = model.get_output_embeddings().weight  # type: ignore[operator]
        seen: set[int] = {id(lm_head_weight)}
        body = 0
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                seen.update(id(p) for p in module.parameters(recurse=False))
                continue
            for p in module.parameters(recurse=False):
                if id(p) not in seen and p.dim() >= 2:
                    seen.add(id(p))
                    body += p.numel()
        return cls(body, lm_head_weight.numel(), num_layers, num_heads * head_dim)

    def step_flops(self, scheduled: Iterable[ScheduledRequest], num_logit_rows: int) -> float:
        tokens = 0
        pairs = 0  # sum over query tokens of the keys each attends to (causal, own request only)
        for s in scheduled:
            n = s.num_tokens
            tokens += n
            pairs += n * s.start_pos + n * (n + 1) // 2
        return float(2 * self.body_params * tokens + 2 * self.lm_head_params * num_logit_rows
                     + self.attention_flops(pairs))

    def attention_flops(self, pairs: int) -> float:
        """Scores (q.k) and weighted values (p.v) of `pairs` query-key pairs in every layer."""
        return float(4 * self.num_layers * self.attention_width * pairs)

    def padding_flops(self, num_pad_rows: int, padded_pairs: int, num_pad_logit_rows: int = 0) -> float:
        """Pad rows run the body (their one-key attention is a copy), finished members' pad rows the
        output projection too; plus padded attention pairs."""
        return (float(2 * self.body_params * num_pad_rows + 2 * self.lm_head_params * num_pad_logit_rows)
                + self.attention_flops(padded_pairs))


def default_sizes(device: torch.device) -> tuple[int, ...]:
    return (2048, 4096, 8192) if device.type == "cuda" else (512, 1024, 2048)


def measure_peak_flops(device: torch.device, dtype: torch.dtype, sizes: Sequence[int] | None = None,
                       repeats: int = 5) -> float:
    """FLOP/s of the fastest kernel at its best size (see kernel_peaks)."""
    return max(kernel_peaks(device, dtype, sizes, repeats).values())


def kernel_peaks(device: torch.device, dtype: torch.dtype, sizes: Sequence[int] | None = None,
                 repeats: int = 5) -> dict[str, float]:
    """Per matmul kernel the engine can run (torch.matmul; on CPU the packed oneDNN one the
    linears use, where it probes right), the FLOP/s of its best size's median time, each size
    warmed up first. The engine's own kernels set the reference: a peak timed on a slower kernel
    than the model runs would flatter utilization. CUDA: timed with events."""
    timings: dict[str, dict[int, list[float]]] = {}
    with torch.inference_mode():  # the packed kernel has no backward: it runs only without autograd
        for size in sizes or default_sizes(device):
            a = torch.randn(size, size, device=device, dtype=dtype)
            b = torch.randn(size, size, device=device, dtype=dtype)
            for name, multiply in _kernels(a, b):
                for _ in range(2):  # warm-up: allocator, kernel selection, CPU frequency, caches
                    multiply()
                timings.setdefault(name, {})[size] = [_time_matmul(multiply, device) for _ in range(repeats)]
    return {name: peak_from_timings(t) for name, t in timings.items()}


def _kernels(a: torch.Tensor, b: torch.Tensor) -> list[tuple[str, Callable[[], torch.Tensor]]]:
    kernels: list[tuple[str, Callable[[], torch.Tensor]]] = [("torch.matmul", lambda: torch.matmul(a, b))]
    if packing_unavailable(a.dtype, a.device) is None:
        packed = pack_weight(b.t().contiguous())  # a @ b as a linear on weight b^T
        kernels.append(("oneDNN packed", lambda: packed_linear(a, packed)))
    return kernels


def peak_from_timings(timings: dict[int, list[float]]) -> float:
    """max over sizes n of 2 n^3 / median seconds: a median ignores both a lucky and a preempted run."""
    return max(2.0 * n**3 / statistics.median(ts) for n, ts in timings.items())


def _time_matmul(multiply: Callable[[], torch.Tensor], device: torch.device) -> float:
    if device.type == "cuda":
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        multiply()
        stop.record()
        stop.synchronize()
        return float(start.elapsed_time(stop)) / 1000.0
    t0 = time.perf_counter()
    multiply()
    return time.perf_counter() - t0
