"""Other processes' CPU use during a measurement (stdlib only, so the vLLM driver can use it too).

Busy time of the whole machine from /proc/stat minus this process's own utime + stime from
/proc/self/stat (and its children's that finished meanwhile, so a measured `subprocess.run` counts
as its own) over the same interval, in cores (1.0 = one core busy the whole time).
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_ticks() -> int:
    """Busy jiffies of all CPUs since boot (user nice system irq softirq steal; not idle/iowait)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()  # cpu user nice system idle iowait irq softirq steal guest guest_nice
    values = [int(v) for v in fields[1:9]]
    return sum(values) - values[3] - values[4]  # guest time is already inside user/nice


def own_ticks() -> int:
    """utime + stime of this process (all its threads), in jiffies."""
    with open("/proc/self/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()  # fields after "pid (comm)": state is rest[0]
    return int(rest[11]) + int(rest[12])  # fields 14 and 15 of proc(5)


def children_ticks() -> int:
    """utime + stime of this process's children that have finished and been waited for, in jiffies."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round((usage.ru_utime + usage.ru_stime) * _TICKS)


def write_report(report: str, out: str | None) -> None:
    """Print a benchmark's markdown report, and write it to --out when given."""
    print(report)
    if out:
        Path(out).write_text(report + "\n")


class CpuLoadMeter:
    """`with CpuLoadMeter() as m: ...`, then m.others_cores, m.own_cores and m.wall_s."""

    others_cores: float = 0.0
    own_cores: float = 0.0
    wall_s: float = 0.0

    def __enter__(self) -> CpuLoadMeter:
        self._t0 = time.perf_counter()
        self._busy0 = machine_busy_ticks()
        self._own0 = own_ticks() + children_ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        own = own_ticks() + children_ticks() - self._own0
        busy = machine_busy_ticks() - self._busy0
        self.wall_s = time.perf_counter() - self._t0
        secs = max(self.wall_s, 1e-9)
        self.own_cores = own / _TICKS / secs
        self.others_cores = max(busy - own, 0) / _TICKS / secs


def wait_for_quiet(max_load: float, timeout_s: float = 60.0, window_s: float = 0.5) -> float:
    """Wait until other processes use at most max_load cores over a window_s window, or timeout_s
    passes; returns the last window's load (the caller decides what to do with a busy machine)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with CpuLoadMeter() as m:
            time.sleep(window_s)
        if m.others_cores <= max_load or time.monotonic() >= deadline:
            return m.others_cores
