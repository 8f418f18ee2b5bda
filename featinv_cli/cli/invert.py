"""featinv invert: features -> images, with a trained (or the shipped) inverter."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import FeatinvError, UsageError, note
from ..settings import resolve_device
from ..threads import Threads
from .common import DEVICE, QUIET, THREADS, parse_size, progress


def optimize_rows(extractor, features, size, steps, lambda_a, lambda_tv, device, quiet):
    """--method optimize, one progress bar over every row's steps."""
    from ..optimize import OptimizeConfig, invert_each_by_optimization

    cfg = OptimizeConfig(steps=steps, lambda_a=lambda_a, lambda_tv=lambda_tv, device=device)
    with progress(steps * len(features), "optimize", quiet) as bar:
        return invert_each_by_optimization(extractor, features, size, cfg, lambda row, step, loss: bar.advance(
            1, info=f"image {row + 1}/{len(features)}, loss {loss:.4f}"))


def model_for(inverters: dict, model, extractor, channels: int, name: str, device: str, mirror_average: bool):
    """inverter_for, and --mirror-average checked against it."""
    from ..inverter import inverter_for

    inverter = inverter_for(inverters, model, extractor, channels, name, device)
    if mirror_average and not inverter.can_mirror:
        raise UsageError(f"--mirror-average: {extractor.name} features have no mirrored form (HOG and LBP do)")
    return inverter


def check_method(method: str, steps, model, mirror_average: bool, grid_size: bool) -> None:
    """--method and the options that belong to one method only."""
    if method not in ("learned", "optimize", "refine"):
        raise UsageError(f"--method {method!r}: choose learned, optimize or refine")
    if steps is not None and (steps < 1 if method == "optimize" else steps < 0):
        raise UsageError(f"--optimize-steps {steps}: must be at least {1 if method == 'optimize' else 0}")
    if steps is not None and method == "learned":
        raise UsageError("--optimize-steps: for --method optimize or refine")
    learned_only = [flag for flag, given in (("-m", model), ("--mirror-average", mirror_average),
                                             ("--grid-size", grid_size)) if given]
    if method == "refine" and grid_size:
        raise UsageError("--grid-size: refine works at the image's size, where the features were computed")
    if method == "optimize" and learned_only:
        raise UsageError(f"{', '.join(learned_only)}: for --method learned (a network); --method optimize "
                         f"needs no model and reconstructs at the image's size")


def refine_rows(extractor, features, learned, steps, lambda_a, lambda_tv, device, quiet):
    """--method refine: the learned reconstructions, then ``steps`` steps of the optimisation from them,
    a batch of rows at a time; one progress bar over every row's steps."""
    from ..optimize import refine, refine_config

    cfg = refine_config(steps, device, lambda_a=lambda_a, lambda_tv=lambda_tv)
    with progress(steps * len(features), "refine", quiet) as bar:
        return refine(extractor, features, learned, cfg, lambda n: bar.advance(n))


def refined(extractor, features, learned, steps, lambda_a, lambda_tv, device, quiet, said: set):
    """--method refine of one file's rows: ``steps``, else the steps measured for the feature; where
    those are 0 the learned reconstructions stay, and a note says so once per feature."""
    from ..optimize import refine_steps

    steps = refine_steps(extractor) if steps is None else steps
    if steps == 0:
        if extractor.spec not in said:
            said.add(extractor.spec)
            note(f"refine: {extractor.spec}'s learned reconstruction is kept as it is: gradient steps from it "
                 f"did not lower the error on the validation photos (--optimize-steps N forces them)")
        return learned
    return refine_rows(extractor, features, learned, steps, lambda_a, lambda_tv, device, quiet)


def say_if_beyond_the_models_scale(inverter, size: tuple[int, int], name: str) -> bool:
    """A note when the image the features came from is much larger than what the model learned from:
    hand-made features are computed in cells of fixed pixels, so a big photo's describe finer detail
    than any training view had, and the reconstruction keeps the layout but invents its colours (seen
    on a 512-pixel photo: saturated blotches, where the same photo at 160 pixels comes back plausible).
    CNN layers resize every image to their input size, so they have no such limit."""
    trained = max(inverter.file.image_size or [128])
    if min(size) <= 2 * trained:
        return False
    largest = round(trained * float(inverter.file.train.get("config", {}).get("max_zoom", 1.25)))
    note(f"{name}: features of a {size[0]}x{size[1]} image, but the model learned from photos whose shorter "
         f"side was {trained}-{largest} pixels; at this scale a reconstruction keeps the layout but invents "
         f"colours: extract with --resize {largest} for the model's scale")
    return True


def invert(
    features: List[str] = typer.Argument(..., help="Feature file(s) (.safetensors or .npy), directories of "
                                         "them, or - for stdin. Several files make one grid, a row per file."),
    output: str = typer.Option(..., "--output", "-o", help="PNG for one image or a labelled grid of a "
                               "batch; a directory (existing, or ending in /) for one PNG per row, in the sources' "
                               "sub-folders; - for PNG on stdout."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Inverter model file; default: "
                                         "the model shipped for the file's feature kind."),
    feature: Optional[str] = typer.Option(None, help="Feature spec of a bare .npy (guessed from its "
                                          "channel count for hog, lbp, sift; colmap-sift and CNN layers need it)."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="HxW of the original image, "
                                             "for a bare .npy (default: cells x cell size)."),
    grid_size: bool = typer.Option(False, "--grid-size", help="Keep the network's output size "
                                   "(cells x cell size) instead of restoring the original size."),
    columns: int = typer.Option(0, min=0, help="Tiles per row in the grid of one file's batch (default: all "
                                "in one row up to 8; an interpolation's points per pair, a row per pair)."),
    mirror_average: bool = typer.Option(False, "--mirror-average", help="Also invert the mirrored image's "
                                        "features (HOG, LBP: a channel permutation) and average the two "
                                        "reconstructions: lower error, twice the time."),
    method: str = typer.Option("learned", "--method", help="learned (a trained network, the paper's method), "
                               "optimize (Mahendran & Vedaldi's gradient descent on the image; slow baseline) or "
                               "refine (learned, then gradient steps from it: sharper where the features keep pixels)."),
    steps: Optional[int] = typer.Option(None, "--optimize-steps", help="optimize: gradient steps per image "
                                        "(default 200); refine: steps from the learned image (default: what "
                                        "was measured best for the feature; 0 for those it did not help)."),
    lambda_a: float = typer.Option(1e-3, "--lambda-a", help="optimize: weight of the a-norm (a = 6) prior."),
    lambda_tv: float = typer.Option(0.05, "--lambda-tv", help="optimize: weight of the total-variation prior."),
    device: str = DEVICE,
    threads: Optional[int] = THREADS,
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
      featinv invert feats/ -o recon/                     # every feature file below feats/
      featinv invert orig.safetensors drop.safetensors bin.safetensors -o compare.png
      featinv invert conv3.safetensors --method optimize --optimize-steps 300 -o pre-image.png
      featinv invert hog.safetensors --mirror-average -o recon.png
      featinv invert conv1.safetensors --method refine -o sharper.png

    --method optimize is the baseline the paper compares against: it needs no model but gradients of
    the extractor (CNN layers, HOG through its magnitudes), and refuses LBP and SIFT. --method refine
    starts that optimisation from the learned reconstruction (all rows of a file at once): the network
    gives the expected image, the steps sharpen it where the features keep the pixels; for features
    where the steps did not lower the error on validation photos it keeps the learned image and says so.
    """
    from ..features import resolve
    from ..arguments import expand_feature_args
    from ..formats.features import load_features
    from ..formats.png import PNG_FILE, write_image
    from ..grid import distinct_titles, file_title, output_names, row_labels, save_reconstructions, source_label
    from ..outputs import Output
    from ..optimize import check_differentiable

    folders = [Path(a) for a in features if a != "-" and Path(a).is_dir()]
    features = expand_feature_args(features)
    device = resolve_device(device)
    Threads(threads)
    if features.count("-") > 1:
        raise FeatinvError("only one input can be read from stdin")
    check_method(method, steps, model, mirror_average, grid_size)
    # -o DIR/: each file's PNGs are written as soon as it is inverted; otherwise one PNG or grid at the end.
    target = Output(output, PNG_FILE, inputs=[*features, model], takes="file or folder")
    if columns and len(features) > 1 and not target.is_folder:
        raise UsageError("--columns lays out one file's batch; several feature files make one grid row each")
    inverters: dict = {}
    said: set[str] = set()  # features refine left as learned, said once each
    rows, captions, row_names, specs = [], [], [], []
    grid_columns, run_titles, warned_scale = columns, None, False
    for path in features:
        name = "<stdin>" if path == "-" else path
        ff = load_features(path)
        extractor, size = resolve(ff, name, feature, parse_size(image_size))
        if method == "refine":
            check_differentiable(extractor)  # before the network's work, not after it
        if method == "optimize":
            images = optimize_rows(extractor, ff.features, size, steps or 200, lambda_a, lambda_tv, device, quiet)
        else:
            inverter = model_for(inverters, model, extractor, ff.features.shape[1], name, device, mirror_average)
            images = inverter(ff.features, None if grid_size else size, mirror_average=mirror_average)
            if not extractor.is_cnn and not warned_scale:
                warned_scale = say_if_beyond_the_models_scale(inverter, size, name)
            if method == "refine":
                images = refined(extractor, ff.features, images, steps, lambda_a, lambda_tv, device, quiet, said)
        if target.is_folder:
            for image, png in zip(images, output_names(ff, path, folders)):
                write_image(target.file(png, ".png"), image)
            continue
        rows.append(images)
        captions.append(row_labels(ff))
        if ff.row_length and len(ff.sources) == len(ff):  # one grid row per run (interpolate: per pair)
            run = columns or ff.row_length
            run_titles = [source_label(s) for s in ff.sources[::run]] if run == ff.row_length else None
            grid_columns = run
        row_names.append(file_title(ff, captions[-1], name))
        specs.append(extractor.spec)
    if not target.is_folder:
        row_names = distinct_titles(row_names, specs, features)
        save_reconstructions(output, rows, captions, row_names, grid_columns if len(rows) == 1 else 0, run_titles)
