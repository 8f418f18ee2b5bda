"""Training recipes at equal wall time: `featinv train` with each variant's options for the same
number of minutes, then the README's validation protocol on each model. Prints a Markdown table and
writes the results (with date, machine and the commands) to --json.

    python bench/study.py -d views.safetensors --val VAL_DIR --minutes 30 --out study/ --parallel 2

Variants run ``--parallel`` at a time, each with OMP_NUM_THREADS = cores / parallel, so compare rows
of one run of this script only.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# name -> options added to `featinv train FEATURE -d DATA -o OUT --minutes M` (and --width 0.3 unless set).
# Each recipe says its --low-res: train's default became 0.7 after this study chose it, and "plain"
# must stay plain. "defaults" and "paper-net" take train's defaults, the skip and the paper's network.
VARIANTS = {
    "plain": ["--low-res", "0"],
    "low-res": ["--low-res", "0.7"],
    "ema": ["--low-res", "0", "--ema", "0.999"],
    "low-res+ema": ["--low-res", "0.7", "--ema", "0.999"],
    "width-0.5": ["--low-res", "0", "--width", "0.5"],
    "width-0.5+ema": ["--low-res", "0", "--width", "0.5", "--ema", "0.999"],
    "defaults": [],
    "paper-net": ["--arch", "paper"],  # the paper's network, no skip connections (README: why skip is the default)
}


def command(feature: str, data: str, out: Path, minutes: float, options: list[str]) -> list[str]:
    width = [] if "--width" in options else ["--width", "0.3"]
    return ["featinv", "train", feature, "-d", data, "-o", str(out), "--steps", "1000000", "--minutes",
            str(minutes), "--log-every", "100", *width, *options]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-d", "--data", required=True, help="training data: a views file or folder")
    ap.add_argument("--val", required=True, help="validation folder (the README's protocol)")
    ap.add_argument("--feature", default="hog")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    pending, running, done = list(args.variants), {}, {}
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            cmd = command(args.feature, args.data, args.out / f"{name}.safetensors", args.minutes, VARIANTS[name])
            log = open(args.out / f"{name}.log", "w")
            running[name] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), cmd)
        time.sleep(5)
        for name, (proc, cmd) in list(running.items()):
            if proc.poll() is not None:
                done[name] = {"command": " ".join(cmd), "exit": proc.returncode}
                del running[name]
    from featinv_cli.evaluate import evaluate
    from featinv_cli.formats.model import load_model

    rows = []
    for name in args.variants:
        path = args.out / f"{name}.safetensors"
        if done[name]["exit"] != 0 or not path.exists():
            rows.append({"variant": name, **done[name], "failed": True})
            continue
        t = load_model(path).train
        r = evaluate(path, args.val)
        rows.append({"variant": name, **done[name], "normalized_error": round(r["normalized_error"], 4),
                     "psnr": round(r["psnr"], 2), "ssim": round(r["ssim"], 4), "steps": t["steps_done"],
                     "images_seen": t["images_seen"], "images_per_second": t["images_per_second"]})
    result = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "threads_per_run": threads, "minutes": args.minutes,
              "feature": args.feature, "data": args.data, "rows": rows}
    (args.json or args.out / "study.json").write_text(json.dumps(result, indent=1))
    print("| variant | normalized error | PSNR | SSIM | steps | images seen | images/s |\n|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("failed"):
            print(f"| {r['variant']} | failed (exit {r['exit']}) | | | | | |")
        else:
            print(f"| {r['variant']} | {r['normalized_error']:.3f} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['steps']} "
                  f"| {r['images_seen']} | {r['images_per_second']} |")


if __name__ == "__main__":
    main()
