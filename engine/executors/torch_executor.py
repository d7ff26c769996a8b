"""The real executor: a transformers model, a paged KV cache, one forward pass per step.

execute_model(out): copy swapped blocks, flatten every scheduled token (plus any static-batching
pad rows) into one batch, run the model once with paged attention, sample one token per request
that reached its last known token. The scheduler decides everything else (who runs, which
blocks, when to stop). FLOPs are reported as useful work (num_flops) and padding apart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from engine.config import EngineConfig
from engine.executors.attention_backend import AttentionBackend, choose_attention_backend
from engine.executors.flops import FlopModel, measure_peak_flops
from engine.executors.kv_cache import PagedKVCache
from engine.executors.lm_head import install_chunked_lm_head
from engine.executors.model_loading import LoadedModel, ModelLoadError
from engine.executors.packed_linear import install_packed_linears, packing_unavailable
from engine.executors.paged_attention import register_paged_attention
from engine.executors.sampler import Sampler
from engine.executors.step_batch import build_step_batch
from engine.outputs import ModelRunnerOutput, SchedulerOutput


class TorchExecutor:
    mode = "real"
    include_token_ids = True
    computes_logprobs = True  # the sampler returns log-probabilities to requests that ask

    def __init__(self, loaded: LoadedModel, config: EngineConfig, seed: int = 0,
                 peak_flops: float | None = None, attention: AttentionBackend | None = None) -> None:
        """config.cache.num_gpu_blocks must be set (see kv_pool_sizing.choose_kv_pool).

        peak_flops: a known peak FLOP/s (tests build many executors); None measures it now.
        attention: a paged-attention backend; None chooses (and probes) one for the device.
        """
        cache = config.cache
        self.loaded = loaded
        self.config = config
        self.device = loaded.device
        self.model = loaded.model
        self.eos_token_id: int | None = loaded.eos_token_id
        self.extra_eos_token_ids: tuple[int, ...] = loaded.extra_eos_token_ids
        self.vocab_size: int = loaded.vocab_size
        max_pos = loaded.max_position_embeddings
        if max_pos is not None and config.scheduler.max_model_len > max_pos:
            raise ModelLoadError(f"max_model_len={config.scheduler.max_model_len} exceeds what {loaded.name} supports "
                                 f"({max_pos} positions); lower --max-model-len")
        window = loaded.sliding_window
        if window is not None and config.scheduler.max_model_len > window:
            # Checked here, not mid-run: paged attention attends the whole context.
            raise ModelLoadError(f"{loaded.name} uses sliding-window attention ({window} tokens), which the paged "
                                 f"executor does not implement; set --max-model-len {window} or less")
        self.kv_cache = PagedKVCache(loaded.num_layers, cache.pool_blocks, cache.block_size, loaded.num_kv_heads,
                                     loaded.head_dim, loaded.dtype, loaded.device, cache.swap_space)
        self.model.set_attn_implementation(register_paged_attention())
        if attention is None:
            attention, self.attention_choice = choose_attention_backend(
                self.device, loaded.dtype, loaded.num_heads, loaded.num_kv_heads, loaded.head_dim, cache.block_size)
        else:
            self.attention_choice = "given"
        self.attention = attention
        pad = getattr(self.model.config.get_text_config(), "pad_token_id", None)
        self.pad_token_id = int(pad if pad is not None else self.eos_token_id if self.eos_token_id is not None else 0)
        self.linear_kernels = self._install_cpu_kernels(loaded.dtype)
        self.sampler = Sampler(self.device, seed)
        self.flop_model = FlopModel.of(self.model, loaded.num_layers, loaded.num_heads, loaded.head_dim)
        self.peak_flops = peak_flops if peak_flops is not None else measure_peak_flops(self.device, loaded.dtype)
        # Per-layer timers cost a few perf_counter calls; on CUDA they would need a sync per layer.
        self._timed = self.device.type == "cpu"

    def _install_cpu_kernels(self, dtype: torch.dtype) -> str:
        """Packed oneDNN linears where they probe right; else, on CPU, the chunked output projection."""
        why_not = packing_unavailable(dtype, self.device)
        if why_not is None:
            return f"oneDNN packed ({install_packed_linears(self.model)} linears, output projection included)"
        if self.device.type == "cpu" and install_chunked_lm_head(self.model):
            return f"the model's own; chunked output projection ({why_not})"
        return f"the model's own ({why_not})"

    # -- Executor protocol ----------------------------------------------------------------------
    def execute_model(self, out: SchedulerOutput) -> ModelRunnerOutput:
        t_start = time.perf_counter()
        if out.finished_req_ids:
            self.sampler.drop(out.finished_req_ids)
        if not out.scheduled and not out.counts.num_padding_tokens:  # a static prefill step may be pad rows only
            return ModelRunnerOutput(sampled_token_ids={})

        self.kv_cache.swap_out(out.blocks_to_swap_out)  # before swap-in: a freed block may be reused
        self.kv_cache.swap_in(out.blocks_to_swap_in)
        t_swap = time.perf_counter()
        batch = build_step_batch(out, self.kv_cache, self.attention, self._timed, self.pad_token_id)
        t_prepare = time.perf_counter()
        with torch.inference_mode():
            result = self.model(
                input_ids=batch.input_ids,
                position_ids=batch.position_ids,
                use_cache=False,
                logits_to_keep=batch.logits_indices,
                paged_meta=batch.meta,
            )
            logits = result.logits[0, : len(batch.sample_req_ids)]  # the rest: finished members' pad rows
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            t_model = time.perf_counter()
            tokens = self.sampler.sample(logits, batch.sample_req_ids, batch.sample_params,
                                         batch.sample_held_off) if batch.sample_req_ids else []
            logprobs = self.sampler.logprobs(logits, tokens, batch.sample_req_ids, batch.sample_params)
        t_sample = time.perf_counter()

        num_flops = self.flop_model.step_flops(out.scheduled, len(batch.sample_req_ids))
        padding_flops = self.flop_model.padding_flops(out.counts.num_padding_tokens, batch.padded_pairs,
                                                      len(batch.logits_indices) - len(batch.sample_req_ids))
        elapsed = time.perf_counter() - t_start
        attn = batch.meta.timings
        attention_s = sum(attn.values())
        timings = {
            "swap": t_swap - t_start,
            "prepare": t_prepare - t_swap,
            "model": (t_model - t_prepare) - attention_s,
            **attn,
            "sampling": t_sample - t_model,
        }
        timings["other"] = max(elapsed - sum(timings.values()), 0.0)
        return ModelRunnerOutput(
            sampled_token_ids=dict(zip(batch.sample_req_ids, tokens, strict=True)),
            logprobs=logprobs,
            model_time_s=elapsed,
            num_flops=num_flops,
            num_padding_flops=padding_flops,
            # Not clamped: above 1 means the peak was measured low or the FLOP count is wrong, both worth seeing.
            compute_utilization=num_flops / elapsed / self.peak_flops if self.peak_flops > 0 else None,
            timings=timings,
        )

    def encode(self, text: str) -> Sequence[int]:
        if self.loaded.tokenizer is None:
            raise ModelLoadError(f"{self.loaded.name} has no tokenizer: give prompts as token ids")
        return list(self.loaded.tokenizer.encode(text))

    def decode(self, token_ids: Sequence[int]) -> str:
        if self.loaded.tokenizer is None:
            raise ModelLoadError(f"{self.loaded.name} has no tokenizer: cannot turn token ids into text")
        return str(self.loaded.tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def describe(self) -> dict[str, Any]:
        kv = self.kv_cache
        return {
            "executor": "torch",
            "model": self.loaded.name,
            "architecture": self.loaded.architecture,
            "device": str(self.device),
            "dtype": str(self.loaded.dtype).removeprefix("torch."),
            "num_params": self.loaded.num_params,
            "peak_flops": self.peak_flops,
            "torch_threads": torch.get_num_threads(),
            "attention": f"{self.attention.description} (transformers AttentionInterface, one forward per step)",
            "attention_backend": self.attention.name,
            "attention_choice": self.attention_choice,
            "linear_kernels": self.linear_kernels,
            "num_gpu_blocks": kv.num_blocks,
            "block_size": kv.block_size,
            "kv_bytes_per_block": kv.bytes_per_block,
            "kv_pool_mib": kv.num_blocks * kv.bytes_per_block / (1 << 20),
            "num_cpu_blocks": kv.num_cpu_blocks,
        }

    def shutdown(self) -> None:
        """Free the KV pool (the model stays loaded: LLM and tests may build another executor)."""
        self.sampler.clear()
        del self.kv_cache
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
