"""Command-line file arguments: folders walked to the images or feature files below them (sub-folders
included, in sorted path order), a file named twice used once, and what each image is called as a source."""
from __future__ import annotations

from pathlib import Path

from .errors import FeatinvError, note
from .formats.base import IMAGE_SUFFIXES
from .formats.features import FEATURE_SUFFIXES

def list_images(*directories: str | Path) -> list[Path]:
    """Image files under one or more directories, sub-directories included (photos kept in class
    folders, ImageNet's layout), in sorted path order, each directory's files after the last's."""
    files: list[Path] = []
    for directory in directories:
        d = Path(directory)
        if not d.is_dir():
            from .formats import featinv_kind

            kind = featinv_kind(d)
            raise FeatinvError(f"{d}: no such file or directory" if not d.exists() else
                               f"{d}: is {kind}, not a folder of images" if kind else f"{d}: not a directory")
        found, other = [], []
        for p in d.rglob("*"):
            if p.is_file() and not p.name.startswith("._"):  # ._x.jpg: macOS's metadata beside x.jpg
                (found if p.suffix.lower() in IMAGE_SUFFIXES else other).append(p)
        found.sort()
        if other and found:
            note(f"{d}: {len(other)} file{'s' if len(other) > 1 else ''} not named as images "
                 f"{'are' if len(other) > 1 else 'is'} left out "
                 f"(e.g. {other[0].name}; featinv reads {', '.join(sorted(IMAGE_SUFFIXES))})")
        if not found:
            raise FeatinvError(f"{d}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, "
                               f"sub-directories included)")
        files += found
    return files


def source_names(files: list[Path], args) -> list[str]:
    """What a feature file records as each image's source: its path below the directory argument it
    was found in (``n01440764/a.jpg`` in ImageNet's class folders, so equal names in two folders stay
    apart and ``train --features -d DIR`` finds the image again), or its file name when given as a file."""
    roots = [Path(a) for a in args if Path(a).is_dir()]
    names = []
    for f in files:
        root = next((r for r in roots if r in f.parents), None)
        names.append(f.relative_to(root).as_posix() if root else f.name)
    return names


def expand_image_args(args) -> list[Path]:
    """Command-line image arguments: files as given, directories expanded to their images; a file named
    twice (``photos/ photos/sub``, ``a.png a.png``) once, with a note."""

    out: list[Path] = []
    seen: set[Path] = set()
    twice: list[Path] = []
    for a in args:
        p = Path(a)
        for f in list_images(p) if p.is_dir() else [p]:
            key = f.resolve()
            if key in seen:
                twice.append(f)
                continue
            seen.add(key)
            out.append(f)
    if twice:
        note(f"{len(twice)} image{'s' if len(twice) > 1 else ''} named twice (e.g. {twice[0]}) "
             f"{'are' if len(twice) > 1 else 'is'} used once")
    return out


def expand_feature_args(args) -> list[str]:
    """Command-line feature arguments: files (and -) as given, a directory expanded to the feature
    files below it in sorted path order (what ``extract -o DIR/`` wrote, sub-folders included). A file
    that a directory holds is left out there when it is also named on its own or in an earlier
    directory: `invert a.npy feats/` with a.npy in feats/ inverts it once."""
    out: list[str] = []
    named = {Path(a).resolve() for a in args if a != "-" and not Path(a).is_dir()}
    listed: set[Path] = set()
    for a in args:
        p = Path(a)
        if a == "-" or not p.is_dir():
            out.append(a)
            continue
        found = sorted(f for f in p.rglob("*") if f.suffix.lower() in FEATURE_SUFFIXES and f.is_file())
        if not found:
            raise FeatinvError(f"{a}: no feature files found (looked for {', '.join(FEATURE_SUFFIXES)}, "
                               f"sub-directories included)")
        for f in found:
            r = f.resolve()
            if r not in named and r not in listed:
                out.append(str(f))
                listed.add(r)
    return out
