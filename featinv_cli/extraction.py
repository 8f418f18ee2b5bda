"""What `featinv extract` does per image: read and prepare it in a worker (``ExtractDataset``), and
where its rows go (``FeatureSink``: one file, numbered files, or a file per image)."""
from __future__ import annotations

from pathlib import Path

import torch

from .data import prepare_view
from .errors import FeatinvError, UsageError, note
from .features.base import Extractor
from .formats.features import FEATURE_FILE, FeatureFile, save_features
from .images import read_image
from .outputs import Output, check_replaceable


class ExtractDataset(torch.utils.data.Dataset):
    """Features of one image per item, computed in DataLoader workers for `featinv extract`.

    Returns (index, (H, W) of the prepared image, features (1, C, Hc, Wc), raw extras). With
    ``extract=False`` the workers only read and prepare: the item holds the image (1, 3, H, W)
    instead of features and None for extras, for the caller to extract on a GPU.
    """

    def __init__(self, files: list[Path], extractor: Extractor, resize: int | None, crop: int | None,
                 extract: bool = True):
        self.files, self.extractor, self.resize, self.crop = files, extractor, resize, crop
        self.extract = extract

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):

        f = self.files[i]
        img = prepare_view(read_image(f), self.resize, self.crop, str(f))
        h, w = img.shape[-2:]
        if min(h, w) < self.extractor.min_size():
            raise FeatinvError(f"{f}: {h}x{w} is too small for {self.extractor.spec} "
                               f"(needs at least {self.extractor.min_size()} pixels a side)")
        if not self.extract:
            return i, (h, w), img[None], None
        with torch.no_grad():
            feats, extra = self.extractor.extract(img[None])
        return i, (h, w), feats, extra


class FeatureSink:
    """Where `featinv extract` puts its rows, one image at a time: a file per image under a folder
    (``output`` ending in / or existing; sub-folders of the input kept, so equal names in two class
    folders stay apart; other equal names numbered), or rows of one size gathered into one file, or into numbered files of
    ``rows_per_file`` rows each (OUT-00000.safetensors, ...) holding no more than that in memory.

    Used as a context manager: on an error the numbered files of this run are removed (like the single
    file, which is written at the end, they would be a part taken for the whole); after a run, numbered
    files of an earlier, longer run to the same OUT are removed, so OUT-* is this run's rows alone. Files
    under a folder stay: each is whole."""

    def __init__(self, target: Output, extractor, view: dict, rows_per_file: int = 0):
        output = self.output = target.arg
        self.target, self.extractor, self.view, self.rows_per_file = target, extractor, view, rows_per_file
        self.per_file = target.is_folder
        if self.per_file and output.endswith(".npy"):
            raise UsageError("-o: a directory name cannot end in .npy")
        if rows_per_file and (self.per_file or output == "-"):
            raise UsageError("--rows-per-file needs a file name for -o (not a directory or -)")
        k = 0  # with --rows-per-file, OUT names the numbered files: those there now are checked first
        while rows_per_file and self._part_name(k).exists():
            check_replaceable(self._part_name(k), FEATURE_FILE)
            k += 1
        self.rows, self.extras, self.sources, self.size, self.first, self.part = [], [], [], None, None, 0

    def __enter__(self) -> "FeatureSink":
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.close()
            return
        if not self.part:  # nothing written: an earlier run's numbered files are still a whole set
            return
        for k in range(self.part):  # this run's numbered files
            self._part_name(k).unlink(missing_ok=True)
        self._remove_stale(quietly=True)  # an earlier run's parts after ours would pass for a whole set

    def add(self, path, source: str, size: tuple[int, int], features: torch.Tensor, extra: dict,
            name: str = "") -> None:
        """``name``: the file's name below a folder -o (``per_file_names``: the same in every shard)."""
        if self.per_file:
            # per_file_names made the name safe and unique already; Output.file makes sure of it at the
            # write itself, where a name from a database (../x) would otherwise land outside -o.
            save_features(self.target.file(name, ".safetensors"), self._file(features, size, [source], extra))
            return
        if self.size is not None and size != self.size:
            raise FeatinvError(f"{path}: {size[0]}x{size[1]}, but {self.first} is {self.size[0]}x{self.size[1]}; "
                               f"images of different sizes need -o DIR/ (one file each) or --resize N --crop N")
        self.size, self.first = size, self.first or path
        self.rows.append(features), self.extras.append(extra), self.sources.append(source)
        if self.rows_per_file and len(self.rows) == self.rows_per_file:
            self._flush()

    def close(self) -> None:
        if self.rows:
            self._flush()
        self._remove_stale()

    def _remove_stale(self, quietly: bool = False) -> None:
        """Numbered feature files of an earlier run to the same OUT from part ``self.part`` on."""
        stale = []
        while self.rows_per_file and (older := self._part_name(self.part + len(stale))).exists() \
                and FEATURE_FILE.ours(older):
            stale.append(older)
        for older in stale:
            older.unlink()
        if stale and not quietly:
            note(f"removed {len(stale)} numbered file{'s' if len(stale) > 1 else ''} of an earlier run to "
                 f"{self.output} ({stale[0].name}{' ...' if len(stale) > 1 else ''}): {self.part} "
                 f"file{'s hold' if self.part != 1 else ' holds'} this run's rows")

    def _part_name(self, k: int) -> Path:
        p = Path(self.output)
        return p.with_name(f"{p.stem}-{k:05d}{p.suffix}")

    def _file(self, features, size, sources, extra) -> FeatureFile:
        return FeatureFile(features, self.extractor.spec, self.extractor.params, size, sources, extra, view=self.view)

    def _flush(self) -> None:
        # Raw arrays are per keypoint (concatenated) or per image (counts): both concatenate along dim 0.
        # One row is written as it is: a 6000x6000 photo's SIFT grid is 1.2 GB, a copy as much again.
        cat = lambda ts: ts[0] if len(ts) == 1 else torch.cat(ts)  # noqa: E731
        extra = {k: cat([e[k] for e in self.extras]) for k in self.extras[0]}
        name = self.output
        if self.rows_per_file:
            check_replaceable(self._part_name(self.part), FEATURE_FILE)  # a gap's file, after those in __init__
            name, self.part = self._part_name(self.part), self.part + 1
        save_features(name, self._file(cat(self.rows), self.size, list(self.sources), extra))
        self.rows, self.extras, self.sources = [], [], []


def per_file_names(sources: list[str]) -> list[str]:
    """The name of each image's file under `extract -o DIR/`: its source path without the suffix, equal
    names numbered in the order of the whole sorted list (x.jpg -> x, x.png -> x-2), so every --shard of
    one extraction gives each image the same name and none overwrites another's."""
    from .files import UniqueNames

    names = UniqueNames()
    return [names.claim(Path(s).with_suffix("").as_posix()) for s in sources]


def database_rows(extractor, images, db: str):
    """`extract colmap-sift DATABASE.db`: (image name, (H, W), features (1, 133, Hc, Wc), raw arrays) per
    image of a COLMAP database (``read_database``'s, read and checked whole, so a damaged one writes
    nothing), one image's grid at a time: a 6000x4000 photo's is 0.8 GB; the largest is checked against
    memory before the first. An image without keypoints gives zeros."""
    from .features.colmap import check_grids_fit, raw_arrays

    check_grids_fit(images, extractor, db)
    return ((image.name, (image.height, image.width), extractor.grid_of([image], image.height, image.width),
             raw_arrays([image])) for image in images)
