"""The view cache: training photos decoded once, at their training scale, as one uint8 array.

A view is a photo resized so its shorter side is ``side`` and cut to the centre square, rounded to
8 bits (``data.prepare_view``, as `extract --resize S --crop S` prepares an image). `featinv pack`
writes a set of views to one memory-mapped file (format ``featinv-views/1``); `featinv train` reads it
with no JPEG decoding, or decodes a folder into the same array in memory once at start. For sparse
SIFT, whose features cannot be recomputed from a crop on the fly at the cost of HOG, the file can also
hold every view's keypoints and those of its mirror image, detected once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import FeatinvError
from .formats import VIEWS_FORMAT

if TYPE_CHECKING:
    import torch


@dataclass
class ViewSet:
    """``views``: (N, 3, side, side) uint8. ``sift``: raw SIFT of row 2i = view i, 2i+1 = its mirror
    (``keypoints`` (K, 4) float32, ``descriptors`` (K, 128) uint8, ``counts`` (2N,) int64) and the
    extractor params it was detected with, or empty."""

    views: torch.Tensor
    sources: list[str]
    fingerprint: str
    sift: dict[str, torch.Tensor] = field(default_factory=dict)
    sift_params: dict | None = None
    webp: tuple[int | None, list[bytes]] | None = None  # (quality, blobs) when ``views`` are decoded WebP
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, why) of photos `pack` left out

    @property
    def side(self) -> int:
        return int(self.views.shape[-1])

    def __len__(self) -> int:
        return int(self.views.shape[0])


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


def _webp(view: np.ndarray, quality: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(view).save(out, "WEBP", quality=quality, method=6)
    return out.getvalue()


def _unwebp(blob: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))


def _pool_map(fn, items, workers: int):
    """fn of each item in order, in ``workers`` forked processes: an iterator, so results can be stored
    as they come instead of all held in a list first."""
    if workers <= 1:
        yield from map(fn, items)
        return
    from multiprocessing import get_context

    with get_context("fork").Pool(workers) as pool:
        yield from pool.imap(fn, items, chunksize=64)


def _decode_webp(blobs: list[bytes], side: int, workers: int) -> torch.Tensor:
    """(N, 3, side, side) uint8 views of WebP files, each decoded straight into its place; ValueError
    for one of another size."""
    import torch

    out = torch.empty(len(blobs), 3, side, side, dtype=torch.uint8)
    for i, hwc in enumerate(_pool_map(_unwebp, blobs, workers)):
        if hwc.shape != (side, side, 3):
            raise ValueError(f"view {i} is {hwc.shape[1]}x{hwc.shape[0]}")
        out[i] = torch.as_tensor(np.ascontiguousarray(hwc.transpose(2, 0, 1)))  # a copy: PIL's array is read-only
    return out


def to_webp(vs: ViewSet, quality: int, workers: int = 0) -> bool:
    """Encode the views as WebP of ``quality`` and take the decoded pixels as ``vs.views`` (``vs`` is
    changed), so that SIFT is detected on what training will see; True if that changed the pixels.
    Views that are that WebP already keep their bytes: encoding them again would lose a little more."""
    from functools import partial

    if vs.webp is not None and vs.webp[0] == quality:
        return False
    blobs = list(_pool_map(partial(_webp, quality=quality), vs.views.permute(0, 2, 3, 1).numpy(), workers))
    side = vs.side
    vs.views, vs.webp = None, (quality, blobs)  # the raw views go before the decoded ones are made
    vs.views = _decode_webp(blobs, side, workers)
    return True


def save_views(path: str | Path, vs: ViewSet, webp: int = 0, workers: int = 0) -> None:
    """Write ``vs``; ``webp`` > 0 stores the views as WebP of that quality instead of raw pixels (a file
    1/15 the size, to carry to another machine; decoded once, in ``workers`` processes, when loaded).
    Call ``to_webp`` before detecting SIFT; here it only encodes views not yet encoded (and then
    ``vs.views`` become the decoded WebP, as in to_webp)."""
    import torch

    from .files import atomic_write

    from .safetensors_codec import safetensors_chunks

    if webp:
        to_webp(vs, webp, workers)
        blobs = vs.webp[1]
        pixels = {"webp": torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8),
                  "offsets": torch.tensor(np.cumsum([0] + [len(b) for b in blobs]), dtype=torch.long)}
    else:
        pixels = {"views": vs.views}
    tensors = {**pixels, **{f"sift.{k}": v for k, v in vs.sift.items()}}
    meta = {"format": VIEWS_FORMAT, "side": str(vs.side), "sources": json.dumps(vs.sources),
            "fingerprint": vs.fingerprint}
    if webp:
        meta["webp_quality"] = str(webp)
    if vs.sift:
        meta["sift_params"] = json.dumps(vs.sift_params, sort_keys=True)
    atomic_write(path, safetensors_chunks(tensors, meta))


def is_views_file(path: str | Path) -> bool:
    """Whether ``path`` is a file written by `featinv pack` (reads its header only)."""
    from .safetensors_codec import read_metadata

    p = Path(path)
    if not p.is_file() or p.suffix != ".safetensors":
        return False
    return read_metadata(p).get("format") == VIEWS_FORMAT


@dataclass(frozen=True)
class ViewsHeader:
    """What a views file's header says, every claim checked against the rest of the header: ``count``
    views of ``side`` x ``side``, stored raw or as WebP of ``webp_quality`` (None: raw, or not recorded),
    ``sift_keypoints`` keypoints of the views and their mirrors (0: no SIFT)."""

    count: int
    side: int
    webp: bool
    webp_quality: int | None
    fingerprint: str
    sources: list
    sift_keypoints: int
    sift_params: dict | None


def views_header(entries: dict, meta: dict[str, str], name: str) -> ViewsHeader:
    """The views format's own validation of a header (``safetensors_header``'s entries and metadata, whose
    shapes fill their bytes): what `info` shows and what `load_views` reads, so neither believes a claim
    the other refuses."""
    from .safetensors_codec import json_field

    if meta.get("format") != VIEWS_FORMAT:
        raise FeatinvError(f"{name}: not a featinv views file (made by featinv pack)")
    side = meta.get("side", "")
    side = int(side) if side.isdigit() else 0  # "-64" and "" are not digits
    if side <= 0:
        raise FeatinvError(f"{name}: its header gives the views' side as {meta.get('side')!r}; pack it again")
    kinds = {k: (v["dtype"], v["shape"]) for k, v in entries.items()}
    webp = "webp" in kinds or "offsets" in kinds
    if webp:
        if kinds.get("webp", ("", []))[0] != "U8" or len(kinds["webp"][1]) != 1 \
                or kinds.get("offsets", ("", []))[0] != "I64" or len(kinds["offsets"][1]) != 1 or not kinds["offsets"][1][0]:
            raise FeatinvError(f"{name}: WebP views need a 'webp' byte tensor and (N + 1,) int64 'offsets'; pack it again")
        count = kinds["offsets"][1][0] - 1
    else:
        dtype, shape = kinds.get("views", ("", []))
        if dtype != "U8" or len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
            raise FeatinvError(f"{name}: 'views' must be (N, 3, S, S) uint8")
        if shape[2] != side:
            raise FeatinvError(f"{name}: its header gives the views' side as {side}, its views are "
                               f"{shape[2]}x{shape[3]}; pack it again")
        count = shape[0]
    sources = json_field(meta, "sources", name, [])
    if not isinstance(sources, list) or len(sources) not in (0, count):
        raise FeatinvError(f"{name}: its header names {len(sources) if isinstance(sources, list) else 'no list of'} "
                           f"sources for {count} views; pack it again")
    quality = meta.get("webp_quality", "")
    return ViewsHeader(count, side, webp, int(quality) if webp and quality.isdigit() else None,
                       meta.get("fingerprint", ""), sources, _sift_keypoints(kinds, count, name),
                       json_field(meta, "sift_params", name))


def _sift_keypoints(kinds: dict, count: int, name: str) -> int:
    """Keypoints of the views and their mirrors (rows 2i, 2i+1) a header declares, shapes checked; 0: none."""
    sift = {k[5:]: v for k, v in kinds.items() if k.startswith("sift.")}
    if not sift:
        return 0
    if set(sift) != {"keypoints", "descriptors", "counts"} or sift["counts"][1] != [2 * count] \
            or sift["keypoints"][1][1:] != [4] or sift["descriptors"][1][1:] != [128] \
            or sift["keypoints"][1][:1] != sift["descriptors"][1][:1]:
        raise FeatinvError(f"{name}: its SIFT keypoints do not match its views; pack it again")
    return sift["keypoints"][1][0]


def load_views(path: str | Path, workers: int = 0) -> ViewSet:
    """A `featinv pack` file, memory-mapped: views are read from disk as batches touch them (WebP
    views are decoded into memory first, in ``workers`` processes)."""
    from .files import map_file
    from .memory import check_fits
    from .safetensors_codec import parse_safetensors, safetensors_header

    name = str(path)
    data = map_file(path)
    header = views_header(*safetensors_header(data, name)[:2], name)
    tensors, meta = parse_safetensors(data, name)
    views, webp = tensors.get("views"), None
    if header.webp:
        data, off = tensors["webp"].numpy().tobytes(), tensors["offsets"].tolist()
        if any(b < a for a, b in zip(off, off[1:])) or off[0] < 0 or off[-1] > len(data):
            raise FeatinvError(f"{name}: its WebP offsets do not cut its bytes; pack it again")
        check_fits(header.count * 3 * header.side ** 2, f"{name}: {header.count} views of {header.side}x{header.side}",
                   "pack fewer photos into a file, or a smaller --side")
        blobs = [data[a:b] for a, b in zip(off, off[1:])]
        try:
            views = _decode_webp(blobs, header.side, workers)
        except Exception:
            raise FeatinvError(f"{name}: its WebP views do not decode to {header.side}x{header.side}; pack them again") from None
        webp = (header.webp_quality, blobs)  # files before 11-30 did not record the quality
    sift = {k[5:]: v for k, v in tensors.items() if k.startswith("sift.")}
    if sift and int(sift["counts"].sum()) != header.sift_keypoints:
        raise FeatinvError(f"{name}: its SIFT keypoints do not match its views; pack it again")
    return ViewSet(views, header.sources, header.fingerprint, sift, header.sift_params, webp)


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
