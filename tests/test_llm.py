"""The offline LLM API: vLLM's shapes on Batchscope's engine, with the `tiny` model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.config import ConfigError
from engine.sampling_params import SamplingParams

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def llm() -> object:
    from engine.llm import LLM

    return LLM("tiny", max_num_seqs=4, num_gpu_blocks=64, block_size=8, enable_chunked_prefill=True,
               max_num_batched_tokens=32)


def test_importing_engine_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, engine; assert 'torch' not in sys.modules, 'torch was imported'; engine.LLM"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr


def test_generate_text_prompts_in_order_with_metrics(llm: object) -> None:
    prompts = ["Hello there", "A much longer prompt that will need more than one chunk to prefill", "Hi"]
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))  # type: ignore[attr-defined]
    assert [o.prompt for o in outs] == prompts
    assert [o.request_id for o in outs] == ["0", "1", "2"]
    tokenizer = llm.get_tokenizer()  # type: ignore[attr-defined]
    for o in outs:
        assert o.prompt_token_ids == tokenizer.encode(o.prompt)
        assert len(o.token_ids) == 5 and o.finish_reason == "length"
        assert o.text == tokenizer.decode(o.token_ids, skip_special_tokens=True)
        m = o.metrics
        assert 0 <= m.arrival_time <= m.first_scheduled_time <= m.first_token_time <= m.finish_time
        assert m.ttft == pytest.approx(m.first_token_time - m.arrival_time)
        assert m.e2e == pytest.approx(m.finish_time - m.arrival_time)


def test_greedy_is_the_same_alone_or_batched(llm: object) -> None:
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    prompts = [[5, 6, 7, 8, 9], [100] * 40, [42, 43]]
    batched = llm.generate(prompts, params)  # type: ignore[attr-defined]
    alone = [llm.generate([p], params)[0] for p in prompts]  # type: ignore[attr-defined]
    assert [o.token_ids for o in batched] == [o.token_ids for o in alone]
    assert batched[0].prompt is None and batched[1].prompt_token_ids == [100] * 40


def test_one_sampling_params_per_prompt(llm: object) -> None:
    outs = llm.generate(["a", "b"], [SamplingParams(max_tokens=2, ignore_eos=True),  # type: ignore[attr-defined]
                                     SamplingParams(max_tokens=7, ignore_eos=True, seed=3)])
    assert [len(o.token_ids) for o in outs] == [2, 7]
    with pytest.raises(ValueError, match="2 SamplingParams for 3 prompts"):
        llm.generate(["a", "b", "c"], [SamplingParams(), SamplingParams()])  # type: ignore[attr-defined]


def test_over_long_prompt_is_rejected_and_the_rest_complete() -> None:
    from engine.llm import LLM

    small = LLM("tiny", max_model_len=32, num_gpu_blocks=16, max_num_seqs=4)
    outs = small.generate([[7] * 40, [8] * 5], SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))
    assert outs[0].finish_reason == "rejected" and "max_model_len=32" in (outs[0].reject_reason or "")
    assert outs[0].token_ids == [] and outs[1].finish_reason == "length" and len(outs[1].token_ids) == 3


def test_unknown_engine_argument_is_named() -> None:
    from engine.llm import LLM

    with pytest.raises(ConfigError, match=r"unknown parameter.*max_num_sequences"):
        LLM("tiny", max_num_sequences=4)


def test_generate_can_record_a_run(tmp_path: Path) -> None:
    from engine.llm import LLM
    from storage.database import open_for_read
    from storage.queries import get_run, run_requests

    db = str(tmp_path / "llm.db")
    rec = LLM("tiny", max_num_seqs=2, num_gpu_blocks=32, record=True, db=db)
    rec.generate([[1, 2, 3], [4, 5, 6, 7]], SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
    assert rec.last_run_id is not None
    reader = open_for_read(db)
    run = get_run(reader, rec.last_run_id)
    assert run is not None and run["mode"] == "real" and run["status"] == "finished" and run["model"] == "tiny"
    assert sorted(run_requests(reader, rec.last_run_id)["output_len"]) == [4, 4]


def test_vllm_prompt_forms_and_request_output_shape(llm: object) -> None:
    """A script written for vLLM's LLM: string, {"prompt": ...} and {"prompt_token_ids": [...]}
    prompts, and RequestOutput.outputs[0].text / .token_ids / .finish_reason."""
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    outs = llm.generate(["Hello", {"prompt": "Hello"}, {"prompt_token_ids": [5, 6, 7]}], params)  # type: ignore[attr-defined]
    assert [o.prompt for o in outs] == ["Hello", "Hello", None]
    assert outs[2].prompt_token_ids == [5, 6, 7]
    for o in outs:
        completion = o.outputs[0]
        assert o.finished and completion.index == 0 and completion.finish_reason == "length"
        assert completion.token_ids == o.token_ids and completion.text == o.text and len(completion.token_ids) == 4
    assert outs[0].outputs[0].token_ids == outs[1].outputs[0].token_ids  # the same prompt either way
    single = llm.generate({"prompt_token_ids": [5, 6, 7]}, params)  # type: ignore[attr-defined]
    assert single[0].token_ids == outs[2].token_ids
    with pytest.raises(ValueError, match="prompt_token_ids must be a list of whole numbers"):
        llm.generate({"prompt_token_ids": ["x"]}, params)  # type: ignore[attr-defined]


def test_vllm_generate_arguments_and_fields_a_script_may_use(llm: object, capsys: pytest.CaptureFixture[str]) -> None:
    params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True, n=1, stop=None, logprobs=None)
    outs = llm.generate(["Hello", "World"], params, use_tqdm=True, lora_request=None)  # type: ignore[attr-defined]
    err = capsys.readouterr().err
    assert "Processed prompts" in err and "2/2" in err
    assert all(o.outputs[0].finished() and o.prompt_logprobs is None and o.num_cached_tokens == 0 for o in outs)
    llm.generate(["Hello"], params, use_tqdm=False)  # type: ignore[attr-defined]
    assert "Processed prompts" not in capsys.readouterr().err
    with pytest.raises(ValueError, match="LoRA adapters are not supported"):
        llm.generate(["Hello"], params, lora_request=object())  # type: ignore[attr-defined]


@pytest.mark.parametrize(("field", "value", "says"), [
    ("n", 2, "n must be 1"), ("stop", [3], "stop must be a string or a list of strings"),
    ("stop", ["\n", ""], "stop cannot contain an empty string"),
    ("logprobs", 21, "logprobs must be an integer from 0 to 20"),
    ("prompt_logprobs", 1, "prompt_logprobs are not computed"),
])
def test_vllm_sampling_fields_this_engine_lacks_are_refused_by_name(field: str, value: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        SamplingParams(**{field: value})  # type: ignore[arg-type]


def test_logprobs_come_in_vllms_shape(llm: object) -> None:
    params = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True, logprobs=2)
    with_lp, without = llm.generate(["Hello there", "Hello there"],  # type: ignore[attr-defined]
                                    [params, SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)])
    completion = with_lp.outputs[0]
    assert completion.token_ids == without.outputs[0].token_ids  # asking changes no token
    assert without.outputs[0].logprobs is None and without.outputs[0].cumulative_logprob is None
    assert completion.logprobs is not None and len(completion.logprobs) == 5
    tokenizer = llm.get_tokenizer()  # type: ignore[attr-defined]
    total = 0.0
    for token, entries in zip(completion.token_ids, completion.logprobs, strict=True):
        assert token in entries and 2 <= len(entries) <= 3  # the top two, and the sampled token if not among them
        assert entries[token].rank == 1  # greedy
        ranked = sorted(entries.values(), key=lambda e: e.rank)
        assert [e.rank for e in ranked] == [1, 2] and ranked[0].logprob >= ranked[1].logprob
        assert all(e.decoded_token == tokenizer.decode([t]) for t, e in entries.items())
        total += entries[token].logprob
    assert completion.cumulative_logprob == pytest.approx(total)


def test_stop_strings_cut_the_text_and_stop_the_request_as_vllm_does(llm: object) -> None:
    prompts = ["Hello there", "Hi"]
    full = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))  # type: ignore[attr-defined]
    text = full[0].outputs[0].text  # a random model's text: take a plain letter from its second half
    stop = next(c for c in text[len(text) // 2:] if c.isascii() and c.isalnum())
    at = text.find(stop)
    params = [SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, stop=stop),
              SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)]
    cut, other = llm.generate(prompts, params)  # type: ignore[attr-defined]
    out = cut.outputs[0]
    assert (out.text, out.finish_reason, out.stop_reason) == (text[:at], "stop", stop)
    # It stopped at the token that completed the string, not at max_tokens.
    assert out.token_ids == full[0].token_ids[:len(out.token_ids)] and len(out.token_ids) < 16
    assert stop in llm.get_tokenizer().decode(out.token_ids)  # type: ignore[attr-defined]
    assert other.outputs[0].token_ids == full[1].token_ids  # a batch-mate without stop strings runs on


def test_stop_strings_wait_for_min_tokens(llm: object) -> None:
    full = llm.generate("Hello there", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0]  # type: ignore[attr-defined]
    first = next(c for c in full.outputs[0].text if c.isascii() and c.isalnum())
    early = llm.generate("Hello there", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True,  # type: ignore[attr-defined]
                                                       stop=first))[0].outputs[0]
    assert early.stop_reason == first and first not in early.text and len(early.token_ids) < 12
    late = llm.generate("Hello there", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True,  # type: ignore[attr-defined]
                                                      stop=first, min_tokens=12))[0].outputs[0]
    assert late.token_ids == full.token_ids and late.finish_reason == "length"
    # The boundary: looked for once the request has more than min_tokens tokens, as vLLM does. The
    # stop string was found with n tokens; min_tokens n - 1 still finds it there, n does not.
    n = len(early.token_ids)
    edge = llm.generate("Hello there", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True,  # type: ignore[attr-defined]
                                                      stop=first, min_tokens=n - 1))[0].outputs[0]
    assert (edge.token_ids, edge.stop_reason) == (early.token_ids, first)
    past = llm.generate("Hello there", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True,  # type: ignore[attr-defined]
                                                      stop=first, min_tokens=n))[0].outputs[0]
    assert len(past.token_ids) > n


def test_chat_renders_conversations_and_generates_them_in_order(llm: object) -> None:
    from engine.chat_prompt import plain_chat_text

    tokenizer = llm.get_tokenizer()  # type: ignore[attr-defined]
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    first = [{"role": "user", "content": "Hi"}]
    second = [{"role": "system", "content": "Be brief."},
              {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]}]
    outs = llm.chat([first, second], params, use_tqdm=False)  # type: ignore[attr-defined]
    # tiny has no chat template: the documented plain format, text parts joined by newlines as vLLM's.
    assert [o.prompt for o in outs] == ["user: Hi\nassistant:", "system: Be brief.\nuser: Hello \nthere\nassistant:"]
    assert outs[1].prompt == plain_chat_text([second[0], {"role": "user", "content": "Hello \nthere"}])
    assert [o.prompt_token_ids for o in outs] == [tokenizer.encode(o.prompt) for o in outs]
    alone = llm.generate(outs[0].prompt, params, use_tqdm=False)[0]  # type: ignore[attr-defined]
    assert outs[0].outputs[0].token_ids == alone.outputs[0].token_ids
    single = llm.chat(first, params, use_tqdm=False)  # type: ignore[attr-defined]
    assert len(single) == 1 and single[0].prompt == outs[0].prompt


def test_chat_uses_a_given_template_and_continues_a_final_message(llm: object) -> None:
    template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                "{% if add_generation_prompt %}<assistant>{% endif %}")
    params = SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well"}]
    out = llm.chat(msgs[:1], params, use_tqdm=False, chat_template=template)[0]  # type: ignore[attr-defined]
    assert out.prompt == "<user>Hi<assistant>"
    assert out.prompt_token_ids == llm.get_tokenizer().encode(out.prompt, add_special_tokens=False)  # type: ignore[attr-defined]
    cont = llm.chat(msgs, params, use_tqdm=False, add_generation_prompt=False,  # type: ignore[attr-defined]
                    continue_final_message=True)[0]
    assert cont.prompt == "user: Hi\nassistant: Well"
    thinking = "{{ messages[0].content }}{% if enable_thinking %}<think>{% endif %}"
    out = llm.chat(msgs[:1], params, use_tqdm=False, chat_template=thinking,  # type: ignore[attr-defined]
                   chat_template_kwargs={"enable_thinking": True})[0]
    assert out.prompt == "Hi<think>"


@pytest.mark.parametrize(("messages", "kwargs", "says"), [
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], {}, "'image_url' part"),
    ([{"content": "no role"}], {}, "must be a dict with a 'role'"),
    ([{"role": "user", "content": "Hi"}], {"continue_final_message": True}, "cannot both be set"),
    ([{"role": "user", "content": "Hi"}], {"tools": [{"type": "function"}]}, "tools are not supported"),
    ([{"role": "user", "content": "Hi"}], {"chat_template_content_format": "openai"}, "'auto' or 'string'"),
    ([{"role": "user", "content": "Hi"}], {"mm_processor_kwargs": {}}, "multimodal inputs are not supported"),
    ([], {}, "messages is empty"),
])
def test_chat_refuses_what_it_cannot_render(llm: object, messages: list[dict[str, object]], kwargs: dict[str, object],
                                            says: str) -> None:
    with pytest.raises(ValueError, match=says):
        llm.chat(messages, SamplingParams(max_tokens=2), use_tqdm=False, **kwargs)  # type: ignore[attr-defined]


def test_vllm_arguments_that_change_nothing_on_one_device_are_taken_and_others_refused() -> None:
    from engine.llm import LLM

    llm = LLM("tiny", num_gpu_blocks=16, tensor_parallel_size=1, pipeline_parallel_size=1, enforce_eager=True,
              trust_remote_code=False, disable_log_stats=True)
    assert llm.config.scheduler.max_num_seqs > 0
    with pytest.raises(ConfigError, match="tensor_parallel_size must be 1"):
        LLM("tiny", tensor_parallel_size=2)
    with pytest.raises(ConfigError, match="enforce_eager must be True or False"):
        LLM("tiny", enforce_eager="yes")


def test_every_eos_id_of_the_generation_config_ends_a_request_as_vllm_does(tmp_path: Path) -> None:
    # Llama-3-Instruct lists several EOS ids (<|end_of_text|>, <|eot_id|>...); each must end a request.
    from transformers import GenerationConfig

    from engine.llm import LLM
    from tests.torch_models import VOCAB, save_llama

    folder = save_llama(tmp_path / "llama")
    prompt = {"prompt_token_ids": [5, 6, 7, 8, 9]}
    greedy = LLM(str(folder), num_gpu_blocks=32).generate(
        prompt, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True), use_tqdm=False)[0].outputs[0].token_ids
    k = next(i for i in range(1, len(greedy)) if greedy[i] not in greedy[:i])
    unused = next(t for t in range(VOCAB - 1, 0, -1) if t not in greedy)
    GenerationConfig(eos_token_id=[unused, greedy[k]]).save_pretrained(folder)
    llm = LLM(str(folder), num_gpu_blocks=32)
    assert llm.executor.eos_token_id == unused and llm.executor.extra_eos_token_ids == (greedy[k],)
    out = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)[0].outputs[0]
    assert (out.token_ids, out.finish_reason, out.stop_reason) == (greedy[:k + 1], "stop", greedy[k])
    kept = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True), use_tqdm=False)[0]
    assert kept.outputs[0].token_ids == greedy  # ignore_eos ignores all of them
