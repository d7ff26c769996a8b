"""SamplingParams a script might get wrong: a ValueError naming the field, at construction."""

from __future__ import annotations

import pytest

from engine.sampling_params import SamplingParams, SamplingParamsError


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"seed": 2**70}, "seed must be a whole number that fits in 64 bits"),
    ({"temperature": float("nan")}, "temperature must be a finite number >= 0"),
    ({"temperature": float("inf")}, "temperature must be a finite number >= 0"),
    ({"temperature": -1}, "temperature must be a finite number >= 0"),
    ({"max_tokens": 0}, "max_tokens must be at least 1"),
    ({"top_p": 0}, "top_p must be in"),
    ({"n": 2}, "n must be 1"),
])
def test_bad_sampling_params_are_refused(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(SamplingParamsError, match=says):
        SamplingParams(**kwargs)  # type: ignore[arg-type]
