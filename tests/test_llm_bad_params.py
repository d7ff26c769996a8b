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
    ({"max_tokens": "10"}, "max_tokens must be a whole number, got '10'"),
    ({"stop_token_ids": [-1]}, r"stop_token_ids must be a list of token ids \(whole numbers >= 0\)"),
    ({"stop_token_ids": [True]}, "stop_token_ids must be a list of token ids"),
    ({"stop_token_ids": "50256"}, "stop_token_ids must be a list of token ids"),
    ({"stop_token_ids": 50256}, "stop_token_ids must be a list of token ids"),
])
def test_bad_sampling_params_are_refused(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(SamplingParamsError, match=says):
        SamplingParams(**kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def llm():  # type: ignore[no-untyped-def]
    from engine.llm import LLM

    return LLM(model="tiny")


@pytest.mark.parametrize(("prompts", "params", "says"), [
    (None, None, "prompts must be a string, a dict .* got NoneType"),
    (42, None, "prompts must be a string, a dict .* got int"),
    (b"bytes", None, "prompts must be a string, a dict .* got bytes"),
    (["hi"], {"max_tokens": 3}, r"sampling_params must be a SamplingParams or a list of them.*\(\*\*it\)"),
    (["hi"], ["not params"], "sampling_params must be a SamplingParams or a list of them"),
])
def test_generate_names_what_it_takes(llm, prompts: object, params: object, says: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=says):
        llm.generate(prompts, params, use_tqdm=False)
    assert llm.generate("hi", SamplingParams(max_tokens=2), use_tqdm=False)[0].finished  # still serves


def test_numpy_token_ids_are_token_ids() -> None:
    import numpy as np

    assert SamplingParams(stop_token_ids=list(np.array([7, 9]))).stop_token_ids == (7, 9)
