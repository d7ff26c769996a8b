"""`LLM`: vLLM's offline API on Batchscope's engine.

    llm = LLM(model="tiny", max_num_seqs=16)
    outputs = llm.generate(["Hello", "The capital of France is"], SamplingParams(temperature=0))

generate() runs the same Engine (scheduler, paged KV cache, one forward per step) on a wall
clock until every prompt has finished. Nothing is recorded unless record=True.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from engine.chat_prompt import chat_prompt, conversation
from engine.clock import WallClock
from engine.config import ConfigError
from engine.engine_args import DEFAULT_CPU_MEMORY_GIB, EngineArgs, build_real_engine
from engine.engine_loop import Engine, EngineStalledError
from engine.executors.kv_pool_sizing import KVPoolChoice
from engine.executors.model_loading import LoadedModel
from engine.metrics import RunSummary
from engine.request import Request
from engine.sampling_params import SamplingParams, SamplingParamsError, with_model_eos
from engine.snapshot import RunInfo, RunRecorder
from engine.stop_strings import StopStrings

_log = logging.getLogger(__name__)

# vLLM's prompt forms: text, {"prompt": text}, {"prompt_token_ids": ids}, or a list of them (a bare
# list of token-id lists is accepted too).
PromptInput = str | Mapping[str, Any] | Sequence[int]
Prompts = PromptInput | Sequence[PromptInput]
VLLM_FINISH_REASONS = {"stopped": "stop", "length": "length", "aborted": "abort", "rejected": "abort"}


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

    @property
    def finished_time(self) -> float | None:
        """vLLM's name for finish_time."""
        return self.finish_time

    @property
    def time_in_queue(self) -> float | None:
        """vLLM's name: arrival to first scheduled."""
        return None if self.first_scheduled_time is None else self.first_scheduled_time - self.arrival_time


@dataclass(frozen=True)
class Logprob:
    """vLLM's Logprob: a token's raw log-probability, its rank (1 = most likely) and its text."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass(frozen=True)
class CompletionOutput:
    """One completion of a request, in vLLM's shape (n = 1: one per request)."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None  # vLLM's words: stop | length | abort
    cumulative_logprob: float | None = None  # the sum of logprobs; None unless SamplingParams.logprobs was set
    logprobs: list[dict[int, Logprob]] | None = None  # per output token: the sampled token and the top ones
    stop_reason: int | str | None = None  # the stop token or stop string that ended it, if one did

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class RequestOutput:
    """vLLM's RequestOutput (request_id, prompt, prompt_token_ids, outputs, finished, metrics), with
    the first completion's fields also at the top level as before (text, token_ids, finish_reason)."""

    request_id: str
    prompt: str | None  # None when the prompt was given as token ids
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finish_reason: str | None  # Batchscope's words, as recorded: stopped | length | aborted | rejected
    reject_reason: str | None  # why a rejected prompt was refused
    metrics: RequestMetrics
    prompt_logprobs: None = None  # not computed
    num_cached_tokens: int = 0  # no prefix caching

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def text(self) -> str:
        """The generated text (special tokens skipped); empty without a tokenizer."""
        return self.outputs[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids


# vLLM LLM arguments a script commonly passes. Parallelism must be 1 (one device here); the flags
# change nothing: the engine is always eager (no CUDA graphs), only known architectures load (no
# model code is ever fetched or run), and stats are kept per run, not logged.
_VLLM_SINGLE_DEVICE = ("tensor_parallel_size", "pipeline_parallel_size")
_VLLM_NO_EFFECT_FLAGS = ("enforce_eager", "trust_remote_code", "disable_log_stats")


def _take_vllm_neutral_args(engine_args: dict[str, Any]) -> None:
    """Remove those arguments from engine_args, refusing a value that would ask for something else."""
    for name in _VLLM_SINGLE_DEVICE:
        value = engine_args.pop(name, 1)
        if value != 1 or isinstance(value, bool):
            raise ConfigError(f"{name} must be 1 (this engine runs on one device), got {value!r}")
    for name in _VLLM_NO_EFFECT_FLAGS:
        value = engine_args.pop(name, False)
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")


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
        """engine_args: EngineConfig fields by vLLM name (max_num_seqs, block_size, num_gpu_blocks, ...),
        and vLLM's arguments that change nothing on one device (_take_vllm_neutral_args)."""
        _take_vllm_neutral_args(engine_args)
        unknown = sorted(set(engine_args) - set(EngineArgs.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown parameter(s): {', '.join(unknown)}")
        self.model_name = model
        self.engine_args = EngineArgs(model=model, device=device, dtype=dtype, seed=seed,
                                      cpu_memory_gib=cpu_memory_gib, **engine_args)
        real = build_real_engine(self.engine_args)
        self.loaded: LoadedModel = real.loaded
        self.kv_pool: KVPoolChoice = real.kv_pool
        _log.info(self.kv_pool.describe())  # the line `run` prints
        if self.kv_pool.warning():
            _log.warning(self.kv_pool.warning())
        self.config = real.config
        self.executor = real.executor
        self._real = real
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
        use_tqdm: bool = True,
        lora_request: object = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt (continuously batched); outputs in prompt order. As vLLM's,
        use_tqdm shows a bar of processed prompts on stderr."""
        if lora_request is not None:
            raise SamplingParamsError("LoRA adapters are not supported; leave lora_request unset")
        texts, token_lists = self._normalize(prompts)
        params = self._params_for(sampling_params, len(token_lists))
        if self.loaded.tokenizer is None and any(p.stop for p in params):
            raise SamplingParamsError(f"stop strings need a tokenizer to decode the text, and {self.model_name} "
                                      f"has none; use stop_token_ids")
        recorder = self._recorder(len(token_lists)) if self.record else None
        clock = WallClock()  # after opening the database: that is not the requests' time
        engine = Engine(self.config, self.executor, clock, recorder)
        ids: list[str] = []
        for ids_, p in zip(token_lists, params, strict=True):
            rid = str(self._next_id)
            self._next_id += 1
            ids.append(rid)
            engine.add_request(Request(rid, ids_, with_model_eos(p, self.executor.extra_eos_token_ids),
                                       arrival_time=clock.now(),
                                       eos_token_id=self.executor.eos_token_id))
        stops = StopStrings(self.loaded.tokenizer)
        for rid in ids:
            stops.watch(engine.requests[rid])
        bar = tqdm(total=len(ids), desc="Processed prompts", unit="prompt", disable=not use_tqdm)
        try:
            scheduler = engine.scheduler
            while scheduler.has_unfinished_requests():
                snapshot = engine.step()
                stops.after_step(engine)
                if snapshot is None and scheduler.has_unfinished_requests():
                    raise EngineStalledError(f"no request could be scheduled with "
                                             f"{scheduler.get_num_unfinished_requests()} unfinished")
                bar.update(len(ids) - scheduler.get_num_unfinished_requests() - bar.n)
            summary = engine.finish()
        except BaseException as exc:
            if recorder is not None:
                recorder.finish("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            bar.close()
        if recorder is not None:
            recorder.finish("finished", summary=summary.to_dict())
            self.last_run_id = recorder.run_id
        self.last_summary = summary
        # The last finishes never reach the executor through a next schedule(): drop their state here.
        self.executor.sampler.drop(ids)
        return [self._output(engine.requests[rid], text, tokens, stops.ended(rid))
                for rid, text, tokens in zip(ids, texts, token_lists, strict=True)]

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        lora_request: object = None,
        chat_template: str | None = None,
        chat_template_content_format: str = "auto",
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: object = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        mm_processor_kwargs: object = None,
    ) -> list[RequestOutput]:
        """vLLM's LLM.chat, its arguments in its order: one conversation (a list of {"role", "content"}
        messages) or a list of them, rendered with the tokenizer's chat template (or the documented
        plain format where it has none, engine.chat_prompt) and generated like generate's prompts;
        outputs in order. Text parts of a message are joined by newlines (the "string" format)."""
        if tools is not None:
            raise SamplingParamsError("tools are not supported; leave tools unset")
        if mm_processor_kwargs is not None:
            raise SamplingParamsError("multimodal inputs are not supported; leave mm_processor_kwargs unset")
        if chat_template_content_format not in ("auto", "string"):
            raise SamplingParamsError(f"chat_template_content_format must be 'auto' or 'string' (text only), got "
                                      f"{chat_template_content_format!r}")
        tokenizer = self.loaded.tokenizer
        if tokenizer is None:
            raise ValueError(f"chat needs a tokenizer to render the messages, and {self.model_name} has none; "
                             f"use generate with prompt_token_ids")
        if not messages:
            raise ValueError("messages is empty: give a conversation or a list of them")
        conversations = [messages] if isinstance(messages[0], Mapping) else list(messages)
        prompts: list[dict[str, Any]] = []
        for conv in conversations:
            text, ids = chat_prompt(tokenizer, conversation(conv), add_generation_prompt,  # type: ignore[arg-type]
                                    continue_final_message, chat_template, chat_template_kwargs)
            prompts.append({"prompt": text, "prompt_token_ids": ids})
        return self.generate(prompts, sampling_params, use_tqdm=use_tqdm, lora_request=lora_request)

    def shutdown(self) -> None:
        self.executor.shutdown()

    # -- helpers --------------------------------------------------------------------------------
    def _normalize(self, prompts: Prompts) -> tuple[list[str | None], list[list[int]]]:
        """(text or None, token ids) per prompt, from any of vLLM's prompt forms."""
        if isinstance(prompts, (bytes, bytearray)) or not isinstance(prompts, (str, Mapping, Sequence)):
            raise ValueError(f"prompts must be a string, a dict with 'prompt' or 'prompt_token_ids', a list of token "
                             f"ids, or a list of those; got {type(prompts).__name__}")
        single = isinstance(prompts, (str, Mapping)) or (
            isinstance(prompts, Sequence) and len(prompts) > 0 and isinstance(prompts[0], int))
        items: list[Any] = [prompts] if single else list(prompts)  # type: ignore[arg-type]
        texts: list[str | None] = []
        tokens: list[list[int]] = []
        for p in items:
            if isinstance(p, Mapping):
                if "prompt_token_ids" in p:
                    texts.append(p.get("prompt"))
                    tokens.append(_token_ids(p["prompt_token_ids"]))
                elif isinstance(p.get("prompt"), str):
                    texts.append(p["prompt"])
                    tokens.append(list(self.executor.encode(p["prompt"])))
                else:
                    raise ValueError(f"a prompt dict needs 'prompt' (text) or 'prompt_token_ids', got keys "
                                     f"{sorted(p)}")
            elif isinstance(p, str):
                texts.append(p)
                tokens.append(list(self.executor.encode(p)))
            else:
                texts.append(None)
                tokens.append(_token_ids(p))
        return texts, tokens

    @staticmethod
    def _params_for(sampling_params: SamplingParams | Sequence[SamplingParams] | None, n: int) -> list[SamplingParams]:
        if sampling_params is None:
            return [SamplingParams()] * n
        if isinstance(sampling_params, SamplingParams):
            return [sampling_params] * n
        if not isinstance(sampling_params, Sequence) or not all(isinstance(p, SamplingParams) for p in sampling_params):
            raise ValueError("sampling_params must be a SamplingParams or a list of them, one per prompt; got "
                             f"{type(sampling_params).__name__} (a dict: SamplingParams(**it))")
        params = list(sampling_params)
        if len(params) != n:
            raise ValueError(f"got {len(params)} SamplingParams for {n} prompts; give one, or one per prompt")
        return params

    def _recorder(self, num_prompts: int) -> RunRecorder:
        sched = self.config.scheduler
        info = RunInfo(
            name=f"LLM.generate {self.model_name} ({num_prompts} prompts, {sched.max_num_seqs} seqs)",
            mode="real", batching=sched.batching, config=self._real.record_config(), model=self.model_name,
            workload=f"LLM.generate: {num_prompts} prompts", pid=os.getpid(),
        )
        return sqlalchemy_recorder(self.db, info, self.executor.describe())

    def _output(self, req: Request, prompt: str | None, prompt_ids: list[int],
                stopped_by: tuple[str, str] | None) -> RequestOutput:
        """stopped_by: (text before it, the stop string) when a stop string ended the request."""
        tokens = list(req.output_token_ids)
        text = self.executor.decode(tokens) if self.loaded.tokenizer is not None and tokens else ""
        reason = req.status.finish_reason
        stop: int | str | None = tokens[-1] if reason == "stopped" and tokens and \
            tokens[-1] in req.sampling_params.stop_token_ids else None
        if stopped_by is not None:
            text, stop = stopped_by
        logprobs = self._logprobs(req) if req.sampling_params.logprobs is not None else None
        completion = CompletionOutput(0, text, tokens, VLLM_FINISH_REASONS.get(reason or ""), stop_reason=stop,
                                      logprobs=logprobs,
                                      cumulative_logprob=None if logprobs is None else
                                      sum(entry.logprob for entry in req.output_logprobs))
        return RequestOutput(
            request_id=req.request_id,
            prompt=prompt,
            prompt_token_ids=prompt_ids,
            outputs=[completion],
            finish_reason=reason,
            reject_reason=req.reject_reason,
            metrics=RequestMetrics(req.arrival_time, req.first_scheduled_time, req.first_token_time,
                                   req.finish_time, req.num_preemptions),
        )

    def _logprobs(self, req: Request) -> list[dict[int, Logprob]]:
        """vLLM's per-token dicts: the sampled token and the top ones, each with its text."""
        tokenizer = self.loaded.tokenizer

        def text(token: int) -> str | None:  # special tokens named, as vLLM decodes one token
            return None if tokenizer is None else str(tokenizer.decode([token]))

        return [{token: Logprob(lp, rank, text(token)) for token, (lp, rank) in entry.as_dict().items()}
                for entry in req.output_logprobs]


def _token_ids(values: Any) -> list[int]:
    try:
        ids = [int(t) for t in values]
    except (TypeError, ValueError):
        raise ValueError(f"prompt_token_ids must be a list of whole numbers, got {values!r:.60}") from None
    if not ids:
        raise ValueError("a prompt needs at least one token id")
    return ids


def sqlalchemy_recorder(db: str | None, info: RunInfo, executor_facts: dict[str, Any]) -> RunRecorder:
    """The one place engine/ reaches for storage: LLM(record=True) records through storage's
    SQLAlchemy recorder, imported only then (the library never imports storage otherwise)."""
    from storage.database import open_for_write
    from storage.recorder import Recorder

    return Recorder(open_for_write(db), info, executor_facts=executor_facts)
