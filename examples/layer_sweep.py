"""Paper Figure 7: reconstruction error against CNN layer, learned inverter vs optimisation.

    python examples/layer_sweep.py --weights caffenet.safetensors --family caffenet \\
        --data ../shared/data/imagenet-sample --steps 1000 --out out/sweep
    python examples/layer_sweep.py --family squeezenet --shipped --steps 0 --out out/squeezenet

For each layer: train an inverter (short schedule) or, with --shipped, take the model that ships for
that layer; score it on the validation images (shorter side 128, centre crop 128), and run
`invert --method optimize` on the first few of them. ``--steps 0`` trains nothing (layers without a
shipped model then have only the optimisation column). Writes sweep.json, sweep.md (a table) and
sweep.png (the plot). `--weights random:0` runs the whole sweep on seeded random weights (a smoke
test: the numbers then say nothing about the network).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from featinv_cli import metrics
from featinv_cli.evaluate import evaluate, evaluation_views
from featinv_cli.features import parse_spec
from featinv_cli.features import alexnet, squeezenet
from featinv_cli.inverter import Inverter, shipped_path
from featinv_cli.optimize import OptimizeConfig, invert_by_optimization, refine, refine_config, refine_steps
from featinv_cli.train import TrainConfig, train


def plot(rows: list[dict], path: Path, images: int = 2) -> None:
    """Error against layer (matplotlib, as featinv audit's plot): the two methods on the same ``images``
    validation images (the fair comparison, the optimisation being too slow for more), and the learned
    inverter on every validation image, lighter."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from featinv_cli.files import atomic_write
    from featinv_cli.report import figure_png

    fig, ax = plt.subplots(figsize=(7.2, 4.2), dpi=100)
    keys = (("learned_same_images", "o-", "#0050c8", f"learned inverter, {images} images"),
            ("refined_same_images", "D-", "#1e8c3c", f"learned, then refined, the same {images} images"),
            ("optimize", "s-", "#c80000", f"optimisation, the same {images} images"),
            ("learned", "o--", "#82afeb", "learned inverter, all validation images"))
    for key, style, colour, label in keys:
        # None where a layer has no value: matplotlib leaves a gap there, no line across it
        ax.plot(range(len(rows)), [np.nan if r.get(key) is None else r[key] for r in rows], style, color=colour,
                label=label)
    ax.set_xticks(range(len(rows)), [r["layer"] for r in rows])
    ax.set_ylim(0, max(1.0, max(v or 0 for r in rows for v in (r["learned"], r.get("optimize"),
                                                              r.get("learned_same_images")))))
    ax.set_xlabel("layer")
    ax.set_ylabel("normalized reconstruction error")
    ax.set_title("normalized reconstruction error by layer", fontsize=11)
    ax.grid(axis="y", color="#ddd")
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    atomic_write(path, figure_png(fig))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="", help="state dict file, or random:SEED (default: the family's "
                   "default file: SqueezeNet's shipped weights, torchvision's cached AlexNet)")
    p.add_argument("--family", default="caffenet", choices=["caffenet", "alexnet", "squeezenet"])
    p.add_argument("--data", default="../shared/data/imagenet-sample", help="folder with train/ and val/")
    p.add_argument("--layers", default=None, help="comma-separated (default: every layer of the family)")
    p.add_argument("--shipped", action="store_true", help="use the shipped inverter where one exists")
    p.add_argument("--steps", type=int, default=1000, help="training steps per layer")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--optimize-images", type=int, default=4)
    p.add_argument("--optimize-steps", type=int, default=200)
    p.add_argument("--out", default="out/sweep")
    p.add_argument("--add-refined", type=Path, default=None, metavar="SWEEP_JSON",
                   help="only fill this earlier sweep's learned-then-refined column (shipped models) and redraw it")
    p.add_argument("--update", type=Path, default=None, metavar="SWEEP_JSON",
                   help="also write this sweep's rows into an earlier sweep.json (e.g. docs/figures/"
                        "squeezenet-fig7.json after shipping another layer's inverter) and redraw its .png")
    args = p.parse_args()
    if args.add_refined:
        return add_refined(args.add_refined, Path(args.data))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    views = evaluation_views(data / "val", 128)
    norm = metrics.mean_pairwise_distance(views)
    layers = args.layers.split(",") if args.layers else (squeezenet.LAYERS if args.family == "squeezenet"
                                                         else alexnet.LAYERS)
    rows = []
    for layer in layers:
        rows.append(layer_row(args, layer, out, views, norm))
        print(json.dumps(rows[-1]), flush=True)
    (out / "sweep.json").write_text(json.dumps({"weights": args.weights, "steps": args.steps,
                                                "optimize_images": args.optimize_images, "rows": rows}, indent=1))
    table = markdown_table(rows, args.optimize_images)
    (out / "sweep.md").write_text("\n".join(table) + "\n")
    plot(rows, out / "sweep.png", args.optimize_images)
    print("\n".join(table))
    if args.update:
        update(args.update, rows, args.weights, args.steps, args.optimize_images)


def layer_row(args, layer: str, out: Path, views: torch.Tensor, norm: float) -> dict:
    """One layer's errors: its learned inverter (trained here, or the shipped one) on every validation
    view, and on the first few against optimisation and learned-then-refined."""
    data = Path(args.data)
    spec = f"{args.family}:{layer}" + (f",weights={args.weights}" if args.weights else "")
    extractor = parse_spec(spec)
    model = out / f"{layer}.safetensors"
    shipped = shipped_path(extractor)
    if args.shipped and shipped.exists() and not args.weights:
        model = shipped
    elif args.steps:
        train(TrainConfig(feature=spec, data=str(data / "train"), output=str(model), width=args.width,
                          batch=args.batch, steps=args.steps, workers=1, checkpoint_every=10 ** 6))
    learned = evaluate(model, data / "val", size=128)["normalized_error"] if model.exists() else None
    errors = []
    for image in views[: args.optimize_images]:
        x, _ = invert_by_optimization(extractor, extractor(image[None]), (128, 128),
                                      OptimizeConfig(steps=args.optimize_steps))
        errors.append(float(metrics.normalized_errors(x, image[None], norm)[0]))
    # The learned inverter on exactly the images the optimisation ran on: the fair comparison.
    same = refined = None
    if model.exists() and errors:
        same, refined = learned_and_refined(extractor, model, views[: args.optimize_images], norm)
    return {"layer": layer, "learned": learned, "learned_same_images": same,
            "refined_same_images": refined, "optimize": float(np.mean(errors)) if errors else None}


def markdown_table(rows: list[dict], k: int) -> list[str]:
    """sweep.md's lines: each layer's errors, "—" where a column has none."""
    table = [f"| layer | learned inverter (all val images) | learned (first {k}) | learned, then refined (first {k}) "
             f"| optimisation (first {k}) |", "|---|---|---|---|---|"]
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    return table + [f"| {r['layer']} | {fmt(r['learned'])} | {fmt(r['learned_same_images'])} | "
                    f"{fmt(r['refined_same_images'])} | {fmt(r['optimize'])} |" for r in rows]


def learned_and_refined(extractor, model: Path, few: torch.Tensor, norm: float) -> tuple[float, float]:
    """Mean normalized error of a model's reconstructions of ``few`` views, and of them refined as
    `invert --method refine` refines them (its default steps for the feature; 0 keeps them)."""
    inverter = Inverter(model)
    target = inverter.encode(few)
    recon = inverter(target, (128, 128))
    steps = refine_steps(extractor)
    refined = refine(extractor, target, recon, refine_config(steps)) if steps else recon
    return tuple(float(metrics.normalized_errors(x, few, norm).mean()) for x in (recon, refined))


def add_refined(path: Path, data: Path) -> None:
    """Fill an earlier sweep's "learned, then refined" column from the shipped models, on the same
    optimisation images (its other columns stay), and redraw its plot."""
    sweep = json.loads(path.read_text())
    views = evaluation_views(data / "val", 128)
    norm = metrics.mean_pairwise_distance(views)
    few = views[: sweep.get("optimize_images", 2)]
    for r in sweep["rows"]:
        extractor = parse_spec(f"squeezenet:{r['layer']}")
        same, r["refined_same_images"] = learned_and_refined(extractor, shipped_path(extractor), few, norm)
        if abs(same - r["learned_same_images"]) > 5e-4:
            raise SystemExit(f"{path}: {r['layer']} learned {r['learned_same_images']:.4f} on these images, the "
                             f"shipped model gives {same:.4f}: rerun the sweep first")
        print(r["layer"], round(same, 4), round(r["refined_same_images"], 4), flush=True)
    path.write_text(json.dumps(sweep, indent=1) + "\n")
    plot(sweep["rows"], path.with_suffix(".png"), len(few))


def update(path: Path, rows: list[dict], weights: str = "", steps: int = 0, images: int = 2) -> None:
    """Replace the rows of these layers in an earlier sweep's JSON (in its layer order) and redraw its
    plot; the earlier sweep must have used the same weights, training steps and optimisation images."""
    earlier = json.loads(path.read_text())
    earlier.setdefault("optimize_images", 2)  # sweeps before it was recorded: fig-sweep-squeezenet's 2
    if (earlier.get("weights"), earlier.get("steps"), earlier["optimize_images"]) != (weights, steps, images):
        raise SystemExit(f"{path} was made with --weights {earlier.get('weights')!r} --steps {earlier.get('steps')} "
                         f"--optimize-images {earlier['optimize_images']}, this sweep with --weights {weights!r} "
                         f"--steps {steps} --optimize-images {images}")
    new = {r["layer"]: r for r in rows}
    missing = sorted(set(new) - {r["layer"] for r in earlier["rows"]})
    if missing:
        raise SystemExit(f"{path} has no row for {', '.join(missing)}")
    earlier["rows"] = [new.get(r["layer"], r) for r in earlier["rows"]]
    path.write_text(json.dumps(earlier, indent=1) + "\n")
    plot(earlier["rows"], path.with_suffix(".png"), images)
    print(f"updated {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
