"""Start and stop engine processes from the dashboard.

The form's values are validated into a RunForm and turned into an argument list for
`python -m engine` (never a shell string, never a user-chosen path or model file), then started
as a background process that outlives the page. Its output goes to a log file so a run that
fails to start can say why.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dashboard import settings

MODES = ("real", "simulated")
MODELS = ("tiny", "smollm2")
WORKLOADS = ("mixed", "uniform", "azure")
POLICIES = ("fcfs", "priority", "sjf")
PREEMPTION_MODES = ("recompute", "swap")
BATCHING = ("continuous", "static")
LIMITS = {
    "num_prompts": (1, 20_000),
    "max_num_seqs": (1, 1024),
    "max_num_batched_tokens": (16, 131_072),
    "num_gpu_blocks": (16, 1_000_000),
    "swap_space": (0, 1_000_000),
    "max_model_len": (64, 32_768),
}
MAX_NAME = 80


class LaunchError(ValueError):
    """The form's values cannot start a run; the message names the field."""


@dataclass(frozen=True)
class RunForm:
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
    extra_args: tuple[str, ...] = field(default=())

    def validate(self) -> None:
        for name, choices in (("mode", MODES), ("model", MODELS), ("workload", WORKLOADS), ("policy", POLICIES),
                              ("preemption_mode", PREEMPTION_MODES), ("batching", BATCHING)):
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
        if self.preemption_mode == "swap" and self.swap_space == 0:
            raise LaunchError("swap preemption needs a swap space of at least one block")
        if len(self.name) > MAX_NAME or not all(c.isprintable() for c in self.name):
            raise LaunchError(f"the name must be at most {MAX_NAME} printable characters")

    def argv(self, db: str) -> list[str]:
        """The command line, after validate()."""
        verb = "run" if self.mode == "real" else "simulate"
        args = [sys.executable, "-m", "engine", verb, "--db", db,
                "--workload", self.workload, "--num-prompts", str(self.num_prompts),
                "--max-num-seqs", str(self.max_num_seqs),
                "--max-num-batched-tokens", str(self.max_num_batched_tokens),
                "--max-model-len", str(self.max_model_len),
                "--policy", self.policy, "--preemption-mode", self.preemption_mode,
                "--swap-space", str(self.swap_space), "--batching", self.batching,
                "--enable-chunked-prefill" if self.enable_chunked_prefill else "--no-enable-chunked-prefill"]
        if self.request_rate is not None:
            args += ["--request-rate", f"{self.request_rate:g}"]
        if self.num_gpu_blocks is not None:
            args += ["--num-gpu-blocks", str(self.num_gpu_blocks)]
        if self.workload == "azure":
            # The trace is GPU-sized; shrink it for a CPU run as its README suggests.
            args += ["--max-requests", str(self.num_prompts), "--length-scale", "0.1", "--time-scale", "0.1"]
        if self.mode == "real":
            args += ["--model", self.model]
        if self.name.strip():
            args += ["--name", self.name.strip()]
        return args


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


def early_failure(launched: Launched, wait_s: float = 2.0) -> str | None:
    """If the process died within wait_s, the last line of its output; None while it runs or succeeded."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
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


def delete_run_argv(run_id: int, db: str) -> list[str]:
    return [sys.executable, "-m", "engine", "delete", str(int(run_id)), "--db", db]


def demo_form() -> RunForm:
    """The first-launch demo: the tiny model, requests arriving over about a minute."""
    return RunForm(mode="real", model="tiny", workload="mixed", num_prompts=300, request_rate=6.0,
                   max_num_seqs=16, max_num_batched_tokens=512, max_model_len=1024, enable_chunked_prefill=True,
                   name="demo: tiny model, mixed workload, 6 req/s")
