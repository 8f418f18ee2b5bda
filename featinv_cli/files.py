"""Bytes at the edges: whole files and stdin, memory maps, atomic writes, output-path checks."""
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


def is_dir_target(path: str) -> bool:
    """An -o that names a folder (existing, or ending in /): one output file per row or image."""
    return path != "-" and (path.endswith("/") or Path(path).is_dir())


def check_folder_target(output: str | Path) -> Path:
    """An output folder, checked before any work without making it (a run that fails first leaves
    nothing): not a file, and under a folder that exists and can be written, else one line saying why."""
    p = Path(output)
    if p.exists() and not p.is_dir():
        raise FeatinvError(f"-o {output}: is a file; give a folder (a new name, or an earlier report's folder)")
    existing = p
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise FeatinvError(f"-o {output}: cannot create folder {p} ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FeatinvError(f"-o {output}: cannot create folder {p} (Permission denied in {existing})"
                           if existing != p else f"-o {output}: cannot write in folder {p} (Permission denied)")
    return p


def check_not_terminal(output: str | Path) -> None:
    """Refuse ``-o -`` when stdout is a terminal (binary data would garble it); a long command checks
    this before it starts, not when it writes."""
    if str(output) == "-" and sys.stdout.isatty():
        raise FeatinvError("-o -: refusing to write binary data to a terminal; redirect it (> file) or "
                           "pipe it (| featinv invert - ...)")


def check_not_input(output: str | Path, inputs) -> None:
    """Refuse to write over one of the command's own inputs, or binary data to a terminal."""
    check_not_terminal(output)
    if str(output) == "-":
        return
    out = Path(output).resolve()
    for item in inputs:
        if str(item) != "-" and Path(item).resolve() == out:
            raise FeatinvError(f"{output}: output would overwrite an input; choose another name")


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


def check_parent(path: str | Path) -> None:
    """The folder an output goes in is there, and is a folder: in ``photo.png/x.safetensors`` it is a
    file, which "does not exist" would misname."""
    p = Path(path)
    directory = p.parent if str(p.parent) else Path(".")
    if directory.is_dir():
        return
    there = next((d for d in (directory, *directory.parents) if d.exists()), None)
    if there is not None and not there.is_dir():
        raise FeatinvError(f"{p}: {there} is a file, not a directory")
    raise FeatinvError(f"{p}: directory {directory} does not exist")


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
    p = Path(path)
    check_parent(p)
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
