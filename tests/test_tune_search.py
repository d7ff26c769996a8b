"""tune's recommendation against brute force, and its pruning against an exhaustive search.

Brute force here is independent of tune's own code: every configuration of the grid is simulated
with the Engine directly and judged by the few lines below (vllm bench serve's goodput: completed
requests meeting every threshold / duration; attainment: good / all requests).
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from cli.tune import main
from engine.clock import VirtualClock
from engine.config import EngineConfig
from engine.engine_loop import Engine
from engine.executors.cost_model import DEFAULT_COST_MODEL
from engine.executors.simulated import SimulatedExecutor
from engine.request import RequestStatus
from engine.workload.generators import synthetic_workload
from engine.workload.spec import Workload
from tune.backends import Sequential
from tune.early_stop import EarlyStop
from tune.evaluate import COMPLETE, PRUNED, SearchContext
from tune.search import SearchOutcome, run_search
from tune.slo import SLO
from tune.space import Axis, grid


def true_misses(engine: Engine, slo_ms: dict[str, float]) -> set[str]:
    """Requests that did not complete or missed a threshold, judged from the finished run."""
    missed = set()
    for r in engine.requests.values():
        if r.status not in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH):
            missed.add(r.request_id)
            continue
        n = len(r.output_token_ids)
        assert r.first_token_time is not None and r.finish_time is not None
        latency = {"ttft": r.first_token_time - r.arrival_time, "e2e": r.finish_time - r.arrival_time,
                   "tpot": (r.finish_time - r.first_token_time) / (n - 1) if n > 1 else 0.0}
        if not all(latency[k] <= ms / 1e3 for k, ms in slo_ms.items()):
            missed.add(r.request_id)
    return missed


def brute_force(config: dict[str, Any], workload: Workload, slo_ms: dict[str, float]) -> dict[str, float]:
    engine = Engine(EngineConfig.from_dict(config), SimulatedExecutor(DEFAULT_COST_MODEL), VirtualClock())
    summary = engine.run(workload.requests)
    good = 0
    for r in engine.requests.values():
        if r.status not in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH):
            continue
        n = len(r.output_token_ids)
        assert r.first_token_time is not None and r.finish_time is not None
        latency = {"ttft": r.first_token_time - r.arrival_time, "e2e": r.finish_time - r.arrival_time,
                   "tpot": (r.finish_time - r.first_token_time) / (n - 1) if n > 1 else 0.0}
        good += all(latency[k] <= ms / 1e3 for k, ms in slo_ms.items())
    return {"goodput": good / summary.duration_s, "attainment": good / len(engine.requests),
            "e2e_p99": summary.e2e_s.p99 or math.inf}


def _tune_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main([*argv, "--json", "--no-record", "--jobs", "1"]) == 0
    return json.loads(capsys.readouterr().out)


WORKLOAD_ARGS = ("--workload", "mixed", "--num-prompts", "80", "--request-rate", "40", "--seed", "5")
SEARCH = ("max_num_seqs=2,4,8,16", "enable_chunked_prefill=true,false", "num_gpu_blocks=40,400")


def test_the_recommendation_is_the_brute_force_best(capsys: pytest.CaptureFixture[str]) -> None:
    workload = synthetic_workload("mixed", 80, request_rate=40.0, seed=5)
    slo_ms = {"ttft": 300.0, "e2e": 2500.0}
    report = _tune_json(capsys, *WORKLOAD_ARGS, "--slo", "ttft=300,e2e=2500", "--attainment", "95",
                        "--search", *SEARCH)
    assert len(report["points"]) == 16
    truth = {p["index"]: brute_force(p["config"], workload, slo_ms) for p in report["points"]}
    meeting = {i: t for i, t in truth.items() if t["attainment"] >= 0.95}
    assert 0 < len(meeting) < len(truth), "the SLOs must separate the grid for this test to mean anything"
    rec = report["recommended"]
    assert rec is not None
    # No configuration meeting the SLOs has a higher goodput; ties go to the lower E2E p99.
    best = max(t["goodput"] for t in meeting.values())
    assert rec["goodput"] == best == truth[rec["index"]]["goodput"]
    tied = [i for i, t in meeting.items() if t["goodput"] == best]
    assert truth[rec["index"]]["e2e_p99"] == min(truth[i]["e2e_p99"] for i in tied)
    # The recommendation meets the SLOs in its own simulation.
    assert truth[rec["index"]]["attainment"] >= 0.95 and rec["meets_slo"]
    # Every point simulated in full agrees with brute force.
    for p in report["points"]:
        if p["status"] == COMPLETE:
            assert p["goodput"] == truth[p["index"]]["goodput"]
            assert p["meets_slo"] == (p["index"] in meeting)


def _search(workload: Workload, axes: list[Axis], slo: SLO, prune: str) -> SearchOutcome:
    points = grid(axes, EngineConfig.from_dict({"num_gpu_blocks": 2048}))
    return run_search(SearchContext(workload.requests, DEFAULT_COST_MODEL, slo, prune), points, Sequential())


def _random_case(rng: random.Random) -> tuple[Workload, list[Axis], SLO]:
    workload = synthetic_workload(rng.choice(["mixed", "uniform"]), rng.randint(15, 50),
                                  request_rate=rng.choice([10.0, 30.0, 80.0, math.inf]), seed=rng.randint(0, 10**6))
    axes = [Axis("max_num_seqs", tuple(sorted(rng.sample([1, 2, 3, 4, 6, 8, 16, 32], rng.randint(2, 4))))),
            Axis("enable_chunked_prefill", (True, False)),
            Axis("num_gpu_blocks", tuple(rng.sample([24, 48, 96, 2048], 2)))]
    if rng.random() < 0.5:
        axes.append(Axis("policy", ("fcfs", "sjf")))
    thresholds = {"ttft": rng.choice([None, 0.05, 0.2, 0.8, 3.0]), "tpot": rng.choice([None, 0.006, 0.01, 0.05]),
                  "e2e": rng.choice([None, 0.5, 1.5, 5.0])}
    if not any(thresholds.values()):
        thresholds["e2e"] = 1.5
    slo = SLO(thresholds["ttft"], thresholds["tpot"], thresholds["e2e"], rng.choice([0.8, 0.9, 0.95, 0.99, 1.0]))
    return workload, axes, slo


CASES = 20


def test_every_miss_early_stopping_counts_is_a_real_miss() -> None:
    """The invariant pruning rests on, checked directly: run random simulations to the end with an
    EarlyStop that never trips, and compare the requests it flagged along the way with the run's
    true misses."""
    rng = random.Random(7)
    flagged_total = 0
    for _ in range(60):
        workload, axes, slo = _random_case(rng)
        config = EngineConfig.from_dict({"num_gpu_blocks": 2048} | {a.name: rng.choice(a.values) for a in axes})
        stop = EarlyStop(workload.requests, slo, allowed=len(workload), check_every=rng.choice([1, 3, 16]))
        engine = Engine(config, SimulatedExecutor(DEFAULT_COST_MODEL), VirtualClock())
        stop.attach(engine)
        engine.run(workload.requests, stop=stop)
        assert not stop.tripped
        flagged = stop.flagged()
        assert flagged <= true_misses(engine, {k: v * 1e3 for k, v in slo.thresholds().items()})
        assert len(flagged) == stop.certain_misses
        flagged_total += len(flagged)
    assert flagged_total > 100  # it did flag misses before the end, or the check proved nothing


def test_pruning_never_drops_the_best_point() -> None:
    """Pruned ("best" and "slo") against exhaustive searches on random workloads, grids and SLOs:
    the same answer, the same figures for every point that ran in full, and every stopped point
    really could not have been the answer."""
    rng = random.Random(20261201)
    stopped = {"slo": 0, "goodput": 0}
    for _ in range(CASES):
        workload, axes, slo = _random_case(rng)
        full = _search(workload, axes, slo, "none")
        assert full.count(PRUNED) == 0
        truth = {r.index: r for r in full.results}
        for mode in ("best", "slo"):
            pruned = _search(workload, axes, slo, mode)
            assert (pruned.recommended and pruned.recommended.index) == (full.recommended and full.recommended.index)
            assert (pruned.closest and pruned.closest.index) == (full.closest and full.closest.index)
            meeting = [r.index for r in full.results if r.meets_slo]
            if mode == "slo":  # every point meeting the SLOs ran in full: the same frontier
                assert [r.index for r in pruned.frontier] == [r.index for r in full.frontier]
            for r in pruned.results:
                if r.status == COMPLETE:
                    assert r.to_dict() == truth[r.index].to_dict()
                elif r.status == PRUNED:
                    stopped[r.stopped_by or "?"] += 1
                    if r.stopped_by == "slo":
                        assert r.index not in meeting  # it really misses the SLOs
                    else:
                        assert mode == "best" and r.beat is not None
                        assert (truth[r.index].goodput or 0.0) < r.beat  # it really could not win
                        assert (r.certain_misses or 0) <= truth[r.index].num_requests - (truth[r.index].num_good or 0)
    # Both rules fired somewhere, or the comparison above proved nothing.
    assert stopped["slo"] > 10 and stopped["goodput"] > 5, stopped


def test_an_slo_no_configuration_meets_gets_the_closest_and_by_how_much(capsys: pytest.CaptureFixture[str]) -> None:
    report = _tune_json(capsys, *WORKLOAD_ARGS, "--slo", "ttft=1,e2e=50", "--search", "max_num_seqs=2,8")
    assert report["recommended"] is None
    closest = report["closest"]
    assert closest is not None and closest["index"] in (0, 1)
    miss = closest["miss"]
    assert miss["short_by"] > 0 and miss["good"] + miss["short_by"] == miss["needed_good"]
    assert set(miss["per_slo"]) == {"ttft", "e2e"}
    assert all(d["over_pct"] is None or d["over_pct"] > 0 for d in miss["per_slo"].values())
    # The closest has the most good requests of every point (all were simulated in full).
    assert closest["num_good"] == max(p["num_good"] for p in report["points"])
    assert main([*WORKLOAD_ARGS, "--no-record", "--jobs", "1", "--slo", "ttft=1,e2e=50",
                 "--search", "max_num_seqs=2,8"]) == 0
    text = capsys.readouterr().out
    assert "no configuration meets the SLOs. Closest: point" in text and "99th percentile is" in text


@pytest.mark.parametrize(("argv", "message"), [
    (["--slo", "ttft=500", "--search", "max_seqs=4,8"], "unknown search parameter 'max_seqs'"),
    (["--slo", "ttft=500", "--search", "max_num_seqs=64:8"], "empty range"),
    (["--slo", "ttft=500", "--search", "max_num_seqs="], "no values (empty range)"),
    (["--slo", "ttft=500", "--search", "policy=lifo"], "must be among"),
    (["--slo", "ttfb=500", "--search", "max_num_seqs=4"], "--slo takes NAME=MS"),
    (["--slo", "ttft=-5", "--search", "max_num_seqs=4"], "positive number of milliseconds"),
    (["--slo", "ttft=500", "--attainment", "0.99", "--search", "max_num_seqs=4"], "did you mean 99?"),
    (["--search", "max_num_seqs=4"], "tune needs --slo"),
    (["--slo", "ttft=500"], "tune needs --search"),
    (["--slo", "ttft=500", "--max-num-seqs", "8", "--search", "max_num_seqs=4,8"], "both searched and fixed"),
    (["--slo", "ttft=500", "--search", "max_num_seqs=4", "max_num_seqs=8"], "gives max_num_seqs twice"),
    (["--slo", "ttft=500", "--search", "max_num_batched_tokens=256", "enable_chunked_prefill=false"],
     "no combination of --search is a valid configuration"),
])
def test_bad_input_exits_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:  # argparse's own errors exit from parse_args
        raise SystemExit(main([*argv, "--no-record", "--num-prompts", "5"]))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_invalid_combinations_are_skipped_and_said(capsys: pytest.CaptureFixture[str]) -> None:
    report = _tune_json(capsys, *WORKLOAD_ARGS, "--slo", "e2e=5000", "--search", "max_num_batched_tokens=256,2048",
                        "enable_chunked_prefill=true,false")
    statuses = {tuple(sorted(p["params"].items())): p["status"] for p in report["points"]}
    assert statuses[(("enable_chunked_prefill", False), ("max_num_batched_tokens", 256))] == "invalid"
    assert report["counts"]["invalid"] == 1 and report["recommended"] is not None
