"""Processes for bench_serving: servers started and always stopped, command lines timed, and the CPU
of other processes measured while this benchmark's own server stays alive.

bench.cpu_load.CpuLoadMeter counts this process and its finished children as its own; a server that
is still running would read as "other load", so RunMeter also subtracts the live processes it is
told about (their utime + stime from /proc/PID/stat, all threads).
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.cpu_load import machine_busy_ticks, own_ticks

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
_TICKS = os.sysconf("SC_CLK_TCK")
_SERVING = re.compile(r"serving `.*` at (http://\S+)/v1")
START_TIMEOUT_S = 300.0  # SmolLM2's first load converts its GGUF; a loaded machine is slow
STOP_TIMEOUT_S = 20.0


class BenchError(RuntimeError):
    """A command of the benchmark failed; the message carries its output's tail."""


def engine_env(threads: int) -> dict[str, str]:
    """torch sizes its intra-op pool from OMP_NUM_THREADS (the engine sets no thread count itself),
    so every engine process, in-process or serving, gets the same one."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}


def engine_cmd(*args: str) -> list[str]:
    return [PYTHON, "-m", "engine", *args]


def proc_ticks(pid: int) -> int | None:
    """utime + stime of a live process (all its threads), in jiffies; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(rest[11]) + int(rest[12])


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class RunMeter:
    """`with RunMeter([server_pid]) as m: ...`: m.others_cores (the machine's busy time less this
    process, its children that finished, and the live pids), m.live_cpu_s (each live pid's CPU), m.wall_s."""

    def __init__(self, live_pids: Sequence[int] = ()) -> None:
        self.live_pids = tuple(live_pids)
        self.others_cores = 0.0
        self.wall_s = 0.0
        self.live_cpu_s: dict[int, float] = {}

    def __enter__(self) -> RunMeter:
        self._live0 = {pid: proc_ticks(pid) or 0 for pid in self.live_pids}
        self._own0 = own_ticks() / _TICKS + children_cpu_s()
        self._busy0 = machine_busy_ticks()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy = (machine_busy_ticks() - self._busy0) / _TICKS
        self.wall_s = max(time.perf_counter() - self._t0, 1e-9)
        own = own_ticks() / _TICKS + children_cpu_s() - self._own0
        for pid, t0 in self._live0.items():
            t1 = proc_ticks(pid)
            self.live_cpu_s[pid] = ((t1 if t1 is not None else t0) - t0) / _TICKS
        self.others_cores = max(busy - own - sum(self.live_cpu_s.values()), 0.0) / self.wall_s


def wait_quiet(max_load: float, live_pids: Sequence[int] = (), timeout_s: float = 60.0) -> float:
    """Wait until other processes use at most max_load cores over half a second (or timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with RunMeter(live_pids) as m:
            time.sleep(0.5)
        if m.others_cores <= max_load or time.monotonic() >= deadline:
            return m.others_cores


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_timed(cmd: Sequence[str], env: dict[str, str], timeout_s: float) -> tuple[str, float]:
    """Run a command to completion; its stdout and the CPU seconds it used (its rusage as a child:
    nothing else of ours finishes meanwhile, the server lives on)."""
    cpu0 = children_cpu_s()
    try:
        done = subprocess.run(list(cmd), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"timed out after {timeout_s:g} s: {' '.join(cmd)}") from exc
    if done.returncode != 0:
        raise BenchError(f"exit {done.returncode}: {' '.join(cmd)}\n{_tail(done.stderr + done.stdout)}")
    return done.stdout, children_cpu_s() - cpu0


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


def _wait_for_url(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        match = _SERVING.search(text)
        if match:
            return match.group(1)
        if proc.poll() is not None:
            raise BenchError(f"the server exited with {proc.returncode} before serving:\n{_tail(text)}")
        time.sleep(0.1)
    raise BenchError(f"the server did not start within {timeout_s:g} s:\n{_tail(log.read_text(errors='replace'))}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (a drain; nothing runs) to its process group, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def served(serve_args: Sequence[str], env: dict[str, str]) -> AbstractContextManager[Server]:
    """`python -m engine serve ARGS` on a free loopback port (--port 0; the URL read from its log)."""
    return started(engine_cmd("serve", *serve_args, "--host", "127.0.0.1", "--port", "0", "--no-record"), env)


@contextmanager
def started(cmd: Sequence[str], env: dict[str, str]) -> Iterator[Server]:
    """A server process that prints `serving `NAME` at URL/v1` on stderr, in its own process group so
    it can be stopped whole, and stopped however the block ends."""
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)
        try:
            yield Server(proc, _wait_for_url(proc, log, START_TIMEOUT_S), log)
        finally:
            stop_server(proc)


def server_side_means_ms(url: str) -> dict[str, float]:
    """The server's own mean TTFT (receipt to first token) and ITL, from its /metrics histograms
    (sum / count): what the engine saw, before the HTTP path back to the client."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name.endswith(("_sum", "_count")) and rest:
            values[name] = float(rest.rsplit(" ", 1)[1])
    out = {}
    for key, metric in (("ttft", "vllm:time_to_first_token_seconds"), ("itl", "vllm:inter_token_latency_seconds")):
        count = values.get(f"{metric}_count", 0.0)
        out[f"server_{key}_mean_ms"] = values.get(f"{metric}_sum", 0.0) / count * 1e3 if count else float("nan")
    return out


def client_startup_cpu_s(env: dict[str, str]) -> float:
    """CPU a `bench serve` process spends before and after its requests (imports, set-up): one
    request against a closed port, so it fails at once."""
    cmd = engine_cmd("bench", "serve", "--base-url", "http://127.0.0.1:9", "--model", "m", "--num-prompts", "1")
    cpu0 = children_cpu_s()
    subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=120, check=False)
    return children_cpu_s() - cpu0


@dataclass
class RunRecord:
    """One measured run, redone ones included (the report lists every run)."""

    part: str  # overhead | simulated
    label: str  # e.g. "tiny, 8 streams" or "100 req/s"
    side: str  # in-process | http | served
    repeat: int
    attempt: int
    figures: dict[str, float]
    others_cores: float
    final: bool = False  # the attempt this repeat keeps (the first within the load limit, else the last)
    clean: bool = False  # within the load limit


def with_redo(measure: Callable[[], tuple[dict[str, float], float]], records: list[RunRecord], max_load: float,
              redo: int, part: str, label: str, side: str, repeat: int, live_pids: Sequence[int] = ()) -> RunRecord:
    """Measure once after waiting for a quiet machine; redo (up to `redo` more times) while other
    processes used more than max_load cores. Every attempt goes into `records`; returns the kept one."""
    for attempt in range(redo + 1):
        wait_quiet(max_load, live_pids)
        figures, others = measure()
        record = RunRecord(part, label, side, repeat, attempt, figures, others, clean=others <= max_load)
        records.append(record)
        print(f"[{part}] {label} {side} #{repeat} try {attempt}: "
              + ", ".join(f"{k} {v:.4g}" for k, v in figures.items()) + f"; others {others:.2f} cores",
              file=sys.stderr, flush=True)
        if record.clean:
            break
    record.final = True
    return record


def every_run(records: list[RunRecord]) -> list[str]:
    lines = ["## Every run", "", "Kept: the attempt a repeat keeps (the first within --max-load, else the last).", "",
             "| part | what | side | repeat | try | others (cores) | kept | figures |",
             "|---|---|---|---:|---:|---:|---|---|"]
    for r in records:
        figures = ", ".join(f"{k} {v:.4g}" for k, v in r.figures.items())
        lines.append(f"| {r.part} | {r.label} | {r.side} | {r.repeat} | {r.attempt} | {r.others_cores:.2f} | "
                     f"{'yes' if r.final else 'no'}{'' if r.clean else ' (loaded)'} | {figures} |")
    return lines
