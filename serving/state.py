"""What the HTTP handlers of one server share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from engine.online import OnlineEngine
from serving.prometheus_metrics import ServingMetrics
from serving.prompts import PromptCodec


@dataclass
class ServingState:
    online: OnlineEngine
    codec: PromptCodec
    served_model_name: str
    max_model_len: int
    metrics: ServingMetrics
    mode: str  # real | simulated
    model: str  # what --model named (the /v1/models root)
    api_key: str | None = None
    max_waiting: int | None = None
    created: int = field(default_factory=lambda: int(time.time()))
