"""featinv pack: training photos -> one views file that `featinv train` reads without decoding."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import UsageError, note
from ..threads import Threads
from .common import QUIET, THREADS, err, progress


def pack(
    images: List[str] = typer.Argument(..., help="Image files or directories (walked recursively, in sorted order), "
                                       "or one views file to pack again (add --sift, change --webp)."),
    output: Path = typer.Option(..., "--output", "-o", help="Views file to write (.safetensors)."),
    side: Optional[int] = typer.Option(None, help="Each photo is resized so its shorter side is this many "
                                       "pixels (at least 64), then cut to the centre square. Train's crops are "
                                       "at most this big. [default: 160]"),
    sift: Optional[str] = typer.Option(None, "--sift", metavar="SPEC", help="Also detect SIFT (e.g. sift, "
                                       "sift:cell=4) on every view and its mirror image, once, for "
                                       "`featinv train sift`: about 25 ms a photo."),
    webp: int = typer.Option(0, "--webp", metavar="QUALITY", help="Store the views as WebP of this quality "
                             "(1-100; 75: about 3 kB a 160-px view) instead of raw pixels: a small file to carry to "
                             "another machine, decoded into memory when train loads it. 0: raw, memory-mapped."),
    workers: int = typer.Option(0, "--workers", help="Processes decoding images, detecting SIFT and encoding "
                                "WebP in parallel."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first photo that does not read, instead of "
                                "leaving it out with a note."),
    verbose: bool = typer.Option(False, "--verbose", help="Name every photo left out, one line each (the note "
                                 "names the first few)."),
    threads: Optional[int] = THREADS,
    quiet: bool = QUIET,
):
    """Decode training photos once into a memory-mapped file of 8-bit views.

    `featinv train -d views.safetensors` then trains with no JPEG decoding: random crops, zoom and
    flips are cut from the views in whole batches, and HOG, LBP and CNN features are computed on each
    batch. A view takes side x side x 3 bytes (160: 77 kB; 15,000 photos: 1.2 GB on disk, read as
    batches need it). With --sift the keypoints of every view and of its mirror image are stored
    too (about 55 kB a photo), since SIFT is too slow to detect on every batch. A photo that does not
    read (damaged, not an image, over the pixel limit) is left out with a note, and the rest are packed;
    --strict stops at the first instead. No photo that reads is an error.

    \b
    Examples:
      featinv pack photos/ -o views.safetensors
      featinv pack photos/ more/ -o views.safetensors --sift sift --workers 1
      featinv train hog -d views.safetensors -o hog.safetensors
      featinv pack small.safetensors --sift sift --workers 16 -o views-sift.safetensors   # SIFT added later

    A views file as the only input is packed again: its views as they are (its own side), with SIFT
    detected when --sift is given (a WebP pack carried to a GPU machine can get its keypoints there,
    where many cores make it quick, instead of carrying them).
    """
    from ..features.registry import parse_spec
    from ..arguments import expand_image_args, source_names
    from ..formats.views import VIEWS_FILE, is_views_file, load_views, save_views, to_webp
    from ..outputs import Output
    from ..packing import detect_sift, pack as pack_views

    if side is not None and side < 64:
        raise UsageError(f"--side {side}: views must be at least 64 pixels")
    if workers < 0:
        raise UsageError("--workers must be >= 0")
    if not 0 <= webp <= 100:
        raise UsageError(f"--webp {webp}: give a quality from 1 to 100 (0: raw pixels)")
    if any(str(i) == "-" for i in images):
        raise UsageError("pack reads photos (files or folders) or a views file by name, not from stdin")
    target = Output(output, VIEWS_FILE, inputs=images)  # before the photos are decoded, not after
    if len(images) > 1 and any(is_views_file(i) for i in images):
        raise UsageError("a views file is packed again on its own (featinv pack VIEWS --sift sift -o OUT); pack "
                         "photos together from their folders")
    extractor = parse_spec(sift) if sift else None
    if extractor is not None and not extractor.keypoint_grid:
        raise UsageError(f"--sift {sift}: give a sift or colmap-sift spec (HOG, LBP and CNN features are made on "
                         f"each batch)")
    Threads(threads)
    if len(images) == 1 and is_views_file(images[0]):
        vs = load_views(images[0], workers)
        if side not in (None, vs.side):
            raise UsageError(f"--side {side}: {images[0]} holds {vs.side}-px views; pack the photos again to change it")
        if webp and to_webp(vs, webp, workers) and vs.sift and extractor is None:
            # its keypoints were found on the pixels before this encoding: they would not match these
            note(f"{images[0]}: its SIFT was detected on the views before this WebP encoding and is left out; "
                 f"add --sift SPEC to detect it on the new views")
            vs.sift, vs.sift_params = {}, None
        if extractor is not None:
            with progress(len(vs), "sift", quiet) as bar:
                vs.sift, vs.sift_params = detect_sift(vs.views, extractor, bar.advance, workers), extractor.params
        side = vs.side
    else:
        side = side or 160
        files = expand_image_args(images)
        target.check_not_input(files)
        with progress(len(files) * (2 if extractor else 1), "pack", quiet) as bar:
            vs = pack_views(files, source_names(files, images), side, extractor, workers, bar.advance, webp, strict)
        say_skipped(vs.skipped, len(files), verbose)
    save_views(output, vs, webp, workers)
    if not quiet:
        extra = f", SIFT of each and its mirror ({len(vs.sift['keypoints'])} keypoints)" if vs.sift else ""
        size = output.stat().st_size
        left = f", {len(vs.skipped)} photo{'' if len(vs.skipped) == 1 else 's'} left out" if vs.skipped else ""
        err.print(f"wrote {output}: {len(vs)} view{'' if len(vs) == 1 else 's'} of {side}x{side}{extra}, "
                  + (f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.1f} kB") + left)


SHOWN = 3  # photos a note names before "--verbose lists them all"


def say_skipped(skipped: list[tuple[str, str]], total: int, verbose: bool) -> None:
    """The photos pack left out: each on its own line with --verbose, then how many and the first few."""
    if not skipped:
        return
    if verbose:
        for _, why in skipped:
            note(f"left out: {why}")
    named = "; ".join(why for _, why in skipped[:SHOWN])
    more = "" if len(skipped) <= SHOWN or verbose else f"; and {len(skipped) - SHOWN} more (--verbose lists them all)"
    note(f"{len(skipped)} of {total} photos {'does' if len(skipped) == 1 else 'do'} not read and "
         f"{'is' if len(skipped) == 1 else 'are'} left out (--strict stops at the first)"
         + ("" if verbose else f": {named}{more}"))
