"""The cost model a prediction runs on: the base run's own fit, with the cost of each feature the
base never exercised borrowed from a device profile of the same model, device, dtype and thread
count, or, without one, from a stated proxy, and marked as such.

A fit to a run that never swapped gives swaps coefficient 0 (no step ever showed what one costs),
and a prediction for a swap configuration would then price swaps as free. Pad rows have an
honest proxy in the run itself (a pad row runs the same matmuls as a prompt token); block copies
have none, so without a profile they are priced at an assumed copy bandwidth and say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.executors.cost_model import CostModel, LinearCostModel, cost_model_from_dict
from storage.device_profiles import DeviceProfile

ASSUMED_COPY_BYTES_PER_S = 5e9  # a block copy between pools when nothing measured it (host memcpy class)


@dataclass(frozen=True)
class Priced:
    model: CostModel
    borrowed: list[str] = field(default_factory=list)  # costs taken from a profile or a measured proxy
    unmeasured: list[str] = field(default_factory=list)  # costs nothing measured: extrapolation warnings


def price_for_prediction(cost_model: CostModel, mode: str, exercised: dict[str, float],
                         kv_bytes_per_block: float | None, profile: DeviceProfile | None) -> Priced:
    """cost_model: the base run's (fitted to a real run, or the one a simulated run ran on)."""
    if mode != "real" or not isinstance(cost_model, LinearCostModel):
        return Priced(cost_model)  # a simulated base replays on the model that produced it
    coefficients = dict(cost_model.coefficients)
    profiled = cost_model_from_dict(profile.cost_model) if profile is not None else None
    profile_costs = profiled.coefficients if isinstance(profiled, LinearCostModel) else {}
    borrowed: list[str] = []
    unmeasured: list[str] = []
    if exercised.get("padding_tokens", 0) == 0:
        if profile is not None and profile_costs.get("padding_tokens", 0) > 0:
            coefficients["padding_tokens"] = profile_costs["padding_tokens"]
            borrowed.append(f"pad rows priced from {profile.label()}")
        else:
            coefficients["padding_tokens"] = coefficients.get("prefill_tokens", 0.0)
            borrowed.append("pad rows priced as prompt tokens of this run (they run the same matmuls)")
    if exercised.get("padding_seqs", 0) == 0:
        if profile is not None and profile_costs.get("padding_seqs", 0) > 0:
            coefficients["padding_seqs"] = profile_costs["padding_seqs"]
            borrowed.append(f"finished members' pad-row logits priced from {profile.label()}")
        else:
            head = max(coefficients.get("decode_seqs", 0.0) - coefficients.get("prefill_tokens", 0.0), 0.0)
            coefficients["padding_seqs"] = head
            borrowed.append("finished members' pad-row logits priced as a decode's cost beyond a prompt token's "
                            "(this run's)")
    if exercised.get("swap_blocks", 0) == 0:
        if profile is not None and profile_costs.get("swap_blocks", 0) > 0:
            coefficients["swap_blocks"] = profile_costs["swap_blocks"]
            borrowed.append(f"block copies (swap) priced from {profile.label()}")
        elif kv_bytes_per_block:
            coefficients["swap_blocks"] = kv_bytes_per_block / ASSUMED_COPY_BYTES_PER_S
            rate = f"{ASSUMED_COPY_BYTES_PER_S / 1e9:g} GB/s ({kv_bytes_per_block / 1024:,.0f} KiB a block)"
            unmeasured.append(f"swapping was never measured: a block copy is priced at an assumed {rate}; "
                              "run `python -m engine profile` for this model and device to measure it")
        else:
            unmeasured.append("swapping was never measured and the run did not record its block size: swaps are "
                              "priced at the fit's coefficient (0, free); run `python -m engine profile`")
    if not borrowed and not unmeasured:
        return Priced(cost_model)
    from_profile = profile is not None and any(profile.label() in b for b in borrowed)
    name = cost_model.name + (f" + {profile.label()}" if from_profile and profile is not None else "")
    model = LinearCostModel(coefficients=coefficients, name=name, fit=dict(cost_model.fit),
                            row_factors=dict(cost_model.row_factors), idle_wake_s=cost_model.idle_wake_s)
    return Priced(model, borrowed, unmeasured)
