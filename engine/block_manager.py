"""Paged KV block pool: a GPU free list, a CPU swap pool, and a block table per request.

Plain Python and no torch: the torch executor holds the tensors and follows the block ids
handed out here. There is no prefix caching, so a block has at most one owner and needs no
reference count.
"""

from __future__ import annotations


class BlockManager:
    def __init__(self, num_gpu_blocks: int, num_cpu_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.num_gpu_blocks = num_gpu_blocks
        self.num_cpu_blocks = num_cpu_blocks
        # Free lists are stacks (the end is the top) so taking n blocks is one slice; reversed so a
        # fresh pool hands out blocks 0, 1, 2, ... Recently freed blocks are reused first.
        self._free_gpu: list[int] = list(range(num_gpu_blocks - 1, -1, -1))
        self._free_cpu: list[int] = list(range(num_cpu_blocks - 1, -1, -1))
        self._gpu_tables: dict[str, list[int]] = {}
        self._cpu_tables: dict[str, list[int]] = {}

    # -- sizes ------------------------------------------------------------------------------
    @property
    def num_free_gpu_blocks(self) -> int:
        return len(self._free_gpu)

    @property
    def num_used_gpu_blocks(self) -> int:
        return self.num_gpu_blocks - len(self._free_gpu)

    @property
    def num_used_cpu_blocks(self) -> int:
        return self.num_cpu_blocks - len(self._free_cpu)

    @property
    def gpu_usage(self) -> float:
        """Share of the GPU pool in use, 0..1."""
        return self.num_used_gpu_blocks / self.num_gpu_blocks

    def blocks_needed(self, num_tokens: int) -> int:
        """Blocks that hold num_tokens token slots."""
        return -(-num_tokens // self.block_size)

    def block_table(self, request_id: str) -> list[int]:
        """The request's GPU blocks in order (empty if it holds none). Do not mutate."""
        return self._gpu_tables.get(request_id, _EMPTY)

    def num_gpu_blocks_of(self, request_id: str) -> int:
        return len(self._gpu_tables.get(request_id, _EMPTY))

    # -- GPU pool -----------------------------------------------------------------------------
    def can_allocate(self, num_tokens: int) -> bool:
        return self.blocks_needed(num_tokens) <= len(self._free_gpu)

    def grow(self, request_id: str, num_tokens: int) -> tuple[int, ...] | None:
        """Make the request's table hold num_tokens slots.

        Returns the newly taken blocks (empty when it already had room), or None when the free
        pool is too small; then nothing changes.
        """
        table = self._gpu_tables.get(request_id)
        have = len(table) if table is not None else 0
        need = -(-num_tokens // self.block_size) - have
        if need <= 0:
            return ()
        free = self._free_gpu
        if need > len(free):
            return None
        if table is None:
            table = self._gpu_tables[request_id] = []
        if need == 1:
            block = free.pop()
            table.append(block)
            return (block,)
        new = tuple(reversed(free[-need:]))
        del free[-need:]
        table.extend(new)
        return new

    def append_block(self, request_id: str) -> int:
        """Give a request that holds blocks one more (the caller checked one is free); returns it."""
        block = self._free_gpu.pop()
        self._gpu_tables[request_id].append(block)
        return block

    def free(self, request_id: str) -> tuple[int, ...]:
        """Release the request's GPU blocks; returns them (empty if it held none)."""
        table = self._gpu_tables.pop(request_id, None)
        if not table:
            return ()
        self._free_gpu.extend(reversed(table))
        return tuple(table)

    # -- CPU swap pool ------------------------------------------------------------------------
    def can_swap_out(self, request_id: str) -> bool:
        return len(self._gpu_tables.get(request_id, _EMPTY)) <= len(self._free_cpu)

    def swap_out(self, request_id: str) -> tuple[tuple[int, int], ...] | None:
        """Move the request's blocks to the CPU pool; (gpu, cpu) pairs, or None if it has no room."""
        table = self._gpu_tables.get(request_id)
        if table is None or len(table) > len(self._free_cpu):
            return None
        cpu_table = self._take(self._free_cpu, len(table))
        self._cpu_tables[request_id] = cpu_table
        del self._gpu_tables[request_id]
        self._free_gpu.extend(reversed(table))
        return tuple(zip(table, cpu_table, strict=True))

    def can_swap_in(self, request_id: str, num_tokens: int) -> bool:
        """Whether the GPU pool can take the request back with room for num_tokens."""
        have = len(self._cpu_tables.get(request_id, _EMPTY))
        return max(have, self.blocks_needed(num_tokens)) <= len(self._free_gpu)

    def swap_in(self, request_id: str) -> tuple[tuple[int, int], ...] | None:
        """Move the request's blocks back to the GPU pool; (cpu, gpu) pairs, or None if no room."""
        cpu_table = self._cpu_tables.get(request_id)
        if cpu_table is None or len(cpu_table) > len(self._free_gpu):
            return None
        table = self._take(self._free_gpu, len(cpu_table))
        self._gpu_tables[request_id] = table
        del self._cpu_tables[request_id]
        self._free_cpu.extend(reversed(cpu_table))
        return tuple(zip(cpu_table, table, strict=True))

    def free_cpu(self, request_id: str) -> tuple[int, ...]:
        """Release a swapped request's CPU blocks (abort while swapped)."""
        table = self._cpu_tables.pop(request_id, None)
        if not table:
            return ()
        self._free_cpu.extend(reversed(table))
        return tuple(table)

    @staticmethod
    def _take(free: list[int], count: int) -> list[int]:
        """Pop `count` blocks off the top of a free stack, in the order they come off."""
        taken = free[-count:][::-1] if count else []
        del free[len(free) - count:]
        return taken

    # -- checks -------------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Raise AssertionError if a block is owned twice or lost; tests call this every step."""
        for pool, tables, total in (
            (self._free_gpu, self._gpu_tables, self.num_gpu_blocks),
            (self._free_cpu, self._cpu_tables, self.num_cpu_blocks),
        ):
            owned = [b for table in tables.values() for b in table]
            every = owned + list(pool)
            assert len(every) == total, f"used + free = {len(every)}, expected {total}"
            assert len(set(every)) == total, "a block is owned twice or is both owned and free"
            assert all(0 <= b < total for b in every), "block id out of range"

    def owners(self) -> dict[int, str]:
        """GPU block id -> owning request id (for tests and block-map checks)."""
        return {b: rid for rid, table in self._gpu_tables.items() for b in table}


_EMPTY: list[int] = []
