"""featinv invert: features -> images, with a trained (or the shipped) inverter."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import FeatinvError, UsageError
from .common import DEVICE, QUIET, is_dir_target, parse_size, progress, resolve_device


def row_labels(ff) -> list[str]:
    """A label per row: what was done to it (labels metadata) or the image it came from."""
    n = len(ff)
    if len(ff.labels) == n:
        return ff.labels
    if len(ff.sources) == n:
        return [Path(s).stem for s in ff.sources]
    return [f"#{i}" for i in range(n)]


def unique_file_names(labels: list[str]) -> list[str]:
    """A file name per row: its label made safe for a path, numbered where labels repeat (three rows
    perturbed alike must not overwrite each other: ``dropout 0.5-1``, ``dropout 0.5-2``, ...)."""
    safe = [("".join(c if c.isalnum() or c in " ._-+=" else "_" for c in label).strip(" .") or "row")
            for label in labels]
    seen: dict[str, int] = {}
    out = []
    for name in safe:
        if safe.count(name) > 1:
            seen[name] = seen.get(name, 0) + 1
            name = f"{name}-{seen[name]}"
        out.append(name)
    return out


def optimize_rows(extractor, features, size, steps, lambda_a, lambda_tv, quiet):
    """--method optimize: each row separately, with a progress bar per image."""
    import torch

    from ..optimize import OptimizeConfig, check_differentiable, invert_by_optimization

    check_differentiable(extractor)
    cfg = OptimizeConfig(steps=steps, lambda_a=lambda_a, lambda_tv=lambda_tv)
    out = []
    for i, row in enumerate(features):
        with progress(steps, f"optimize {i + 1}/{len(features)}", quiet) as bar:
            image, _ = invert_by_optimization(extractor, row[None], size, cfg,
                                              on_step=lambda s, loss: bar.advance(1, info=f"loss {loss:.4f}"))
        out.append(image)
    return torch.cat(out)


def row_title(captions: list[str], history: list[str], name: str) -> str:
    """What a grid row shows: the caption its tiles share ("binarize"), else their common stem
    ("histogram" of "histogram #1", "histogram #2"), else the file's last operation or its name."""
    common = os.path.commonprefix(captions).rstrip(" #=t").strip()
    if len(set(captions)) == 1 or len(common) >= 3:
        return captions[0] if len(set(captions)) == 1 else common
    return history[-1] if history else Path(name).stem


def invert(
    features: List[str] = typer.Argument(..., help="Feature file(s) (.safetensors or .npy), or - for stdin. "
                                         "Several files make one grid, a row per file."),
    output: str = typer.Option(..., "--output", "-o", help="PNG for one image or a labelled grid of a "
                               "batch; a directory for one PNG per row; - for PNG on stdout."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Inverter model file; default: "
                                         "the model shipped for the file's feature kind."),
    feature: Optional[str] = typer.Option(None, help="Feature spec of a bare .npy (guessed from its "
                                          "channel count when unique)."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="HxW of the original image, "
                                             "for a bare .npy (default: cells x cell size)."),
    grid_size: bool = typer.Option(False, "--grid-size", help="Keep the network's output size "
                                   "(cells x cell size) instead of restoring the original size."),
    columns: int = typer.Option(0, help="Tiles per row in a grid (default: all in one row up to 8)."),
    mirror_average: bool = typer.Option(False, "--mirror-average", help="Also invert the mirrored image's "
                                        "features (HOG, LBP: a channel permutation) and average the two "
                                        "reconstructions: lower error, twice the time."),
    method: str = typer.Option("learned", "--method", help="learned (a trained network, the paper's method) or "
                               "optimize (Mahendran & Vedaldi's gradient descent on the image; slow baseline)."),
    steps: int = typer.Option(200, "--optimize-steps", help="optimize: gradient steps per image."),
    lambda_a: float = typer.Option(1e-3, "--lambda-a", help="optimize: weight of the a-norm (a = 6) prior."),
    lambda_tv: float = typer.Option(0.05, "--lambda-tv", help="optimize: weight of the total-variation prior."),
    device: str = DEVICE,
    quiet: bool = QUIET,
):
    """Reconstruct images from features (the expected pre-image, paper §2).

    The output has the size of the image the features came from, as recorded in the file. Several
    feature files give one grid with a row per file (labelled with what was done to it) and a
    caption per tile: the way to put perturbations, interpolations or samples side by side.

    \b
    Examples:
      featinv invert hog.safetensors -o recon.png
      featinv invert hog.npy -o recon.png                 # bare array: 31 channels means HOG
      featinv invert batch.safetensors -o grid.png        # labelled grid, one tile per row
      featinv invert batch.safetensors -o recon/          # one PNG per row
      featinv invert orig.safetensors drop.safetensors bin.safetensors -o compare.png
      featinv invert conv3.safetensors --method optimize --optimize-steps 300 -o pre-image.png
      featinv invert hog.safetensors --mirror-average -o recon.png

    --method optimize is the baseline the paper compares against: it needs no model but gradients of
    the extractor (CNN layers, HOG through its magnitudes), and refuses LBP and SIFT.
    """
    from ..features import resolve
    from ..grid import labelled_grid
    from ..inverter import Inverter, shipped_model
    from ..io import check_not_input, image_to_uint8, load_features, write_image

    device = resolve_device(device)
    check_not_input(output, list(features) + ([str(model)] if model else []))
    if features.count("-") > 1:
        raise FeatinvError("only one input can be read from stdin")
    if method not in ("learned", "optimize"):
        raise UsageError(f"--method {method!r}: choose learned or optimize")
    inverters: dict[Path, Inverter] = {}
    rows, captions, row_names = [], [], []
    for path in features:
        name = "<stdin>" if path == "-" else path
        ff = load_features(path)
        extractor, size = resolve(ff, name, feature, parse_size(image_size))
        if method == "optimize":
            rows.append(optimize_rows(extractor, ff.features, size, steps, lambda_a, lambda_tv, quiet))
            captions.append(row_labels(ff))
            row_names.append(row_title(captions[-1], ff.history, name))
            continue
        model_path = Path(model) if model else shipped_model(extractor)
        if model_path not in inverters:
            inverters[model_path] = Inverter(model_path, device)
        inverter = inverters[model_path]
        inverter.check(extractor, ff.features.shape[1], name)
        if mirror_average and not inverter.can_mirror:
            raise UsageError(f"--mirror-average: {extractor.name} features have no mirrored form (HOG and LBP do)")
        rows.append(inverter(ff.features, None if grid_size else size, mirror_average=mirror_average))
        captions.append(row_labels(ff))
        row_names.append(row_title(captions[-1], ff.history, name))
    if len(features) > 1:
        if is_dir_target(output) or not (output == "-" or output.lower().endswith(".png")):
            raise FeatinvError(f"{output}: several feature files make one grid PNG; name it *.png")
        tiles = [[image_to_uint8(i) for i in images] for images in rows]
        write_image(output, labelled_grid(tiles, row_labels=row_names, captions=captions))
        return
    images, labels = rows[0], captions[0]
    if is_dir_target(output):
        Path(output).mkdir(parents=True, exist_ok=True)
        for img, name in zip(images, unique_file_names(labels)):
            write_image(Path(output) / f"{name}.png", img)
    elif len(images) == 1:
        write_image(output, images[0])
    else:
        if output != "-" and not output.lower().endswith(".png"):
            raise FeatinvError(f"{output}: a batch of {len(images)} becomes a grid PNG (name it *.png) "
                               f"or one PNG per row (give a directory ending in /)")
        cols = columns or min(len(images), 8)
        tiles = [image_to_uint8(i) for i in images]
        grid_rows = [tiles[i:i + cols] for i in range(0, len(tiles), cols)]
        grid_captions = [labels[i:i + cols] for i in range(0, len(labels), cols)]
        write_image(output, labelled_grid(grid_rows, captions=grid_captions))
