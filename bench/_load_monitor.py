"""How much CPU other processes take while a benchmark measures (Linux: /proc/stat).

A timing taken while other jobs share the cores says nothing about the code: the load check
compares the machine's busy CPU time with this process's own CPU time over the same interval,
so "other load" is what everything else used, in cores, whatever this process was doing.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass


def _busy_cpu_s() -> float:
    """CPU seconds spent busy (not idle, not waiting on I/O) by all cores since boot."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    guest = sum(fields[8:10])   # guest time is already counted in user / nice
    return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds this process (all its threads) has used."""
    t = os.times()
    return t.user + t.system


@dataclass
class LoadSample:
    """Other processes' average CPU use (cores) over ``wall_s`` seconds."""

    other_cores: float
    wall_s: float


class LoadMonitor:
    """``with LoadMonitor() as m: ...`` then ``m.sample``: the other processes' load meanwhile."""

    def __enter__(self) -> "LoadMonitor":
        self._t, self._busy, self._own = time.monotonic(), _busy_cpu_s(), _own_cpu_s()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self._t
        other = (_busy_cpu_s() - self._busy) - (_own_cpu_s() - self._own)
        self.sample = LoadSample(max(other, 0.0) / wall if wall > 0 else 0.0, wall)


def idle_refusal(max_other_cores: float) -> str | None:
    """Why the machine is not idle enough to start measuring (None: it is): the 1-minute load
    average, taken before this benchmark has run anything, is above ``max_other_cores``."""
    one = os.getloadavg()[0]
    if one > max_other_cores:
        return (f"machine loaded: 1-minute load average {one:.2f} > {max_other_cores} before "
                f"the benchmark started")
    return None
