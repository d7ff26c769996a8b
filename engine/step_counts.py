"""StepCounts: one step's counters, defined once.

The scheduler fills them while it schedules (so no consumer loops over the scheduled requests
again), the engine loop passes them on in every StepSnapshot, and everything else is derived
from this one definition: the steps table's columns (storage/schema.py; a test pins the table to
STEP_COUNT_FIELDS), the whole-run rollups (ROLLUP_SUM_FIELDS) and the cost model's features
(engine/executors/cost_model.py: FEATURE_SOURCES), so a counter added here reaches all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class StepCounts:
    num_waiting: int = 0  # queue lengths once the step was scheduled
    num_running: int = 0
    num_swapped: int = 0
    num_prefill_seqs: int = 0  # sequences computing prompt (or recompute) tokens
    num_prefill_tokens: int = 0
    num_decode_seqs: int = 0  # sequences decoding one token each
    num_batched_tokens: int = 0  # prefill + decode tokens: vLLM's total_num_scheduled_tokens
    num_padding_seqs: int = 0  # static batching: finished members decoding a pad row (its logits too)
    num_padding_tokens: int = 0  # static batching: pad rows computed (they count against the budget too)
    num_context_tokens: int = 0  # tokens attended by the decodes: sum of their positions + 1
    num_prefill_pairs: int = 0  # query-key pairs attended by the prefill chunks
    num_swap_blocks: int = 0  # KV blocks copied between the GPU and CPU pools before the pass
    num_preemptions: int = 0  # recompute + swap preemptions made by this step's schedule
    num_used_gpu_blocks: int = 0  # KV pool use after this step's allocations
    num_gpu_blocks: int = 0
    num_used_cpu_blocks: int = 0

    @property
    def num_seqs(self) -> int:
        """Sequences computing tokens this step (pad rows are no sequence's)."""
        return self.num_prefill_seqs + self.num_decode_seqs

    @property
    def num_rows(self) -> int:
        """Token rows of the forward pass (the matmuls' M dimension): real tokens plus pad rows."""
        return self.num_batched_tokens + self.num_padding_tokens


STEP_COUNT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(StepCounts))
# The rollups sum these per chunk of steps (and keep the largest pool), for the whole-run charts.
ROLLUP_SUM_FIELDS: tuple[str, ...] = ("num_waiting", "num_running", "num_swapped", "num_prefill_seqs",
                                      "num_decode_seqs", "num_padding_seqs", "num_padding_tokens",
                                      "num_used_gpu_blocks", "num_used_cpu_blocks", "num_preemptions")
