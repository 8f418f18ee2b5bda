"""featinv demo: the whole path on scikit-image's bundled photographs, with no downloads."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from pathlib import Path

import typer

from ..errors import UsageError
from ..settings import resolve_device
from ..threads import Threads
from .common import DEVICE, QUIET, THREADS, err, show_table

if TYPE_CHECKING:  # annotations only; imported where used, so --help stays fast
    import torch

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins")


def bundled_photos(size: int) -> dict[str, torch.Tensor]:
    """scikit-image's sample photographs as (3, size, size) evaluation views (shorter side, centre)."""
    from ..data import eval_view
    from ..images import image_from_array

    from skimage import data

    return {name: eval_view(image_from_array(getattr(data, name)(), name), size) for name in PHOTOS}


def demo(
    output: Path = typer.Option(Path("demo.png"), "--output", "-o", help="Grid PNG to write."),
    specs: str = typer.Option("hog,lbp,sift,squeezenet:fire9,squeezenet:pool10", "--specs",
                              help="Comma-separated feature specs with shipped models."),
    size: int = typer.Option(128, help="Square size the photographs are prepared at (128: the protocol "
                             "the shipped models were scored with)."),
    device: str = DEVICE,
    threads: Optional[int] = THREADS,
    quiet: bool = QUIET,
):
    """Extract features from scikit-image's photographs, invert them with the shipped models, write a
    labelled grid (input | reconstruction per feature) and print the scores.

    \b
    Example:
      featinv demo -o demo.png
    """
    import numpy as np
    import torch
    from rich.table import Table
    from .. import metrics
    from ..features import parse_spec
    from ..formats.png import PNG_FILE, image_to_uint8, write_image
    from ..grid import labelled_grid
    from ..inverter import Inverter, shipped_model
    from ..outputs import Output

    Threads(threads)

    specs = [s.strip() for s in specs.split(",") if s.strip()]
    if not specs:
        raise UsageError("--specs: give at least one feature spec, e.g. hog,lbp")
    if size < 32:
        raise UsageError(f"--size {size}: give at least 32 pixels (128: the protocol the models were scored with)")
    Output(output, PNG_FILE)  # one grid, never a folder; checked before the models run, not after
    models = {spec: shipped_model(parse_spec(spec), how="featinv demo shows the shipped models; for another, "
                      f"featinv extract {spec} IMAGE -o f.safetensors, then featinv invert f.safetensors -m MODEL")
              for spec in specs}  # every spec has a shipped model, found before any runs
    photos = bundled_photos(size)
    images = torch.stack(list(photos.values()))
    columns: list[list[np.ndarray]] = [[image_to_uint8(i) for i in images]]
    table = Table("feature", "model", "normalized error", "PSNR (dB)", "SSIM")
    for column in table.columns:  # wrap a long name onto a second line rather than cut it with "…"
        column.overflow = "fold"
    for spec in specs:
        extractor, model = parse_spec(spec), models[spec]
        inverter = Inverter(model, resolve_device(device))
        feats = extractor(images)
        inverter.check(extractor, feats.shape[1], spec)
        recon = inverter(feats, (size, size))
        columns.append([image_to_uint8(r) for r in recon])
        s = metrics.score(recon, images)["mean"]
        table.add_row(extractor.spec, model.stem, f"{s['normalized_error']:.3f}", f"{s['psnr']:.2f}",
                      f"{s['ssim']:.3f}")
    rows = [list(r) for r in zip(*columns)]
    grid = labelled_grid(rows, col_labels=["input"] + [f"from {s}" for s in specs], row_labels=list(photos))
    write_image(output, grid)
    show_table(table)
    if not quiet:
        err.print(f"wrote {output}: {len(photos)} photographs, columns input | "
                  + " | ".join(f"reconstruction from {s}" for s in specs))
