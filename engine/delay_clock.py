"""vLLM V0's scheduler_delay_factor: hold new prompts briefly so more of them batch together.

A waiting prompt is admitted only once the oldest waiting one has waited more than factor x the
latency of the last step that admitted a prompt (or when nothing was running before this step).
The clock ticks once per schedule call whose new prompts are considered, as V0's _passed_delay
does, so that latency runs from the step that admitted a prompt to the next tick: idle time (no
schedule calls) never counts as prompt latency.
"""

from __future__ import annotations

from collections.abc import Callable


class DelayClock:
    def __init__(self, factor: float, clock: Callable[[], float]) -> None:
        self.factor = factor
        self._clock = clock
        self._prev_time = 0.0
        self._prev_prompt = False  # the last tick's step admitted a prompt
        self._last_prompt_latency = 0.0

    @property
    def enabled(self) -> bool:
        return self.factor > 0

    def tick(self) -> None:
        if self.factor <= 0:
            return
        now = self._clock()
        if self._prev_prompt:
            self._last_prompt_latency = now - self._prev_time
        self._prev_time, self._prev_prompt = now, False

    def admitted(self, any_prompt: bool) -> None:
        """What this step's admission did (the next tick measures its latency)."""
        self._prev_prompt = any_prompt

    def passed(self, earliest_arrival: float, had_running: bool) -> bool:
        """Whether the oldest waiting prompt has waited long enough, checked before each admission."""
        waited = self._clock() - earliest_arrival
        return waited > self.factor * self._last_prompt_latency or not had_running
