"""Use-case presets for the run form: each a starting point, every field still editable."""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "Interactive chatbot (TTFT first)": {
        "why": "Small batches and a low token budget with chunked prefill: new prompts start fast and "
               "long prompts cannot stall everyone's next token.",
        "max_num_seqs": 8, "max_num_batched_tokens": 256, "enable_chunked_prefill": True,
        "workload": "mixed", "request_rate": 4.0, "num_prompts": 120,
    },
    "Production API (balanced)": {
        "why": "32-64 sequences and a moderate budget: good throughput while p99 latency stays in check.",
        "max_num_seqs": 48, "max_num_batched_tokens": 1024, "enable_chunked_prefill": True,
        "workload": "mixed", "request_rate": 12.0, "num_prompts": 300,
    },
    "Offline batch processing (throughput first)": {
        "why": "Everything arrives at once; 128-256 sequences and a high budget keep the device full. "
               "Latency does not matter here.",
        "max_num_seqs": 192, "max_num_batched_tokens": 4096, "enable_chunked_prefill": False,
        "workload": "mixed", "request_rate": None, "num_prompts": 400,
    },
}
CUSTOM = "Custom"
