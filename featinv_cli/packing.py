"""`featinv pack`: training photos decoded once, at their training scale, into views.

A view is a photo resized so its shorter side is ``side`` and cut to the centre square, rounded to
8 bits (``data.prepare_view``, as `extract --resize S --crop S` prepares an image). `featinv pack`
writes a set of views to one memory-mapped file (formats.views); `featinv train` reads it with no JPEG
decoding, or decodes a folder into the same array in memory once at start. For sparse SIFT, whose
features cannot be recomputed from a crop on the fly at the cost of HOG, the file can also hold every
view's keypoints and those of its mirror image, detected once (``detect_sift``).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import FeatinvError
from .formats.views import ViewSet, to_webp

if TYPE_CHECKING:
    import torch


class _Decode:
    """A map-style dataset (what DataLoader needs) of the views of ``files``: (view, "") or, unless
    ``strict``, (zeros, why) for a photo that does not read. A plain class, so that `info` reads a views
    header without importing torch."""

    def __init__(self, files: list[Path], side: int, strict: bool):
        self.files, self.side, self.strict = files, side, strict

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        import torch

        from .data import prepare_view
        from .images import read_image

        try:
            view = prepare_view(read_image(self.files[i]), self.side, self.side, str(self.files[i]))
        except FeatinvError as e:
            if self.strict:
                raise
            return torch.zeros(3, self.side, self.side, dtype=torch.uint8), str(e)
        return (view * 255.0).round().to(torch.uint8), ""


def decode_views(files: list[Path], side: int, workers: int = 0, on_image=None,
                 strict: bool = True) -> tuple[torch.Tensor, list[tuple[int, str]]]:
    """(M, 3, side, side) uint8 views of ``files``, decoded in ``workers`` processes, and (index, why)
    of each file left out (none when ``strict``: the first that does not read raises)."""
    import torch

    from .data import worker_init
    from .memory import check_fits

    check_fits(len(files) * 3 * side * side, f"{len(files)} views of {side}x{side}", "pack fewer photos or a smaller --side")
    out = torch.empty(len(files), 3, side, side, dtype=torch.uint8)
    loader = torch.utils.data.DataLoader(_Decode(files, side, strict), batch_size=32, num_workers=workers,
                                         worker_init_fn=worker_init)
    kept, seen, failed = 0, 0, []
    for batch, why in loader:
        failed += [(seen + j, w) for j, w in enumerate(why) if w]
        good = torch.tensor([not w for w in why])
        out[kept:kept + int(good.sum())] = batch[good]  # the views kept stay contiguous: out[:kept] is no copy
        kept, seen = kept + int(good.sum()), seen + len(why)
        if on_image:
            on_image(len(why))
    return out[:kept], failed


_DETECTING: tuple = ()  # (views, extractor) of detect_sift, inherited by its forked workers


SIFT_CHUNK = 64  # views per task of detect_sift's workers


def _detect_chunk(start: int) -> dict[str, np.ndarray]:
    """SIFT of views start..start+SIFT_CHUNK-1 and their mirrors, as numpy arrays (plain pickles from a worker)."""
    import torch

    views, extractor = _DETECTING
    kps, descs, counts = [], [], []
    for i in range(start, min(start + SIFT_CHUNK, len(views))):
        x = views[i:i + 1].float() / 255.0
        raw = extractor.detect(torch.cat([x, x.flip(-1)]))
        kps.append(raw["keypoints"])
        descs.append(raw["descriptors"].round().clamp(0, 255).to(torch.uint8))
        counts.append(raw["counts"])
    return {"keypoints": torch.cat(kps).numpy(), "descriptors": torch.cat(descs).numpy(),
            "counts": torch.cat(counts).numpy()}


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool (it would hang)


def detect_sift(views: torch.Tensor, extractor, on_image=None, workers: int = 0) -> dict[str, torch.Tensor]:
    """Raw SIFT of each view and of its mirror image (rows 2i, 2i+1), descriptors as uint8 (OpenCV's
    are whole numbers 0..255): ~20 kB per view, where a dense 133-channel grid would take 0.8 MB.
    ``workers`` forked processes detect chunks of SIFT_CHUNK views in parallel (the same result as one process)."""
    global _DETECTING
    from contextlib import ExitStack
    from multiprocessing import get_context

    import torch

    starts = list(range(0, len(views), SIFT_CHUNK))
    _DETECTING = (views, extractor)
    parts = []
    try:
        with ExitStack() as stack:
            results = map(_detect_chunk, starts) if workers <= 1 else stack.enter_context(
                get_context("fork").Pool(workers, initializer=_one_thread)).imap(_detect_chunk, starts)
            for start, part in zip(starts, results):
                parts.append(part)
                if on_image:
                    on_image(min(SIFT_CHUNK, len(views) - start))
    finally:
        _DETECTING = ()
    if not parts:
        return {"keypoints": torch.zeros(0, 4), "descriptors": torch.zeros(0, 128, dtype=torch.uint8),
                "counts": torch.zeros(0, dtype=torch.long)}
    return {k: torch.from_numpy(np.concatenate([p[k] for p in parts])) for k in parts[0]}


def pack(files: list[Path], sources: list[str], side: int, sift_extractor=None, workers: int = 0,
         on_image=None, webp: int = 0, strict: bool = True) -> ViewSet:
    """Decode ``files`` into views (as WebP of that quality decodes them, when ``webp``), and detect SIFT
    on each view and its mirror when an extractor is given. Unless ``strict``, photos that do not read
    are left out (``ViewSet.skipped``); none that reads is still an error."""
    from .data import fingerprint

    views, failed = decode_views(files, side, workers, on_image, strict)
    if failed and len(failed) == len(files):
        raise FeatinvError(f"none of the {len(files)} photos reads: {failed[0][1]}" if len(files) > 1 else failed[0][1])
    out = set(i for i, _ in failed)
    kept = [i for i in range(len(files)) if i not in out]
    vs = ViewSet(views, [sources[i] for i in kept], fingerprint([files[i] for i in kept]),
                 skipped=[(sources[i], why) for i, why in failed])
    if webp:
        to_webp(vs, webp, workers)
    if sift_extractor is not None:
        vs.sift, vs.sift_params = detect_sift(vs.views, sift_extractor, on_image, workers), sift_extractor.params
    return vs
