"""The engine's CPU linear kernels against the stock ones, on a model's own layer shapes.

For each row count, one pass over every distinct body linear shape of the model (q/k/v/o, gate,
up, down: once each) and the output projection alone, timed alternately on nn.Linear (MKL behind
torch's GEMM), the chunked head (engine/executors/lm_head.py) and the packed oneDNN kernel
(engine/executors/packed_linear.py); median of --repeats blocks of --calls calls each. And the
fixed 1024^3 matmul on both kernels, the utilization reference.

    .venv/bin/python bench/packed_linear.py --model smollm2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from engine.executors.flops import kernel_peaks  # noqa: E402
from engine.executors.lm_head import ChunkedLMHead  # noqa: E402
from engine.executors.model_loading import load_model  # noqa: E402
from engine.executors.packed_linear import PackedLinear, packing_unavailable  # noqa: E402


def interleaved_us(fns: list[Callable[[], object]], calls: int, repeats: int) -> list[float]:
    """Median microseconds per call of each fn, timed in turns (one block of calls each, round after
    round) so drift on a shared machine hits them alike."""
    for fn in fns:
        for _ in range(3):
            fn()
    blocks: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, times in zip(fns, blocks, strict=True):
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - t) / calls * 1e6)
    return [statistics.median(times) for times in blocks]


def time_rows(rows: int, body: list[nn.Module], packed_body: list[nn.Module], heads: list[nn.Module],
              calls: int, repeats: int) -> tuple[list[float], list[float]]:
    """(stock body, packed body), (each head) at this row count."""
    xs = [torch.randn(rows, m.in_features) for m in body]
    h = torch.randn(rows, heads[0].in_features)
    passes = [lambda layers=layers: [m(x) for m, x in zip(layers, xs, strict=True)] for layers in (body, packed_body)]
    bodies = interleaved_us(passes, calls, repeats)
    return bodies, interleaved_us([lambda head=head: head(h) for head in heads], max(2, calls // 10), repeats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 2, 3, 4, 8, 16, 17, 32, 64, 256])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    why_not = packing_unavailable(torch.float32, torch.device("cpu"))
    if why_not is not None:
        print(f"no packed kernel to compare: {why_not}", file=sys.stderr)
        return 1
    model = load_model(args.model, device="cpu").model
    head = model.get_output_embeddings()
    shapes: dict[tuple[int, int], nn.Linear] = {}
    for m in model.modules():
        if type(m) is nn.Linear and m is not head:
            shapes.setdefault((m.in_features, m.out_features), m)
    body: list[nn.Module] = list(shapes.values())
    packed_body: list[nn.Module] = [PackedLinear(m) for m in body]
    chunked, packed_head = ChunkedLMHead(head), PackedLinear(head)
    print(f"{args.model}, {args.threads} threads, body shapes (in, out): {sorted(shapes)}; head {head.out_features} x "
          f"{head.in_features}; median of {args.repeats} blocks of {args.calls} calls (us)\n")
    print("| rows | body: nn.Linear | body: packed | x | head: nn.Linear | head: chunked | head: packed | x chunked |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    with torch.inference_mode():
        for rows in args.rows:
            (stock_b, ours_b), (stock_h, chunk_h, ours_h) = time_rows(
                rows, body, packed_body, [head, chunked, packed_head], args.calls, args.repeats)
            print(f"| {rows} | {stock_b:,.0f} | {ours_b:,.0f} | {stock_b / ours_b:.2f} | {stock_h:,.0f} | "
                  f"{chunk_h:,.0f} | {ours_h:,.0f} | {chunk_h / ours_h:.2f} |", flush=True)
    peaks = kernel_peaks(torch.device("cpu"), torch.float32, sizes=(1024,), repeats=7)
    print("\n1024^3 fp32 matmul: " + ", ".join(f"{name} {flops / 1e9:.1f} GFLOP/s" for name, flops in peaks.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
