"""dashboard.run_meta: the one place pages read a run's metadata, on runs the engine recorded."""

from __future__ import annotations

import os

import pytest

from cli.main import main as cli
from dashboard import run_meta
from storage.database import open_for_read
from storage.queries import get_run

COMMON = ["--workload", "mixed", "--num-prompts", "40", "--request-rate", "40", "--seed", "3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:  # type: ignore[type-arg]
    db = str(tmp_path_factory.mktemp("meta") / "meta.db")
    assert cli(["simulate", "--db", db, *COMMON, "--max-num-seqs", "8"]) == 0
    assert cli(["simulate", "--db", db, "--from-run", "1", "--max-num-seqs", "2"]) == 0
    reader = open_for_read(db)
    try:
        return {"base": get_run(reader, 1), "what_if": get_run(reader, 2)}  # type: ignore[dict-item]
    finally:
        reader.dispose()


def test_a_recorded_run_names_the_process_that_wrote_it(runs) -> None:  # type: ignore[no-untyped-def]
    assert run_meta.engine_pid(runs["base"]) == os.getpid()  # the CLI ran in this process


def test_a_what_if_carries_its_changes_and_self_check(runs) -> None:  # type: ignore[no-untyped-def]
    assert run_meta.what_if_changes(runs["what_if"]) == {"max_num_seqs": 2}
    check = run_meta.self_check(runs["what_if"])
    assert check is not None
    assert check.first["output_tokens_per_s"] == pytest.approx(check.second["output_tokens_per_s"])
    assert run_meta.validation(runs["what_if"]) is None


def test_a_plain_run_has_no_what_if_metadata(runs) -> None:  # type: ignore[no-untyped-def]
    base = runs["base"]
    assert run_meta.what_if_changes(base) == {}
    assert run_meta.self_check(base) is None and run_meta.validation(base) is None
    assert run_meta.engine_pid({**base, "pid": None}) is None


def test_a_finished_run_has_a_headline_and_a_running_one_not(runs) -> None:  # type: ignore[no-untyped-def]
    headline = run_meta.headline(runs["base"])
    assert headline is not None
    assert headline.output_tokens_per_s == runs["base"]["summary"]["output_tokens_per_s"]
    assert headline.padding_share is None  # continuous batching pads nothing
    assert run_meta.headline({**runs["base"], "summary": None}) is None


def test_a_validation_and_a_cost_fit_read_back_typed() -> None:
    run = {"validation": {"real_run_id": "9", "model": "tiny",
                          "check": {"predicted": {"ttft_p50": 0.1}, "actual": {"ttft_p50": 0.2},
                                    "error_pct": {"ttft_p50": -50.0}}},
           "cost_model": {"fit": {"num_steps": 120, "median_abs_pct_error": 3.5, "r2": 0.98},
                          "row_factors": {"64": 1.1, "128": 1.2}}}
    validation = run_meta.validation(run)
    assert validation == run_meta.Validation(9, {"ttft_p50": 0.1}, {"ttft_p50": 0.2})
    assert run_meta.cost_fit(run) == run_meta.CostFit(120, 3.5, 0.98, 2, None)
    assert run_meta.cost_fit({"cost_model": None}) is None

