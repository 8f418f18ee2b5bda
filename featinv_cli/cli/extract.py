"""featinv extract: images -> feature file."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import torch
import typer

from ..data import center_crop, resize_shorter
from ..errors import FeatinvError, UsageError
from ..features import parse_spec
from ..io import FeatureFile, check_not_input, expand_image_args, read_image, save_features
from .common import QUIET, is_dir_target, progress


def prepare(image: torch.Tensor, resize: int | None, crop: int | None, name: str) -> torch.Tensor:
    """The optional evaluation view: shorter side to ``resize``, then the centre ``crop`` square."""
    if resize:
        image = resize_shorter(image, resize)
    if crop:
        h, w = image.shape[-2:]
        if min(h, w) < crop:
            raise FeatinvError(f"{name}: {h}x{w} is smaller than --crop {crop}; add --resize {crop}")
        image = center_crop(image, crop)
    return image


def extract(
    feature: str = typer.Argument(..., help="Feature spec: hog, hog:cell=8, ..."),
    images: List[str] = typer.Argument(..., help="Image files or directories (read in sorted order)."),
    output: str = typer.Option(..., "--output", "-o", help="Feature file (.safetensors or .npy), a "
                               "directory for one file per image, or - for stdout."),
    resize: Optional[int] = typer.Option(None, help="First resize so the shorter side is this many pixels."),
    crop: Optional[int] = typer.Option(None, help="Then take the centre square of this size."),
    raw: bool = typer.Option(True, "--raw/--no-raw", help="Keep raw arrays beside the features "
                             "(SIFT: keypoints, descriptors, counts per image)."),
    quiet: bool = QUIET,
):
    """Compute features of images and write them with their metadata.

    Images of one size go into one file, one row per image. Give a directory as -o to write one
    file per image instead (needed when sizes differ).

    Features: hog (VLFeat UoCTTI HOG, 31 channels, cell 8), lbp (VLFeat uniform LBP, 58 channels,
    cell 16), sift (OpenCV SIFT on the paper's grid, 133 channels, cell 4; keypoints kept raw too).

    \b
    Examples:
      featinv extract hog photo.jpg -o photo.safetensors
      featinv extract sift photo.jpg -o photo.safetensors --no-raw
      featinv extract hog photos/ --resize 128 --crop 128 -o val.safetensors
      featinv extract hog photo.jpg -o - | featinv invert - -o recon.png
    """
    extractor = parse_spec(feature)
    files = expand_image_args(images)
    check_not_input(output, files)
    per_file = is_dir_target(output)
    if per_file and output.endswith(".npy"):
        raise UsageError("-o: a directory name cannot end in .npy")
    if per_file:
        Path(output).mkdir(parents=True, exist_ok=True)
    rows, extras, sizes = [], [], []
    with progress(len(files), "extract", quiet) as bar:
        for f in files:
            img = prepare(read_image(f), resize, crop, str(f))
            h, w = img.shape[-2:]
            if min(h, w) < extractor.min_size():
                raise FeatinvError(f"{f}: {h}x{w} is too small for {extractor.spec} "
                                   f"(needs at least {extractor.min_size()} pixels a side)")
            if not per_file and sizes and (h, w) != sizes[0]:
                raise FeatinvError(f"{f}: {h}x{w}, but {files[0]} is {sizes[0][0]}x{sizes[0][1]}; images of "
                                   f"different sizes need -o DIR/ (one file each) or --resize N --crop N")
            feats, extra = extractor.extract(img[None])
            extra = extra if raw else {}
            if per_file:
                save_features(Path(output) / f"{f.stem}.safetensors", FeatureFile(
                    feats, extractor.spec, extractor.params, (h, w), [f.name], extra))
            else:
                rows.append(feats)
                extras.append(extra)
                sizes.append((h, w))
            bar.advance()
    if per_file:
        return
    # Raw arrays are per-keypoint (concatenated) or per-image (counts): both concatenate along dim 0.
    merged = {k: torch.cat([e[k] for e in extras]) for k in extras[0]}
    save_features(output, FeatureFile(torch.cat(rows), extractor.spec, extractor.params, sizes[0],
                                      [f.name for f in files], merged))
