"""Lessons 1-4, the textbook's exact numbers: static batching's waste, the continuous loop, the
scheduler trace and the production batch. Each has a numbers function (what the tests hold to the
course's figures) and a view (the chart, and the course's figures next to the run's)."""

from __future__ import annotations

from dataclasses import dataclass

import altair as alt
import pandas as pd

from dashboard import charts, data, learn, learn_charts
from dashboard import learn_lessons as course
from dashboard import learn_plan as plan
from dashboard.learn_figures import Row, View, exact, missing_tiny, steps, summary, swept_ids
from dashboard.learn_plan import swept_name

BATCHINGS = ("static", "continuous")


def _gantt(target: str, run_id: int, height: int) -> alt.LayerChart:
    n = learn.num_steps(target, run_id)
    return charts.gantt(data.phases_window(target, run_id, 0, n - 1, n), "step", height=height)


# -- 1. static batching's waste -------------------------------------------------------------------------
@dataclass(frozen=True)
class Waste:
    batch: learn.FirstBatch
    late: learn.LateStarts


def waste_numbers(target: str, runs: learn.LessonRuns) -> Waste | None:
    run = runs.id(plan.WASTE)
    return None if run is None else Waste(learn.first_batch(target, run), learn.late_starts(target, run))


def waste_view(target: str, runs: learn.LessonRuns) -> View | None:
    found = waste_numbers(target, runs)
    if found is None:
        return None
    b, late = found.batch, found.late
    slots = b.working_slots + b.padding_slots
    rows = [
        Row("each request of the batch has its last token after", " / ".join(map(str, course.WASTE_FINISH_STEPS)),
            " / ".join(map(str, b.finish_steps)) + " steps", check=exact(b.finish_steps, course.WASTE_FINISH_STEPS)),
        Row("a finished request's slot then idles, on average", steps(course.WASTE_MEAN_IDLE_STEPS),
            f"{steps(b.mean_idle_steps)} ({' + '.join(map(str, b.idle_steps))}, over {len(b.idle_steps)})",
            check=exact(b.mean_idle_steps, course.WASTE_MEAN_IDLE_STEPS)),
        Row("useful work in the batch", f"about {course.WASTE_USEFUL_SHARE:.0%}",
            f"{b.useful_share:.0%} ({b.working_slots} of {slots} slot-steps)",
            check=exact(round(b.useful_share, 2), course.WASTE_USEFUL_SHARE)),
        Row(f"newcomers arriving at step {late.first_arrival_step} start at",
            f"step {course.WASTE_FINISH_STEPS[-1]}, when the whole batch ends", f"step {late.first_start_step}",
            check=exact(late.first_start_step, course.WASTE_FINISH_STEPS[-1])),
    ]
    run = runs.finished[plan.WASTE]
    return View(_gantt(target, run, 220), "Yellow rows are padding: finished requests' slots, still computed until "
                "the batch's longest member ends. Grey is waiting: the newcomers sit out the whole batch.",
                rows, "unit-cost run", {"static waste": run})


# -- 2. the continuous loop -----------------------------------------------------------------------------
def loop_steps(target: str, runs: learn.LessonRuns, name: str = plan.LOOP) -> dict[str, int] | None:
    """Steps each batching mode took for the ten requests."""
    ids = swept_ids(runs, name, "batching", BATCHINGS)
    return None if ids is None else {b: learn.num_steps(target, i) for b, i in ids.items()}


def loop_view(target: str, runs: learn.LessonRuns) -> View | None:
    sim, ids = loop_steps(target, runs), swept_ids(runs, plan.LOOP, "batching", BATCHINGS)
    if sim is None or ids is None:
        return None
    tiny_ids = swept_ids(runs, plan.LOOP_TINY, "batching", BATCHINGS)
    gone = missing_tiny(runs, tuple(swept_name(plan.LOOP_TINY, "batching", b) for b in BATCHINGS))
    tiny = loop_steps(target, runs, plan.LOOP_TINY) or {}
    seconds = {b: float(summary(target, i)["duration_s"]) for b, i in (tiny_ids or {}).items()}  # type: ignore[arg-type]
    rows = [Row(f"steps, {b} batching", str(course.LOOP_STEPS[b]), steps(sim[b]),
                gone or f"{steps(tiny[b])} in {seconds[b]:.1f} s", exact(sim[b], course.LOOP_STEPS[b]))
            for b in BATCHINGS]
    ratio = course.LOOP_STEPS["static"] / course.LOOP_STEPS["continuous"]
    rows.append(Row("continuous batching is done sooner by", f"{ratio:.1f}× (fewer steps)",
                    f"{sim['static'] / sim['continuous']:.2f}× (fewer steps)",
                    gone or f"{seconds['static'] / seconds['continuous']:.2f}× (less time)"))
    chart = learn_charts.stacked([(f"{b} batching", _gantt(target, ids[b], 200)) for b in BATCHINGS])
    links = {b: i for b, i in ids.items()} | {f"{b} (tiny)": i for b, i in (tiny_ids or {}).items()}
    return View(chart, "The same ten requests on one step axis. Static batching starts the second batch only "
                "at step 100 and the third at 150; continuous batching packs every request around the longest one.",
                rows, "unit-cost run", links)


# -- 3. the scheduler trace ------------------------------------------------------------------------------
TRACE_LABELS = dict(zip(plan.TRACE, ("no chunking, 20 free", "chunked, 20 free", "chunked, 30 free"), strict=True))


def _bars(label: str, parts: dict[str, int], unit: str) -> list[dict[str, object]]:
    """One stacked bar's segments, in order."""
    return [{"configuration": label, "part": k, unit: v, "order": i} for i, (k, v) in enumerate(parts.items())]


def trace_numbers(target: str, runs: learn.LessonRuns) -> dict[str, learn.TraceStep] | None:
    """The step A, B and C arrive for, in each configuration, and B's share of it."""
    ids = {name: runs.id(name) for name in plan.TRACE}
    if any(i is None for i in ids.values()):
        return None
    return {name: learn.trace_step(target, int(i), course.TRACE_STEP, "B") for name, i in ids.items() if i is not None}


def trace_view(target: str, runs: learn.LessonRuns) -> View | None:
    found = trace_numbers(target, runs)
    if found is None:
        return None
    rows: list[Row] = []
    budget: list[dict[str, object]] = []
    blocks: list[dict[str, object]] = []
    for name, t in found.items():
        label, (tokens, b_tokens) = TRACE_LABELS[name], course.TRACE[name]
        rows.append(Row(f"{label}: tokens in the step", str(tokens),
                        f"{t.num_batched_tokens} ({t.num_decode_seqs} decodes + {t.num_prefill_tokens} prefill)",
                        check=exact(t.num_batched_tokens, tokens)))
        course_b = f"a {b_tokens}-token chunk" if b_tokens else "waits"
        run_b = f"a {t.request_tokens}-token chunk" if t.request_tokens else \
            f"waits ({t.free_blocks_before - t.blocks_taken} blocks left; it starts at step {t.request_first_step})"
        rows.append(Row(f"{label}: B", course_b, run_b, check=exact(t.request_tokens, b_tokens)))
        parts = {"decodes (D, E)": t.num_decode_seqs, "A's prompt": t.num_prefill_tokens - t.request_tokens,
                 "B's chunk": t.request_tokens, "unused budget": plan.TRACE_BUDGET - t.num_batched_tokens}
        budget += _bars(label, parts, "tokens")
        pool = {"held by D, E": t.blocks_held_before, "taken in the step": t.blocks_taken,
                "free": t.free_blocks_before - t.blocks_taken}
        blocks += _bars(label, pool, "blocks")
    chart = learn_charts.trace_step(pd.DataFrame(budget), pd.DataFrame(blocks), plan.TRACE_BUDGET)
    return View(chart, f"Step {course.TRACE_STEP}, when A, B and C have arrived: who used the token budget (left) and "
                "the KV pool after the step (right). B needs 10 free blocks for its whole prompt before any chunk.",
                rows, "unit-cost run", {TRACE_LABELS[n]: runs.finished[n] for n in plan.TRACE})


# -- 4. the production batch -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Production:
    working: float  # sequences computing a real token per step, in the window after the short answers end
    padding: float  # padding rows per step in that window
    waiting: learn.LateStarts  # the requests that could not join the first batch


def production_numbers(target: str, runs: learn.LessonRuns,
                       name: str = plan.PRODUCTION) -> dict[str, Production] | None:
    ids = swept_ids(runs, name, "batching", BATCHINGS)
    if ids is None:
        return None
    return {b: Production(*learn.mean_slots(target, i, *course.PRODUCTION_WINDOW), learn.late_starts(target, i))
            for b, i in ids.items()}


def production_view(target: str, runs: learn.LessonRuns) -> View | None:
    sim, ids = production_numbers(target, runs), swept_ids(runs, plan.PRODUCTION, "batching", BATCHINGS)
    if sim is None or ids is None:
        return None
    tiny = production_numbers(target, runs, plan.PRODUCTION_TINY) or {}
    gone = missing_tiny(runs, tuple(swept_name(plan.PRODUCTION_TINY, "batching", b) for b in BATCHINGS))
    first, end = course.PRODUCTION_WINDOW
    rows = []
    for b in BATCHINGS:
        s, t = sim[b], tiny.get(b)
        rows.append(Row(f"{b}: rows computing a token per step, steps {first}-{end - 1}",
                        f"{course.PRODUCTION_WORKING[b]} of {plan.BATCH}",
                        f"{s.working:g} of {plan.BATCH} ({s.padding:g} padding)",
                        gone if t is None else f"{t.working:g} of {plan.BATCH}",
                        exact(s.working, course.PRODUCTION_WORKING[b])))
    for b in BATCHINGS:
        s, t = sim[b], tiny.get(b)
        rows.append(Row(f"{b}: the waiting requests start at step", str(course.PRODUCTION_START[b]),
                        str(s.waiting.first_start_step), gone if t is None else str(t.waiting.first_start_step),
                        exact(s.waiting.first_start_step, course.PRODUCTION_START[b])))
    for b in BATCHINGS:
        s, t = sim[b], tiny.get(b)
        rows.append(Row(f"{b}: the waiting requests' mean latency", steps(course.PRODUCTION_LATENCY[b]),
                        steps(s.waiting.mean_latency_steps),
                        gone if t is None else f"{t.waiting.mean_e2e_s:.1f} s",
                        exact(s.waiting.mean_latency_steps, course.PRODUCTION_LATENCY[b])))
    parts = []
    for b in BATCHINGS:
        n = learn.num_steps(target, ids[b])
        parts.append((f"{b} batching", charts.batch_slots(data.steps_window(target, ids[b], 0, n - 1, n), plan.BATCH)))
    links = dict(ids) | {f"{b} (tiny)": runs.finished[swept_name(plan.PRODUCTION_TINY, 'batching', b)]
                         for b in BATCHINGS if not gone}
    return View(learn_charts.stacked(parts), "Sequences per step against max_num_seqs (dashed). Static: after step "
                f"{plan.SHORT} one row works and {plan.BATCH - 1} are padding until step {plan.LONG}. Continuous: the "
                f"waiting requests fill the batch at step {plan.SHORT}. The course states the waste; the start steps "
                "and latencies are its scenario's arithmetic.", rows, "unit-cost run", links)
