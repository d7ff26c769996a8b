"""`python -m engine profile` fits a cost model that `simulate --cost-model-file` then uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from engine.executors.cost_model import FEATURES
from engine.executors.shape_profile import Shape, build_output, default_grid


def test_hand_made_outputs_have_real_block_tables() -> None:
    import numpy as np

    out = build_output(Shape(decodes=3, decode_context=40, prefills=1, chunk=20, prefill_context=16), 0, 16, 64,
                       32_000, np.random.default_rng(0))
    assert [s.num_tokens for s in out.scheduled] == [1, 1, 1, 20]
    assert [len(s.block_ids) for s in out.scheduled] == [3, 3, 3, 3]  # ceil(41/16), ceil(36/16)
    blocks = [b for s in out.scheduled for b in s.block_ids]
    assert len(blocks) == len(set(blocks))
    assert out.total_num_scheduled_tokens == 23


def test_the_grid_respects_the_caps() -> None:
    for shape in default_grid(max_seqs=8, max_tokens=256):
        assert shape.decodes <= 8
        assert shape.prefills * shape.chunk + shape.decodes <= 256 + 8


def test_the_grid_times_what_runs_may_never_exercise() -> None:
    """Pad rows and block copies at several sizes, so their costs can be fitted and borrowed."""
    import numpy as np

    grid = default_grid(max_seqs=8, max_tokens=1024)
    assert len({s.padding for s in grid if s.padding}) >= 3 and len({s.swap_blocks for s in grid if s.swap_blocks}) >= 3
    out = build_output(next(s for s in grid if s.swap_blocks == 32), 0, 16, 256, 32_000, np.random.default_rng(0))
    used = {b for s in out.scheduled for b in s.block_ids}
    copied = [g for g, _ in out.blocks_to_swap_out] + [g for _, g in out.blocks_to_swap_in]
    assert len(copied) == 32 and not used & set(copied) and len(set(copied)) == 32
    padded = build_output(next(s for s in grid if s.padding == 128), 0, 16, 256, 32_000, np.random.default_rng(0))
    assert padded.counts.num_padding_tokens == 128


@pytest.mark.slow
def test_profile_tiny_then_simulate_with_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_file = tmp_path / "tiny.json"
    db = tmp_path / "p.db"
    code = main(["profile", "--model", "tiny", "--device", "cpu", "--max-num-seqs", "8", "--db", str(db),
                 "--max-num-batched-tokens", "256", "--repeats", "1", "-o", str(model_file), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    stored = json.loads(model_file.read_text())
    assert printed == stored
    assert set(stored["coefficients"]) == set(FEATURES)
    assert all(v >= 0 for v in stored["coefficients"].values())
    assert stored["fit"]["num_steps"] >= 20 and stored["fit"]["source"] == "profile"
    from storage.database import open_for_read
    from storage.device_profiles import matching_profile

    profile = matching_profile(open_for_read(str(db)), "tiny", "cpu", "float32", stored["fit"]["torch_threads"])
    assert profile is not None and profile.cost_model == stored
    code = main(["simulate", "--no-record", "--num-prompts", "20", "--cost-model-file", str(model_file), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["num_finished"] == 20


def test_a_bad_cost_model_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    assert main(["simulate", "--no-record", "--cost-model-file", str(bad)]) == 2
    assert "is not a cost model" in capsys.readouterr().err
    assert main(["simulate", "--no-record", "--cost-model-file", str(tmp_path / "none.json")]) == 2
    assert "cannot read cost model file" in capsys.readouterr().err
    bad.write_text("[1, 2]")  # JSON, but not an object
    assert main(["simulate", "--no-record", "--cost-model-file", str(bad)]) == 2
    assert "is not a cost model written by `python -m engine profile` (expected a JSON object, got a list)" \
        in capsys.readouterr().err
