"""Bytes at the edges: whole files and stdin, memory maps, atomic writes, names safe below a folder."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import FeatinvError


def read_bytes(path: str | Path) -> bytes | bytearray:
    """Whole file, or stdin for '-'."""
    if str(path) == "-":
        return sys.stdin.buffer.read()
    p = Path(path)
    if not p.exists():
        raise FeatinvError(f"{p}: no such file")
    if p.is_dir():
        raise FeatinvError(f"{p}: is a directory, expected a file")
    try:
        with p.open("rb") as f:  # into a writable buffer once: tensors are views of it (parse_safetensors)
            if not p.is_file():  # a pipe (<(...), a FIFO): its size is not known before it is read
                return bytearray(f.read())
            data = bytearray(os.fstat(f.fileno()).st_size)
            got = f.readinto(data)
    except OSError as e:
        raise FeatinvError(f"{p}: cannot read ({e.strerror})") from None
    return data if got == len(data) else data[:got]


def map_file(path: str | Path) -> np.ndarray | bytearray:
    """A file's bytes memory-mapped copy-on-write (writable for torch.frombuffer, never written back):
    pages are read when a tensor touches them, so a 1 GB file costs no memory up front. Empty files
    and stdin go through read_bytes."""
    p = Path(path)
    if str(path) == "-" or not p.is_file() or p.stat().st_size == 0:
        return read_bytes(path)
    try:
        return np.memmap(p, dtype=np.uint8, mode="c")
    except OSError as e:
        raise FeatinvError(f"{p}: cannot read ({e.strerror})") from None


def check_not_terminal(output: str | Path) -> None:
    """Refuse ``-o -`` when stdout is a terminal (binary data would garble it); a long command checks
    this before it starts, not when it writes."""
    if str(output) == "-" and sys.stdout.isatty():
        raise FeatinvError("-o -: refusing to write binary data to a terminal; redirect it (> file) or "
                           "pipe it (| featinv invert - ...)")


def relative_name(name: str) -> str:
    """A name that stays below an output folder, whatever it was made of: a COLMAP database's image name
    (``../x.png``, ``/etc/x``), a caption ("t = 0.25, dropout 0.2"). Sub-folders are kept; empty, ``.``
    and ``..`` parts and a leading ``/`` are dropped; characters Windows refuses or that are not
    printable become ``_``."""
    parts = [("".join(c if c.isprintable() and c not in '<>:"|?*' else "_" for c in part).strip(" .") or "row")
             for part in name.replace("\\", "/").split("/") if part not in ("", ".", "..")]
    return "/".join(parts) or "row"


class UniqueNames:
    """The names of one output folder's files (made safe by ``relative_name``): a name already given is
    numbered (``a``, ``a-2``, ...), compared without case, as macOS's and Windows' file systems do."""

    def __init__(self):
        self.taken: set[str] = set()

    def claim(self, base: str) -> str:
        base = relative_name(base)
        name, k = base, 1
        while name.lower() in self.taken:
            k += 1
            name = f"{base}-{k}"
        self.taken.add(name.lower())
        return name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, data: bytes | list) -> None:
    """Write to a temporary file beside the target, fsync, rename: never a half-written file.

    ``data``: bytes, or a list of buffers written one after the other (a large feature file is
    written straight from its tensors' memory, without a copy of the whole file). '-' writes to stdout.
    """
    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    if str(path) == "-":
        check_not_terminal(path)
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    p = Path(path)  # its folder was checked before the work (outputs.Output)
    directory = p.parent if str(p.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise FeatinvError(f"{p}: cannot write ({e.strerror})") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a normal file respects the umask
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise FeatinvError(f"{p}: cannot write ({e.strerror})") from None
        raise
