"""Use-case presets for the run form: each a starting point, every field still editable."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    why: str = ""
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 1024
    enable_chunked_prefill: bool = True
    workload: str = "mixed"
    request_rate: float | None = 8.0  # None: all requests at t=0
    num_prompts: int = 200


PRESETS: dict[str, Preset] = {
    "Interactive chatbot (TTFT first)": Preset(
        why="Small batches and a low token budget with chunked prefill: new prompts start fast and "
            "long prompts cannot stall everyone's next token.",
        max_num_seqs=8, max_num_batched_tokens=256, request_rate=4.0, num_prompts=120),
    "Production API (balanced)": Preset(
        why="32-64 sequences and a moderate budget: good throughput while p99 latency stays in check.",
        max_num_seqs=48, max_num_batched_tokens=1024, request_rate=12.0, num_prompts=300),
    "Offline batch processing (throughput first)": Preset(
        why="Everything arrives at once; 128-256 sequences and a high budget keep the device full. "
            "Latency does not matter here.",
        max_num_seqs=192, max_num_batched_tokens=4096, enable_chunked_prefill=False, request_rate=None,
        num_prompts=400),
}
CUSTOM = "Custom"
CUSTOM_PRESET = Preset()
