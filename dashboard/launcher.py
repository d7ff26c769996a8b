"""Every `python -m engine` command line the dashboard starts, built from typed inputs, and the
processes that run them.

A form's values become a typed request (RunForm, WhatIfRequest, SweepRequest, TuneRequest) whose validate()
checks them without loading a model (the engine's own config rules, through EngineArgs, plus the
form's bounds) and whose argv() is an argument list, never a shell string, never a user-chosen
path or model file. A started engine runs in its own session, so it outlives the page and a
Ctrl-C in the dashboard's terminal does not reach it; its output goes to a log file so a run
that fails to start can say why.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dashboard import learn_plan, settings
from engine.config import ConfigError, EngineConfig
from engine.engine_args import EngineArgs

MODES = ("real", "simulated")
MODELS = ("tiny", "smollm2")
WORKLOADS = ("mixed", "uniform", "azure")
POLICIES = ("fcfs", "priority", "sjf")
PREEMPTION_MODES = ("recompute", "swap")
BATCHING = ("continuous", "static")
# The form's bounds (the widgets' ranges): what a dashboard user may ask of a local machine.
LIMITS = {
    "num_prompts": (1, 20_000),
    "max_num_seqs": (1, 1024),
    "max_num_batched_tokens": (16, 131_072),
    "num_gpu_blocks": (16, 1_000_000),
    "swap_space": (0, 1_000_000),
    "max_model_len": (64, 32_768),
}
MAX_NAME = 80
SWEEP_PARAMS = ("max_num_seqs", "max_num_batched_tokens", "num_gpu_blocks", "request_rate", "batching")
SWEEP_REQUEST_RATE = 20.0  # arrivals of a sweep over an engine parameter: enough to load the batch


class LaunchError(ValueError):
    """The values cannot start a run; the message names the field and the fix."""


def _engine_flags(args: EngineArgs) -> list[str]:
    """EngineArgs.to_argv() without the model: `simulate` takes the config flags alone."""
    argv = args.to_argv()
    i = argv.index("--model")
    return argv[:i] + argv[i + 2:]


def _check_config(build: Callable[[], EngineConfig]) -> EngineConfig:
    """Run a config builder; the engine's ConfigError (it names the fix) becomes a LaunchError."""
    try:
        return build()
    except ConfigError as exc:
        raise LaunchError(str(exc)) from exc


@dataclass(frozen=True)
class RunForm:
    """The run form's values. engine_args() and workload_argv() are what gets launched."""

    mode: str = "real"
    model: str = "tiny"
    workload: str = "mixed"
    num_prompts: int = 200
    request_rate: float | None = 8.0  # None: all requests at t=0
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 1024
    max_model_len: int = 1024
    num_gpu_blocks: int | None = None  # None: the engine decides (from memory, or its default)
    enable_chunked_prefill: bool = True
    policy: str = "fcfs"
    preemption_mode: str = "recompute"
    swap_space: int = 0
    batching: str = "continuous"
    name: str = ""
    workload_file: Path | None = None  # a workload the dashboard wrote itself (the demo); the form never sets it

    def engine_args(self) -> EngineArgs:
        return EngineArgs(model=self.model, max_num_seqs=self.max_num_seqs,
                          max_num_batched_tokens=self.max_num_batched_tokens, max_model_len=self.max_model_len,
                          num_gpu_blocks=self.num_gpu_blocks, swap_space=self.swap_space,
                          enable_chunked_prefill=self.enable_chunked_prefill, policy=self.policy,
                          preemption_mode=self.preemption_mode, batching=self.batching)

    def validate(self) -> EngineConfig:
        """The config this form would run under; LaunchError naming the field and the fix."""
        for name, choices in (("mode", MODES), ("model", MODELS), ("workload", WORKLOADS)):
            if getattr(self, name) not in choices:
                raise LaunchError(f"{name} must be one of {', '.join(choices)}")
        for name, (lo, hi) in LIMITS.items():
            value = getattr(self, name)
            if value is None and name == "num_gpu_blocks":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise LaunchError(f"{name} must be a whole number from {lo} to {hi}")
        if self.request_rate is not None and not (0 < self.request_rate <= 10_000 and math.isfinite(self.request_rate)):
            raise LaunchError("request rate must be between 0 and 10,000 requests/s (or all at once)")
        if len(self.name) > MAX_NAME or not all(c.isprintable() for c in self.name):
            raise LaunchError(f"the name must be at most {MAX_NAME} printable characters")
        return _check_config(self.engine_args().create_engine_config)

    def workload_argv(self) -> list[str]:
        if self.workload_file is not None:
            return ["--workload", str(self.workload_file)]
        args = ["--workload", self.workload, "--num-prompts", str(self.num_prompts)]
        if self.request_rate is not None:
            args += ["--request-rate", f"{self.request_rate:g}"]
        if self.workload == "azure":
            # The trace is GPU-sized; shrink it for a CPU run as its README suggests.
            args += ["--max-requests", str(self.num_prompts), "--length-scale", "0.1", "--time-scale", "0.1"]
        return args

    def argv(self, db: str) -> list[str]:
        """The command line, after validate()."""
        engine = self.engine_args()
        verb, flags = ("run", engine.to_argv()) if self.mode == "real" else ("simulate", _engine_flags(engine))
        args = [sys.executable, "-m", "engine", verb, "--db", db, *self.workload_argv(), *flags]
        return [*args, "--name", self.name.strip()] if self.name.strip() else args


@dataclass(frozen=True)
class WhatIfRequest:
    """Re-run a recorded run's requests under changed parameters (and, with validate, for real)."""

    base_run_id: int
    base_config: dict[str, Any]  # the recorded run's config, by vLLM name
    changes: dict[str, Any]  # the parameters that differ from it
    validate_for_real: bool = False
    fit: str = "run"  # step costs: the base run's own fit, or "pooled" over every real run of its model and device

    def validate(self) -> EngineConfig:
        """The config the prediction runs under: the base's with the changes, as the CLI builds it."""
        recorded = EngineArgs.from_values(self.base_config).config_values()
        return _check_config(lambda: EngineConfig.from_record(recorded).replace(**self.changes))

    def argv(self, db: str) -> list[str]:
        args = [sys.executable, "-m", "engine", "simulate", "--db", db, "--from-run", str(int(self.base_run_id)),
                *_engine_flags(EngineArgs.from_values(self.changes)), "--fit", self.fit]
        return [*args, "--validate"] if self.validate_for_real else args


@dataclass(frozen=True)
class SweepRequest:
    """One simulated run per value of a parameter, on the mixed workload."""

    param: str
    values: str  # comma-separated, as typed
    num_prompts: int = 400

    def cleaned_values(self) -> list[str]:
        """The values, validated; LaunchError naming what is wrong."""
        if self.param not in SWEEP_PARAMS:
            raise LaunchError(f"the swept parameter must be one of {', '.join(SWEEP_PARAMS)}")
        items = [v.strip() for v in self.values.split(",") if v.strip()]
        if not items or len(items) > 32:
            raise LaunchError("give between 1 and 32 comma-separated values")
        for item in items:
            if self.param == "batching":
                ok = item in BATCHING
            elif self.param == "request_rate":
                ok = _is_float(item) and 0 < float(item) <= 10_000
            else:
                lo, hi = LIMITS[self.param]
                ok = item.isdigit() and lo <= int(item) <= hi
            if not ok:
                kind = "static or continuous" if self.param == "batching" else "numbers in the form's range"
                raise LaunchError(f"values of {self.param} must be {kind}; got {item!r}")
        return items

    def argv(self, db: str) -> list[str]:
        lo, hi = LIMITS["num_prompts"]
        if not lo <= self.num_prompts <= hi:
            raise LaunchError(f"num_prompts must be a whole number from {lo} to {hi}")
        args = [sys.executable, "-m", "engine", "sweep", "--db", db, "--param", self.param,
                "--values", ",".join(self.cleaned_values()), "--workload", "mixed",
                "--num-prompts", str(int(self.num_prompts))]
        return args if self.param == "request_rate" else [*args, "--request-rate", f"{SWEEP_REQUEST_RATE:g}"]


def _is_float(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def delete_run_argv(run_id: int, db: str) -> list[str]:
    return [sys.executable, "-m", "engine", "delete", str(int(run_id)), "--db", db]


def materialize_argv(search_id: int, point: int, db: str) -> list[str]:
    """Record a search point's steps as a normal run (it was stored as a summary only)."""
    return [sys.executable, "-m", "engine", "tune", "--materialize", f"{int(search_id)}:{int(point)}", "--db", db]


MAX_TUNE_POINTS = 512  # a search the form may start: seconds to a minute of simulation here


@dataclass(frozen=True)
class TuneRequest:
    """Search configurations over a recorded run's requests for the best goodput within the SLOs."""

    base_run_id: int
    slo_ms: dict[str, float]  # ttft / tpot / e2e -> threshold; a key left out is not constrained
    attainment_pct: float = 99.0
    max_num_seqs: str = "4,8,16,32,64"  # comma-separated, as typed
    max_num_batched_tokens: str = "256,512,1024,2048"
    try_chunked: bool = False  # also search enable_chunked_prefill=true,false
    fit: str = "run"  # step costs: the base run's own fit, or "pooled" over every real run of its model and device

    def search_args(self) -> list[str]:
        """The --search axes, validated; LaunchError naming what is wrong."""
        axes = [f"{name}={','.join(SweepRequest(name, getattr(self, name)).cleaned_values())}"
                for name in ("max_num_seqs", "max_num_batched_tokens")]
        axes += ["enable_chunked_prefill=true,false"] if self.try_chunked else []
        sizes = [len(a.split(",")) for a in axes]
        if math.prod(sizes) > MAX_TUNE_POINTS:
            raise LaunchError(f"that is {math.prod(sizes)} configurations; at most {MAX_TUNE_POINTS} from here "
                              "(the command line takes more)")
        return axes

    def slo_arg(self) -> str:
        if not self.slo_ms or set(self.slo_ms) - {"ttft", "tpot", "e2e"}:
            raise LaunchError("give at least one SLO threshold: TTFT, TPOT or E2E in milliseconds")
        for key, value in self.slo_ms.items():
            if not (math.isfinite(value) and 0 < value <= 3_600_000):
                raise LaunchError(f"the {key.upper()} threshold must be a positive number of milliseconds")
        return ",".join(f"{k}={v:g}" for k, v in self.slo_ms.items())

    def argv(self, db: str) -> list[str]:
        if not (math.isfinite(self.attainment_pct) and 0 < self.attainment_pct <= 100):
            raise LaunchError("the attainment must be a percentage above 0 and at most 100")
        return [sys.executable, "-m", "engine", "tune", "--db", db, "--from-run", str(int(self.base_run_id)),
                "--slo", self.slo_arg(), "--attainment", f"{self.attainment_pct:g}", "--fit", self.fit,
                "--search", *self.search_args()]


# -- processes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Launched:
    pid: int
    log_path: Path
    argv: list[str]


def launch(argv: list[str], label: str) -> Launched:
    """Start argv in its own session (it outlives the page) with output to a log file."""
    folder = settings.log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, cwd=settings.ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return Launched(proc.pid, log_path, argv)


def early_failure(launched: Launched, wait_s: float = 2.0, ready: Callable[[], bool] | None = None) -> str | None:
    """If the process died within wait_s, the last line of its output; None while it runs or succeeded.
    ready: stop waiting as soon as it says True (what the page waits for is there), polled at 2 Hz."""
    deadline = time.monotonic() + wait_s
    polled = 0.0
    while time.monotonic() < deadline:
        if ready is not None and time.monotonic() - polled >= 0.5:
            polled = time.monotonic()
            if ready():
                return None
        status = _exit_status(launched.pid)
        if status is not None:
            if status == 0:
                return None
            lines = launched.log_path.read_text(errors="replace").strip().splitlines()
            return lines[-1] if lines else f"the engine exited with status {status}"
        time.sleep(0.1)
    return None


def _exit_status(pid: int) -> int | None:
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None if _alive(pid) else 0
    return None if done == 0 else os.waitstatus_to_exitcode(status)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_engine_process(pid: int) -> bool:
    """Whether pid is a live `python -m engine` process (so a stale pid never signals a stranger)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"-m" in cmdline and b"engine" in cmdline


def stop(pid: int) -> bool:
    """Ask an engine to stop gracefully (it flushes and marks the run aborted)."""
    if not is_engine_process(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    return True


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    """Wait until pid has exited (reaping it when it is our child); whether it did within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _exit_status(pid) is not None:
            return True
        time.sleep(0.05)
    return False


# -- Learn lessons -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LessonCommand:
    """One command line of a lesson and the runs it records, by name."""

    argv: list[str]
    names: tuple[str, ...]
    real: bool


@dataclass(frozen=True)
class LessonRun:
    """Record one Learn lesson: its simulated runs (unit cost for the textbook numbers), then the
    real `tiny` runs beside them, one after another in one background process, so a click never
    sets real runs competing with each other for the CPU."""

    lesson: str

    def steps(self) -> tuple[learn_plan.LessonStep, ...]:
        if self.lesson not in learn_plan.PLANS:
            raise LaunchError(f"the lesson must be one of {', '.join(learn_plan.PLANS)}")
        return learn_plan.PLANS[self.lesson]

    def validate(self) -> None:
        """Every run's config (each swept value's too), by the engine's own rules."""
        for step in self.steps():
            config = _check_config(step.engine.create_engine_config)
            if step.sweep is None:
                continue
            for value in step.sweep.values:
                _check_config(functools.partial(config.replace, **{step.sweep.param: _swept_value(value)}))

    def commands(self, db: str, folder: Path) -> list[LessonCommand]:
        """Simulated commands first (seconds), then the real ones; workload files are read from
        folder (learn_plan.write_workloads writes them)."""
        ordered = sorted(self.steps(), key=lambda s: s.real)
        return [LessonCommand(_lesson_argv(s, db, folder), s.run_names(), s.real) for s in ordered]

    def argv(self, db: str, folder: Path) -> list[str]:
        """The background process that writes the workloads and runs commands() in turn."""
        self.steps()
        return [sys.executable, "-m", "dashboard.learn_runner", "--db", db, "--folder", str(folder), self.lesson]


def _swept_value(text: str) -> int | str:
    """A swept value as the engine takes it: the lessons sweep whole numbers and named choices."""
    return int(text) if text.isdigit() else text


def _lesson_argv(step: learn_plan.LessonStep, db: str, folder: Path) -> list[str]:
    engine = step.engine.to_argv() if step.real else [*_engine_flags(step.engine), "--cost-model", step.cost_model]
    if step.sweep is not None:
        verb = ["sweep", "--param", step.sweep.param, "--values", ",".join(step.sweep.values)]
        verb += ["--real"] if step.real else []
    else:
        verb = ["run" if step.real else "simulate"]
    return [sys.executable, "-m", "engine", *verb, "--db", db, *_lesson_workload_argv(step.workload, folder),
            *engine, "--name", step.name]


def _lesson_workload_argv(workload: str | learn_plan.Generated, folder: Path) -> list[str]:
    if isinstance(workload, str):
        return ["--workload", str(learn_plan.workload_path(folder, workload))]
    args = ["--workload", workload.kind, "--num-prompts", str(workload.num_prompts)]
    if workload.request_rate is not None:
        args += ["--request-rate", f"{workload.request_rate:g}"]
    for flag, span in (("--prompt-lens", workload.prompt_lens), ("--output-lens", workload.output_lens)):
        args += [flag, f"{span[0]}:{span[1]}"] if span else []
    for flag, value in (("--priority-levels", workload.priority_levels), ("--max-tokens-cap", workload.max_tokens_cap)):
        args += [flag, str(value)] if value is not None else []
    return args
