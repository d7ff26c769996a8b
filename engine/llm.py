"""`LLM`: vLLM's offline API on Batchscope's engine.

    llm = LLM(model="tiny", max_num_seqs=16)
    outputs = llm.generate(["Hello", "The capital of France is"], SamplingParams(temperature=0))

generate() runs the same Engine (scheduler, paged KV cache, one forward per step) on a wall
clock until every prompt has finished. Nothing is recorded unless record=True.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.clock import WallClock
from engine.config import EngineConfig
from engine.engine_loop import Engine, EngineStalledError
from engine.executors.kv_pool_sizing import DEFAULT_CPU_MEMORY_GIB, KVPoolChoice, choose_kv_pool
from engine.executors.model_loading import LoadedModel, load_model
from engine.executors.torch_executor import TorchExecutor
from engine.metrics import RunSummary
from engine.request import Request
from engine.sampling_params import SamplingParams
from engine.snapshot import RunInfo

DEFAULT_MAX_MODEL_LEN = 2048
_log = logging.getLogger(__name__)

Prompts = str | Sequence[str] | Sequence[Sequence[int]]


@dataclass(frozen=True)
class RequestMetrics:
    """Times in seconds since generate() started; None where the request never got that far."""

    arrival_time: float
    first_scheduled_time: float | None
    first_token_time: float | None
    finish_time: float | None
    num_preemptions: int

    @property
    def ttft(self) -> float | None:
        """Time to first token."""
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def e2e(self) -> float | None:
        """End-to-end latency."""
        return None if self.finish_time is None else self.finish_time - self.arrival_time


@dataclass(frozen=True)
class RequestOutput:
    request_id: str
    prompt: str | None  # None when the prompt was given as token ids
    prompt_token_ids: list[int]
    text: str  # the generated text (special tokens skipped); empty without a tokenizer
    token_ids: list[int]  # the generated token ids
    finish_reason: str | None  # stopped | length | aborted | rejected
    reject_reason: str | None  # why a rejected prompt was refused
    metrics: RequestMetrics

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class LLM:
    def __init__(
        self,
        model: str = "tiny",
        *,
        device: str | None = None,
        dtype: str | None = None,
        seed: int = 0,
        cpu_memory_gib: float = DEFAULT_CPU_MEMORY_GIB,
        record: bool = False,
        db: str | None = None,
        **engine_args: Any,
    ) -> None:
        """engine_args: EngineConfig fields by vLLM name (max_num_seqs, block_size, num_gpu_blocks, ...)."""
        self.model_name = model
        self.loaded: LoadedModel = load_model(model, device, dtype)
        if "max_model_len" not in engine_args:
            caps = (self.loaded.max_position_embeddings, self.loaded.sliding_window)
            engine_args["max_model_len"] = min([DEFAULT_MAX_MODEL_LEN, *(c for c in caps if c)])
        config = EngineConfig.from_dict(engine_args)
        # Before the executor exists: on CUDA the sizing profiles a forward without any KV cache.
        self.kv_pool: KVPoolChoice = choose_kv_pool(self.loaded, config.scheduler, config.cache, cpu_memory_gib)
        _log.info(self.kv_pool.describe())  # the line `run` prints
        if self.kv_pool.warning():
            _log.warning(self.kv_pool.warning())
        self.config = config.replace(num_gpu_blocks=self.kv_pool.num_gpu_blocks)
        self.executor = TorchExecutor(self.loaded, self.config, seed=seed)
        self.record = record
        self.db = db
        self.last_summary: RunSummary | None = None
        self.last_run_id: int | None = None
        self._next_id = 0

    def get_tokenizer(self) -> Any:
        return self.loaded.tokenizer

    def generate(
        self,
        prompts: Prompts,
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt (continuously batched); outputs in prompt order."""
        texts, token_lists = self._normalize(prompts)
        params = self._params_for(sampling_params, len(token_lists))
        recorder = self._recorder(len(token_lists)) if self.record else None
        clock = WallClock()  # after opening the database: that is not the requests' time
        engine = Engine(self.config, self.executor, clock, recorder)
        ids: list[str] = []
        for ids_, p in zip(token_lists, params, strict=True):
            rid = str(self._next_id)
            self._next_id += 1
            ids.append(rid)
            engine.add_request(Request(rid, ids_, p, arrival_time=clock.now(),
                                       eos_token_id=self.executor.eos_token_id))
        try:
            scheduler = engine.scheduler
            while scheduler.has_unfinished_requests():
                if engine.step() is None and scheduler.has_unfinished_requests():
                    raise EngineStalledError(f"no request could be scheduled with "
                                             f"{scheduler.get_num_unfinished_requests()} unfinished")
            summary = engine.finish()
        except BaseException as exc:
            if recorder is not None:
                recorder.finish("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        if recorder is not None:
            recorder.finish("finished", summary=summary.to_dict())
            self.last_run_id = recorder.run_id
        self.last_summary = summary
        # The last finishes never reach the executor through a next schedule(): drop their state here.
        self.executor.sampler.drop(ids)
        return [self._output(engine.requests[rid], text, tokens)
                for rid, text, tokens in zip(ids, texts, token_lists, strict=True)]

    def shutdown(self) -> None:
        self.executor.shutdown()

    # -- helpers --------------------------------------------------------------------------------
    def _normalize(self, prompts: Prompts) -> tuple[list[str | None], list[list[int]]]:
        if isinstance(prompts, str):
            prompts = [prompts]
        texts: list[str | None] = []
        tokens: list[list[int]] = []
        for p in prompts:
            if isinstance(p, str):
                texts.append(p)
                tokens.append(list(self.executor.encode(p)))
            else:
                texts.append(None)
                tokens.append([int(t) for t in p])
        return texts, tokens

    @staticmethod
    def _params_for(sampling_params: SamplingParams | Sequence[SamplingParams] | None, n: int) -> list[SamplingParams]:
        if sampling_params is None:
            return [SamplingParams()] * n
        if isinstance(sampling_params, SamplingParams):
            return [sampling_params] * n
        params = list(sampling_params)
        if len(params) != n:
            raise ValueError(f"got {len(params)} SamplingParams for {n} prompts; give one, or one per prompt")
        return params

    def _recorder(self, num_prompts: int) -> Any:
        from storage.database import open_for_write
        from storage.recorder import Recorder

        sched = self.config.scheduler
        facts = self.executor.describe()
        info = RunInfo(
            name=f"LLM.generate {self.model_name} ({num_prompts} prompts, {sched.max_num_seqs} seqs)",
            mode="real",
            batching=sched.batching,
            config=self.config.to_dict() | {"model": self.model_name, "device": facts["device"],
                                            "dtype": facts["dtype"]},
            model=self.model_name,
            workload=f"LLM.generate: {num_prompts} prompts",
        )
        return Recorder(open_for_write(self.db), info, executor_facts=facts)

    def _output(self, req: Request, prompt: str | None, prompt_ids: list[int]) -> RequestOutput:
        tokens = list(req.output_token_ids)
        text = self.executor.decode(tokens) if self.loaded.tokenizer is not None and tokens else ""
        return RequestOutput(
            request_id=req.request_id,
            prompt=prompt,
            prompt_token_ids=prompt_ids,
            text=text,
            token_ids=tokens,
            finish_reason=req.status.finish_reason,
            reject_reason=req.reject_reason,
            metrics=RequestMetrics(req.arrival_time, req.first_scheduled_time, req.first_token_time,
                                   req.finish_time, req.num_preemptions),
        )
