"""Turn a SchedulerOutput into the tensors of one flattened forward pass.

Decodes go first (rows 0..nd-1) so paged attention can serve them with one padded call; prefill
chunks follow. The order of rows is free because positions are explicit and attention only
ever looks at a request's own blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.executors.kv_cache import PagedKVCache
from engine.executors.paged_attention import PagedAttentionMetadata, PrefillChunk, bottom_right_causal_mask
from engine.outputs import SchedulerOutput
from engine.sampling_params import SamplingParams


@dataclass(slots=True)
class StepBatch:
    input_ids: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T]
    logits_indices: torch.Tensor  # rows whose logits are needed: the last token of each sampling request
    sample_req_ids: list[str]  # request of each logits row
    sample_params: list[SamplingParams]
    meta: PagedAttentionMetadata


def build_step_batch(out: SchedulerOutput, kv_cache: PagedKVCache, timed: bool) -> StepBatch:
    bs = kv_cache.block_size
    device = kv_cache.device
    decodes = [s for s in out.scheduled if s.num_tokens == 1]
    chunks = [s for s in out.scheduled if s.num_tokens > 1]

    input_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    logits_rows: list[int] = []
    sample_ids: list[str] = []
    sample_params: list[SamplingParams] = []
    max_context = 0

    tables: list[tuple[int, ...]] = []
    context_lens: list[int] = []
    for row, s in enumerate(decodes):
        pos = s.start_pos
        input_ids.append(s.token_ids[0])
        positions.append(pos)
        slots.append(s.block_ids[pos // bs] * bs + pos % bs)
        tables.append(s.block_ids[: pos // bs + 1])
        context_lens.append(pos + 1)
        if s.do_sample:
            logits_rows.append(row)
            sample_ids.append(s.request_id)
            sample_params.append(s.sampling_params)
    decode_tables = decode_mask = None
    if decodes:
        width = max(len(t) for t in tables)
        padded = [t + (0,) * (width - len(t)) for t in tables]  # block 0 is a harmless, masked filler
        decode_tables = torch.tensor(padded, dtype=torch.long).to(device, non_blocking=True)
        lens = torch.tensor(context_lens, dtype=torch.long)
        mask = torch.arange(width * bs).unsqueeze(0) < lens.unsqueeze(1)
        decode_mask = mask.view(len(decodes), 1, 1, width * bs).to(device, non_blocking=True)
        max_context = max(context_lens)

    prefills: list[PrefillChunk] = []
    row = len(decodes)
    for s in chunks:
        start, n = s.start_pos, s.num_tokens
        end = start + n
        table = s.block_ids
        input_ids.extend(s.token_ids)
        positions.extend(range(start, end))
        slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
        chunk = PrefillChunk(row, n, start)
        if start > 0:  # earlier context lives in the cache: read it back with a bottom-right mask
            chunk.block_ids = torch.tensor(table[: -(-end // bs)], dtype=torch.long).to(device, non_blocking=True)
            chunk.mask = bottom_right_causal_mask(n, end, device)
        prefills.append(chunk)
        if s.do_sample:
            logits_rows.append(row + n - 1)
            sample_ids.append(s.request_id)
            sample_params.append(s.sampling_params)
        max_context = max(max_context, end)
        row += n

    meta = PagedAttentionMetadata(
        kv_cache=kv_cache,
        slot_mapping=torch.tensor(slots, dtype=torch.long).to(device, non_blocking=True),
        num_decodes=len(decodes),
        decode_block_tables=decode_tables,
        decode_mask=decode_mask,
        prefills=prefills,
        max_context_len=max_context,
        timed=timed,
    )
    return StepBatch(
        input_ids=torch.tensor(input_ids, dtype=torch.long).view(1, -1).to(device, non_blocking=True),
        position_ids=torch.tensor(positions, dtype=torch.long).view(1, -1).to(device, non_blocking=True),
        logits_indices=torch.tensor(logits_rows, dtype=torch.long).to(device, non_blocking=True),
        sample_req_ids=sample_ids,
        sample_params=sample_params,
        meta=meta,
    )
