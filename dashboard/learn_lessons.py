"""The Learn page's lessons in order: what each says, and the figures the course states for it.

The course's figures are written here because they are the course's claims; what a run gave is
always computed from the recorded run (dashboard.learn). Where the course states a direction
rather than a number, the page checks the direction against the run.
"""

from __future__ import annotations

from dataclasses import dataclass

from dashboard import learn_plan as plan


@dataclass(frozen=True)
class Lesson:
    key: str  # learn_plan.PLANS key, and the section's anchor
    title: str
    text: str  # Markdown, a few sentences
    records: str  # what the button records, in a few words
    real_note: str  # what the real `tiny` runs add, or why the lesson has none


LESSONS = (
    Lesson("static_waste", "Static batching wastes the slots of finished requests",
           "Static batching, what a plain `generate` call does, runs a batch until its longest member is done. "
           "A request that finishes early keeps its row: the row is computed every step as padding until the "
           "batch ends. Here a batch of 4 needs 10, 20, 50 and 100 tokens. Two newcomers arrive at step 5: the "
           "batch is closed, so they wait for all of it, though a slot is idle from step 10 on.",
           "a unit-cost simulation (one time unit per step)",
           "No real run here: a real model takes exactly the same steps; lesson 2 times them on `tiny`."),
    Lesson("continuous_loop", "Continuous batching: leave and join at every step",
           "Continuous batching forms the batch again at every step. A finished request leaves at once and a "
           "waiting one takes its slot in the next step, so no row computes padding and no one waits for "
           "strangers to finish. Ten requests (10, 20, 15, 100, 25, 30, 15, 50, 40 and 10 tokens), four at a time: "
           "static batching pays each batch's longest member, continuous batching only the longest request, "
           "since the others fit around it.",
           "static vs continuous, unit cost, then both on `tiny`",
           "The `tiny` runs take the same steps (same scheduler) and show what they cost in seconds."),
    Lesson("scheduler_trace", "One scheduling step, by hand",
           "Each step the scheduler first gives every running request its next token, then admits waiting "
           "requests in order while both caps hold (`max_num_seqs` sequences, `max_num_batched_tokens` tokens) "
           "and the KV pool has blocks for the newcomer's whole prompt. D and E are decoding (one token each); "
           "A (200-token prompt), B (150) and C (100) wait; `max_num_seqs` is 5, the budget 300, a block holds "
           "16 tokens. A fits: 202 tokens. B does not: 202 + 150 is over 300, a whole prompt or nothing without "
           "chunked prefill, and C may not jump ahead. Chunked prefill could give B the 98 tokens left, but only "
           "if its whole prompt's 10 blocks are free: with 20 free, A takes 13 and B waits; with 30 free, B starts.",
           "three unit-cost runs: no chunking, chunking with 20 free blocks, with 30",
           "No real run here: this is the scheduler's decision, the same on any model."),
    Lesson("production", "A production batch: one long answer among short ones",
           f"A batch of {plan.BATCH}: {plan.BATCH - 1} requests want {plan.SHORT} tokens, one wants {plan.LONG}, "
           f"and {plan.BATCH - 1} more are waiting. Under static batching the batch lasts {plan.LONG} steps; from "
           f"step {plan.SHORT} on, {plan.BATCH - 1} of its {plan.BATCH} rows are padding and the waiting requests "
           f"cannot start. Continuous batching refills those slots at step {plan.SHORT}, so the waiting majority "
           "is done long before the one long answer.",
           "static vs continuous, unit cost, then both on `tiny`",
           "The `tiny` runs give the waiting requests' latency in seconds."),
    Lesson("batch_sweep", "Throughput against latency: the batch size",
           "A bigger batch computes more tokens per step, and a step with more sequences takes longer, but far "
           "less than proportionally: throughput grows with diminishing returns while every request's time per "
           "output token grows too. Here the mixed workload (256 requests at once) at `max_num_seqs` 1 to 64 on "
           "the cost model fitted to `tiny`: under unit cost a full step would cost no more than an empty one, "
           "which hides exactly this.",
           "a simulated sweep of max_num_seqs 1-64, then `tiny` at 1, 4, 16 and 64",
           "The `tiny` sweep (64 requests) is the measured version of the same curve."),
    Lesson("short_long", "Short and long requests in one workload",
           f"Real traffic mixes short answers with long ones; the mixed workload has 70% of 10-20 tokens and 30% "
           f"of 80-100 (split here at {plan.MIXED_SPLIT}). Under static batching a short answer is held until its "
           "batch's longest member finishes, after waiting for whole batches before it. Under continuous "
           "batching it leaves when done. 64 requests at once, 16 at a time, unit cost (latency in steps).",
           "static vs continuous on the mixed workload, unit cost",
           "No real run here: under unit cost the latencies are step counts, the point of the lesson."),
    Lesson("chunked_prefill", "Chunked prefill and inter-token latency",
           "A long prompt's prefill is a lot of work for one step, and every decoding request waits for that step "
           "to end before its next token: a stall in its stream (inter-token latency, ITL). Chunked prefill "
           f"splits prompts to fit a per-step token budget ({plan.CHUNK_BUDGET} here), so steps stay short and "
           "tokens keep flowing; the long prompt's own first token comes a few steps later. 48 requests with "
           "256-1024-token prompts arrive at 8 per second, chunked prefill off (whole prompts) and on, on the "
           "cost model fitted to `tiny`.",
           "off vs on, simulated, then both on `tiny`",
           "The `tiny` runs measure the same stalls on a real model."),
    Lesson("preemption", "When the KV pool runs out: recompute or swap",
           "When a running request needs a new KV block and none is free, the scheduler takes the blocks of a "
           "victim (fcfs: the latest arrival). Recompute frees them and puts the victim back in the queue; when it "
           "returns, its prompt and the tokens it had produced are prefilled again. Swap copies its blocks to a "
           "CPU pool and back: transfers instead of compute. A 48-block pool (768 tokens) for 16 sequences of the "
           "mixed workload forces both, on the cost model fitted to `tiny`.",
           "recompute vs swap, simulated, then both on `tiny`",
           "The `tiny` runs pay the real price of each: recomputed prompts, or copied blocks."),
    Lesson("policies", "Who goes first: fcfs, priority, sjf",
           "The policy orders the waiting queue (and picks preemption victims). fcfs serves by arrival; priority "
           "serves lower values first; sjf serves the fewest remaining output tokens first, but it only knows "
           f"what a request declares (`max_tokens`). Here every request declares {plan.DECLARED_CAP} tokens, as API "
           "clients usually send a cap, so **sjf** knows no more than fcfs; **sjf-oracle** is told each true "
           "length, the best sjf could do. 64 requests at once, 8 at a time, 3 priority levels, unit cost.",
           "fcfs, priority, sjf (declared caps) and sjf-oracle, unit cost",
           "No real run here: the order, not the model, decides these latencies."),
)
LESSON_BY_KEY = {lesson.key: lesson for lesson in LESSONS}

# -- the course's figures (what a run gave is computed from the recorded run) --------------------------
WASTE_FINISH_STEPS = (10, 20, 50, 100)
WASTE_MEAN_IDLE_STEPS = 55.0
WASTE_USEFUL_SHARE = 0.45  # "about 45% useful work"
LOOP_STEPS = {"static": 190, "continuous": 100}
TRACE_STEP = 1  # A, B and C arrive for the second step
TRACE = dict(zip(plan.TRACE, ((202, 0), (202, 0), (300, 98)), strict=True))  # name -> (tokens, B's tokens)
PRODUCTION_WINDOW = (plan.SHORT, 2 * plan.SHORT)  # the steps after the short answers of the first batch end
PRODUCTION_WORKING = {"static": 1, "continuous": plan.BATCH}  # slots computing a real token in that window
PRODUCTION_START = {"static": plan.LONG, "continuous": plan.SHORT}  # when the waiting requests start
PRODUCTION_LATENCY = {"static": plan.LONG + plan.SHORT, "continuous": 2 * plan.SHORT}  # their latency, in steps
