"""Lessons 5-9, the trade-offs: batch size, short vs long requests, chunked prefill, recompute vs
swap, and the policies. The course states directions here, not numbers; each row says whether the
recorded run bears the direction out."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from dashboard import learn, learn_charts
from dashboard import learn_plan as plan
from dashboard.learn_figures import Row, View, holds, missing_tiny, ms, p, steps, summary, swept_ids, tok_s
from dashboard.learn_plan import swept_name


def _ratio(last: float, first: float) -> str:
    return f"×{last / first:.1f}"


# -- 5. throughput vs latency across the batch size ---------------------------------------------------
def sweep_points(target: str, runs: learn.LessonRuns, tiny: bool = False) -> pd.DataFrame | None:
    """Per max_num_seqs: output tokens/s and the median time per output token, in value order."""
    name, values = (plan.SIZES_TINY, plan.BATCH_SIZES_TINY) if tiny else (plan.SIZES, plan.BATCH_SIZES)
    ids = swept_ids(runs, name, "max_num_seqs", values)
    if ids is None:
        return None
    return pd.DataFrame([{"engine": "tiny (real)" if tiny else "simulated", "max_num_seqs": int(v), "run": i,
                          "output_tokens_per_s": float(summary(target, i)["output_tokens_per_s"]),  # type: ignore[arg-type]
                          "tpot_ms": (p(target, i, "tpot_s") or 0.0) * 1e3} for v, i in ids.items()])


def _sweep_cells(points: pd.DataFrame) -> tuple[str, str, str]:
    tps, tpot, seqs = points["output_tokens_per_s"], points["tpot_ms"], points["max_num_seqs"]
    gains = [f"{b / a - 1:+.0%} ({s0} → {s1})" for a, b, s0, s1 in
             ((tps.iloc[-2], tps.iloc[-1], seqs.iloc[-2], seqs.iloc[-1]), (tps.iloc[0], tps.iloc[1], seqs.iloc[0],
                                                                            seqs.iloc[1]))]
    return (f"{tok_s(tps.iloc[0])} → {tok_s(tps.iloc[-1])} ({_ratio(tps.iloc[-1], tps.iloc[0])})",
            f"{gains[0]}, against {gains[1]}",
            f"{tpot.iloc[0]:.1f} → {tpot.iloc[-1]:.1f} ms ({_ratio(tpot.iloc[-1], tpot.iloc[0])})")


def sweep_view(target: str, runs: learn.LessonRuns) -> View | None:
    sim = sweep_points(target, runs)
    if sim is None:
        return None
    tiny = sweep_points(target, runs, tiny=True)
    gone = missing_tiny(runs, tuple(swept_name(plan.SIZES_TINY, "max_num_seqs", v) for v in plan.BATCH_SIZES_TINY))
    cells, tiny_cells = _sweep_cells(sim), _sweep_cells(tiny) if tiny is not None else (gone, gone, gone)
    tps, tpot = sim["output_tokens_per_s"], sim["tpot_ms"]
    rows = [Row("throughput from the smallest batch to the largest", "rises", cells[0], tiny_cells[0],
                holds(tps.iloc[-1] > tps.iloc[0])),
            Row("the last doubling of the batch adds", "less than the first (diminishing returns)", cells[1],
                tiny_cells[1], holds(tps.iloc[-1] / tps.iloc[-2] < tps.iloc[1] / tps.iloc[0])),
            Row("time per output token (p50)", "rises with the batch", cells[2], tiny_cells[2],
                holds(tpot.iloc[-1] > tpot.iloc[0]))]
    frame = pd.concat([sim, tiny]) if tiny is not None else sim
    links = {f"max_num_seqs={v}": int(i) for v, i in zip(frame["max_num_seqs"], frame["run"], strict=True)
             if v in (1, 64)}
    return View(learn_charts.throughput_vs_tpot(frame), "One point per max_num_seqs (labelled). Going right is more "
                "throughput, going up is a slower stream for every request: each doubling buys less of the first "
                "and costs more of the second.", rows, "simulated run", links)


# -- 6. short vs long requests -----------------------------------------------------------------------
def short_long_numbers(target: str, runs: learn.LessonRuns) -> pd.DataFrame | None:
    """Median end-to-end latency (steps) of short and long answers, static and continuous."""
    ids = swept_ids(runs, plan.SHORT_LONG, "batching", ("static", "continuous"))
    if ids is None:
        return None
    return pd.concat([learn.short_vs_long(target, i, plan.MIXED_SPLIT).assign(batching=b) for b, i in ids.items()])


def short_long_view(target: str, runs: learn.LessonRuns) -> View | None:
    frame = short_long_numbers(target, runs)
    if frame is None:
        return None
    p50 = frame.pivot(index="group", columns="batching", values="e2e_p50")
    short, long = (next(g for g in p50.index if g.startswith(k)) for k in ("short", "long"))
    slow = {g: p50.loc[g, "static"] / p50.loc[g, "continuous"] for g in (short, long)}
    rows = [Row(f"median latency, {g}", "held back by static batching" if g == short else "slower too, but less",
                f"static {steps(p50.loc[g, 'static'])} · continuous {steps(p50.loc[g, 'continuous'])}",
                check=holds(p50.loc[g, "static"] > p50.loc[g, "continuous"]) if g == short else "")
            for g in (short, long)]
    rows.append(Row("static batching slows short answers down more than long ones", "yes",
                    f"×{slow[short]:.1f} against ×{slow[long]:.1f}", check=holds(slow[short] > slow[long])))
    ids = swept_ids(runs, plan.SHORT_LONG, "batching", ("static", "continuous")) or {}
    return View(learn_charts.short_long(frame), "Under static batching the short answers' median is no better than "
                "the long ones': they wait for their batch's longest member. Continuous batching lets them go.",
                rows, "unit-cost run", dict(ids))


# -- 7. chunked prefill and ITL ------------------------------------------------------------------------
@dataclass(frozen=True)
class Chunking:
    itl_p50: float | None
    itl_p99: float | None
    ttft_p50: float | None
    longest_step_s: float


def chunked_numbers(target: str, runs: learn.LessonRuns, tiny: bool = False) -> dict[bool, Chunking] | None:
    """Chunked prefill off (False) and on (True)."""
    names = plan.CHUNKED_TINY if tiny else plan.CHUNKED
    ids = {on: runs.id(name) for name, on in names.items()}
    if any(i is None for i in ids.values()):
        return None
    return {on: Chunking(p(target, i, "itl_s"), p(target, i, "itl_s", "p99"), p(target, i, "ttft_s"),
                         float(learn.step_times(target, i)["ms"].max()) / 1e3)
            for on, i in ids.items() if i is not None}


def chunked_view(target: str, runs: learn.LessonRuns) -> View | None:
    sim = chunked_numbers(target, runs)
    if sim is None:
        return None
    tiny = chunked_numbers(target, runs, tiny=True)
    gone = missing_tiny(runs, tuple(plan.CHUNKED_TINY))

    def cell(found: dict[bool, Chunking] | None, metric: str) -> str | None:
        return gone if found is None else f"{ms(getattr(found[False], metric))} → {ms(getattr(found[True], metric))}"

    def grows(metric: str) -> bool:
        return (getattr(sim[True], metric) or 0) > (getattr(sim[False], metric) or 0)

    rows = [Row("ITL p99, off → on (the stalls)", "lower with chunked prefill", cell(sim, "itl_p99") or "",
                cell(tiny, "itl_p99"), holds(not grows("itl_p99"))),
            Row("the longest step, off → on", "bounded by the token budget", cell(sim, "longest_step_s") or "",
                cell(tiny, "longest_step_s"), holds(not grows("longest_step_s"))),
            Row("TTFT p50, off → on", "a little higher with chunked prefill", cell(sim, "ttft_p50") or "",
                cell(tiny, "ttft_p50"), holds(grows("ttft_p50"))),
            Row("ITL p50, off → on (the usual gap)", "about the same", cell(sim, "itl_p50") or "",
                cell(tiny, "itl_p50"))]
    ids = {name: runs.finished[name] for name in plan.CHUNKED}
    frame = pd.concat([learn.step_times(target, i).assign(series=name.removeprefix(plan.LEARN_PREFIX))
                       for name, i in ids.items()])
    links = {n.removeprefix(plan.LEARN_PREFIX): i for n, i in ids.items()}
    links |= {n.removeprefix(plan.LEARN_PREFIX): runs.finished[n] for n in plan.CHUNKED_TINY if not gone}
    return View(learn_charts.step_times(frame), "How long each step took. Every decoding request waits one step per "
                "token, so a spike is a stall in every stream; with chunked prefill no step carries more than "
                f"{plan.CHUNK_BUDGET} tokens.", rows, "simulated run", links)


# -- 8. recompute vs swap --------------------------------------------------------------------------------
MODES = ("recompute", "swap")


def preemption_numbers(target: str, runs: learn.LessonRuns,
                       tiny: bool = False) -> dict[str, tuple[learn.PreemptionCost, float]] | None:
    """Per preemption mode: what preempting cost, and the output tokens/s."""
    ids = swept_ids(runs, plan.PREEMPTION_TINY if tiny else plan.PREEMPTION, "preemption_mode", MODES)
    if ids is None:
        return None
    return {m: (learn.preemption_cost(target, i), float(summary(target, i)["output_tokens_per_s"]))  # type: ignore[arg-type]
            for m, i in ids.items()}


def preemption_view(target: str, runs: learn.LessonRuns) -> View | None:
    sim = preemption_numbers(target, runs)
    ids = swept_ids(runs, plan.PREEMPTION, "preemption_mode", MODES)
    if sim is None or ids is None:
        return None
    tiny = preemption_numbers(target, runs, tiny=True)
    gone = missing_tiny(runs, tuple(swept_name(plan.PREEMPTION_TINY, "preemption_mode", m) for m in MODES))

    def cell(found: dict[str, tuple[learn.PreemptionCost, float]] | None, field: str) -> str | None:
        if found is None:
            return gone
        values = {m: found[m][1] if field == "tok/s" else getattr(found[m][0], field) for m in MODES}
        return " · ".join(f"{m} {values[m]:,.0f}" for m in MODES) + (" tok/s" if field == "tok/s" else "")

    cost = {m: sim[m][0] for m in MODES}
    rows = [Row("preemptions", "when a running request needs a block and none is free",
                cell(sim, "num_preemptions") or "", cell(tiny, "num_preemptions"),
                holds(all(c.num_preemptions > 0 for c in cost.values()))),
            Row("tokens prefilled again", "recompute: the victim's prompt and output, later",
                cell(sim, "recomputed_tokens") or "", cell(tiny, "recomputed_tokens"),
                holds(cost["recompute"].recomputed_tokens > 0 and cost["swap"].recomputed_tokens == 0)),
            Row("blocks copied to the CPU and back", "swap: the victim's blocks instead",
                cell(sim, "swapped_blocks") or "", cell(tiny, "swapped_blocks"),
                holds(cost["swap"].swapped_blocks > 0 and cost["recompute"].swapped_blocks == 0)),
            Row("output throughput", "whichever costs less on the machine", cell(sim, "tok/s") or "",
                cell(tiny, "tok/s"))]
    frame = pd.DataFrame([{"mode": m, "preemptions": c.num_preemptions, "tokens prefilled again": c.recomputed_tokens,
                           "blocks copied to CPU and back": c.swapped_blocks} for m, c in cost.items()])
    links = dict(ids) | {f"{m} (tiny)": runs.finished[swept_name(plan.PREEMPTION_TINY, "preemption_mode", m)]
                         for m in MODES if not gone}
    return View(learn_charts.preemption_costs(frame), "The same preemptions, paid for two ways: recompute throws the "
                "victim's KV away and prefills its tokens again when it is readmitted; swap keeps them, copying its "
                "blocks to the CPU pool and back.",
                rows, "simulated run", links)


# -- 9. the policies ------------------------------------------------------------------------------------
def policy_numbers(target: str, runs: learn.LessonRuns) -> dict[str, pd.DataFrame] | None:
    """Per policy: mean and longest end-to-end latency (steps) per priority, and overall (priority NaN)."""
    ids = swept_ids(runs, plan.POLICIES, "policy", plan.POLICY_VALUES.values)
    return None if ids is None else {pol: learn.latency_by_priority(target, i) for pol, i in ids.items()}


def policy_view(target: str, runs: learn.LessonRuns) -> View | None:
    found = policy_numbers(target, runs)
    if found is None:
        return None
    overall = {pol: f[f["priority"].isna()].iloc[0] for pol, f in found.items()}
    mean = {pol: float(row["e2e_mean"]) for pol, row in overall.items()}
    longest = {pol: float(row["e2e_max"]) for pol, row in overall.items()}
    by_priority = found["priority"].dropna(subset=["priority"]).set_index("priority")["e2e_mean"]
    top, bottom = by_priority.index.min(), by_priority.index.max()
    rows = [Row("mean latency, fcfs", "the baseline", steps(mean["fcfs"])),
            Row("mean latency, sjf on declared caps", "no better than fcfs: every request declares the same cap",
                steps(mean["sjf"]), check=holds(mean["sjf"] == mean["fcfs"])),
            Row("mean latency, sjf-oracle (true lengths)", "the lowest of all", steps(mean["sjf-oracle"]),
                check=holds(mean["sjf-oracle"] == min(mean.values()))),
            Row(f"priority: mean latency of priority {top:.0f} vs {bottom:.0f}", "the urgent ones first",
                f"{steps(by_priority[top])} vs {steps(by_priority[bottom])}",
                check=holds(by_priority[top] < by_priority[bottom])),
            Row("longest wait, sjf-oracle vs fcfs", "sjf can keep long requests waiting",
                f"{steps(longest['sjf-oracle'])} vs {steps(longest['fcfs'])}",
                check=holds(longest["sjf-oracle"] >= longest["fcfs"]))]
    frame = pd.DataFrame([{"policy": pol, "metric": metric, "steps": values[pol]} for pol in found
                          for metric, values in (("mean", mean), ("longest", longest))])
    ids = swept_ids(runs, plan.POLICIES, "policy", plan.POLICY_VALUES.values) or {}
    return View(learn_charts.policy_latency(frame), "Mean and longest end-to-end latency per policy, in steps. sjf "
                "shows here as a real server sees it (declared caps); sjf-oracle is told the true lengths, the "
                "upper bound of what ordering by length can do.", rows, "unit-cost run", dict(ids))
