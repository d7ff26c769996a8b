"""The paged KV cache: swaps copy real block contents, and paged attention reads what was written."""

from __future__ import annotations

import torch

from engine.executors.kv_cache import PagedKVCache, bytes_per_block
from engine.executors.paged_attention import bottom_right_causal_mask


def _cache(num_blocks: int = 8, num_cpu_blocks: int = 6) -> PagedKVCache:
    return PagedKVCache(num_layers=3, num_blocks=num_blocks, block_size=4, num_kv_heads=2, head_dim=5,
                        dtype=torch.float32, device=torch.device("cpu"), num_cpu_blocks=num_cpu_blocks)


def test_swap_out_then_in_moves_every_layer_k_and_v() -> None:
    cache = _cache()
    torch.manual_seed(0)
    cache.device_blocks.copy_(torch.randn_like(cache.device_blocks))
    original = cache.device_blocks.clone()

    cache.swap_out([(2, 0), (5, 3)])
    assert torch.equal(cache.cpu_blocks[:, :, 0], original[:, :, 2])
    assert torch.equal(cache.cpu_blocks[:, :, 3], original[:, :, 5])

    cache.device_blocks.zero_()  # the device blocks are reused by someone else meanwhile
    cache.swap_in([(0, 7), (3, 1)])  # back into different device blocks
    assert torch.equal(cache.device_blocks[:, :, 7], original[:, :, 2])
    assert torch.equal(cache.device_blocks[:, :, 1], original[:, :, 5])
    assert cache.device_blocks[:, :, [0, 2, 3, 4, 5, 6]].abs().sum() == 0  # nothing else touched


def test_layer_views_share_storage_with_the_pool() -> None:
    cache = _cache()
    keys, values = cache.layer(1)
    assert keys.shape == (8 + 1, 4, 2, 5)  # the pool plus the scratch block
    keys[3, 2] = 1.0
    values[3, 2] = 2.0
    assert cache.device_blocks[1, 0, 3, 2].eq(1.0).all() and cache.device_blocks[1, 1, 3, 2].eq(2.0).all()


def test_block_bytes_count_k_and_v_of_every_layer() -> None:
    assert _cache().bytes_per_block == bytes_per_block(3, 4, 2, 5, 4) == 2 * 3 * 4 * 2 * 5 * 4


def test_bottom_right_mask_lets_a_chunk_see_its_earlier_context() -> None:
    mask = bottom_right_causal_mask(q_len=2, context_len=5, device=torch.device("cpu"))[0, 0]
    assert mask.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
