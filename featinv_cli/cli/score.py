"""featinv score: how close are reconstructions to their originals (paper §2.2 and §4.1)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import json
from typing import List, Optional

import typer

from ..errors import FeatinvError, UsageError
from .common import JSON, QUIET, err, out

if TYPE_CHECKING:  # annotations only; imported where used, so --help stays fast
    import torch


def mean_image(directory: str, resize: int | None, crop: int | None, size: tuple[int, int]) -> torch.Tensor:
    """The mean of a folder's images, each prepared like the references: the trivial predictor."""
    import torch
    from .. import metrics
    from ..data import prepare_view
    from ..io import expand_image_args, read_image

    files = expand_image_args([directory])
    total = torch.zeros(3, *size, dtype=torch.float64)
    for f in files:
        img = prepare_view(read_image(f), resize, crop, str(f))
        total += metrics.match_size(img[None], size)[0].double()
    return (total / len(files)).float()


def score(
    recon: List[str] = typer.Argument(..., help="Reconstructed images or directories."),
    reference: List[str] = typer.Option(..., "--reference", "-r", help="Original images or directories, "
                                        "in the same order (repeat the flag or give a directory)."),
    resize: Optional[int] = typer.Option(None, help="Prepare references as extract did: shorter side."),
    crop: Optional[int] = typer.Option(None, help="... then the centre square of this size."),
    baseline_mean: Optional[str] = typer.Option(None, "--baseline-mean", help="Also score predicting "
                                                "the mean image of this folder (e.g. the training set)."),
    as_json: bool = JSON,
    quiet: bool = QUIET,
):
    """Score reconstructions: the paper's normalized error, PSNR (dB) and SSIM.

    Normalized error = mean over images of ||x - recon||_2 / N, where N is the mean distance between
    pairs of distinct reference images; reconstructions are bilinearly resized to the reference size
    first. It needs at least two references of one size (use --resize/--crop otherwise).

    \b
    Examples:
      featinv score recon/ -r originals/
      featinv score recon.png -r photo.jpg --json
      featinv score recon/ -r val/ --resize 128 --crop 128 --baseline-mean train/
    """
    import torch
    from rich.table import Table
    from .. import metrics
    from ..data import prepare_view
    from ..io import expand_image_args, read_image

    recon_files, ref_files = expand_image_args(recon), expand_image_args(reference)
    if len(recon_files) != len(ref_files):
        raise UsageError(f"{len(recon_files)} reconstructions but {len(ref_files)} references; "
                         f"they pair up in order")
    refs = [prepare_view(read_image(f), resize, crop, str(f)) for f in ref_files]
    recons = [read_image(f) for f in recon_files]
    rows, norm = [], None
    sizes = {tuple(r.shape[-2:]) for r in refs}
    if len(refs) >= 2 and len(sizes) == 1:
        norm = metrics.mean_pairwise_distance(torch.stack(refs))
    for f, r, x in zip(recon_files, refs, recons):
        x = metrics.match_size(x[None], tuple(r.shape[-2:])).clamp(0, 1)
        rows.append({"image": str(f),
                     "normalized_error": float(metrics.normalized_errors(x, r[None], norm)[0]) if norm else None,
                     "psnr": float(metrics.psnr(x, r[None])[0]), "ssim": float(metrics.ssim(x, r[None])[0])})
    result = {"images": rows, "mean": {k: _mean([r[k] for r in rows])
                                       for k in ("normalized_error", "psnr", "ssim")},
              "normalizer": norm}
    if baseline_mean:
        if norm is None:
            raise FeatinvError("--baseline-mean needs references of one size; add --resize/--crop")
        m = mean_image(baseline_mean, resize, crop, next(iter(sizes)))
        stack = torch.stack(refs)
        result["baseline_mean"] = {
            "normalized_error": float(metrics.normalized_errors(m.expand_as(stack), stack, norm).mean()),
            "psnr": float(metrics.psnr(m.expand_as(stack), stack).mean())}
    if norm is None and not quiet:
        err.print("featinv: note: normalized error needs two or more references of one size; "
                  "showing PSNR and SSIM only")
    if as_json:
        out.print_json(json.dumps(result))
        return
    table = Table("image", "normalized error", "PSNR (dB)", "SSIM")
    fmt = lambda v, p: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for r in rows:
        table.add_row(r["image"], fmt(r["normalized_error"], 3), fmt(r["psnr"], 2), fmt(r["ssim"], 3))
    mean = result["mean"]
    table.add_section()
    table.add_row(f"mean of {len(rows)}", fmt(mean["normalized_error"], 3), fmt(mean["psnr"], 2),
                  fmt(mean["ssim"], 3), style="bold")
    if baseline_mean:
        b = result["baseline_mean"]
        table.add_row("predict the mean image", fmt(b["normalized_error"], 3), fmt(b["psnr"], 2), "")
    out.print(table)


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None
