"""Files at the edges: images, feature files, model files, '-' streams, atomic writes (featinv-formats(5))."""
from __future__ import annotations

import io as _io
import json
import math
import os
import struct
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import FeatinvError, UsageError

FEATURES_FORMAT = "featinv-features/1"
MODEL_FORMAT = "featinv-model/1"
STATS_FORMAT = "featinv-stats/1"  # `featinv sample --fit`: per-dimension histograms and a Gaussian
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm"}
NPY_MAGIC = b"\x93NUMPY"


# ---------------------------------------------------------------------------------------- bytes

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


def check_not_input(output: str | Path, inputs) -> None:
    """Refuse to write over one of the command's own inputs."""
    if str(output) == "-":
        return
    out = Path(output).resolve()
    for item in inputs:
        if str(item) != "-" and Path(item).resolve() == out:
            raise FeatinvError(f"{output}: output would overwrite an input; choose another name")


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
        if sys.stdout.isatty():
            raise FeatinvError("-o -: refusing to write binary data to a terminal; redirect it (> file) or "
                               "pipe it (| featinv invert - ...)")
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    p = Path(path)
    directory = p.parent if str(p.parent) else Path(".")
    if not directory.is_dir():
        raise FeatinvError(f"{p}: directory {directory} does not exist")
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


# --------------------------------------------------------------------------------------- images

def read_image(path: str | Path) -> torch.Tensor:
    """An image file as (3, H, W) float32 in [0, 1]; gray, 16-bit, RGBA and palette images too."""
    import imageio.v3 as iio

    data = read_bytes(path)
    try:
        with warnings.catch_warnings():  # imageio warns while it tries plugins on a non-image
            warnings.simplefilter("ignore")
            arr = np.asarray(iio.imread(bytes(data), plugin="pillow"))  # not OpenCV: it logs on stderr
    except Exception:
        raise FeatinvError(f"{path}: not a readable image (PNG, JPEG, ...)") from None
    return image_from_array(arr, str(path))


def image_from_array(arr: np.ndarray, name: str = "image") -> torch.Tensor:
    if arr.ndim == 3 and arr.shape[0] == 1 and arr.shape[-1] not in (1, 3, 4):  # single-frame stack
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise FeatinvError(f"{name}: unsupported image layout {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise FeatinvError(f"{name}: image is empty ({arr.shape[0]}x{arr.shape[1]})")
    if arr.shape[2] in (2, 4):  # drop alpha: features describe the colour, not the mask
        arr = arr[:, :, :arr.shape[2] - 1]
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        # One float32 (3, H, W) allocation, converted in place; the same values as numpy's
        # arr.astype(float32) / 255 (tested): a 6000x6000 photo is 432 MB a copy.
        scale = 255.0 if arr.dtype == np.uint8 else 65535.0
        src = torch.from_numpy(arr if arr.dtype == np.uint8 else arr.astype(np.int32)).permute(2, 0, 1)
        x = torch.empty(src.shape, dtype=torch.float32).copy_(src).div_(scale)
        return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x
    if arr.dtype == bool:
        x = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        x = np.clip(arr.astype(np.float32), 0.0, 1.0)
        if not np.isfinite(x).all():
            raise FeatinvError(f"{name}: image contains NaN or Inf")
    else:
        info = np.iinfo(arr.dtype)
        x = (arr.astype(np.float64) - info.min) / (info.max - info.min)
        x = x.astype(np.float32)
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float -> (H, W, 3) uint8, clipped, rounded half to even. Converted in bands of rows,
    so a 6000x6000 image needs no float temporaries of its own size."""
    x = image.detach()
    out = np.empty((x.shape[1], x.shape[2], 3), np.uint8)
    for r in range(0, x.shape[1], 256):
        band = x[:, r:r + 256].float().clamp(0, 1).mul_(255.0).round_().to(torch.uint8)
        out[r:r + 256] = band.permute(1, 2, 0).cpu().numpy()
    return out


def encode_png(array: np.ndarray) -> bytes:
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", array, extension=".png", plugin="pillow")  # named: no plugin search


def write_image(path: str | Path, image: torch.Tensor | np.ndarray) -> None:
    """Write (3, H, W) float in [0, 1] or (H, W, 3) uint8 as an 8-bit RGB PNG, atomically."""
    arr = image if isinstance(image, np.ndarray) else image_to_uint8(image)
    if str(path) != "-" and Path(path).suffix.lower() not in (".png", ""):
        raise FeatinvError(f"{path}: featinv writes PNG images; name the output *.png")
    atomic_write(path, encode_png(arr))


def list_images(*directories: str | Path) -> list[Path]:
    """Image files under one or more directories, sub-directories included (photos kept in class
    folders, ImageNet's layout), in sorted path order, each directory's files after the last's."""
    files: list[Path] = []
    for directory in directories:
        d = Path(directory)
        if not d.is_dir():
            raise FeatinvError(f"{d}: not a directory")
        found = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
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
    """Command-line image arguments: files as given, directories expanded to their images."""
    out: list[Path] = []
    for a in args:
        p = Path(a)
        out.extend(list_images(p) if p.is_dir() else [p])
    return out


# -------------------------------------------------------------------------------- safetensors

def safetensors_header(data: bytes, name: str, total: int | None = None) -> tuple[dict, dict[str, str], int]:
    """(tensor entries, metadata, header length) of safetensors bytes, every length checked. ``data``
    may hold only the first 8 + header-length bytes when ``total`` gives the file's length."""
    bad = f"{name}: not a valid safetensors file"
    total = len(data) if total is None else total
    if total < 8 or len(data) < 8:
        raise FeatinvError(f"{bad} (only {total} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > total - 8 or header_len > len(data) - 8:
        raise FeatinvError(f"{bad} (truncated: header says {header_len} bytes, file has {total - 8})")
    try:
        header = json.loads(bytes(data[8:8 + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FeatinvError(f"{bad} (header is not JSON)") from None
    if not isinstance(header, dict):
        raise FeatinvError(f"{bad} (header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FeatinvError(f"{bad} (metadata must map strings to strings)")
    body = total - 8 - header_len
    for key, info in header.items():
        try:
            start, end = info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise FeatinvError(f"{bad} (entry {key!r} has no data offsets)") from None
        if not (0 <= start <= end <= body):
            raise FeatinvError(f"{bad} (truncated: tensor {key!r} ends past the end of the file)")
    return header, metadata, header_len


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file, reading only its header (checked like a whole read)."""
    try:
        with open(path, "rb") as f:
            total = os.fstat(f.fileno()).st_size
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            head += f.read(min(n, max(total - 8, 0)))
    except OSError as e:
        raise FeatinvError(f"{path}: cannot read ({e.strerror})") from None
    return safetensors_header(head, str(path), total)[1]


def parse_safetensors(data: bytes, name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of safetensors bytes, with every length checked first.

    A truncated or tampered file becomes a FeatinvError, not a crash deep inside the library.
    """
    bad = f"{name}: not a valid safetensors file"
    header, metadata, header_len = safetensors_header(data, name)
    if isinstance(data, bytes):
        data = bytearray(data)  # torch.frombuffer wants a writable buffer (a bytearray or map_file's map)
    tensors = {}
    for key, info in header.items():
        try:
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            shape = [int(v) for v in info["shape"]]
        except (TypeError, KeyError, ValueError):
            raise FeatinvError(f"{bad} (entry {key!r}: unknown dtype or bad shape)") from None
        start, end = info["data_offsets"]
        count = math.prod(shape)
        if count < 0 or count * dtype.itemsize != end - start:
            raise FeatinvError(f"{bad} (entry {key!r}: shape {shape} does not fill bytes {start}..{end})")
        # A view of the file's bytes, not a copy: a 1.2 GB SIFT file stays 1.2 GB in memory.
        flat = torch.frombuffer(data, dtype=dtype, count=count, offset=8 + header_len + start) if count \
            else torch.empty(0, dtype=dtype)
        tensors[key] = flat.view(shape)
    return tensors, metadata


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
                      "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
                      "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def safetensors_chunks(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> list:
    """The safetensors file of ``tensors`` as buffers to write in order: the header (JSON, padded with
    spaces to 8 bytes), then each tensor's own memory, in name order (no copy of the data)."""
    names = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    arrays = {k: tensors[k].detach().cpu().contiguous() for k in sorted(tensors)}
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for k, t in arrays.items():
        size = t.numel() * t.element_size()
        header[k] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    # uint8 views: numpy has no bfloat16, and a byte view is all a file write needs
    return [struct.pack("<Q", len(text)) + text] + [memoryview(t.view(-1).view(torch.uint8).numpy())
                                                    for t in arrays.values() if t.numel()]


def encode_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    return b"".join(safetensors_chunks(tensors, metadata))


def json_field(metadata: dict[str, str], key: str, name: str, default=None):
    if key not in metadata:
        return default
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError:
        raise FeatinvError(f"{name}: metadata field {key!r} is not valid JSON") from None


# ------------------------------------------------------------------------------ feature files

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
        return meta


FEATURE_SUFFIXES = (".safetensors", ".npy")
# Leading bytes of the image formats users hand to commands that want feature files.
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


def save_features(path: str | Path, ff: FeatureFile) -> None:
    """safetensors with metadata, unless the name ends in .npy (then the bare array)."""
    suffix = Path(str(path)).suffix.lower()
    if str(path) != "-" and suffix not in FEATURE_SUFFIXES:
        what = "an image name" if suffix in IMAGE_SUFFIXES else f"not a feature file name ({suffix or 'no suffix'})"
        raise FeatinvError(f"{path}: {what}; feature files end in .safetensors (with metadata) or .npy "
                           f"(bare array); `featinv invert` makes images")
    feats = ff.features.detach().to(torch.float32).contiguous()
    if str(path) != "-" and str(path).lower().endswith(".npy"):
        buf = _io.BytesIO()
        np.save(buf, feats.cpu().numpy(), allow_pickle=False)
        atomic_write(path, buf.getvalue())
        return
    atomic_write(path, safetensors_chunks({"features": feats, **ff.extra}, ff.metadata()))


class FeatureSink:
    """Where `featinv extract` puts its rows, one image at a time: a file per image under a folder
    (``output`` ending in / or existing; sub-folders of the input kept, so equal names in two class
    folders stay apart), or rows of one size gathered into one file, or into numbered files of
    ``rows_per_file`` rows each (OUT-00000.safetensors, ...) holding no more than that in memory."""

    def __init__(self, output: str, extractor, view: dict, rows_per_file: int = 0):
        self.output, self.extractor, self.view, self.rows_per_file = output, extractor, view, rows_per_file
        self.per_file = is_dir_target(output)
        if self.per_file and output.endswith(".npy"):
            raise UsageError("-o: a directory name cannot end in .npy")
        if rows_per_file and (self.per_file or output == "-"):
            raise UsageError("--rows-per-file needs a file name for -o (not a directory or -)")
        if self.per_file:
            Path(output).mkdir(parents=True, exist_ok=True)
        self.rows, self.extras, self.sources, self.size, self.first, self.part = [], [], [], None, None, 0

    def add(self, path, source: str, size: tuple[int, int], features: torch.Tensor, extra: dict) -> None:
        if self.per_file:
            target = Path(self.output) / Path(source).with_suffix(".safetensors")
            target.parent.mkdir(parents=True, exist_ok=True)
            save_features(target, self._file(features, size, [source], extra))
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

    def _file(self, features, size, sources, extra) -> FeatureFile:
        return FeatureFile(features, self.extractor.spec, self.extractor.params, size, sources, extra, view=self.view)

    def _flush(self) -> None:
        # Raw arrays are per keypoint (concatenated) or per image (counts): both concatenate along dim 0.
        # One row is written as it is: a 6000x6000 photo's SIFT grid is 1.2 GB, a copy as much again.
        cat = lambda ts: ts[0] if len(ts) == 1 else torch.cat(ts)  # noqa: E731
        extra = {k: cat([e[k] for e in self.extras]) for k in self.extras[0]}
        name = self.output
        if self.rows_per_file:
            p = Path(self.output)
            name, self.part = str(p.with_name(f"{p.stem}-{self.part:05d}{p.suffix}")), self.part + 1
        save_features(name, self._file(cat(self.rows), self.size, list(self.sources), extra))
        self.rows, self.extras, self.sources = [], [], []


def load_features(path: str | Path) -> FeatureFile:
    """Read a .npy or featinv .safetensors (or either from '-'), checking shape and values."""
    name = "<stdin>" if str(path) == "-" else str(path)
    return features_from_bytes(read_bytes(path), name)


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or Inf in t, checked 16M values at a time (torch.isfinite of a 1.2 GB SIFT grid at once
    takes 2 GB of temporaries)."""
    return all(bool(torch.isfinite(c).all()) for c in t.reshape(-1).split(1 << 24))


def npy_array(data: bytes | bytearray, name: str) -> np.ndarray:
    """The array of .npy bytes, as a view of them where the layout allows (no copy of a large file)."""
    if not isinstance(data, bytearray):
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
    if meta.get("format") != FEATURES_FORMAT:
        what = meta.get("format") or "no featinv metadata"
        raise FeatinvError(f"{name}: not a featinv feature file ({what})")
    size = json_field(meta, "image_size", name)
    if size is not None and (not isinstance(size, list) or len(size) != 2
                             or not all(isinstance(v, int) and v > 0 for v in size)):
        raise FeatinvError(f"{name}: metadata image_size must be [H, W], got {meta['image_size']}")
    return dict(feature=meta.get("feature") or None, params=json_field(meta, "params", name, {}),
                image_size=tuple(size) if size else None, sources=json_field(meta, "sources", name, []),
                history=json_field(meta, "history", name, []), labels=json_field(meta, "labels", name, []),
                view=json_field(meta, "view", name))


def read_feature_fields(path: str | Path) -> dict:
    """``feature_fields`` of a feature file, reading only its header (for sets too big to load)."""
    return feature_fields(read_metadata(path), str(path))


def features_from_bytes(data: bytes, name: str) -> FeatureFile:
    if data[:6] == NPY_MAGIC:
        arr = npy_array(data, name)
        if not np.issubdtype(arr.dtype, np.number):
            raise FeatinvError(f"{name}: .npy holds {arr.dtype}, expected numbers")
        ff = FeatureFile(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)))
    else:
        if data.startswith(IMAGE_MAGIC):
            raise FeatinvError(f"{name}: is an image, not features; make features first: "
                               f"featinv extract FEATURE {name} -o features.safetensors")
        if name.lower().endswith(".npy"):
            raise FeatinvError(f"{name}: not a valid .npy file (bad magic bytes)")
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
    if f.ndim not in (2, 4) or f.numel() == 0:
        raise FeatinvError(f"{name}: features must be (N, C, H, W) or (N, D), got {tuple(f.shape)}")
    if not all_finite(f):
        raise FeatinvError(f"{name}: features contain NaN or Inf")
    return ff


# ---------------------------------------------------------------------------- statistics files

@dataclass
class StatsFile:
    """What `featinv sample --fit` saves: per-dimension histograms and one Gaussian of a set of
    feature vectors (analysis.fit_statistics), and what features they describe."""

    tensors: dict[str, torch.Tensor]
    shape: list[int]  # of one feature vector, as the file's features were: (C, H, W) or (D,)
    fitted_on: int
    feature: str | None = None
    params: dict | None = None
    image_size: tuple[int, int] | None = None

    def metadata(self) -> dict[str, str]:
        meta = {"format": STATS_FORMAT, "feature": self.feature or "", "params": json.dumps(self.params or {}),
                "shape": json.dumps(self.shape), "fitted_on": str(self.fitted_on)}
        if self.image_size:
            meta["image_size"] = json.dumps(list(self.image_size))
        return meta


def save_stats(path: str | Path, stats: StatsFile) -> None:
    atomic_write(path, safetensors_chunks(stats.tensors, stats.metadata()))


def stats_from_bytes(data: bytes, name: str) -> StatsFile | None:
    """The statistics in a file's bytes, or None when it is not a statistics file."""
    if data[:6] == NPY_MAGIC:
        return None
    tensors, meta = parse_safetensors(data, name)
    if meta.get("format") != STATS_FORMAT:
        return None
    shape = json_field(meta, "shape", name)
    if not isinstance(shape, list) or not all(isinstance(v, int) and v > 0 for v in shape):
        raise FeatinvError(f"{name}: statistics file has no valid feature shape")
    size = json_field(meta, "image_size", name)
    return StatsFile(tensors, shape, int(meta.get("fitted_on", 0)), meta.get("feature") or None,
                     json_field(meta, "params", name, {}), tuple(size) if size else None)


# -------------------------------------------------------------------------------- model files

@dataclass
class ModelFile:
    state: dict[str, torch.Tensor]
    feature: str
    params: dict
    arch: dict
    image_size: list[int]
    normalization: dict
    train: dict
    version: str


def save_model(path: str | Path, mf: ModelFile, dtype: torch.dtype = torch.float32) -> None:
    meta = {"format": MODEL_FORMAT, "feature": mf.feature, "params": json.dumps(mf.params, sort_keys=True),
            "arch": json.dumps(mf.arch, sort_keys=True), "image_size": json.dumps(mf.image_size),
            "normalization": json.dumps(mf.normalization), "train": json.dumps(mf.train),
            "featinv_version": mf.version}
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in mf.state.items()}
    atomic_write(path, encode_safetensors(state, meta))


def load_model(path: str | Path) -> ModelFile:
    return model_from_bytes(read_bytes(path), "<stdin>" if str(path) == "-" else str(path))


def model_from_bytes(data: bytes, name: str) -> ModelFile:
    tensors, meta = parse_safetensors(data, name)
    if meta.get("format") != MODEL_FORMAT:
        raise FeatinvError(f"{name}: not a featinv model file "
                           f"({meta.get('format') or 'no featinv metadata'})")
    for key in ("feature", "params", "arch", "normalization"):
        if key not in meta:
            raise FeatinvError(f"{name}: model metadata lacks {key!r}; the file is damaged")
    arch = json_field(meta, "arch", name)
    if not isinstance(arch, dict) or "name" not in arch:
        raise FeatinvError(f"{name}: model metadata 'arch' must name an architecture")
    return ModelFile(
        state={k: v.float() if v.is_floating_point() else v for k, v in tensors.items()},
        feature=meta["feature"], params=json_field(meta, "params", name, {}), arch=arch,
        image_size=json_field(meta, "image_size", name, []),
        normalization=json_field(meta, "normalization", name, {}),
        train=json_field(meta, "train", name, {}), version=meta.get("featinv_version", "?"))
