"""Learned, then refined (`invert --method refine`): how the normalized error moves with the steps of
the optimisation that starts from the learned reconstruction, per feature, on the validation protocol.

    python bench/refine.py -n 100 --steps 25,50,100,200 --prox 0,1 --json bench/refine.json

For each spec: the validation views (shorter side 128, centre crop 128), their features, the shipped
model's reconstruction, then Adam (lr --lr) on `invert --method optimize`'s objective from it, with
--prox times the mean squared distance to it, every image of the batch at once; the normalized error
(N of all the views) at each of --steps. Also the time per step of the batch.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch

from featinv_cli import metrics
from featinv_cli.evaluate import load_views
from featinv_cli.features import parse_spec
from featinv_cli.inverter import Inverter, shipped_model
from featinv_cli.optimize import OptimizeConfig, descend

ROOT = Path(__file__).resolve().parents[1]
SPECS = ["hog"] + [f"squeezenet:{layer}" for layer in ("conv1", "fire2", "fire3", "fire4", "fire5", "fire6", "fire7",
                                                       "fire8", "fire9", "conv10", "pool10")]


def sweep(spec: str, views: torch.Tensor, norm: float, steps: list[int], lr: float, prox: float, batch: int) -> dict:
    extractor = parse_spec(spec)
    inverter = Inverter(shipped_model(extractor))
    errors = {s: [] for s in [0] + steps}
    seconds = 0.0
    for chunk in views.split(batch):
        target = inverter.encode(chunk)
        learned = inverter(target, (128, 128))
        errors[0] += metrics.normalized_errors(learned, chunk, norm).tolist()

        def at(step, _, x):
            if step in errors:
                errors[step] += metrics.normalized_errors(x.clamp(0, 1), chunk, norm).tolist()
        start = time.perf_counter()
        descend(extractor, learned, target, OptimizeConfig(steps=max(steps), lr=lr, prox=prox), anchor=learned,
                on_step=at)
        seconds += time.perf_counter() - start
    return {"spec": spec, "lr": lr, "prox": prox, "images": len(views),
            "error": {str(s): round(sum(v) / len(v), 4) for s, v in errors.items()},
            "seconds_per_step_per_image": round(seconds / max(steps) / len(views), 5)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--val", default=str(ROOT.parent / "shared" / "data" / "imagenet-sample" / "val"))
    p.add_argument("-n", type=int, default=100)
    p.add_argument("--specs", default=",".join(SPECS))
    p.add_argument("--steps", default="25,50,100,200")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--prox", default="0")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    views = load_views(args.val, 128)
    norm = metrics.mean_pairwise_distance(views)  # N of all the validation views, as the model table's
    views = views[:args.n]
    steps = [int(s) for s in args.steps.split(",")]
    rows = []
    for spec in args.specs.split(","):
        for prox in (float(v) for v in args.prox.split(",")):
            rows.append(sweep(spec, views, norm, steps, args.lr, prox, args.batch))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        record = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                  "threads": torch.get_num_threads(), "protocol": "shorter side 128, centre crop 128", "rows": rows}
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
