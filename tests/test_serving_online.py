"""The online engine loop on its own (no HTTP): rotation into consecutive runs, min_tokens, a sink
that raises, aborts before and after admission, and what each leaves in the recording."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.executors.cost_model import LinearCostModel
from engine.online import (
    FinishedStats,
    NotAcceptingError,
    OnlineEngine,
    OnlineRequest,
    RequestOutput,
    Rotation,
    StepReport,
)
from engine.sampling_params import SamplingParams
from serving.recording import ServedRecording
from serving.simulated_serving import SleepingExecutor
from tests.serving_helpers import previous_run, recorded_requests, recorded_run, run_source

CONFIG = EngineConfig(SchedulerConfig(max_model_len=256), CacheConfig(num_gpu_blocks=64))


class Sink:
    def __init__(self, on_output: Callable[[RequestOutput], None] | None = None, stop_at: int | None = None) -> None:
        self.outputs: list[RequestOutput] = []
        self.admission: tuple[int | None, str | None] | None = None
        self.done = threading.Event()
        self._on_output = on_output
        self._stop_at = stop_at  # stop the request once it has this many tokens (as a stop string would)

    def admitted(self, run_id: int | None, reject_reason: str | None) -> None:
        self.admission = (run_id, reject_reason)
        if reject_reason is not None:
            self.done.set()

    def output(self, out: RequestOutput) -> bool:
        self.outputs.append(out)
        if self._on_output is not None:
            self._on_output(out)
        if out.finish_reason is not None:
            self.done.set()
        if self._stop_at is not None and out.num_output_tokens >= self._stop_at:
            self.done.set()
            return True
        return False

    @property
    def tokens(self) -> int:
        return self.outputs[-1].num_output_tokens if self.outputs else 0


def _loop(db: Path, rotation: Rotation | None = None, step_s: float = 0.002,
          observer: Callable[[StepReport], None] | None = None) -> tuple[OnlineEngine, ServedRecording]:
    executor = SleepingExecutor(LinearCostModel(coefficients={"intercept": step_s}))
    description = {"name": "online test", "mode": "simulated", "batching": "continuous", "config": CONFIG.to_dict(),
                   "model": "sim", "workload": "online test"}
    recording = ServedRecording(str(db), description, "http://test", executor.describe())
    loop = OnlineEngine(CONFIG, executor, recording, rotation, observer)
    loop.start()
    return loop, recording


def _request(rid: str, max_tokens: int, **params: object) -> OnlineRequest:
    return OnlineRequest(rid, list(range(1000, 1010)), SamplingParams(max_tokens=max_tokens, **params))  # type: ignore[arg-type]


def test_rotation_starts_a_new_run_once_the_engine_is_empty(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    loop, recording = _loop(db, Rotation(every_steps=5))
    second = Sink()

    def submit_second(out: RequestOutput) -> None:
        if out.num_output_tokens == 6:  # run 1 is past its 5 steps and still busy: "b" waits for run 2
            loop.submit(_request("b", 4), second)

    first = Sink(submit_second)
    loop.submit(_request("a", 12), first)
    assert first.done.wait(30) and second.done.wait(30)
    loop.drain(10)
    assert loop.join(30) and loop.status == "finished"
    recording.dispose()
    run_a, run_b = loop.run_ids
    assert run_b == run_a + 1
    assert first.admission == (run_a, None) and second.admission == (run_b, None)
    assert list(recorded_requests(db, run_a)["request_id"]) == ["a"]
    rows_b = recorded_requests(db, run_b)
    assert list(rows_b["request_id"]) == ["b"] and list(rows_b["output_len"]) == [4]
    assert rows_b["arrival_time"].iloc[0] == 0.0  # the run starts at the receipt of the request it held
    assert rows_b["first_scheduled_time"].iloc[0] > 0.0  # it waited for run 1 to empty
    part_two = recorded_run(db, run_b)
    assert part_two["status"] == "finished" and previous_run(part_two) == run_a
    assert run_source(part_two) == "served"
    assert recorded_run(db, run_a)["status"] == "finished"


def test_stop_strings_handed_to_the_engine_itself_are_refused(tmp_path: Path) -> None:
    # The engine sees token ids only; a stop string it were handed would be silently ignored.
    loop, recording = _loop(tmp_path / "s.db")
    with pytest.raises(ValueError, match="stop strings are applied by the output sink"):
        loop.submit(_request("s", 4, stop=["x"]), Sink())
    loop.close()
    recording.dispose()


def test_min_tokens_holds_off_stop_tokens(tmp_path: Path) -> None:
    loop, recording = _loop(tmp_path / "m.db")
    sinks = {n: Sink() for n in (0, 3)}
    for n, sink in sinks.items():  # simulated tokens are all id 0, a stop token here
        loop.submit(OnlineRequest(f"min{n}", [1000] * 5, SamplingParams(max_tokens=10, stop_token_ids=(0,),
                                                                        min_tokens=n)), sink)
    assert all(s.done.wait(30) for s in sinks.values())
    loop.close()
    recording.dispose()
    assert [(s.tokens, s.outputs[-1].finish_reason) for s in sinks.values()] == [(1, "stopped"), (4, "stopped")]
    rows = recorded_requests(tmp_path / "m.db", loop.run_ids[0]).set_index("request_id")
    assert rows.loc["min3", "output_len"] == 4 and rows.loc["min3", "finish_reason"] == "stopped"


def _serve_until_drained(db: Path,
                         requests: list[tuple[OnlineRequest, Sink]]) -> tuple[OnlineEngine, list[FinishedStats]]:
    """Serve these requests, drain, and close the run; the loop and what its observer heard finish."""
    finished: list[FinishedStats] = []
    loop, recording = _loop(db, observer=lambda report: finished.extend(report.finished))
    for request, sink in requests:
        loop.submit(request, sink)
    assert all(sink.done.wait(30) for _, sink in requests)
    loop.drain(10)
    assert loop.join(30) and loop.status == "finished"
    recording.dispose()
    return loop, finished


def test_a_sink_that_stops_its_request_ends_it_as_stopped(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    stopped, other = Sink(stop_at=3), Sink()
    loop, finished = _serve_until_drained(db, [(_request("stopped", 50, ignore_eos=True), stopped),
                                               (_request("other", 8, ignore_eos=True), other)])
    assert stopped.tokens == 3  # nothing reached the sink after its stop
    assert other.outputs[-1].finish_reason == "length" and other.tokens == 8
    rows = recorded_requests(db, loop.run_ids[0]).set_index("request_id")
    assert (rows.loc["stopped", "finish_reason"], rows.loc["stopped", "output_len"]) == ("stopped", 3)
    assert {f.request_id: f.finish_reason for f in finished} == {"stopped": "stopped", "other": "length"}


def test_a_stop_on_the_token_that_reaches_max_tokens_is_recorded_as_stopped(tmp_path: Path) -> None:
    """The engine finished it by length; its sink found a stop string in that same last token (as a
    server's does once it decodes the text): the client hears stop, and the run records stopped."""
    db = tmp_path / "t.db"
    loop, finished = _serve_until_drained(db, [(_request("at-limit", 4, ignore_eos=True), Sink(stop_at=4)),
                                               (_request("before-limit", 4, ignore_eos=True), Sink(stop_at=2))])
    rows = recorded_requests(db, loop.run_ids[0]).set_index("request_id")
    assert (rows.loc["at-limit", "finish_reason"], rows.loc["at-limit", "output_len"]) == ("stopped", 4)
    assert (rows.loc["before-limit", "finish_reason"], rows.loc["before-limit", "output_len"]) == ("stopped", 2)
    assert {f.request_id: f.finish_reason for f in finished} == {"at-limit": "stopped", "before-limit": "stopped"}


class _BrokenRecording:
    """A RunRecording whose writes fail from the third step on (a database gone away)."""

    run_id = None

    def __init__(self) -> None:
        self.steps = 0
        self.closed_as: tuple[str, str | None] | None = None

    @property
    def recorder(self) -> _BrokenRecording:
        return self

    def record(self, snapshot: object) -> None:
        self.steps += 1
        if self.steps >= 3:
            raise OSError("disk I/O error")

    def record_tail(self, *rows: object) -> None:
        pass

    def flush(self) -> None:
        pass

    def finish(self, status: str, summary: object, error: str | None) -> None:
        self.closed_as = (status, error)


def test_a_step_that_fails_outside_the_model_ends_the_loop_as_failed() -> None:
    recording = _BrokenRecording()
    loop = OnlineEngine(CONFIG, SleepingExecutor(LinearCostModel(coefficients={"intercept": 0.002})),
                        lambda segment: recording)  # type: ignore[arg-type,return-value]
    loop.start()
    sink = Sink()
    loop.submit(_request("r", 50, ignore_eos=True), sink)
    assert loop.join(30) and loop.status == "failed" and "disk I/O error" in (loop.error or "")
    assert sink.outputs[-1].finish_reason == "error" and "disk I/O error" in (sink.outputs[-1].error or "")
    assert recording.closed_as is not None and recording.closed_as[0] == "failed"
    with pytest.raises(NotAcceptingError, match="engine failed"):
        loop.submit(_request("late", 2), Sink())


def test_a_sink_that_raises_fails_only_its_own_request(tmp_path: Path) -> None:
    loop, recording = _loop(tmp_path / "s.db")

    def explode(out: RequestOutput) -> None:
        if out.finish_reason is None:
            raise UnicodeError("a detokenizer bug")

    bad, good = Sink(explode), Sink()
    loop.submit(_request("bad", 20), bad)
    loop.submit(_request("good", 20), good)
    assert bad.done.wait(30) and good.done.wait(30)
    loop.close()
    recording.dispose()
    assert bad.outputs[-1].finish_reason == "error" and "detokenizer bug" in (bad.outputs[-1].error or "")
    assert good.outputs[-1].finish_reason == "length" and good.tokens == 20
    rows = recorded_requests(tmp_path / "s.db", loop.run_ids[0]).set_index("request_id")
    assert rows.loc["bad", "finish_reason"] == "aborted" and rows.loc["good", "finish_reason"] == "length"


def test_aborts_before_and_after_admission_are_recorded(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    loop, recording = _loop(db, step_s=0.01)
    running = Sink()
    loop.submit(_request("running", 200, ignore_eos=True), running)
    while running.tokens < 2:
        running.done.wait(0.01)
    loop.abort("running")
    assert running.done.wait(30) and running.outputs[-1].finish_reason == "aborted"
    loop.abort("never-sent")  # unknown ids are ignored
    rejected = Sink()
    loop.submit(OnlineRequest("too-long", [1000] * 300, SamplingParams(max_tokens=1)), rejected)
    assert rejected.done.wait(30) and rejected.admission is not None
    assert "max_model_len" in (rejected.admission[1] or "")
    loop.close()
    recording.dispose()
    assert loop.status == "finished"  # nothing was running when it closed
    rows = recorded_requests(db, loop.run_ids[0]).set_index("request_id")
    assert rows.loc["running", "finish_reason"] == "aborted" and 2 <= rows.loc["running", "output_len"] < 200
    assert rows.loc["too-long", "finish_reason"] == "rejected"


def test_abort_all_marks_the_run_aborted(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    loop, recording = _loop(db, step_s=0.01)
    sink = Sink()
    loop.submit(_request("long", 500, ignore_eos=True), sink)
    while sink.tokens < 1:
        sink.done.wait(0.01)
    loop.abort_all()
    assert loop.join(30)
    recording.dispose()
    assert loop.status == "aborted" and sink.outputs[-1].finish_reason == "aborted"
    assert recorded_run(db, loop.run_ids[0])["status"] == "aborted"
