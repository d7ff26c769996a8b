"""The five questions a learner should be able to answer at the end of the day, each answered by
pointing at recorded lesson runs (Replay links) and the figures they gave."""

from __future__ import annotations

from dataclasses import dataclass

from dashboard import learn_plan as plan
from dashboard import learn_textbook as textbook
from dashboard import learn_tradeoffs as tradeoffs
from dashboard.learn import LessonRuns
from dashboard.learn_figures import ms
from dashboard.learn_lessons import LESSONS
from dashboard.learn_plan import swept_name

NUMBER = {lesson.key: n for n, lesson in enumerate(LESSONS, 1)}


@dataclass(frozen=True)
class Answer:
    question: str
    answer: str | None  # Markdown with links to the runs; None until its lessons are recorded
    lessons: tuple[str, ...]  # the lessons it points at


def link(runs: LessonRuns, label: str, name: str, param: str | None = None, value: str | None = None) -> str:
    """A Markdown link opening a lesson run (a sweep's run: its param=value) in Replay."""
    run_id = runs.id(name if param is None or value is None else swept_name(name, param, value))
    return f"[{label}](Replay?run={run_id})"


def lesson(key: str) -> str:
    return f"[lesson {NUMBER[key]}](#{key})"


def answers(target: str, runs: LessonRuns) -> list[Answer]:
    loop, waste = textbook.loop_steps(target, runs), textbook.waste_numbers(target, runs)
    production = textbook.production_numbers(target, runs)
    costs, sizes = tradeoffs.preemption_numbers(target, runs), tradeoffs.sweep_points(target, runs)
    chunked = tradeoffs.chunked_numbers(target, runs)
    found: list[Answer] = []

    q = "What does continuous batching gain over static batching?"
    found.append(Answer(q, None if loop is None or waste is None else (
        f"A slot is handed on the step it frees up, so no row computes padding and nobody waits for a whole batch: "
        f"the ten requests of {lesson('continuous_loop')} took {loop['static']} steps under static batching "
        f"({link(runs, 'run', plan.LOOP, 'batching', 'static')}) and {loop['continuous']} under "
        f"continuous batching ({link(runs, 'run', plan.LOOP, 'batching', 'continuous')}); in "
        f"{lesson('static_waste')} only {waste.batch.useful_share:.0%} of the static batch's slot-steps did useful "
        f"work ({link(runs, 'run', plan.WASTE)})."), ("static_waste", "continuous_loop")))

    q = "What happens to a request that arrives when the batch is full?"
    found.append(Answer(q, None if waste is None or production is None else (
        f"It waits in the waiting queue until the scheduler admits it. Under static batching that is when the whole "
        f"batch has ended: in {lesson('static_waste')} the newcomers arrived at step {waste.late.first_arrival_step} "
        f"and started at step {waste.late.first_start_step} ({link(runs, 'run', plan.WASTE)}). Under continuous "
        f"batching it is the step after a running request finishes: in {lesson('production')} the waiting requests "
        f"started at step {production['continuous'].waiting.first_start_step} instead of "
        f"{production['static'].waiting.first_start_step} "
        f"({link(runs, 'continuous', plan.PRODUCTION, 'batching', 'continuous')}, "
        f"{link(runs, 'static', plan.PRODUCTION, 'batching', 'static')})."),
        ("static_waste", "production")))

    q = "What happens when the KV pool is full and a running request needs a block?"
    found.append(Answer(q, None if costs is None else (
        f"The scheduler preempts a victim to free its blocks ({lesson('preemption')}). With recompute the victim's "
        f"KV is dropped and its tokens are prefilled again when it is readmitted: "
        f"{costs['recompute'][0].num_preemptions} preemptions, {costs['recompute'][0].recomputed_tokens:,} tokens "
        f"computed twice ({link(runs, 'run', plan.PREEMPTION, 'preemption_mode', 'recompute')}). With "
        f"swap its blocks go to the CPU pool and back: {costs['swap'][0].num_preemptions} preemptions, "
        f"{costs['swap'][0].swapped_blocks:,} blocks copied "
        f"({link(runs, 'run', plan.PREEMPTION, 'preemption_mode', 'swap')})."), ("preemption",)))

    q = "Why can a large batch raise latency while it raises throughput?"
    found.append(Answer(q, None if sizes is None else (
        f"Each step computes every sequence in the batch, so a fuller step takes longer, and each request gets one "
        f"token per step: from max_num_seqs {plan.BATCH_SIZES[0]} to {plan.BATCH_SIZES[-1]} throughput rose "
        f"×{sizes['output_tokens_per_s'].iloc[-1] / sizes['output_tokens_per_s'].iloc[0]:.1f} while each token took "
        f"×{sizes['tpot_ms'].iloc[-1] / sizes['tpot_ms'].iloc[0]:.1f} as long (the chart of {lesson('batch_sweep')}; "
        f"{link(runs, f'max_num_seqs={plan.BATCH_SIZES[-1]}', plan.SIZES, 'max_num_seqs', plan.BATCH_SIZES[-1])})."),
        ("batch_sweep",)))

    q = "What is chunked prefill, and when does it help?"
    found.append(Answer(q, None if chunked is None else (
        f"It splits a long prompt over several steps to fit the step's token budget, so the requests decoding "
        f"alongside keep getting tokens instead of stalling behind one big step: ITL p99 went from "
        f"{ms(chunked[False].itl_p99)} to {ms(chunked[True].itl_p99)} in {lesson('chunked_prefill')}, while TTFT p50 "
        f"rose from {ms(chunked[False].ttft_p50)} to {ms(chunked[True].ttft_p50)} "
        f"({link(runs, 'off', plan.CHUNKED_OFF)}, {link(runs, 'on', plan.CHUNKED_ON)})."
        " It helps when long prompts arrive while others are decoding, and costs those prompts a few steps."),
        ("chunked_prefill",)))
    return found
