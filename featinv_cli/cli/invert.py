"""featinv invert: features -> images, with a trained (or the shipped) inverter."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import FeatinvError
from ..features import resolve
from ..grid import labelled_grid
from ..inverter import Inverter, shipped_model
from ..io import check_not_input, image_to_uint8, load_features, write_image
from .common import DEVICE, QUIET, is_dir_target, parse_size, resolve_device


def row_labels(ff) -> list[str]:
    """A label per row: what was done to it (labels metadata) or the image it came from."""
    n = len(ff)
    if len(ff.labels) == n:
        return ff.labels
    if len(ff.sources) == n:
        return [Path(s).stem for s in ff.sources]
    return [f"#{i}" for i in range(n)]


def invert(
    features: str = typer.Argument(..., help="Feature file (.safetensors or .npy), or - for stdin."),
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
    device: str = DEVICE,
    quiet: bool = QUIET,
):
    """Reconstruct images from features (the expected pre-image, paper §2).

    The output has the size of the image the features came from, as recorded in the file.

    \b
    Examples:
      featinv invert hog.safetensors -o recon.png
      featinv invert hog.npy -o recon.png                 # bare array: 31 channels means HOG
      featinv invert batch.safetensors -o grid.png        # labelled grid, one tile per row
      featinv invert batch.safetensors -o recon/          # one PNG per row
    """
    device = resolve_device(device)
    check_not_input(output, [features] + ([str(model)] if model else []))
    name = "<stdin>" if features == "-" else features
    ff = load_features(features)
    extractor, size = resolve(ff, name, feature, parse_size(image_size))
    inverter = Inverter(model or shipped_model(extractor), device)
    inverter.check(extractor, ff.features.shape[1], name)
    images = inverter(ff.features, None if grid_size else size)
    labels = row_labels(ff)
    if is_dir_target(output):
        Path(output).mkdir(parents=True, exist_ok=True)
        for img, label in zip(images, labels):
            write_image(Path(output) / f"{label}.png", img)
    elif len(images) == 1:
        write_image(output, images[0])
    else:
        if output != "-" and not output.lower().endswith(".png"):
            raise FeatinvError(f"{output}: a batch of {len(images)} becomes a grid PNG (name it *.png) "
                               f"or one PNG per row (give a directory ending in /)")
        cols = columns or min(len(images), 8)
        tiles = [image_to_uint8(i) for i in images]
        rows = [tiles[i:i + cols] for i in range(0, len(tiles), cols)]
        captions = [labels[i:i + cols] for i in range(0, len(labels), cols)]
        write_image(output, labelled_grid(rows, captions=captions))
