"""What the machine can hold: a size read from a file (a camera's, a header's) is checked against the
memory available before anything that large is allocated, so a file that lies gets one line, not an
overflow deep in torch or a machine pushed into swap."""
from __future__ import annotations

import os

from .errors import FeatinvError

# The share of the memory available that one allocation may take: the rest is for what the command
# holds beside it (the images, the network, the file being written).
SHARE = 0.75


def available_bytes() -> int:
    """Memory available to this process now: the kernel's MemAvailable, or less under a cgroup limit."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:  # a container's limit (cgroup v2), less what the group already uses
        with open("/sys/fs/cgroup/memory.max") as f, open("/sys/fs/cgroup/memory.current") as g:
            limit = f.read().strip()
            if limit != "max":
                found.append(int(limit) - int(g.read()))
    except (OSError, ValueError):
        pass
    if not found:  # not Linux: the physical memory
        try:
            found.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return 1 << 62  # unknown: allocate, and let the allocator answer
    return max(0, min(found))


def size_text(nbytes: float) -> str:
    """1536 -> '1.5 kB', 3.2e10 -> '29.8 GB' (binary units, as `free -h` and pack's summary give them)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB", "EB"):
        if nbytes < 1024 or unit == "EB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError  # unreachable


def check_fits(nbytes: int, what: str, instead: str = "") -> None:
    """Refuse, in one line, an allocation of ``nbytes`` for ``what`` that the memory available cannot hold
    (``instead``: what the user can do about it, after a semicolon)."""
    available = available_bytes()
    if nbytes > SHARE * available:
        raise FeatinvError(f"{what} needs {size_text(nbytes)} of memory, more than this machine has free "
                           f"({size_text(available)})" + (f"; {instead}" if instead else ""))
