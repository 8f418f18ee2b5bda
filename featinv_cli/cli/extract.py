"""featinv extract: images -> feature file."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import FeatinvError, UsageError, counted, note
from ..settings import resolve_device
from ..threads import Threads
from .common import DEVICE, QUIET, THREADS, WEIGHTS, progress


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


def say_what_the_database_lacks(images, database) -> None:
    """Notes an auditor must see: images whose features COLMAP never stored (their grids are empty, and
    their reconstructions say nothing of the photo), and keypoints outside an image's camera size."""
    never = [i.name for i in images if not i.stored]
    outside = [(i.name, k, len(i.keypoints)) for i in images if (k := i.outside())]
    if never:
        note(f"{database}: {len(never)} of {len(images)} images have no stored keypoints "
             f"({', '.join(never[:3])}{', ...' if len(never) > 3 else ''}); their features are empty, so "
             f"their reconstructions show nothing of the photo (leave them out of a score)")
    if outside:
        name, k, n = outside[0]
        note(f"{database}: {counted(len(outside), 'image')} {'has' if len(outside) == 1 else 'have'} keypoints outside their camera's size "
             f"(e.g. {name}: {k} of {n}); those keypoints are left out of the grid")


def extract_database(extractor, database: str, target, resize, crop, rows_per_file: int, raw: bool,
                     quiet: bool) -> None:
    """`extract colmap-sift DATABASE.db`: -o checked first (by the sink), then the whole database read and
    checked before any row is made, then one image's grid at a time."""
    from ..extraction import FeatureSink, database_rows, per_file_names
    from ..features.colmap import as_view, read_database

    with FeatureSink(target, extractor, {"resize": resize, "crop": crop}, rows_per_file) as sink:
        found = read_database(database)
        say_what_the_database_lacks(found, database)
        if resize or crop:
            found = [as_view(i, resize, crop) for i in found]
        sizes = sorted({f"{i.height}x{i.width}" for i in found})
        if len(sizes) > 1 and not target.is_folder:
            raise UsageError(f"{database}: its images have {len(sizes)} sizes ({', '.join(sizes[:4])}); write "
                             f"one file per image with -o DIR/")
        rows = database_rows(extractor, found, database)
        with progress(len(found), "extract", quiet) as bar:
            for (name, size, feats, extra), file_name in zip(rows, per_file_names([i.name for i in found])):
                sink.add(f"{database} ({name})", name, size, feats, extra if raw else {}, file_name)
                bar.advance()


def extract(
    feature: str = typer.Argument(..., help="Feature spec: hog, hog:cell=8, ..."),
    images: List[str] = typer.Argument(..., help="Image files or directories (walked recursively, in sorted order)."),
    output: str = typer.Option(..., "--output", "-o", help="Feature file (.safetensors or .npy), a "
                               "directory for one file per image, or - for stdout."),
    resize: Optional[int] = typer.Option(None, min=1, help="First resize so the shorter side is this many pixels "
                                         "(a COLMAP database: its keypoints, as resizing the photo moves them)."),
    crop: Optional[int] = typer.Option(None, min=1, help="Then take the centre square of this size."),
    raw: bool = typer.Option(True, "--raw/--no-raw", help="Keep raw arrays beside the features "
                             "(SIFT: keypoints, descriptors, counts per image)."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="I/N", help="Only the I-th of N contiguous "
                                        "blocks of the (sorted) images: split a big set over jobs."),
    rows_per_file: int = typer.Option(0, "--rows-per-file", metavar="R", help="Write OUT-00000.safetensors, "
                                      "OUT-00001... of R rows each, holding at most R in memory (0: one file)."),
    weights: Optional[str] = WEIGHTS,
    workers: int = typer.Option(0, "--workers", help="DataLoader processes reading and extracting in parallel "
                                "(with a GPU: reading only)."),
    device: str = DEVICE,
    threads: Optional[int] = THREADS,
    quiet: bool = QUIET,
):
    """Compute features of images and write them with their metadata.

    Images of one size go into one file, one row per image. Give a directory as -o to write one
    file per image instead (needed when sizes differ; equal names are numbered: x, x-2).

    Features: hog (VLFeat UoCTTI HOG, 31 channels, cell 8), lbp (VLFeat uniform LBP, 58 channels,
    cell 16), sift (OpenCV SIFT on the paper's grid, 133 channels, cell 4; keypoints kept raw too),
    colmap-sift (COLMAP's SIFT on the same grid, read from a COLMAP database.db with no extra
    package, or from images with pycolmap: pip install 'featinv[colmap]'),
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
      featinv extract colmap-sift reconstruction/database.db -o feats/    # COLMAP's stored SIFT, per image
      featinv extract colmap-sift database.db --resize 128 --crop 128 -o feats/  # as the photos' 128-px view
    """
    import torch
    from .. import ops
    from ..data import worker_init
    from ..features.registry import parse_spec, with_weights
    from ..extraction import ExtractDataset, FeatureSink, per_file_names
    from ..features.colmap import is_database
    from ..arguments import expand_image_args, source_names
    from ..formats.features import FEATURE_FILE
    from ..outputs import Output

    extractor = parse_spec(with_weights(feature, weights))
    Threads(threads)
    target = Output(output, FEATURE_FILE, inputs=images, takes="file or folder")
    for i in images:
        if Path(i).suffix.lower() == ".db" and Path(i).is_file() and not is_database(i):
            raise FeatinvError(f"{i}: not a SQLite file (a COLMAP database.db is one)")
    if any(is_database(i) for i in images):
        if extractor.name != "colmap-sift" or len(images) != 1:
            raise UsageError("a COLMAP database holds COLMAP's SIFT: featinv extract colmap-sift DATABASE.db -o OUT "
                             "(one database, nothing else)")
        if shard:
            raise UsageError("--shard splits a list of images; a database is read whole")
        extract_database(extractor, images[0], target, resize, crop, rows_per_file, raw, quiet)
        return
    files = expand_image_args(images)
    sources = source_names(files, images)
    block, total = parse_shard(shard, len(files)), len(files)
    names = per_file_names(sources)[block]  # over every image, before the shard is cut: the same in each shard
    files, sources = files[block], sources[block]
    if not files:  # more jobs in an array than images: this one has nothing to do, and that is no error
        note(f"shard {shard} holds none of the {total} images; nothing written")
        return
    target.check_not_input(files)
    if rows_per_file < 0 or workers < 0:
        raise UsageError("--rows-per-file and --workers must be >= 0")
    device = resolve_device(device)
    on_gpu = device != "cpu"  # workers only read images: CUDA does not survive a fork
    if on_gpu:  # features in full float32: TF32 convolutions moved squeezenet:fire9 by 0.2% on an H100
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    if extractor.uses_operators and workers:
        ops.build()  # compile or load the operators here, once, not in every worker at the same time
    loader = torch.utils.data.DataLoader(ExtractDataset(files, extractor, resize, crop, extract=not on_gpu),
                                         batch_size=None, num_workers=workers, worker_init_fn=worker_init)
    with FeatureSink(target, extractor, {"resize": resize, "crop": crop}, rows_per_file) as sink, \
            progress(len(files), "extract", quiet) as bar:
        for i, size, feats, extra in loader:
            if on_gpu:
                with torch.no_grad():
                    feats, extra = extractor.extract(feats.to(device))
                feats, extra = feats.cpu(), {k: v.cpu() for k, v in extra.items()}
            sink.add(files[i], sources[i], tuple(size), feats, extra if raw else {}, names[i])
            bar.advance()
