"""Feature files (featinv-formats(5)): features as .safetensors with metadata (which extractor, its
parameters, the image size, the sources, what was done to them), or a bare .npy array. The writer, the
reader (with its own .npy parser), their checks, the replace rule and `info`'s header-only account."""
from __future__ import annotations

import io as _io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FeatinvError, UsageError
from ..files import atomic_write, map_file
from ..safetensors_codec import json_field, parse_safetensors, read_metadata, safetensors_chunks
from .base import IMAGE_SUFFIXES, NPY_MAGIC, Kind, has_format, refuse_foreign
from .model import MODEL_FORMAT
from .statistics import STATS_FORMAT

if TYPE_CHECKING:
    import torch

FEATURES_FORMAT = "featinv-features/1"


@dataclass
class FeatureFile:
    """Features plus what they are. ``features``: (N, C, H, W) or (N, D) float32."""

    features: torch.Tensor
    feature: str | None = None  # spec string; None for a bare .npy nobody has described yet
    params: dict | None = None
    image_size: tuple[int, int] | None = None
    sources: list[str] = field(default_factory=list)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. SIFT keypoints
    history: list[str] = field(default_factory=list)  # operations applied (perturb, interpolate, ...)
    labels: list[str] = field(default_factory=list)  # one per row, for grids
    view: dict | None = None  # how each source image was prepared: {"resize": N, "crop": N}
    row_length: int = 0  # tiles per grid row when rows come in runs: interpolate's points per pair

    def __len__(self) -> int:
        return self.features.shape[0]

    def metadata(self) -> dict[str, str]:
        meta = {"format": FEATURES_FORMAT, "feature": self.feature or "",
                "params": json.dumps(self.params or {}, sort_keys=True),
                "sources": json.dumps(self.sources)}
        if self.image_size:
            meta["image_size"] = json.dumps(list(self.image_size))
        if self.history:
            meta["history"] = json.dumps(self.history)
        if self.labels:
            meta["labels"] = json.dumps(self.labels)
        if self.view is not None:
            meta["view"] = json.dumps(self.view)
        if self.row_length:
            meta["row_length"] = str(self.row_length)
        return meta


FEATURE_SUFFIXES = (".safetensors", ".npy")


def check_feature_name(path: str | Path, folders: bool = False) -> None:
    """Refuse an output name that is not a feature file's (a command checks before it computes); where
    ``folders`` a command takes a folder, a name without a suffix is more likely one missing its /."""
    suffix = Path(str(path)).suffix.lower()
    if str(path) != "-" and suffix not in FEATURE_SUFFIXES:
        what = "an image name" if suffix in IMAGE_SUFFIXES else f"not a feature file name ({suffix or 'no suffix'})"
        raise UsageError(f"{path}: {what}; feature files end in .safetensors (with metadata) or .npy "
                         f"(bare array); `featinv invert` makes images"
                         + (f"; for a file per image, end the folder's name with /: -o {path}/" if folders and not suffix else ""))


def save_features(path: str | Path, ff: FeatureFile) -> None:
    """safetensors with metadata, unless the name ends in .npy (then the bare array)."""
    import torch

    check_feature_name(path)
    feats = ff.features.detach().to(torch.float32).contiguous()
    if str(path) != "-" and str(path).lower().endswith(".npy"):
        buf = _io.BytesIO()
        np.save(buf, feats.cpu().numpy(), allow_pickle=False)
        atomic_write(path, buf.getvalue())
        return
    atomic_write(path, safetensors_chunks({"features": feats, **ff.extra}, ff.metadata()))


def note_if_bare(path: str | Path, ff: FeatureFile) -> None:
    """A command that read described features and writes a .npy says what the bare array leaves behind
    (`invert` will have to be told the extractor)."""
    from ..errors import note

    if str(path).lower().endswith(".npy") and ff.feature:
        note(f"{path}: a .npy holds the array alone; what it is ({ff.feature}, image size, history) is left "
             f"behind; name it *.safetensors to keep that")


def written_as_features(path: Path) -> bool:
    """Whether featinv may have written ``path`` as features: its header says so. A .npy carries no mark
    of ours; it counts if it holds what featinv writes there, float32 features, (N, D) or (N, C, H, W)."""
    if path.suffix.lower() != ".npy":
        return has_format(path, FEATURES_FORMAT)
    try:
        with path.open("rb"):  # a file we may not read is reported as that, not as someone else's
            pass
        arr = np.load(path, mmap_mode="r", allow_pickle=False)  # the header only: nothing is read yet
    except OSError as e:
        raise FeatinvError(f"{path}: cannot read ({e.strerror})") from None
    except Exception:  # not a .npy at all
        return False
    return isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.ndim in (2, 4)  # an .npz is not


def load_features(path: str | Path) -> FeatureFile:
    """Read a .npy or featinv .safetensors (or either from '-'), checking shape and values."""
    name = "<stdin>" if str(path) == "-" else str(path)
    return features_from_bytes(map_file(path), name)


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or Inf in t, checked 16M values at a time (torch.isfinite of a 1.2 GB SIFT grid at once
    takes 2 GB of temporaries)."""
    import torch

    return all(bool(torch.isfinite(c).all()) for c in t.reshape(-1).split(1 << 24))


def npy_array(data: bytes | bytearray, name: str) -> np.ndarray:
    """The array of .npy bytes, as a view of them where the layout allows (no copy of a large file)."""
    if isinstance(data, bytes):
        data = bytearray(data)  # stdin gives bytes: a read-only array would make torch warn
    try:
        # Only the header goes through a stream (a BytesIO of a bytearray copies all of it).
        major = data[6] if len(data) > 6 else 0
        width = 2 if major == 1 else 4
        head = 8 + width + int.from_bytes(data[8:8 + width], "little") if len(data) >= 8 + width else len(data)
        stream = _io.BytesIO(bytes(data[:head]))
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):  # version 3 (utf-8 field names): numpy's own reader, a copy
            return np.load(_io.BytesIO(data), allow_pickle=False)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(stream)
        if dtype.hasobject:
            raise ValueError("object arrays are refused")
        count = math.prod(shape)
        if stream.tell() + count * dtype.itemsize > len(data):
            raise ValueError("truncated")
        return np.frombuffer(data, dtype=dtype, count=count, offset=stream.tell()).reshape(
            shape, order="F" if fortran else "C")
    except Exception:
        raise FeatinvError(f"{name}: not a valid .npy file (truncated or corrupt)") from None


def feature_fields(meta: dict[str, str], name: str) -> dict:
    """The FeatureFile fields a feature file's metadata holds, checked (everything but the tensors)."""
    if meta.get("format") == MODEL_FORMAT:
        raise FeatinvError(f"{name}: is a model file; give a feature file (made by featinv extract)")
    if meta.get("format") == STATS_FORMAT:
        raise FeatinvError(f"{name}: is a statistics file (featinv sample --fit); draw feature vectors from it "
                           f"with featinv sample {name} -n N -o OUT")
    if meta.get("format") != FEATURES_FORMAT:
        what = meta.get("format") or "no featinv metadata"
        raise FeatinvError(f"{name}: not a featinv feature file ({what})")
    size = json_field(meta, "image_size", name)
    if size is not None and (not isinstance(size, list) or len(size) != 2
                             or not all(isinstance(v, int) and v > 0 for v in size)):
        raise FeatinvError(f"{name}: metadata image_size must be [H, W], got {meta['image_size']}")
    row_length = json_field(meta, "row_length", name, 0)
    if not isinstance(row_length, int) or row_length < 0:
        raise FeatinvError(f"{name}: metadata row_length must be a whole number >= 0, got {meta['row_length']}")
    return dict(feature=meta.get("feature") or None, params=json_field(meta, "params", name, {}),
                image_size=tuple(size) if size else None, sources=json_field(meta, "sources", name, []),
                history=json_field(meta, "history", name, []), labels=json_field(meta, "labels", name, []),
                view=json_field(meta, "view", name), row_length=row_length)


def read_feature_fields(path: str | Path) -> dict:
    """``feature_fields`` of a feature file, reading only its header (for sets too big to load)."""
    return feature_fields(read_metadata(path), str(path))


def features_from_bytes(data: bytes, name: str) -> FeatureFile:
    import torch

    if bytes(data[:6]) == NPY_MAGIC:
        arr = npy_array(data, name)
        if not np.issubdtype(arr.dtype, np.number):
            raise FeatinvError(f"{name}: .npy holds {arr.dtype}, expected numbers")
        ff = FeatureFile(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)))
    else:
        refuse_foreign(data, name)
        tensors, meta = parse_safetensors(data, name)
        fields = feature_fields(meta, name)
        if "features" not in tensors:
            raise FeatinvError(f"{name}: feature file has no 'features' tensor")
        ff = FeatureFile(features=tensors.pop("features").to(torch.float32), extra=tensors, **fields)
    f = ff.features
    if f.ndim == 3:  # a single (C, H, W) map is a batch of one
        ff.features = f = f.unsqueeze(0)
    if f.ndim == 1:
        ff.features = f = f.unsqueeze(0)
    if f.ndim in (2, 4) and f.shape[0] == 0:
        raise FeatinvError(f"{name}: holds no feature vectors (shape {tuple(f.shape)})")
    if f.ndim not in (2, 4) or f.numel() == 0:
        raise FeatinvError(f"{name}: features must be (N, C, H, W) or (N, D), got {tuple(f.shape)}")
    if not all_finite(f):
        raise FeatinvError(f"{name}: features contain NaN or Inf")
    return ff


def describe_npy(data, name: str, guess=None) -> dict:
    """A bare array: its shape, and with ``guess`` (features.resolve: formats know no extractors) what
    `featinv invert` would take it for (this needs torch)."""
    ff = features_from_bytes(data, name)  # validated; a single map becomes a batch of one
    d = {"file": name, "kind": "bare array (.npy, no metadata)", "shape": list(npy_array(data, name).shape)}
    if guess is None:
        return d
    try:
        extractor, size = guess(ff, name)
        d.update(guessed_feature=extractor.spec, guessed_image_size=list(size))
    except FeatinvError as e:  # the reason, worded for invert, which takes the flags info does not
        d["guessed_feature"] = f"none ({str(e).replace('; add --', '; invert needs --')})"
    return d


def _tensor(source, entries: dict, header_len: int, key: str):
    """One tensor of a safetensors file (a path, or its bytes read from a pipe) as a numpy array, without torch."""
    import numpy as np

    info = entries[key]
    start, _ = info["data_offsets"]
    dtype = {"I64": np.int64, "F32": np.float32}[info["dtype"]]
    read = np.frombuffer if isinstance(source, (bytes, bytearray, memoryview)) else np.fromfile
    return read(source, dtype=dtype, count=math.prod(info["shape"]), offset=8 + header_len + start)


def describe(name, source, entries, meta, header_len) -> dict:
    """`info`'s account of a feature file, from its header (the metadata checked as the reader checks it)."""
    fields = feature_fields(meta, name)
    if "features" not in entries:
        raise FeatinvError(f"{name}: feature file has no 'features' tensor")
    shape = list(entries["features"]["shape"])
    d = {"file": name, "kind": "features", "feature": fields["feature"], "params": fields["params"],
         "shape": shape, "image_size": list(fields["image_size"] or []), "rows": shape[0], "sources": fields["sources"]}
    if "counts" in entries:
        d["keypoints"] = int(_tensor(source, entries, header_len, "counts").sum())
    d.update({k: fields[k] for k in ("view", "history", "labels") if fields[k]})
    return d


FEATURE_FILE = Kind("feature file", written_as_features, FEATURES_FORMAT, describe, check_feature_name,
            lambda path: "an array of float32 features" if path.suffix.lower() == ".npy" else "a featinv feature file")
