"""What the first-launch demo runs: a real run on the `tiny` model that shows what the product is for.

Bursts of requests arrive over a steady trickle, so within each burst the batch fills, a queue
forms and drains, new prompts' prefill chunks cut into running decodes, and the small KV pool
forces a preemption now and then; between bursts the engine catches up. A steady Poisson rate
near capacity would show the same only while the machine's speed holds: on a shared CPU a
slower spell makes such a queue grow for good, whereas a burst still drains.

No Streamlit here (the test fixture records a simulated demo from it); dashboard.demo starts it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

from dashboard import launcher
from engine.workload.generators import synthetic_workload


@dataclass(frozen=True)
class BurstyWorkload:
    """Bursts of arrivals every period_s over a Poisson trickle; lengths from the `mixed` workload."""

    num_bursts: int = 40
    period_s: float = 6.0
    burst_size: int = 48  # three batches' worth: a queue forms however fast the machine is
    burst_spread_s: float = 0.25  # a burst's arrivals fall within this long
    trickle_rate: float = 5.0  # requests/s, all along
    seed: int = 0

    def arrival_times(self) -> list[float]:
        rng = random.Random(self.seed)
        times: list[float] = []
        for burst in range(self.num_bursts):
            start = burst * self.period_s
            times += [start + rng.uniform(0, self.burst_spread_s) for _ in range(self.burst_size)]
            t = start + rng.expovariate(self.trickle_rate)
            while t < start + self.period_s:
                times.append(t)
                t += rng.expovariate(self.trickle_rate)
        return sorted(times)

    def write(self, path: Path) -> Path:
        """A JSONL workload file `python -m engine run --workload` reads."""
        times = self.arrival_times()
        specs = synthetic_workload("mixed", len(times), seed=self.seed).requests
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as out:
            for i, (t, spec) in enumerate(zip(times, specs, strict=True)):
                out.write(json.dumps({"request_id": f"r{i}", "arrival_time": round(t, 4),
                                      "prompt_len": spec.prompt_len, "max_tokens": spec.max_tokens}) + "\n")
        return path


# Measured on 2 quiet cores (steps ~10 ms): each burst queues 30-60 requests for 1-5 s, fills the
# batch for about a second and preempts a few times; the 13 req/s average is under half of what
# tiny serves at 16 sequences, so a somewhat slower machine still drains every burst.
WORKLOAD = BurstyWorkload()
NUM_GPU_BLOCKS = 112  # 1,792 token slots: a full batch with several long answers overflows it
FORM = launcher.RunForm(
    mode="real", model="tiny", max_num_seqs=16, max_num_batched_tokens=128, max_model_len=1024,
    num_gpu_blocks=NUM_GPU_BLOCKS, enable_chunked_prefill=True,
    name=f"demo: tiny model, bursts of {WORKLOAD.burst_size} requests every {WORKLOAD.period_s:g} s",
)


def demo_form(workload_file: Path) -> launcher.RunForm:
    """The demo's run, reading the workload written to workload_file."""
    return replace(FORM, workload_file=workload_file)


def describe() -> str:
    w = WORKLOAD
    minutes = w.num_bursts * w.period_s / 60
    return (f"bursts of {w.burst_size} requests every {w.period_s:g} s over a trickle of {w.trickle_rate:g}/s "
            f"for about {minutes:.0f} minutes, into a batch of {FORM.max_num_seqs} sequences, a token budget of "
            f"{FORM.max_num_batched_tokens} and a KV pool of {NUM_GPU_BLOCKS} blocks")
