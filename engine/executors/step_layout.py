"""Where each request's queries sit in the flattened batch, and which KV blocks it reads.

Built once per step from the scheduler's plain ints (one pass over requests, one pass to flatten
the block tables); per-token tensors (slots, positions) are derived from it with tensor ops.
Attention backends plan their calls from this, and the start-up probe builds one by hand.

Row order: decodes by block count, then prefill chunks without earlier context by length, then
chunks with context, then static-batching pad rows. Order is free (positions are explicit and a
request only attends to its own blocks); this one makes every length bucket a contiguous range.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(slots=True)
class StepLayout:
    block_size: int
    scratch_block: int  # a block no request owns: pad rows write there, padded tables point there
    q_starts: list[int]  # first row of each request's queries
    q_lens: list[int]
    start_pos: list[int]  # tokens of the request already in the cache before this step
    flat_blocks: torch.Tensor  # [sum of num_blocks] long, CPU: each block table cut to what it attends
    block_starts: list[int]  # where each request's table starts in flat_blocks
    num_decodes: int  # requests [0, num_decodes) have one query each
    num_fresh: int  # then this many chunks with no earlier context
    num_pad_rows: int = 0  # rows after the last request's: static-batching padding

    @property
    def num_seqs(self) -> int:
        return len(self.q_lens)

    @property
    def num_real_rows(self) -> int:
        return self.q_starts[-1] + self.q_lens[-1] if self.q_lens else 0

    def context_len(self, i: int) -> int:
        return self.start_pos[i] + self.q_lens[i]

    def num_blocks(self, i: int) -> int:
        return -(-self.context_len(i) // self.block_size)

    def block_table(self, i: int) -> torch.Tensor:
        start = self.block_starts[i]
        return self.flat_blocks[start : start + self.num_blocks(i)]

    def padded_tables(self, first: int, stop: int, width: int) -> torch.Tensor:
        """[stop - first, width] long: the tables of requests [first, stop), padded with the scratch block."""
        starts = torch.tensor(self.block_starts[first:stop], dtype=torch.long)
        counts = torch.tensor([self.num_blocks(i) for i in range(first, stop)], dtype=torch.long)
        cols = torch.arange(width, dtype=torch.long)
        index = (starts.unsqueeze(1) + cols).clamp_(max=max(self.flat_blocks.numel() - 1, 0))
        table = self.flat_blocks[index] if self.flat_blocks.numel() else torch.zeros_like(index)
        return table.masked_fill_(cols >= counts.unsqueeze(1), self.scratch_block)

    def token_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions [R], slots [R]) of the real rows, long, CPU; R = num_real_rows."""
        if not self.q_lens:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty
        starts = torch.tensor(self.start_pos, dtype=torch.long)
        if self.num_decodes == self.num_seqs:  # decodes only: one row per request
            seq = torch.arange(self.num_seqs)
            pos = starts
        else:
            lens = torch.tensor(self.q_lens, dtype=torch.long)
            seq = torch.repeat_interleave(torch.arange(self.num_seqs), lens)
            first_row = torch.tensor(self.q_starts, dtype=torch.long)
            pos = starts[seq] + (torch.arange(seq.numel()) - first_row[seq])
        blocks = self.flat_blocks[torch.tensor(self.block_starts, dtype=torch.long)[seq] + pos // self.block_size]
        return pos, blocks * self.block_size + pos % self.block_size

    def context_slots(self) -> torch.Tensor:
        """[sum of context lengths] long, CPU: every cache slot each request attends, request by request."""
        ctx = torch.tensor([self.context_len(i) for i in range(self.num_seqs)], dtype=torch.long)
        seq = torch.repeat_interleave(torch.arange(self.num_seqs), ctx)
        first = torch.cumsum(ctx, 0) - ctx
        pos = torch.arange(seq.numel()) - first[seq]
        blocks = self.flat_blocks[torch.tensor(self.block_starts, dtype=torch.long)[seq] + pos // self.block_size]
        return blocks * self.block_size + pos % self.block_size

    def pad_slots(self) -> torch.Tensor:
        """[num_pad_rows] long: pad rows share the scratch block's slots (their K/V is never read back)."""
        return self.scratch_block * self.block_size + torch.arange(self.num_pad_rows) % self.block_size
