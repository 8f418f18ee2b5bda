"""Views files (featinv-formats(5)): training photos as `featinv pack` stores them, one uint8 array of
views (raw, or WebP to carry to another machine) and, for sparse SIFT, every view's keypoints and those
of its mirror. The writer, the memory-mapped reader, the header's checks (which `info` shares) and the
WebP codec."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FeatinvError, UsageError
from .base import Kind, header_says

if TYPE_CHECKING:
    import torch

VIEWS_FORMAT = "featinv-views/1"  # `featinv pack`: training photos as 8-bit views (read by views.py)


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

    from ..files import atomic_write

    from ..safetensors_codec import safetensors_chunks

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
    from ..safetensors_codec import read_metadata

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
    from ..safetensors_codec import json_field

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
    from ..files import map_file
    from ..memory import check_fits
    from ..safetensors_codec import parse_safetensors, safetensors_header

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


def describe(name, source, entries, meta, header_len) -> dict:
    h = views_header(entries, meta, name)  # the format's own checks: what train would refuse, info refuses
    out = {"file": name, "kind": "training views (featinv pack)", "views": h.count, "side": h.side,
           "storage": ("webp" + (f", quality {h.webp_quality}" if h.webp_quality else "")) if h.webp else "raw uint8",
           "fingerprint": h.fingerprint}
    if h.sift_params is not None or h.sift_keypoints:  # keypoints of each view and its mirror
        out.update(sift_params=h.sift_params, sift_keypoints=h.sift_keypoints)
    return out


def check_views_name(output: str, folders: bool = False) -> None:
    if Path(output).suffix != ".safetensors":
        raise UsageError(f"{output}: a views file name ends in .safetensors")


VIEWS_FILE = Kind("views file", header_says(VIEWS_FORMAT), VIEWS_FORMAT, describe, check_views_name)
