"""/metrics: vLLM's Prometheus names, types, labels and bucket boundaries, fed by the engine loop.

Names and buckets follow vLLM V1's vllm/v1/metrics/loggers.py; labels `model_name` and `engine`
(always "0": one engine per server). V1 has no swapping, so the swap gauges use V0's names
(vllm:num_requests_swapped, vllm:cpu_cache_usage_perc). Each server has its own CollectorRegistry,
so several servers can live in one process (tests).

Definitions, where the data allows a choice:
- vllm:prompt_tokens counts each request's prompt once, when its first token is produced (vLLM's
  IterationStats); recomputed prompts after a preemption are not counted again.
- vllm:iteration_tokens_total observes, each step, vLLM's IterationStats sum: the prompt tokens counted
  that step (as above: a request's whole prompt at its first token) plus the tokens generated. With
  chunked prefill that is not the forward's size, which the recorded steps keep (num_batched_tokens).
- Latency histograms of a finished request: e2e = arrival to finish, queue = arrival to first
  scheduled, prefill = first scheduled to first token, decode = first token to finish,
  request_time_per_output_token = decode / (output tokens - 1), 0 with one token (vLLM's).
- vllm:request_success counts finished requests by vLLM's finished_reason: stop, length, abort, and
  error for requests whose step failed (recorded as aborted).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from engine.online import StepReport

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
               80.0)
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                           240.0, 480.0, 960.0, 1920.0, 7680.0)
ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
NUM_PREEMPTIONS_BUCKETS = (1, 2, 3, 4, 5, 10, 20)
FINISHED_REASONS = ("stop", "length", "abort", "error")
_VLLM_REASON = {"stopped": "stop", "length": "length", "aborted": "abort", "error": "error"}
LABELS = ("model_name", "engine")


class ServingMetrics:
    """Prometheus collectors for one server; observe() runs on the engine thread after each step."""

    def __init__(self, model_name: str, engine_index: int = 0) -> None:
        disable_created_metrics()  # vLLM exposes no *_created samples
        self.registry = CollectorRegistry()
        values = (model_name, str(engine_index))
        reg = self.registry

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, LABELS, registry=reg).labels(*values)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, LABELS, registry=reg).labels(*values)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, LABELS, buckets=buckets, registry=reg).labels(*values)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.swapped = gauge("vllm:num_requests_swapped", "Number of requests swapped to CPU (vLLM V0's name).")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.cpu_usage = gauge("vllm:cpu_cache_usage_perc", "CPU KV-cache usage. 1 means 100 percent usage (V0).")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        success = Counter("vllm:request_success", "Count of successfully processed requests.",
                          (*LABELS, "finished_reason"), registry=reg)
        self.success = {reason: success.labels(*values, reason) for reason in FINISHED_REASONS}
        self.iteration_tokens = histogram("vllm:iteration_tokens_total",
                                          "Histogram of number of tokens per engine_step.", ITERATION_TOKENS_BUCKETS)
        self.ttft = histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              TTFT_BUCKETS)
        self.itl = histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                             ITL_BUCKETS)
        self.tpot = histogram("vllm:request_time_per_output_token_seconds",
                              "Histogram of time_per_output_token_seconds per request.", ITL_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                             REQUEST_LATENCY_BUCKETS)
        self.queue = histogram("vllm:request_queue_time_seconds",
                               "Histogram of time spent in WAITING phase for request.", REQUEST_LATENCY_BUCKETS)
        self.inference = histogram("vllm:request_inference_time_seconds",
                                   "Histogram of time spent in RUNNING phase for request.", REQUEST_LATENCY_BUCKETS)
        self.prefill = histogram("vllm:request_prefill_time_seconds",
                                 "Histogram of time spent in PREFILL phase for request.", REQUEST_LATENCY_BUCKETS)
        self.decode = histogram("vllm:request_decode_time_seconds",
                                "Histogram of time spent in DECODE phase for request.", REQUEST_LATENCY_BUCKETS)
        self.request_preemptions = histogram("vllm:request_num_preemptions",
                                             "Number of preemptions of each finished request.", NUM_PREEMPTIONS_BUCKETS)

    def observe(self, report: StepReport) -> None:
        self.running.set(report.num_running)
        self.waiting.set(report.num_waiting)
        self.swapped.set(report.num_swapped)
        self.kv_usage.set(report.gpu_cache_usage)
        self.cpu_usage.set(report.cpu_cache_usage)
        if report.stepped:
            self.iteration_tokens.observe(report.prompt_tokens + report.generation_tokens)
        if report.num_preemptions:
            self.preemptions.inc(report.num_preemptions)
        if report.prompt_tokens:
            self.prompt_tokens.inc(report.prompt_tokens)
        if report.generation_tokens:
            self.generation_tokens.inc(report.generation_tokens)
        for t in report.time_to_first_tokens:
            self.ttft.observe(t)
        for t in report.inter_token_latencies:
            self.itl.observe(t)
        for f in report.finished:
            self.success[_VLLM_REASON.get(f.finish_reason, "abort")].inc()
            self.e2e.observe(f.e2e)
            self.request_preemptions.observe(f.num_preemptions)
            if f.queue is not None:
                self.queue.observe(f.queue)
            if f.prefill is not None:
                self.prefill.observe(f.prefill)
            if f.inference is not None:
                self.inference.observe(f.inference)
            if f.decode is not None:
                self.decode.observe(f.decode)
                self.tpot.observe(f.decode / (f.output_len - 1) if f.output_len > 1 else 0.0)
