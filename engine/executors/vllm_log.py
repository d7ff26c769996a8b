"""A cost model from a real vLLM's step log, so a what-if can run with a GPU deployment's step costs.

vLLM 0.33 started with `--enable-logging-iteration-details` logs one line per engine step:

    Engine 000: Iteration(N): A context requests, B context tokens, C generation requests,
    D generation tokens, iteration elapsed time: T ms, GPU KV cache usage: U%

(one line; ", encoder inputs: ..." may follow). That carries the step's shape except what attention
costs: no per-request context lengths. So the two attention features are, in order of preference,
taken from a device profile of the same GPU (its coefficients, held fixed while the rest is fitted),
or approximated and marked so: decode context from the KV usage (U% of the cache's tokens, shared
between the step's requests by their count) and prefill query-key pairs as if every chunk were a
whole prompt (B^2 / 2A).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.executors.cost_fit import fit_cost_model, holdout_quality
from engine.executors.cost_model import FEATURES, LinearCostModel

ITERATION_LINE = re.compile(
    r"Iteration\((?P<step>\d+)\): (?P<ctx_reqs>\d+) context requests, (?P<ctx_tokens>\d+) context tokens, "
    r"(?P<gen_reqs>\d+) generation requests, (?P<gen_tokens>\d+) generation tokens, "
    r"iteration elapsed time: (?P<ms>[\d.]+) ms, GPU KV cache usage: (?P<kv>[\d.]+)%"
)
KV_CACHE_SIZE_LINE = re.compile(r"GPU KV cache size: (?P<tokens>[\d,]+) tokens")
ATTENTION_FEATURES = ("decode_context", "prefill_pairs")


class VllmLogError(UserError, ValueError):
    """A file that holds no usable vLLM iteration lines, or missing facts the fit needs."""


@dataclass(frozen=True)
class VllmIteration:
    step: int
    context_requests: int  # requests computing prompt tokens (prefill or chunk)
    context_tokens: int
    generation_requests: int
    generation_tokens: int  # more than generation_requests with speculative decoding
    elapsed_s: float
    kv_usage: float  # 0..1


def parse_vllm_log(path: Path) -> tuple[list[VllmIteration], int | None]:
    """The iteration lines of a vLLM log, and the KV cache size in tokens if the log states it."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise VllmLogError(f"cannot read {path}: {exc.strerror or exc}") from None
    steps = []
    for m in ITERATION_LINE.finditer(text):
        steps.append(VllmIteration(int(m["step"]), int(m["ctx_reqs"]), int(m["ctx_tokens"]), int(m["gen_reqs"]),
                                   int(m["gen_tokens"]), float(m["ms"]) / 1e3, float(m["kv"]) / 100.0))
    if not steps:
        raise VllmLogError(f"{path} holds no vLLM iteration lines: start vLLM with "
                           "--enable-logging-iteration-details and give its log")
    size = KV_CACHE_SIZE_LINE.search(text)
    return steps, int(size["tokens"].replace(",", "")) if size else None


def fit_from_vllm_log(path: Path, kv_cache_tokens: int | None = None,
                      device_profile: LinearCostModel | None = None) -> LinearCostModel:
    """A LinearCostModel fitted to the log's step times. kv_cache_tokens overrides the size the log
    states; without either (and without a device profile), decode context cannot be estimated."""
    steps, logged_size = parse_vllm_log(path)
    size = kv_cache_tokens or logged_size
    if device_profile is None and size is None:
        raise VllmLogError(f"{path} does not state the KV cache size (vLLM logs 'GPU KV cache size: N tokens' at "
                           "start-up): pass --kv-cache-tokens N, or a --device-profile of the same GPU")
    ctx_reqs = np.array([s.context_requests for s in steps], dtype=float)
    ctx_tokens = np.array([s.context_tokens for s in steps], dtype=float)
    gen_reqs = np.array([s.generation_requests for s in steps], dtype=float)
    gen_tokens = np.array([s.generation_tokens for s in steps], dtype=float)
    kv = np.array([s.kv_usage for s in steps], dtype=float)
    seqs = ctx_reqs + gen_reqs
    share = np.divide(gen_reqs, seqs, out=np.zeros_like(seqs), where=seqs > 0)
    decode_context = kv * float(size or 0) * share
    prefill_pairs = np.divide(ctx_tokens**2, 2 * ctx_reqs, out=np.zeros_like(ctx_tokens), where=ctx_reqs > 0)
    logged = {"intercept": np.ones(len(steps)), "num_seqs": seqs, "prefill_tokens": ctx_tokens,
              "decode_seqs": gen_tokens, "decode_context": decode_context, "prefill_pairs": prefill_pairs}
    zeros = np.zeros(len(steps))  # what a vLLM log has no column for (swaps, static padding) stays 0
    x = np.column_stack([logged.get(f, zeros) for f in FEATURES])
    y = np.array([s.elapsed_s for s in steps])
    provenance: dict[str, object] = {"source": "vllm-log", "log": path.name, "num_log_steps": len(steps),
                                     "kv_cache_tokens": size}
    if device_profile is not None:
        fixed = np.array([device_profile.coefficients.get(f, 0.0) if f in ATTENTION_FEATURES else 0.0
                          for f in FEATURES])
        attention = x @ fixed
        provenance["attention_from"] = device_profile.name
        residual = np.maximum(y - attention, 1e-9)
        rest = x.copy()
        for f in ATTENTION_FEATURES:
            rest[:, FEATURES.index(f)] = 0.0
        model = fit_cost_model(rest, residual, name=f"fitted to vLLM log {path.name}", provenance=provenance)
        coefficients = dict(model.coefficients) | {f: float(device_profile.coefficients.get(f, 0.0))
                                                   for f in ATTENTION_FEATURES}
        fit = dict(model.fit) | {"holdout": holdout_quality(rest, residual)}
    else:
        provenance["approximated"] = ["decode_context from GPU KV cache usage x cache size, shared by request count",
                                      "prefill_pairs as whole prompts (context tokens^2 / 2 per context request)"]
        model = fit_cost_model(x, y, name=f"fitted to vLLM log {path.name}", provenance=provenance)
        coefficients, fit = dict(model.coefficients), dict(model.fit) | {"holdout": holdout_quality(x, y)}
    return LinearCostModel(coefficients=coefficients, name=model.name, fit=fit, row_factors=model.row_factors)
