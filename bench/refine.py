"""Learned, then refined (`invert --method refine`): how the normalized error moves with the steps of
the optimisation that starts from the learned reconstruction, per feature, on the validation protocol.

    python bench/refine.py -n 16 --steps 10,20,40,80 --json docs/figures/refine-selection.json

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
from featinv_cli.evaluate import evaluation_views
from featinv_cli.features import parse_spec
from featinv_cli.inverter import Inverter, shipped_model
from featinv_cli.optimize import REFINE_LR, OptimizeConfig, descend

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
            "errors": [{"steps": s, "normalized_error": round(sum(v) / len(v), 4)} for s, v in errors.items()],
            "seconds_per_step_per_image": round(seconds / max(steps) / len(views), 5)}


def timing(spec: str, views: torch.Tensor, optimize_images: int = 2) -> dict:
    """Images per second of the three methods on one feature: the learned network (the batch at once),
    refine at its default steps (batches of 32, as invert does), optimize's 200 steps (each image alone,
    as invert does; on the first ``optimize_images``)."""
    from featinv_cli.optimize import invert_by_optimization, refine, refine_config, refine_steps

    extractor = parse_spec(spec)
    inverter = Inverter(shipped_model(extractor))
    target = inverter.encode(views)
    start = time.perf_counter()
    learned = inverter(target, (128, 128))
    learned_s = time.perf_counter() - start
    steps = refine_steps(extractor)
    start = time.perf_counter()
    refine(extractor, target, learned, refine_config(steps))
    refine_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(optimize_images):
        invert_by_optimization(extractor, target[i:i + 1], (128, 128), OptimizeConfig(steps=200))
    optimize_s = time.perf_counter() - start
    return {"spec": spec, "images": len(views), "refine_steps": steps,
            "images_per_second": {"learned": round(len(views) / learned_s, 2), "refine": round(len(views) / refine_s, 3),
                                  "optimize": round(optimize_images / optimize_s, 3)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--val", default=str(ROOT.parent / "shared" / "data" / "imagenet-sample" / "val"))
    p.add_argument("-n", type=int, default=100)
    p.add_argument("--specs", default=",".join(SPECS))
    p.add_argument("--steps", default="25,50,100,200")
    p.add_argument("--lr", type=float, default=REFINE_LR)
    p.add_argument("--prox", default="0")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--json", default=None)
    p.add_argument("--timing", metavar="SPEC", default=None, help="only time learned, refine and optimize on SPEC")
    args = p.parse_args()
    views = evaluation_views(args.val, 128)
    if args.timing:
        print(json.dumps(dict(timing(args.timing, views[:args.n]), threads=torch.get_num_threads(),
                              load=os.getloadavg()[0])))
        return
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
