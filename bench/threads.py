"""Training speed on a shared machine: `featinv train hog` for a few steps, quiet and with one core
busy (a spinning Python process), featinv's default threads against `--threads 1`. Prints images/s
(the rate the model file records, start-up excluded), the ratio default / one thread, and the load
average before each condition (other work on the machine disturbs every figure: read it first).

    python bench/threads.py                      # 64 photos of ../shared/data/imagenet-sample/train
    python bench/threads.py -d views.safetensors --steps 40 --repeat 3
    python bench/threads.py --variant "active OMP_WAIT_POLICY=ACTIVE" --variant "two --threads 2"

A variant is a name, then featinv options and VAR=VALUE settings of its environment.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "imagenet-sample" / "train"


def featinv(*args: str, env: dict | None = None) -> str:
    r = subprocess.run([sys.executable, "-m", "featinv_cli", *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if r.returncode:
        sys.exit(f"featinv {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def views(data: str, photos: int, tmp: Path) -> str:
    """A views file: ``data`` if it is one, else the first ``photos`` photos of the folder, packed."""
    if data.endswith(".safetensors"):
        return data
    files = sorted(p for p in Path(data).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:photos]
    out = tmp / "views.safetensors"
    featinv("pack", *map(str, files), "-o", str(out), "--side", "160", "-q")
    return str(out)


def rate(data: str, steps: int, tmp: Path, options: list[str], env: dict) -> float:
    model = tmp / "m.safetensors"
    featinv("train", "hog", "-d", data, "-o", str(model), "--steps", str(steps), "--batch", "32", "--crop", "128",
            "--low-res", "0", "-q", *options, env=env)
    return json.loads(featinv("info", str(model), "--json"))["train"]["images_per_second"]


def parse_variant(text: str) -> tuple[str, list[str], dict]:
    name, *rest = text.split()
    env = dict(t.split("=", 1) for t in rest if "=" in t and not t.startswith("-"))
    return name, [t for t in rest if not ("=" in t and not t.startswith("-"))], env


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def measure(data: str, args, variants, tmp: Path) -> dict:
    results = {}
    for condition in ("quiet", "busy"):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if condition == "busy" else None
        try:
            time.sleep(1.0)
            results[condition] = {"load_before": load(), "rates": {name: [] for name, _, _ in variants}}
            for _ in range(args.repeat):  # variants interleaved, so a change of load touches them alike
                for name, options, env in variants:
                    results[condition]["rates"][name].append(rate(data, args.steps, tmp, options, env))
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-d", "--data", default=str(PHOTOS), help="a folder of photos or a views file")
    ap.add_argument("--photos", type=int, default=64, help="photos packed from a folder")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--variant", action="append", default=[], help="another row: 'NAME [OPTIONS] [VAR=VALUE]'")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    variants = [("default", [], {}), ("one thread", ["--threads", "1"], {})] + [parse_variant(v) for v in args.variant]
    with tempfile.TemporaryDirectory() as tmp:
        data = views(args.data, args.photos, Path(tmp))
        results = measure(data, args, variants, Path(tmp))
    print(f"featinv train hog, batch 32, 128-px crops, {args.steps} steps, median of {args.repeat}; "
          f"{os.cpu_count()} cores; uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print("\n| variant | quiet img/s | one core busy img/s |\n|---|---|---|")
    median = {c: {n: statistics.median(r) for n, r in results[c]["rates"].items()} for c in results}
    for name, _, _ in variants:
        print(f"| {name} | {median['quiet'][name]:.1f} | {median['busy'][name]:.1f} |")
    for c in results:
        print(f"{c}: default / one thread = {median[c]['default'] / median[c]['one thread']:.2f} "
              f"({results[c]['load_before']} before)")
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "steps": args.steps,
                                         "results": results, "median": median}, indent=1))


if __name__ == "__main__":
    main()
