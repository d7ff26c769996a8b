"""A cost model pooled over every real run of one model on one device: it prices a configuration
no single small run showed, and never fits to the runs of the configuration it predicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import update

from cli.main import main
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.executors.cost_model import DEFAULT_COST_MODEL, LinearCostModel
from engine.workload.generators import synthetic_workload
from storage.database import open_for_write
from storage.queries import get_run
from storage.schema import Run, table_of
from tests.recording import record_pretend_real
from whatif.base_run import load_base_run
from whatif.pooled_fit import pooled_cost_model, same_deployment_runs
from whatif.step_pricing import step_time_error_pct

FACTS = {"executor": "torch", "device": "cpu", "dtype": "float32", "torch_threads": 2}
# A device whose cost per token row falls as steps grow (as CPU matmuls do): no straight line fits it.
CONCAVE = LinearCostModel(DEFAULT_COST_MODEL.coefficients, name="concave device",
                          row_factors={rows: min(1.0, (4 / rows) ** 0.5) for rows in range(1, 2049)})


def _real_run(db: Path, max_num_seqs: int, facts: dict[str, object] = FACTS) -> int:
    config = EngineConfig(SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=2048),
                          CacheConfig(num_gpu_blocks=600))
    return record_pretend_real(db, config, synthetic_workload("mixed", 150, request_rate=40.0, seed=4), CONCAVE, facts,
                               name=f"pretend real {max_num_seqs}")


def test_pooling_the_other_runs_prices_a_batch_size_the_base_never_ran(tmp_path: Path) -> None:
    db_path = tmp_path / "t.db"
    base, wide, target = _real_run(db_path, 2), _real_run(db_path, 64), _real_run(db_path, 16)
    db = open_for_write(str(db_path))
    own = load_base_run(db, base).cost_model
    pooled = pooled_cost_model(db, base, EngineConfig.from_record(get_run(db, target)["config"]))  # type: ignore[index]
    assert pooled.run_ids == (base, wide) and pooled.left_out == (target,)
    own_error, pooled_error = step_time_error_pct(db, own, target), step_time_error_pct(db, pooled.model, target)
    assert own_error is not None and pooled_error is not None
    assert abs(own_error) > 8  # the max_num_seqs 2 run's straight line overprices 16-sequence steps
    assert abs(pooled_error) < abs(own_error) / 2
    alone, wider = load_base_run(db, base).exercised, load_base_run(db, wide).exercised
    assert pooled.exercised["max_seqs"] == wider["max_seqs"] > alone["max_seqs"]  # what the warnings then rest on
    assert pooled.exercised["num_steps"] == alone["num_steps"] + wider["num_steps"]


def test_only_runs_of_the_same_model_device_dtype_and_threads_are_pooled(tmp_path: Path) -> None:
    db_path = tmp_path / "t.db"
    base = _real_run(db_path, 2)
    _real_run(db_path, 64, {**FACTS, "torch_threads": 4})
    _real_run(db_path, 64, {**FACTS, "dtype": "bfloat16"})
    same, old = _real_run(db_path, 8), _real_run(db_path, 16)
    db = open_for_write(str(db_path))
    with db.begin() as conn:  # recorded before the truthful engine: padded attention, a capped static batch
        conn.execute(update(table_of(Run)).where(table_of(Run).c.id == old).values(recorded_schema=2))
    assert [r["id"] for r in same_deployment_runs(db, base)] == [base, same]
    pooled = pooled_cost_model(db, base)
    assert pooled.run_ids == (base, same) and pooled.left_out == ()
    assert pooled.model.fit["num_steps"] == pytest.approx(
        load_base_run(db, base).exercised["num_steps"] + load_base_run(db, same).exercised["num_steps"], abs=0)


def _what_if(capsys: pytest.CaptureFixture[str], db: Path, *flags: str) -> dict:  # type: ignore[type-arg]
    assert main(["simulate", "--db", str(db), "--from-run", "1", "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_a_pooled_what_if_leaves_the_predicted_configuration_out_and_its_track_record_refits(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    base, wide, target = _real_run(db, 2), _real_run(db, 64), _real_run(db, 16)
    report = _what_if(capsys, db, "--max-num-seqs", "16", "--fit", "pooled")
    assert report["fit"] == "pooled" and report["pooled_runs"] == [base, wide] and report["left_out_runs"] == [target]
    assert report["cost_model"]["fit"]["holdout"]["folds"] == 5  # the pooled fit's own held-out figures
    wider = load_base_run(open_for_write(str(db)), wide).exercised["max_seqs"]
    assert f"max_num_seqs 16: the 2 pooled runs never ran more than {wider:.0f} sequences" in "\n".join(
        report["trust"]["warnings"])  # the warnings describe what the pool exercised, not the base alone
    record = {entry["real_run_id"]: entry for entry in report["trust"]["track_record"]}
    assert set(record) == {wide, target}
    own = _what_if(capsys, db, "--max-num-seqs", "16")
    own_record = {entry["real_run_id"]: entry for entry in own["trust"]["track_record"]}
    # Run `target` is predicted from a pool without it; pooling beats the max_num_seqs 2 run's own line.
    assert abs(record[target]["step_time_error_pct"]) < abs(own_record[target]["step_time_error_pct"]) / 2
    assert abs(own_record[target]["step_time_error_pct"]) > 8


def test_a_pooled_fit_needs_real_runs_and_no_other_cost_model(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    assert main(["simulate", "--db", str(db), "--num-prompts", "20", "--json"]) == 0
    capsys.readouterr()
    assert main(["simulate", "--db", str(db), "--from-run", "1", "--fit", "pooled"]) == 2
    assert "run 1 is simulated: a pooled fit needs real runs' step times" in capsys.readouterr().err
    _real_run(db, 2)
    assert main(["simulate", "--db", str(db), "--from-run", "2", "--fit", "pooled", "--cost-model", "unit"]) == 2
    assert "both choose the step costs" in capsys.readouterr().err
    assert main(["simulate", "--db", str(db), "--fit", "pooled"]) == 2
    assert "--fit needs --from-run RUN" in capsys.readouterr().err


def spy_on_pools(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The runs of every pool whatif.predict builds from now on, in order."""
    import whatif.predict as predict

    pools: list[tuple[int, ...]] = []

    def spy(*args: object, **kwargs: object) -> object:
        fit = pooled_cost_model(*args, **kwargs)  # type: ignore[arg-type]
        pools.append(fit.run_ids)
        return fit

    monkeypatch.setattr(predict, "pooled_cost_model", spy)
    return pools


def test_each_track_record_run_is_predicted_from_a_pool_without_its_configuration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import whatif.predict as predict

    db_path = tmp_path / "t.db"
    base, wide, target = _real_run(db_path, 2), _real_run(db_path, 64), _real_run(db_path, 16)
    db = open_for_write(str(db_path))
    pools = spy_on_pools(monkeypatch)
    config = EngineConfig.from_record(get_run(db, target)["config"])  # type: ignore[index]
    prepared = predict.prepare(db, load_base_run(db, base), config, fit="pooled")
    assert [e.real_run_id for e in prepared.trust.track_record] == [target, wide]  # newest first
    assert pools == [(base, wide), (base, wide), (base, target)]  # the prediction's, then one per track-record run


def test_the_text_report_names_the_pooled_runs_before_the_prediction(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    base, wide, target = _real_run(db, 2), _real_run(db, 64), _real_run(db, 16)
    assert main(["simulate", "--db", str(db), "--from-run", str(base), "--max-num-seqs", "16", "--fit", "pooled"]) == 0
    out = capsys.readouterr().out
    line = f"pooled fit: the steps of runs {base}, {wide}; left out, as runs of the predicted configuration: {target}"
    assert line in out and out.index(line) < out.index("what-if: max_num_seqs=16")
    assert "cost model: fitted to 2 runs of this model and device" in out


def test_the_what_if_page_says_which_runs_a_prediction_was_fitted_to(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from dashboard import run_meta
    from dashboard.what_if import fit_line

    db = tmp_path / "t.db"
    base, wide = _real_run(db, 2), _real_run(db, 64)
    pooled = _what_if(capsys, db, "--max-num-seqs", "16", "--fit", "pooled")["run_id"]
    own = _what_if(capsys, db, "--max-num-seqs", "16")["run_id"]
    reader = open_for_write(str(db))
    assert run_meta.what_if_fit(get_run(reader, pooled)) == "pooled"  # what its Validate button passes on
    assert fit_line(get_run(reader, pooled)) == (  # type: ignore[arg-type]
        f"Step costs fitted to the steps of 2 real runs of this model on this device (#{base}, #{wide}), none of "
        "them of the predicted configuration.")
    assert fit_line(get_run(reader, own)) == f"Step costs from the cost model “fitted to run {base}”."  # type: ignore[arg-type]
    assert fit_line(get_run(reader, base)) == "Not a what-if prediction: no cost model recorded."  # type: ignore[arg-type]


def test_a_pool_of_one_says_so(tmp_path: Path) -> None:
    db_path = tmp_path / "t.db"
    base = _real_run(db_path, 2)
    pooled = pooled_cost_model(open_for_write(str(db_path)), base)
    assert pooled.run_ids == (base,)
    assert pooled.model.name == f"fitted to run {base} alone (no other real run of this model and device)"
