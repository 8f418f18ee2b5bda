"""featinv score: how close are reconstructions to their originals (paper §2.2 and §4.1)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import FeatinvError, UsageError
from .common import JSON, QUIET, err, out


def say_if_resized(recons, refs, recon_files, quiet: bool) -> None:
    """One line when reconstructions are resized to their references' size before scoring."""
    differ = [(f, tuple(x.shape[-2:]), tuple(r.shape[-2:])) for f, x, r in zip(recon_files, recons, refs)
              if x.shape[-2:] != r.shape[-2:]]
    if differ and not quiet:
        f, a, b = differ[0]
        err.print(f"featinv: note: {len(differ)} of {len(refs)} reconstructions differ in size from their "
                  f"references (e.g. {f}: {a[0]}x{a[1]}, reference {b[0]}x{b[1]}); resized bilinearly to the "
                  f"reference before scoring (--resize N --crop N prepares references as extract did)")


def paired_by_name(recon_files: list[Path], ref_files: list[Path]) -> list[Path]:
    """The references in the reconstructions' order: by file stem where the two lists hold the same
    distinct stems (recon/b.png, recon/a.png with val/a.jpg, val/b.jpg), else as given."""
    stems = [f.stem for f in ref_files]
    if len(set(stems)) != len(stems) or sorted(f.stem for f in recon_files) != sorted(stems):
        return ref_files
    by_stem = dict(zip(stems, ref_files))
    return [by_stem[f.stem] for f in recon_files]


def score(
    recon: List[str] = typer.Argument(..., help="Reconstructed images or directories."),
    reference: List[str] = typer.Option(..., "--reference", "-r", help="Original images or directories "
                                        "(repeat the flag or give a directory): paired by file name where the "
                                        "names match one to one, else in the order given."),
    resize: Optional[int] = typer.Option(None, help="Prepare references as extract did: shorter side."),
    crop: Optional[int] = typer.Option(None, help="... then the centre square of this size."),
    baseline_mean: Optional[str] = typer.Option(None, "--baseline-mean", help="Also score predicting "
                                                "the mean image of this folder (e.g. the training set)."),
    as_json: bool = JSON,
    quiet: bool = QUIET,
):
    """Score reconstructions: the paper's normalized error, PSNR (dB), SSIM and MAE.

    Normalized error = mean over images of ||x - recon||_2 / N, where N is the mean distance between
    pairs of distinct reference images; reconstructions are bilinearly resized to the reference size
    first (a note says when that happens). It needs at least two references of one size (use --resize/--crop otherwise).

    \b
    Examples:
      featinv score recon/ -r originals/
      featinv score recon.png -r photo.jpg --json
      featinv score recon/ -r val/ --resize 128 --crop 128 --baseline-mean train/
    """
    from rich.table import Table
    from .. import metrics
    from ..data import prepare_view
    from ..evaluate import mean_image
    from ..images import expand_image_args, read_image

    recon_files, ref_files = expand_image_args(recon), expand_image_args(reference)
    if len(recon_files) != len(ref_files):
        raise UsageError(f"{len(recon_files)} reconstructions but {len(ref_files)} references; "
                         f"they pair up one to one")
    ref_files = paired_by_name(recon_files, ref_files)
    prepare = lambda img, name: prepare_view(img, resize, crop, name)  # noqa: E731
    refs = [prepare(read_image(f), str(f)) for f in ref_files]
    recons = [read_image(f) for f in recon_files]
    say_if_resized(recons, refs, recon_files, quiet)
    scores = metrics.score_pairs(recons, refs)
    norm = scores["normalizer"]
    rows = [{"image": str(f), "normalized_error": e, "psnr": p, "ssim": s, "mae": m}
            for f, e, p, s, m in zip(recon_files, scores["normalized_error"], scores["psnr"], scores["ssim"],
                                     scores["mae"])]
    mean = {k: scores["mean"][k] for k in ("normalized_error", "psnr", "ssim", "mae")}
    result = {"images": rows, "mean": mean, "normalizer": norm}
    if baseline_mean:
        if norm is None:
            raise FeatinvError("--baseline-mean needs references of one size; add --resize/--crop")
        m = mean_image(expand_image_args([baseline_mean]), tuple(refs[0].shape[-2:]), prepare)
        baseline = metrics.score_pairs([m] * len(refs), refs)["mean"]
        result["baseline_mean"] = {k: baseline[k] for k in ("normalized_error", "psnr", "mae")}
    if norm is None and not quiet:
        err.print("featinv: note: normalized error needs two or more references of one size; "
                  "showing PSNR, SSIM and MAE only")
    if as_json:
        out.print_json(json.dumps(result))
        return
    table = Table("image", "normalized error", "PSNR (dB)", "SSIM", "MAE")
    fmt = lambda v, p: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for r in rows:
        table.add_row(r["image"], fmt(r["normalized_error"], 3), fmt(r["psnr"], 2), fmt(r["ssim"], 3),
                      fmt(r["mae"], 4))
    table.add_section()
    table.add_row(f"mean of {len(rows)}", fmt(mean["normalized_error"], 3), fmt(mean["psnr"], 2),
                  fmt(mean["ssim"], 3), fmt(mean["mae"], 4), style="bold")
    if baseline_mean:
        b = result["baseline_mean"]
        table.add_row("predict the mean image", fmt(b["normalized_error"], 3), fmt(b["psnr"], 2), "",
                      fmt(b["mae"], 4))
    out.print(table)
