"""Step-time cost models for the simulated executor.

A step's time is linear in a few counts that drive a transformer forward pass: a fixed cost per
step (weights streamed once, the vocab projection, Python overhead), per sequence, per prefill
token (the matmuls), per decode sequence, and per query-key pair attended (attention grows with
context). `unit` makes every step cost one time unit, for textbook step counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.step_counts import StepCounts

# Each feature is a sum of StepCounts fields (the intercept is 1 per step), so the simulator, the
# fast path, a fit to recorded steps and a vLLM log all price steps from the same definition.
FEATURE_SOURCES: dict[str, tuple[str, ...]] = {
    "intercept": (),  # 1 per step
    "num_seqs": ("num_prefill_seqs", "num_decode_seqs"),  # sequences in the step
    "prefill_tokens": ("num_prefill_tokens",),  # prompt (or recompute) tokens computed
    "decode_seqs": ("num_decode_seqs",),  # sequences decoding one token
    "decode_context": ("num_context_tokens",),  # tokens attended by decodes: sum of their context lengths
    "prefill_pairs": ("num_prefill_pairs",),  # query-key pairs attended by prefill chunks
    "swap_blocks": ("num_swap_blocks",),  # KV blocks copied between GPU and CPU pools
    "padding_tokens": ("num_padding_tokens",),  # static batching's pad rows: computed, then thrown away
    "padding_seqs": ("num_padding_seqs",),  # finished static members decoding a pad row: its logits too
}
FEATURES: tuple[str, ...] = tuple(FEATURE_SOURCES)
ROW_FEATURES = ("prefill_tokens", "decode_seqs", "padding_tokens")  # token rows: the matmuls' M dimension


def cost_features(counts: StepCounts) -> tuple[float, ...]:
    """The FEATURES of one step, in order."""
    return (1.0, float(counts.num_prefill_seqs + counts.num_decode_seqs), float(counts.num_prefill_tokens),
            float(counts.num_decode_seqs), float(counts.num_context_tokens), float(counts.num_prefill_pairs),
            float(counts.num_swap_blocks), float(counts.num_padding_tokens), float(counts.num_padding_seqs))


class CostModel(Protocol):
    @property
    def name(self) -> str: ...

    def predict(self, features: tuple[float, ...]) -> float:
        """Seconds one step with these features takes."""
        ...

    def step_time(self, counts: StepCounts) -> float:
        """predict(cost_features(counts)), in one call (the simulator's hot path)."""
        ...

    def decode_time_fn(self, num_decodes: int, num_padding: int) -> Callable[[int], float]:
        """step_time of a step of num_decodes decodes (and pad rows, nothing else) as a function of
        the context they attend: the same floats, for the simulator's quiet stretches."""
        ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class UnitCostModel:
    name: str = "unit"

    def predict(self, features: tuple[float, ...]) -> float:
        return 1.0

    def step_time(self, counts: StepCounts) -> float:
        return 1.0

    def decode_time_fn(self, num_decodes: int, num_padding: int) -> Callable[[int], float]:
        return _one_time_unit

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name}


@dataclass(frozen=True)
class LinearCostModel:
    """time = sum(coefficient x feature), times a measured factor for the step's row count if one
    was fitted; coefficients in seconds per unit of each feature.

    row_factors: matmul kernels are not linear in the row count (on CPUs a step of 8 rows can run
    faster than one of 7 or 9), so a fit keeps, per row count it saw often, the median ratio of
    measured to linear time. Row counts without a factor use the linear time.

    idle_wake_s: how long after an arrival that wakes an idle engine its step starts (the loop's
    wake-up and hand-over; measured from a recorded run's such steps, 0 when too few were). A
    simulated engine starts that step this long after the arrival.
    """

    coefficients: dict[str, float]
    name: str = "linear"
    fit: dict[str, Any] = field(default_factory=dict)  # fit quality and provenance, when fitted
    row_factors: dict[int, float] = field(default_factory=dict)
    idle_wake_s: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.coefficients) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown cost-model feature(s): {', '.join(sorted(unknown))}")
        if any(f <= 0 for f in self.row_factors.values()):
            raise ValueError("row factors must be positive")
        if not self.idle_wake_s >= 0.0:
            raise ValueError(f"idle_wake_s must be >= 0, got {self.idle_wake_s}")
        object.__setattr__(self, "_weights", tuple(float(self.coefficients.get(f, 0.0)) for f in FEATURES))

    def linear(self, features: tuple[float, ...]) -> float:
        """The linear part alone (what the row factors multiply)."""
        w = self._weights  # type: ignore[attr-defined]
        t = (w[0] + w[1] * features[1] + w[2] * features[2] + w[3] * features[3] + w[4] * features[4]
             + w[5] * features[5] + w[6] * features[6] + w[7] * features[7] + w[8] * features[8])
        return t if t > 0.0 else 0.0

    def step_time(self, counts: StepCounts) -> float:
        """predict(cost_features(counts)) without building the tuple: once per simulated step."""
        w = self._weights  # type: ignore[attr-defined]
        decodes, prefill, pad = counts.num_decode_seqs, counts.num_prefill_tokens, counts.num_padding_tokens
        t = (w[0] + w[1] * (counts.num_prefill_seqs + decodes) + w[2] * prefill + w[3] * decodes
             + w[4] * counts.num_context_tokens + w[5] * counts.num_prefill_pairs + w[6] * counts.num_swap_blocks
             + w[7] * pad + w[8] * counts.num_padding_seqs)
        if t < 0.0:
            t = 0.0
        if self.row_factors:
            t *= self.row_factors.get(prefill + decodes + pad, 1.0)
        return t

    def decode_time_fn(self, num_decodes: int, num_padding: int) -> Callable[[int], float]:
        w = self._weights  # type: ignore[attr-defined]
        # step_time's sum, term by term in its order, with every term but the context's fixed.
        base = w[0] + w[1] * num_decodes + w[2] * 0 + w[3] * num_decodes
        # A decode stretch's pad rows are finished members: each one pad token and one pad sequence.
        w4, z5, z6, pad, pad_seqs = w[4], w[5] * 0, w[6] * 0, w[7] * num_padding, w[8] * num_padding
        factor = self.row_factors.get(num_decodes + num_padding, 1.0) if self.row_factors else None

        def time_of(context: int) -> float:
            t = base + w4 * context + z5 + z6 + pad + pad_seqs
            if t < 0.0:
                t = 0.0
            return t if factor is None else t * factor

        return time_of

    def predict(self, features: tuple[float, ...]) -> float:
        t = self.linear(features)
        if self.row_factors:  # rows = prefill tokens + decodes + pad rows, the matmuls' M dimension
            t *= self.row_factors.get(int(features[2] + features[3] + features[7]), 1.0)
        return t

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "coefficients": dict(self.coefficients), "fit": dict(self.fit)}
        if self.row_factors:
            out["row_factors"] = {str(rows): factor for rows, factor in sorted(self.row_factors.items())}
        if self.idle_wake_s:
            out["idle_wake_s"] = self.idle_wake_s
        return out


# Measured on the 11M-parameter `tiny` Llama with this project's torch executor, 2 CPU threads
# (`python -m engine profile --model tiny`); a stand-in until a run's own model is fitted.
DEFAULT_COST_MODEL = LinearCostModel(
    name="default",
    coefficients={
        "intercept": 4.0e-3,
        "num_seqs": 6.0e-5,
        "prefill_tokens": 4.5e-5,
        "decode_seqs": 1.0e-4,
        "decode_context": 3.0e-7,
        "prefill_pairs": 2.0e-9,
        "swap_blocks": 2.0e-5,
        "padding_tokens": 4.5e-5,  # a pad row runs the same matmuls as a prompt token
        "padding_seqs": 5.5e-5,  # a finished member's pad row computes its logits too: a decode's extra
    },
)


def idle_wake_note(fit: dict[str, Any]) -> str | None:
    """One line on a fitted model's idle wake-up price (cost_fit.with_idle_wake), None for a model
    without one (not fitted to a recorded run, or fitted before wake-ups were priced)."""
    wakes = fit.get("idle_wakes")
    if wakes is None:
        return None
    price = float(fit.get("idle_wake_s", 0.0))
    if price > 0:
        return (f"an arrival that wakes the idle engine starts its step {price * 1e3:.2f} ms later (median over "
                f"{wakes} such recorded steps: the loop's wake-up and hand-over)")
    return (f"idle wake-ups not priced: the recorded engine woke from idle {wakes} time(s), too few to measure, "
            "or at no cost beyond the step")


def _one_time_unit(context: int) -> float:
    return 1.0


def cost_model_from_dict(data: dict[str, Any]) -> CostModel:
    """Inverse of to_dict(), for cost models stored with a run."""
    if data.get("name") == "unit":
        return UnitCostModel()
    if "coefficients" not in data:
        raise ValueError("a stored cost model needs 'coefficients'")
    return LinearCostModel(coefficients=dict(data["coefficients"]), name=str(data.get("name", "linear")),
                           fit=dict(data.get("fit", {})),
                           row_factors={int(rows): float(f) for rows, f in data.get("row_factors", {}).items()},
                           idle_wake_s=float(data.get("idle_wake_s", 0.0)))


def named_cost_model(name: str) -> CostModel:
    if name == "unit":
        return UnitCostModel()
    if name == "default":
        return DEFAULT_COST_MODEL
    raise ValueError(f"unknown cost model {name!r}; choose default or unit (or --from-run for a fitted one)")
