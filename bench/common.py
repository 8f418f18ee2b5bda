"""What every benchmark script shares: the sample photos, timing, and bench/results.json (run.py and
grid_bin.py write their sections into one file)."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from featinv_cli.data import center_crop, resize_shorter
from featinv_cli.images import image_from_array

RESULTS_FILE = Path(__file__).with_name("results.json")
RESULTS: dict[str, dict] = {}  # section -> figures; merged into RESULTS_FILE at the end
# How busy the machine was when the run started (1-minute load average): on two cores a training run
# beside a benchmark halves its figures, and the file should say so rather than leave it to memory.
LOAD_AT_START = os.getloadavg()[0]


def record(section: str, key: str, value) -> None:
    """Keep one figure for bench/results.json (README and BENCHMARKS quote that file)."""
    RESULTS.setdefault(section, {})[key] = round(value, 4) if isinstance(value, float) else value


def machine() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def save_results() -> None:
    """Merge this run's sections into bench/results.json, each with its date, machine and torch."""
    import datetime
    import json

    old = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else {}
    from featinv_cli import ops

    stamp = {"date": datetime.date.today().isoformat(), "machine": machine(), "torch": torch.__version__,
             "torch_threads": torch.get_num_threads(), "operators": ops.status()["backend"] or "not used",
             "load_at_start": round(LOAD_AT_START, 2)}
    gpu = " (GPU machine)" if torch.cuda.is_available() else ""  # a lent GPU machine's run keeps its own
    for section, values in RESULTS.items():
        old[section + gpu] = {**stamp, "values": values}
    RESULTS_FILE.write_text(json.dumps(dict(sorted(old.items())), indent=1) + "\n")
    print(f"\nwrote {RESULTS_FILE} ({', '.join(RESULTS)})")


def photos(size: int) -> list[torch.Tensor]:
    from skimage import data

    names = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins"]
    return [center_crop(resize_shorter(image_from_array(getattr(data, n)()), size), size) for n in names]


def per_second(fn, items, repeat: int) -> float:
    fn(items[0])  # warm-up
    t = time.perf_counter()
    for _ in range(repeat):
        for x in items:
            fn(x)
    return repeat * len(items) / (time.perf_counter() - t)


def median_ms(fn, items, rounds: int = 3) -> float:
    """Median over ``rounds`` of the mean milliseconds per item (one warm-up call first)."""
    fn(items[0])
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for x in items:
            fn(x)
        times.append((time.perf_counter() - t) / len(items))
    return 1000 * sorted(times)[len(times) // 2]
