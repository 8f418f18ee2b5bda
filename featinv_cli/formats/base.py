"""What every file kind shares: the ``Kind`` record the registry holds, and the sniffing of bytes that
are not what a command expected (a .npy, an image, a database, featinv's mark in a header)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import FeatinvError
from ..safetensors_codec import read_metadata

NPY_MAGIC = b"\x93NUMPY"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm"}
# Leading bytes of the image formats users hand to commands that want feature files.
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


@dataclass(frozen=True)
class Kind:
    """One kind of file featinv writes. ``ours(path)``: featinv wrote this existing file as this kind (an
    earlier run's output, which a rerun may replace); ``expected(path)``: what such a file is, for the
    refusal to replace anything else; ``check_name(name, folders)``: refuses an output name this kind
    cannot have (``folders``: the command takes a folder too). Its safetensors kinds also give the
    header's ``format`` and ``describe``, the header-only account that `featinv info` prints (name,
    source, entries, metadata, header length -> dict)."""

    name: str
    ours: Callable[[Path], bool]
    format: str = ""
    describe: Callable[..., dict] | None = None
    check_name: Callable[[str, bool], None] | None = None
    expected: Callable[[Path], str] | None = None

    def what(self, path: Path) -> str:
        return self.expected(path) if self.expected else f"a featinv {self.name}"


def has_format(path: str | Path, fmt: str) -> bool:
    """Whether this file's header says featinv wrote it as ``fmt``."""
    try:
        return read_metadata(path).get("format") == fmt
    except FeatinvError:
        return False


def header_says(fmt: str) -> Callable[[Path], bool]:
    """``Kind.ours`` of a safetensors kind: its header names ``fmt``."""
    return lambda path: has_format(path, fmt)


def refuse_foreign(head: bytes, name: str) -> None:
    """Bytes that are not .npy, checked before they are read as safetensors: an image or a database
    (stop with a pointer to `extract`), or a .npy name holding something else."""
    arg = "-" if name == "<stdin>" else name  # what to type: a pipe is read as -
    if bytes(head[:8]).startswith(IMAGE_MAGIC):
        raise FeatinvError(f"{name}: is an image, not features; make features first: "
                           f"featinv extract FEATURE {arg} -o features.safetensors")
    if bytes(head[:8]) == b"SQLite f":
        raise FeatinvError(f"{name}: is an SQLite file (a COLMAP database?), not features; read its features "
                           f"first: featinv extract colmap-sift {arg} -o feats/")
    if name.lower().endswith(".npy"):
        raise FeatinvError(f"{name}: not a valid .npy file ({'empty' if not len(head) else 'bad magic bytes'})")
