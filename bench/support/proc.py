"""What a process and the machine spent, read from /proc (Linux).

A benchmark on a shared machine must say how shared it was: :class:`CpuWindow` takes the CPU
time of the processes it names and of the whole machine at its start and end, so that what
every *other* process took meanwhile (and the hypervisor's steal) is known beside the
figures.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid`, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of proc(5); index 0 here is field 3.
    return (int(fields[11]) + int(fields[12])) / _TICK


def _status_kb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return float(line.split()[1])
    return float("nan")


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` now, in MB."""
    return _status_kb(pid, "VmRSS:") / 1024


def peak_rss_mb(pid: int) -> float:
    """The most resident memory `pid` has had (VmHWM), in MB."""
    return _status_kb(pid, "VmHWM:") / 1024


def machine_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of all cores since boot: busy is everything but idle,
    iowait and steal; steal is the time the hypervisor gave our virtual CPUs to others."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq) / _TICK, steal / _TICK


class CpuWindow:
    """CPU seconds of named groups of processes over a window, and of everything else.

    ``groups`` maps a role ("engine", "job API", ...) to its pids. :meth:`start` takes every
    process's CPU time; :meth:`rebase` takes one again, for a process whose work starts
    later than the window's (an engine that became ready after the others). This process,
    the benchmark's driver, is counted as the role ``driver``, so that ``others`` is what
    every process outside the benchmark took.
    """

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = {**groups, "driver": [os.getpid()]}
        self._start: dict[int, float] = {}
        self._machine = (0.0, 0.0)
        self._wall = 0.0
        self.seconds: dict[str, float] = {}  # CPU seconds of each role over the window
        self.wall = 0.0
        self.others = 0.0  # cores used by every other process, on average
        self.steal = 0.0  # cores the hypervisor gave to other machines, on average

    def start(self) -> CpuWindow:
        self._start = {pid: cpu_seconds(pid) for pids in self.groups.values() for pid in pids}
        self._machine = machine_seconds()
        self._wall = time.monotonic()
        return self

    def rebase(self, pid: int) -> None:
        self._start[pid] = cpu_seconds(pid)

    def stop(self) -> CpuWindow:
        end = {pid: cpu_seconds(pid) for pids in self.groups.values() for pid in pids}
        machine, wall = machine_seconds(), time.monotonic()
        self.seconds = {
            role: sum(end[pid] - self._start[pid] for pid in pids)
            for role, pids in self.groups.items()
        }
        self.wall = max(wall - self._wall, 1e-9)
        busy = machine[0] - self._machine[0]
        self.others = max(0.0, busy - sum(self.seconds.values())) / self.wall
        self.steal = (machine[1] - self._machine[1]) / self.wall
        return self
