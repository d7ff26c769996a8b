"""The paged KV cache: fixed-size token blocks on the device plus a CPU swap pool.

Blocks are addressed by exactly the ids the scheduler's BlockManager hands out, so the cache
holds no ownership state of its own: a request's tokens live wherever its block table says.
One more block than the scheduler's pool, the scratch block (id num_blocks), belongs to no
request: static-batching pad rows write their K/V there, and padded block tables point there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class PagedKVCache:
    """K and V for every layer in one tensor [layers, 2, blocks + 1, block_size, kv_heads, head_dim].

    One tensor (rather than one per layer) makes a swap a single indexed copy for all layers.
    """

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        num_cpu_blocks: int = 0,
    ) -> None:
        self.num_layers = num_layers
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.device = device
        self.scratch_block = num_blocks  # never handed out: the block manager knows only ids < num_blocks
        shape = (num_layers, 2, num_blocks + 1, block_size, num_kv_heads, head_dim)
        # Zeros, not empty: padded gathers read unused slots, and garbage NaNs would survive masking.
        self.device_blocks = torch.zeros(shape, dtype=dtype, device=device)
        self.cpu_blocks = torch.zeros(
            (num_layers, 2, num_cpu_blocks, block_size, num_kv_heads, head_dim),
            dtype=dtype,
            pin_memory=device.type == "cuda" and num_cpu_blocks > 0,  # pinned: async copies over PCIe
        )
        # Per-layer views made once, so the attention hot path does no tensor indexing to find them.
        self._keys = [self.device_blocks[i, 0] for i in range(num_layers)]
        self._values = [self.device_blocks[i, 1] for i in range(num_layers)]

    @property
    def num_cpu_blocks(self) -> int:
        return self.cpu_blocks.shape[2]

    @property
    def bytes_per_block(self) -> int:
        return bytes_per_block(self.num_layers, self.block_size, self.num_kv_heads, self.head_dim,
                               self.device_blocks.element_size())

    def layer(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys, values) of one layer, each [blocks, block_size, kv_heads, head_dim]."""
        return self._keys[layer_idx], self._values[layer_idx]

    def swap_out(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Copy (device block, cpu block) pairs to the CPU pool, all layers at once."""
        if not pairs:
            return
        src = torch.tensor([g for g, _ in pairs], dtype=torch.long, device=self.device)
        dst = torch.tensor([c for _, c in pairs], dtype=torch.long)
        self.cpu_blocks[:, :, dst] = self.device_blocks[:, :, src].to("cpu")

    def swap_in(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Copy (cpu block, device block) pairs back into the device pool."""
        if not pairs:
            return
        src = torch.tensor([c for c, _ in pairs], dtype=torch.long)
        dst = torch.tensor([g for _, g in pairs], dtype=torch.long, device=self.device)
        self.device_blocks[:, :, dst] = self.cpu_blocks[:, :, src].to(self.device, non_blocking=True)


def bytes_per_block(num_layers: int, block_size: int, num_kv_heads: int, head_dim: int, element_size: int) -> int:
    """Bytes one block takes across all layers, K and V."""
    return 2 * num_layers * block_size * num_kv_heads * head_dim * element_size
