"""Where a command's -o goes, resolved once, before any work: a file, a folder (``DIR/``: a file per row
or image) or stdout (``-``). It is checked there, so a run never computes for an hour to fail at its
first write: the folder can be made and written, the output is none of the command's inputs, and what
it would replace featinv wrote as the same kind of file (an earlier run's output: ``Kind.ours``), never
someone's photo or array."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import FeatinvError
from .files import UniqueNames, check_not_terminal
from .formats.base import Kind


def is_dir_target(path: str) -> bool:
    """An -o that names a folder (existing, or ending in /): one output file per row or image."""
    return path != "-" and (path.endswith("/") or Path(path).is_dir())


class Output:
    """``arg`` checked for writing ``kind`` (see the module). ``takes``: "file"; "file or folder" (a name
    ending in /, or an existing folder, is a folder of files); or "folder" (any name is one)."""

    def __init__(self, arg: str | Path, kind: Kind, inputs=(), takes: str = "file"):
        self.arg, self.kind = str(arg), kind
        self.path = Path(self.arg)
        self.is_stdout = self.arg == "-" and takes != "folder"
        self.is_folder = takes == "folder" or takes == "file or folder" and is_dir_target(self.arg)
        self._names = UniqueNames()
        check_not_input(self.arg, inputs)
        if self.is_stdout:
            return
        if self.is_folder:
            check_folder(self.arg)
            return
        if kind.check_name:
            kind.check_name(self.arg, takes != "file")
        check_parent(self.path)
        check_replaceable(self.path, kind)

    def check_not_input(self, inputs) -> None:
        """What the command found to read once its arguments were walked is not the output either."""
        check_not_input(self.arg, inputs)

    def file(self, name: str, suffix: str) -> Path:
        """The file of one row or image in the folder: ``name`` made safe and unique (``relative_name``:
        no ``..``; a name given twice numbered), what it would replace checked, its folder made."""
        path = self.path / f"{self._names.claim(name)}{suffix}"
        check_replaceable(path, self.kind, "give -o another folder")
        make_folder(path.parent)
        return path


def check_replaceable(path: Path, kind: Kind, instead: str = "choose another name") -> None:
    """An existing file is replaced only if featinv wrote it as ``kind`` (``Kind.ours``: an earlier run's
    output), never someone's array, a model, or a photo named by mistake. An empty file holds nothing to
    lose."""
    if path.is_dir():
        raise FeatinvError(f"{path}: is a directory; {instead}")
    if path.exists() and path.stat().st_size and not kind.ours(path):
        raise FeatinvError(f"{path}: already there and not {kind.what(path)}; refusing to overwrite it: "
                           f"{instead}, or remove the file")


def check_not_input(output: str | Path, inputs) -> None:
    """Refuse to write over one of the command's own inputs, or binary data to a terminal."""
    check_not_terminal(output)
    if str(output) == "-":
        return
    out = Path(output).resolve()
    for item in inputs:
        if item is not None and str(item) != "-" and Path(item).resolve() == out:
            raise FeatinvError(f"{output}: output would overwrite an input; choose another name")


def _probe(folder: Path) -> str | None:
    """Why no file can be made in ``folder`` (an existing one), or None: tried, not guessed from its
    mode bits (root may write anywhere by those, yet not in /sys)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".featinv-", dir=folder))
    except OSError as e:
        return e.strerror
    return None


def check_parent(path: Path) -> None:
    """The folder a file goes in is there, is a folder, and takes files: in ``photo.png/x.safetensors``
    it is a file, which "does not exist" would misname."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        there = next((d for d in (directory, *directory.parents) if d.exists()), None)
        if there is not None and not there.is_dir():
            raise FeatinvError(f"{path}: {there} is a file, not a directory")
        raise FeatinvError(f"{path}: directory {directory} does not exist")
    why = _probe(directory)
    if why:
        raise FeatinvError(f"{path}: cannot write in folder {directory} ({why})")


def check_folder(output: str) -> Path:
    """An output folder, checked without making it (a run that fails first leaves nothing): not a file,
    and below a folder that exists and takes new folders, else one line saying why."""
    p = Path(output)
    if p.exists() and not p.is_dir():
        raise FeatinvError(f"-o {output}: is a file; give a folder (a new name, or an earlier run's folder)")
    existing = next(d for d in (p, *p.parents) if d.exists())  # "." or "/" at the latest
    if not existing.is_dir():
        raise FeatinvError(f"-o {output}: cannot create folder {p} ({existing} is a file)")
    why = _probe(existing)
    if why:
        raise FeatinvError(f"-o {output}: cannot create folder {p} ({why} in {existing})" if existing != p
                           else f"-o {output}: cannot write in folder {p} ({why})")
    return p


def make_folder(path: Path) -> None:
    """``mkdir -p``, failing as one line (a file in the way, no permission, a read-only disk)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FeatinvError(f"cannot create folder {path} ({e.strerror})") from None
