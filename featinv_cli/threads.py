"""How many CPU threads featinv computes with, and how they wait. On a machine shared with other work
torch's default (one thread per core, spinning while it waits) is the worst choice: a parallel region
waits for its slowest thread, and a thread sharing its core with another process is descheduled for
whole time slices. Measured with `python bench/threads.py` (HOG training, 2 cores, one kept busy by
another process, the machine shared with other work too): two threads ran at 0.2x one thread's rate
spinning, 0.4x waiting passively. So by default featinv computes with the cores other processes leave
free (the machine's CPU time less its own, looked at again every few seconds while it trains), and
its threads spin only briefly before they sleep: quiet, that kept 1.6x one thread's rate, where
sleeping at once kept 1.3x."""
from __future__ import annotations

import math
import os
import time

from .errors import UsageError

RECHECK_S = 5.0  # how often a long computation (training) looks at the load again
# A core counts as free when others use less than a quarter of it: one thread too many (0.4x) costs far
# more than one too few.
SPARE = 0.25
_started: tuple | None = None  # the first look, taken when the command started


def before_torch() -> None:
    """Called when a command starts, before torch is imported: OpenMP reads how its threads wait once,
    when torch loads it (a wait policy or spin count set in the environment is kept), and the first
    look at the machine's load is taken here, so that importing torch is the time it is measured over."""
    global _started
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = "10000"  # libgomp (torch's on Linux): spin ~0.1 ms, then sleep
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # other OpenMP runtimes: sleep at once
    _started = _look()


def check_threads(threads: int | None) -> int | None:
    """--threads N (a typer callback): 1 or more."""
    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads}: give 1 or more")
    return threads


def _cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _look() -> tuple[float, float, float] | None:
    """(CPU seconds the cores this process may use have been busy, CPU seconds of this process, wall
    time); None where the kernel does not say (not Linux)."""
    cores = {f"cpu{c}" for c in _cores()}
    busy = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name in cores:  # user nice system idle iowait irq softirq steal
                    v = [int(x) for x in fields[:8]]
                    busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    except (OSError, ValueError, IndexError):
        return None
    return busy / os.sysconf("SC_CLK_TCK"), time.process_time(), time.monotonic()


class Threads:
    """The threads torch computes with: ``requested`` (--threads N) or $OMP_NUM_THREADS as given, else
    the cores other processes left free since the last look (at most one per core, at least one)."""

    def __init__(self, requested: int | None = None):
        import torch

        fixed = requested or os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"])
        self.most, self.fixed = torch.get_num_threads(), bool(fixed)
        self.last, self.checked = _started or _look(), time.monotonic()
        if fixed:
            torch.set_num_threads(int(fixed))
        else:
            self.adjust(force=True)

    def free_cores(self) -> float | None:
        """Cores other processes left free since the last look; None before a first window."""
        now = _look()
        if now is None or self.last is None or now[2] - self.last[2] < 0.05:
            return None
        (busy0, own0, t0), (busy1, own1, t1) = self.last, now
        self.last = now
        return len(_cores()) - max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)

    def adjust(self, force: bool = False) -> int:
        """Look at the load again when RECHECK_S have passed (or ``force``) and follow it; the threads now."""
        import torch

        if not self.fixed and (force or time.monotonic() - self.checked >= RECHECK_S):
            self.checked = time.monotonic()
            free = self.free_cores()
            if free is not None:
                torch.set_num_threads(max(1, min(self.most, math.floor(free + SPARE))))
        return torch.get_num_threads()
