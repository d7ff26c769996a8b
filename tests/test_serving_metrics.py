"""/metrics parsed with prometheus_client's text parser: vLLM's names, types and buckets, and counts
that agree with the run the server recorded."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import httpx2
import openai
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from serving.prometheus_metrics import NUM_PREEMPTIONS_BUCKETS
from tests.serving_helpers import recorded_requests, recorded_steps, serve, simulated, wait_for

EXPECTED_TYPES = {
    "vllm:num_requests_running": "gauge", "vllm:num_requests_waiting": "gauge", "vllm:kv_cache_usage_perc": "gauge",
    "vllm:num_requests_swapped": "gauge", "vllm:cpu_cache_usage_perc": "gauge",
    "vllm:num_preemptions": "counter", "vllm:prompt_tokens": "counter", "vllm:generation_tokens": "counter",
    "vllm:request_success": "counter",
    "vllm:time_to_first_token_seconds": "histogram", "vllm:inter_token_latency_seconds": "histogram",
    "vllm:request_time_per_output_token_seconds": "histogram", "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram", "vllm:request_prefill_time_seconds": "histogram",
    "vllm:request_decode_time_seconds": "histogram", "vllm:iteration_tokens_total": "histogram",
    "vllm:request_num_preemptions": "histogram",
}
# vLLM V1's boundaries (vllm/v1/metrics/loggers.py), written out here so that a changed constant fails.
VLLM_TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
             80.0, 160.0, 640.0, 2560.0)
VLLM_ITL = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
VLLM_REQUEST = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                480.0, 960.0, 1920.0, 7680.0)
BUCKETS = {"vllm:time_to_first_token_seconds": VLLM_TTFT, "vllm:inter_token_latency_seconds": VLLM_ITL,
           "vllm:request_time_per_output_token_seconds": VLLM_ITL,
           "vllm:e2e_request_latency_seconds": VLLM_REQUEST, "vllm:request_queue_time_seconds": VLLM_REQUEST,
           "vllm:request_prefill_time_seconds": VLLM_REQUEST, "vllm:request_decode_time_seconds": VLLM_REQUEST,
           "vllm:iteration_tokens_total": (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384),
           "vllm:request_num_preemptions": NUM_PREEMPTIONS_BUCKETS}


def _scrape(url: str) -> dict[str, tuple[str, list[Sample]]]:
    text = httpx2.get(f"{url}/metrics", timeout=30).text
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def _value(families: dict[str, tuple[str, list[Sample]]], name: str, sample: str, **labels: str) -> float:
    return sum(s.value for s in families[name][1] if s.name == sample and all(s.labels.get(k) == v
                                                                              for k, v in labels.items()))


def test_metrics_have_vllm_names_and_agree_with_the_recorded_run(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    # A small pool with preemption, so the preemption counters count something real.
    backend = simulated(step_s=0.002, num_gpu_blocks=12, max_num_seqs=8, max_model_len=128)
    with serve(backend, db, served_model_name="served-sim") as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=60)
        for i in range(3):
            client.completions.create(model="served-sim", prompt="hello " * (i + 3), max_tokens=6)
        # Simulated tokens all have id 0: a stop token after min_tokens, and a stop string in the text.
        stopped = client.completions.create(model="served-sim", prompt="hi", max_tokens=9,
                                            extra_body={"stop_token_ids": [0], "min_tokens": 2})
        assert stopped.choices[0].finish_reason == "stop" and stopped.usage.completion_tokens == 3  # type: ignore[union-attr]
        cut = client.completions.create(model="served-sim", prompt="hi", max_tokens=9, stop=["sim] ["])
        assert cut.choices[0].text == " [" and cut.choices[0].finish_reason == "stop"
        stream = client.completions.create(model="served-sim", prompt=[7] * 20, max_tokens=100, stream=True,
                                           extra_body={"ignore_eos": True})
        for i, _ in enumerate(stream):
            if i == 2:
                break
        stream.close()
        # Several at once in a 12-block pool: some are preempted.
        threads = [threading.Thread(target=client.completions.create,
                                    kwargs={"model": "served-sim", "prompt": [9] * 30, "max_tokens": 60})
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        families = wait_for(lambda: (f := _scrape(server.url)) and _value(
            f, "vllm:request_success", "vllm:request_success_total") == 10 and _value(
            f, "vllm:num_requests_running", "vllm:num_requests_running") == 0 and f, what="every request to end")
        run_id = server.run_id
    requests = recorded_requests(db, run_id)  # type: ignore[arg-type]
    steps = recorded_steps(db, run_id)  # type: ignore[arg-type]

    for name, kind in EXPECTED_TYPES.items():
        assert families[name][0] == kind, name
        assert all(s.labels.get("model_name") == "served-sim" and s.labels.get("engine") == "0"
                   for s in families[name][1]), name
    for name, buckets in BUCKETS.items():
        bounds = sorted({float(s.labels["le"]) for s in families[name][1] if s.name.endswith("_bucket")})
        assert bounds == [*map(float, buckets), math.inf], name

    reasons = requests["finish_reason"].value_counts().to_dict()
    assert reasons == {"length": 7, "stopped": 2, "aborted": 1}
    for vllm_reason, ours in (("stop", "stopped"), ("length", "length"), ("abort", "aborted")):
        assert _value(families, "vllm:request_success", "vllm:request_success_total",
                      finished_reason=vllm_reason) == reasons[ours]
    assert _value(families, "vllm:generation_tokens", "vllm:generation_tokens_total") == requests["output_len"].sum()
    assert _value(families, "vllm:generation_tokens", "vllm:generation_tokens_total") == \
        steps["num_output_tokens"].sum()
    started = requests[requests["first_token_time"].notna()]
    assert _value(families, "vllm:prompt_tokens", "vllm:prompt_tokens_total") == started["prompt_len"].sum()
    assert steps["num_preemptions"].sum() > 0
    assert _value(families, "vllm:num_preemptions", "vllm:num_preemptions_total") == steps["num_preemptions"].sum()
    assert _value(families, "vllm:request_num_preemptions", "vllm:request_num_preemptions_sum") == \
        requests["num_preemptions"].sum()
    assert _value(families, "vllm:iteration_tokens_total", "vllm:iteration_tokens_total_count") == len(steps)
    # vLLM's sum per step: prompts counted at their first token, plus the tokens generated.
    assert _value(families, "vllm:iteration_tokens_total", "vllm:iteration_tokens_total_sum") == \
        started["prompt_len"].sum() + requests["output_len"].sum()
    assert _value(families, "vllm:time_to_first_token_seconds", "vllm:time_to_first_token_seconds_count") == \
        len(started)
    assert _value(families, "vllm:e2e_request_latency_seconds", "vllm:e2e_request_latency_seconds_count") == \
        len(requests)
    # One inter-token gap per token after each request's first.
    assert _value(families, "vllm:inter_token_latency_seconds", "vllm:inter_token_latency_seconds_count") == \
        (started["output_len"] - 1).sum()
