"""featinv score: how close are reconstructions to their originals (paper §2.2 and §4.1)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import FeatinvError, UsageError, counted, note
from ..threads import Threads
from .common import JSON, QUIET, THREADS, out, show_table


def say_if_resized(recons, refs, recon_files) -> None:
    """One line when reconstructions are resized to their references' size before scoring."""
    differ = [(f, tuple(x.shape[-2:]), tuple(r.shape[-2:])) for f, x, r in zip(recon_files, recons, refs)
              if x.shape[-2:] != r.shape[-2:]]
    if differ:
        f, a, b = differ[0]
        note(f"{len(differ)} of {len(refs)} reconstructions differ in size from their "
             f"references (e.g. {f}: {a[0]}x{a[1]}, reference {b[0]}x{b[1]}); resized bilinearly to the "
             f"reference before scoring (--resize N --crop N prepares references as extract did)")


def paired_by_name(recons: tuple[list[Path], list[str]], refs: tuple[list[Path], list[str]]) -> tuple[list[Path], str]:
    """The references in the reconstructions' order, and how they were paired. Each side is (files,
    arguments). First by name below the folder given, the references numbered as `extract -o DIR/`
    numbers them (val/x.jpg, val/x.png, val/sub/x.png -> x, x-2, sub/x: what `invert feats/ -o recon/`
    writes); then by file stem where both sides hold the same distinct stems; else in the order given."""
    from ..extraction import per_file_names
    from ..arguments import source_names

    (recon_files, recon_args), (ref_files, ref_args) = recons, refs
    for keys_recon, keys_ref, how in (
            ([Path(s).with_suffix("").as_posix() for s in source_names(recon_files, recon_args)],
             per_file_names(source_names(ref_files, ref_args)), "by name"),
            ([f.stem for f in recon_files], [f.stem for f in ref_files], "by file name")):
        if len(set(keys_ref)) == len(keys_ref) and sorted(keys_recon) == sorted(keys_ref):
            by_key = dict(zip(keys_ref, ref_files))
            return [by_key[k] for k in keys_recon], how
    return ref_files, "in the order given"


def recognised(row: dict) -> str:
    return "top-1" if row["recognised_top1"] else "top-5" if row["recognised_top5"] else "no"


def print_table(rows: list[dict], mean: dict, result: dict, paired: str, recognise: bool) -> None:
    from rich.table import Table

    table = Table("image", "reference", "normalized error", "PSNR (dB)", "SSIM", "MAE",
                  *(["recognised"] if recognise else []),
                  caption="recognised: SqueezeNet (ImageNet) gives the reconstruction its reference's class first "
                          "(top-1) or among five (top-5); chance 0.1%, 0.5%" if recognise else None)
    for name in table.columns[:2]:
        name.overflow = "fold"  # a narrow terminal wraps a file name instead of cutting it
    fmt = lambda v, p: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for r in rows:
        table.add_row(r["image"], r["reference"], fmt(r["normalized_error"], 3), fmt(r["psnr"], 2),
                      fmt(r["ssim"], 3), fmt(r["mae"], 4), *([recognised(r)] if recognise else []))
    table.add_section()
    rate = [f"{mean['recognised_top1']:.0%} top-1, {mean['recognised_top5']:.0%} top-5"] if recognise else []
    table.add_row(f"mean of {len(rows)}", f"paired {paired}", fmt(mean["normalized_error"], 3),
                  fmt(mean["psnr"], 2), fmt(mean["ssim"], 3), fmt(mean["mae"], 4), *rate, style="bold")
    if "baseline_mean" in result:
        b = result["baseline_mean"]
        table.add_row("predict the mean image", "", fmt(b["normalized_error"], 3), fmt(b["psnr"], 2), "",
                      fmt(b["mae"], 4))
    show_table(table)


def score(
    recon: List[str] = typer.Argument(..., help="Reconstructed images or directories."),
    reference: List[str] = typer.Option(..., "--reference", "-r", help="Original images or directories "
                                        "(repeat the flag or give a directory): paired by name below the "
                                        "folders given (extract -o DIR/'s numbering: x.jpg, x.png -> x, x-2), "
                                        "else by file name, else in the order given (a note says so)."),
    resize: Optional[int] = typer.Option(None, min=1, help="Prepare references as extract did: shorter side "
                                         "(and reconstructions of another size the same way)."),
    crop: Optional[int] = typer.Option(None, min=1, help="... then the centre square of this size."),
    baseline_mean: Optional[str] = typer.Option(None, "--baseline-mean", help="Also score predicting "
                                                "the mean image of this folder (e.g. the training set)."),
    recognise: bool = typer.Option(True, "--recognition/--no-recognition", help="Also say whether SqueezeNet "
                                   "recognises each reconstruction as its reference's ImageNet class (top-1, "
                                   "top-5), and the rates beside chance."),
    as_json: bool = JSON,
    threads: Optional[int] = THREADS,
    quiet: bool = QUIET,  # notes obey it through the option's callback (errors.set_quiet)
):
    """Score reconstructions: the paper's normalized error, PSNR (dB), SSIM and MAE.

    Normalized error = mean over images of ||x - recon||_2 / N, where N is the mean distance between
    pairs of distinct reference images; reconstructions are bilinearly resized to the reference size
    first (a note says when that happens). It needs at least two references of one size (use --resize/--crop otherwise).

    Recognised: the shipped SqueezeNet (ImageNet, 1000 classes) classifies both images; a pair is
    recognised at top-1 if the reconstruction's first class is the reference's, at top-5 if the
    reference's class is among the reconstruction's five (chance: 0.1%, 0.5%). It stands in for a
    person looking, and is biased: it is the network the squeezenet:* features come from.

    \b
    Examples:
      featinv score recon/ -r originals/
      featinv score recon.png -r photo.jpg --json
      featinv score recon/ -r val/ --resize 128 --crop 128 --baseline-mean train/
    """
    from .. import metrics
    from ..data import prepare_view
    from ..evaluate import mean_image
    from ..arguments import expand_image_args
    from ..images import read_image
    from ..recognition import JUDGE, judge_pairs, rates

    if baseline_mean and not Path(baseline_mean).exists():  # found out now, not after the scoring
        raise FeatinvError(f"--baseline-mean {baseline_mean}: no such folder or image")
    recon_files, ref_files = expand_image_args(recon), expand_image_args(reference)
    if len(recon_files) != len(ref_files):
        raise UsageError(f"{counted(len(recon_files), 'reconstruction')} but {counted(len(ref_files), 'reference')}; "
                         f"they pair up one to one")
    ref_files, paired = paired_by_name((recon_files, recon), (ref_files, reference))
    if paired == "in the order given" and len(ref_files) > 1:
        note("the reconstructions' names do not match the references' one to one; paired in "
             "the order given (the table's reference column shows each pair)")
    Threads(threads)
    prepare = lambda img, name: prepare_view(img, resize, crop, name)  # noqa: E731
    refs = [prepare(read_image(f), str(f)) for f in ref_files]
    # A reconstruction of the whole photo (at its size, or another of its shape) gets the references' view
    # too: squeezing a 500x375 reconstruction into the 128x128 centre crop would compare other pixels.
    recons = []
    for f, r in zip(recon_files, refs):
        x = read_image(f)
        if (resize or crop) and x.shape != r.shape and min(x.shape[-2:]) >= (crop or 0):
            x = prepare(x, str(f))
        recons.append(x)
    say_if_resized(recons, refs, recon_files)
    scores = metrics.score_pairs(recons, refs)
    norm = scores["normalizer"]
    rows = [{"image": str(f), "reference": str(r), "normalized_error": e, "psnr": p, "ssim": s, "mae": m}
            for f, r, e, p, s, m in zip(recon_files, ref_files, scores["normalized_error"], scores["psnr"],
                                        scores["ssim"], scores["mae"])]
    mean = {k: scores["mean"][k] for k in ("normalized_error", "psnr", "ssim", "mae")}
    if recognise:
        for row, judged in zip(rows, judge_pairs(recons, refs)):
            row.update(judged)
        mean.update(rates(rows))
    result = {"images": rows, "mean": mean, "normalizer": norm, "paired": paired}
    if recognise:
        result["judge"] = JUDGE
    if baseline_mean:
        if norm is None:
            raise FeatinvError("--baseline-mean needs two or more different references of one size; add "
                               "--resize/--crop")
        m = mean_image(expand_image_args([baseline_mean]), tuple(refs[0].shape[-2:]), prepare)
        baseline = metrics.score_pairs([m] * len(refs), refs)["mean"]
        result["baseline_mean"] = {k: baseline[k] for k in ("normalized_error", "psnr", "mae")}
    if norm is None:
        note("normalized error needs two or more different references of one size; showing PSNR, SSIM and "
             "MAE only")
    identical = result["identical_pairs"] = sum(r["psnr"] >= metrics.PSNR_IDENTICAL for r in rows)
    if identical and identical < len(rows):
        note(f"{identical} of {len(rows)} reconstructions equal their reference ({metrics.PSNR_IDENTICAL:g} dB); "
             f"the mean PSNR is of the others")
    if as_json:
        out.print_json(json.dumps(result))
        return
    print_table(rows, mean, result, paired, recognise)
