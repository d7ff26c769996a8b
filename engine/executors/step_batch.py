"""Turn a SchedulerOutput into the tensors of one flattened forward pass.

One pass over the requests orders them (see step_layout) and flattens their token ids and block
tables; positions and the slot mapping then come from tensor ops, not a loop over tokens.
Static-batching pad rows (SchedulerOutput.counts.num_padding_tokens) go last: the pad token at position
0, K/V into the scratch block. A finished member's pad row (counts.num_padding_seqs, lockstep decode)
computes its logits too, as HF generate's finished rows do; they follow the sampling rows' and are
thrown away. A prompt's left-padding computes none (HF keeps only the last position's).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import torch

from engine.executors.kv_cache import PagedKVCache
from engine.executors.paged_attention import PagedAttentionMetadata
from engine.executors.step_layout import StepLayout
from engine.outputs import ScheduledRequest, SchedulerOutput
from engine.sampling_params import SamplingParams


@dataclass(slots=True)
class StepBatch:
    input_ids: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T]
    logits_indices: torch.Tensor  # the last token of each sampling request, then finished members' pad rows
    sample_req_ids: list[str]  # request of each logits row
    sample_params: list[SamplingParams]
    sample_held_off: list[tuple[int, ...]]  # tokens each sampling row must not draw (min_tokens)
    meta: PagedAttentionMetadata
    layout: StepLayout

    @property
    def padded_pairs(self) -> int:
        """Query-key pairs per layer the attention computes beyond those attended (bucket padding)."""
        return int(getattr(self.meta.plan, "padded_pairs", 0))


def order_requests(scheduled: tuple[ScheduledRequest, ...]) -> tuple[list[ScheduledRequest], int, int]:
    """(requests in row order, number of decodes, number of chunks without earlier context)."""
    decodes = sorted((s for s in scheduled if s.num_tokens == 1), key=lambda s: s.start_pos)
    fresh = sorted((s for s in scheduled if s.num_tokens > 1 and s.start_pos == 0), key=lambda s: s.num_tokens)
    context = [s for s in scheduled if s.num_tokens > 1 and s.start_pos > 0]
    return [*decodes, *fresh, *context], len(decodes), len(fresh)


def build_step_batch(out: SchedulerOutput, kv_cache: PagedKVCache, backend: object, timed: bool,
                     pad_token_id: int = 0) -> StepBatch:
    """backend: an attention_backend.AttentionBackend, whose plan the attention layers will follow."""
    bs = kv_cache.block_size
    device = kv_cache.device
    ordered, num_decodes, num_fresh = order_requests(out.scheduled)

    q_starts: list[int] = []
    tables: list[tuple[int, ...]] = []
    block_starts: list[int] = []
    logits_rows: list[int] = []
    sample_ids: list[str] = []
    sample_params: list[SamplingParams] = []
    sample_held_off: list[tuple[int, ...]] = []
    row = 0
    num_flat = 0
    max_context = 0
    for s in ordered:
        end = s.start_pos + s.num_tokens
        table = s.block_ids[: -(-end // bs)]
        q_starts.append(row)
        block_starts.append(num_flat)
        tables.append(table)
        num_flat += len(table)
        row += s.num_tokens
        max_context = max(max_context, end)
        if s.do_sample:
            logits_rows.append(row - 1)
            sample_ids.append(s.request_id)
            sample_params.append(s.sampling_params)
            sample_held_off.append(s.held_off_token_ids)

    num_pad = out.counts.num_padding_tokens
    layout = StepLayout(
        block_size=bs, scratch_block=kv_cache.scratch_block, q_starts=q_starts,
        q_lens=[s.num_tokens for s in ordered], start_pos=[s.start_pos for s in ordered],
        flat_blocks=torch.tensor(list(chain.from_iterable(tables)), dtype=torch.long), block_starts=block_starts,
        num_decodes=num_decodes, num_fresh=num_fresh, num_pad_rows=num_pad,
    )
    positions, slots = layout.token_positions()
    token_ids = list(chain.from_iterable(s.token_ids for s in ordered))
    if num_pad:
        positions = torch.cat([positions, torch.zeros(num_pad, dtype=torch.long)])
        slots = torch.cat([slots, layout.pad_slots()])
        token_ids.extend([pad_token_id] * num_pad)
        pad_logits = min(out.counts.num_padding_seqs, num_pad)
        logits_rows.extend(range(row + num_pad - pad_logits, row + num_pad))

    meta = PagedAttentionMetadata(
        kv_cache=kv_cache,
        slot_mapping=slots.to(device, non_blocking=True),
        backend=backend,
        plan=backend.plan(layout) if ordered else None,  # type: ignore[attr-defined]
        num_real_rows=row,
        max_context_len=max_context,
        timed=timed,
    )
    return StepBatch(
        input_ids=torch.tensor(token_ids, dtype=torch.long).view(1, -1).to(device, non_blocking=True),
        position_ids=positions.view(1, -1).to(device, non_blocking=True),
        logits_indices=torch.tensor(logits_rows, dtype=torch.long).to(device, non_blocking=True),
        sample_req_ids=sample_ids,
        sample_params=sample_params,
        sample_held_off=sample_held_off,
        meta=meta,
        layout=layout,
    )
