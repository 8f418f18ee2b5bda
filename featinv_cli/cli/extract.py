"""featinv extract: images -> feature file."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import FeatinvError, UsageError
from .common import DEVICE, QUIET, is_dir_target, progress, resolve_device


def parse_shard(text: str | None, n: int) -> slice:
    """'I/N' -> the I-th of N contiguous blocks of n items (so shards keep the sorted order)."""
    if text is None:
        return slice(0, n)
    try:
        i, k = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: write I/N, e.g. 0/4") from None
    if not (k >= 1 and 0 <= i < k):
        raise UsageError(f"--shard {text!r}: need 0 <= I < N")
    return slice(i * n // k, (i + 1) * n // k)


def numbered(output: str, part: int) -> str:
    p = Path(output)
    return str(p.with_name(f"{p.stem}-{part:05d}{p.suffix}"))


def extract(
    feature: str = typer.Argument(..., help="Feature spec: hog, hog:cell=8, ..."),
    images: List[str] = typer.Argument(..., help="Image files or directories (walked recursively, in sorted order)."),
    output: str = typer.Option(..., "--output", "-o", help="Feature file (.safetensors or .npy), a "
                               "directory for one file per image, or - for stdout."),
    resize: Optional[int] = typer.Option(None, help="First resize so the shorter side is this many pixels."),
    crop: Optional[int] = typer.Option(None, help="Then take the centre square of this size."),
    raw: bool = typer.Option(True, "--raw/--no-raw", help="Keep raw arrays beside the features "
                             "(SIFT: keypoints, descriptors, counts per image)."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="I/N", help="Only the I-th of N contiguous "
                                        "blocks of the (sorted) images: split a big set over jobs."),
    rows_per_file: int = typer.Option(0, "--rows-per-file", metavar="R", help="Write OUT-00000.safetensors, "
                                      "OUT-00001... of R rows each, holding at most R in memory (0: one file)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="CNN features: a torchvision-style .pth "
                                          "state dict or .safetensors, or random:SEED (default: squeezenet's "
                                          "shipped ImageNet weights; for the others torchvision's own file in "
                                          "torch's cache, else an error: never random unasked)."),
    workers: int = typer.Option(0, "--workers", help="DataLoader processes reading and extracting in parallel "
                                "(with a GPU: reading only)."),
    device: str = DEVICE,
    quiet: bool = QUIET,
):
    """Compute features of images and write them with their metadata.

    Images of one size go into one file, one row per image. Give a directory as -o to write one
    file per image instead (needed when sizes differ).

    Features: hog (VLFeat UoCTTI HOG, 31 channels, cell 8), lbp (VLFeat uniform LBP, 58 channels,
    cell 16), sift (OpenCV SIFT on the paper's grid, 133 channels, cell 4; keypoints kept raw too),
    squeezenet:LAYER (conv1, fire2..fire9, conv10, pool10; ImageNet weights built in),
    alexnet:LAYER and caffenet:LAYER (conv1..conv5, fc6..fc8), torchvision:MODEL:MODULE (any named
    module of a torchvision classifier; needs torchvision). CNN features take --weights.

    For big sets: --shard I/N takes one block of the images (one per cluster job or make target),
    --rows-per-file R writes numbered files with constant memory, --workers K extracts in parallel.

    \b
    Examples:
      featinv extract hog photo.jpg -o photo.safetensors
      featinv extract sift photo.jpg -o photo.safetensors --no-raw
      featinv extract hog photos/ --resize 128 --crop 128 -o val.safetensors
      featinv extract hog photo.jpg -o - | featinv invert - -o recon.png
      featinv extract torchvision:resnet18:layer3 --weights resnet18.pth photo.jpg -o r.safetensors
      featinv extract hog big/ --resize 128 --crop 128 --shard 2/8 --rows-per-file 1000 --workers 3 -o s2.safetensors
    """
    import torch
    from ..data import ExtractDataset, worker_init
    from ..features.registry import parse_spec, with_weights
    from ..io import FeatureFile, check_not_input, expand_image_args, save_features, source_names

    extractor = parse_spec(with_weights(feature, weights))
    files = expand_image_args(images)
    sources = source_names(files, images)
    block = parse_shard(shard, len(files))
    files, sources = files[block], sources[block]
    if not files:
        raise FeatinvError(f"shard {shard} holds no images")
    check_not_input(output, files)
    per_file = is_dir_target(output)
    if per_file and output.endswith(".npy"):
        raise UsageError("-o: a directory name cannot end in .npy")
    if rows_per_file < 0 or workers < 0:
        raise UsageError("--rows-per-file and --workers must be >= 0")
    if rows_per_file and (per_file or output == "-"):
        raise UsageError("--rows-per-file needs a file name for -o (not a directory or -)")
    if per_file:
        Path(output).mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    on_gpu = device != "cpu"  # workers only read images: CUDA does not survive a fork
    loader = torch.utils.data.DataLoader(ExtractDataset(files, extractor, resize, crop, extract=not on_gpu),
                                         batch_size=None, num_workers=workers, worker_init_fn=worker_init)
    rows, extras, names, size, part = [], [], [], None, 0
    view = {"resize": resize, "crop": crop}  # lets `train --features` rebuild each target image

    def flush(name: str) -> None:
        # Raw arrays are per-keypoint (concatenated) or per-image (counts): both concatenate along dim 0.
        # One row is written as it is: a 6000x6000 photo's SIFT grid is 1.2 GB, a copy as much again.
        cat = lambda ts: ts[0] if len(ts) == 1 else torch.cat(ts)  # noqa: E731
        merged = {k: cat([e[k] for e in extras]) for k in extras[0]}
        save_features(name, FeatureFile(cat(rows), extractor.spec, extractor.params, size, list(names),
                                        merged, view=view))
        rows.clear(), extras.clear(), names.clear()

    with progress(len(files), "extract", quiet) as bar:
        for i, (h, w), feats, extra in loader:
            if on_gpu:
                with torch.no_grad():
                    feats, extra = extractor.extract(feats.to(device))
                feats, extra = feats.cpu(), {k: v.cpu() for k, v in extra.items()}
            f = files[i]
            extra = extra if raw else {}
            if per_file:  # sub-folders of the input are kept, so equal names in two folders stay apart
                target = Path(output) / Path(sources[i]).with_suffix(".safetensors")
                target.parent.mkdir(parents=True, exist_ok=True)
                save_features(target, FeatureFile(
                    feats, extractor.spec, extractor.params, (h, w), [sources[i]], extra, view=view))
                bar.advance()
                continue
            if size is not None and (h, w) != size:
                raise FeatinvError(f"{f}: {h}x{w}, but {files[0]} is {size[0]}x{size[1]}; images of "
                                   f"different sizes need -o DIR/ (one file each) or --resize N --crop N")
            size = (h, w)
            rows.append(feats)
            extras.append(extra)
            names.append(sources[i])
            if rows_per_file and len(rows) == rows_per_file:
                flush(numbered(output, part))
                part += 1
            bar.advance()
    if rows:
        flush(numbered(output, part) if rows_per_file else output)
