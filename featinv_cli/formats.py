"""featinv's own file formats (featinv-formats(5)): feature files (.safetensors with metadata, or a
bare .npy), `sample --fit` statistics, model files, training checkpoints. One reader and one writer
each, through the checked safetensors codec and atomic writes."""
from __future__ import annotations

import dataclasses
import io as _io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import FeatinvError, UsageError
from .files import atomic_write, map_file
from .safetensors_codec import (encode_safetensors, json_field, parse_safetensors, read_metadata,
                                safetensors_chunks, safetensors_header)
from .settings import TrainConfig

if TYPE_CHECKING:
    import torch

FEATURES_FORMAT = "featinv-features/1"
MODEL_FORMAT = "featinv-model/1"
STATS_FORMAT = "featinv-stats/1"  # `featinv sample --fit`: per-dimension histograms and a Gaussian
VIEWS_FORMAT = "featinv-views/1"  # `featinv pack`: training photos as 8-bit views (read by views.py)
CHECKPOINT_FORMAT = "featinv-checkpoint/1"
NPY_MAGIC = b"\x93NUMPY"


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


# Leading bytes of the image formats users hand to commands that want feature files.
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


def check_feature_name(path: str | Path) -> None:
    """Refuse an output name that is not a feature file's (a command checks before it computes)."""
    from .images import IMAGE_SUFFIXES

    suffix = Path(str(path)).suffix.lower()
    if str(path) != "-" and suffix not in FEATURE_SUFFIXES:
        what = "an image name" if suffix in IMAGE_SUFFIXES else f"not a feature file name ({suffix or 'no suffix'})"
        raise UsageError(f"{path}: {what}; feature files end in .safetensors (with metadata) or .npy "
                         f"(bare array); `featinv invert` makes images"
                         + (f"; for a file per image, end the folder's name with /: -o {path}/" if not suffix else ""))


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
    from .errors import note

    if str(path).lower().endswith(".npy") and ff.feature:
        note(f"{path}: a .npy holds the array alone; what it is ({ff.feature}, image size, history) is left "
             f"behind; name it *.safetensors to keep that")


def has_format(path: str | Path, fmt: str) -> bool:
    """Whether this file's header says featinv wrote it as ``fmt`` (``written_as`` for any file)."""
    try:
        return read_metadata(path).get("format") == fmt
    except FeatinvError:
        return False


_KINDS = {FEATURES_FORMAT: "feature file", STATS_FORMAT: "statistics file", MODEL_FORMAT: "model",
          VIEWS_FORMAT: "views file", CHECKPOINT_FORMAT: "training checkpoint"}


def featinv_kind(source: str | Path | bytes | bytearray) -> str | None:
    """"a featinv model" when a path (its header read) or bytes hold one of featinv's own files, else None:
    for the message when one is given where an image or a folder was expected. A path that is not a
    regular file (a FIFO would block) or whose first 8 bytes promise a header over 100 MB (a video: its
    bytes read as a length) is no featinv file."""
    try:
        if isinstance(source, (str, Path)):
            if not Path(source).is_file():
                return None
            with open(source, "rb") as f:
                head = f.read(8)
            if len(head) < 8 or int.from_bytes(head, "little") > 100 << 20:
                return None
            meta = read_metadata(source)
        else:
            meta = safetensors_header(source, "")[1]
    except Exception:
        return None
    kind = _KINDS.get(meta.get("format"))
    return f"a featinv {kind}" if kind else None


def check_replaceable(path: str | Path, fmt: str, instead: str = "choose another name") -> None:
    """-o checked before any work: an existing file is replaced only if featinv wrote it as ``fmt`` (an
    earlier run's output; ``written_as``), never someone's array, a model, or a photo named by mistake.
    An empty file holds nothing to lose."""
    p = Path(str(path))
    if str(path) == "-" or not p.exists():
        return
    if p.is_dir():
        raise FeatinvError(f"{p}: is a directory; give a file name")
    if p.stat().st_size and not written_as(p, fmt):
        what = "an array of float32 features" if p.suffix.lower() == ".npy" else f"a featinv {_KINDS[fmt]}"
        raise FeatinvError(f"{p}: already there and not {what}; refusing to overwrite it: {instead}, or "
                           f"remove the file")


def written_as(path: Path, fmt: str) -> bool:
    """Whether featinv may have written ``path`` as ``fmt``: its header says so. A .npy carries no mark
    of ours; it counts if it holds what featinv writes there, float32 features, (N, D) or (N, C, H, W)."""
    if path.suffix.lower() != ".npy":
        return has_format(path, fmt)
    try:
        with path.open("rb"):  # a file we may not read is reported as that, not as someone else's
            pass
        arr = np.load(path, mmap_mode="r", allow_pickle=False)  # the header only: nothing is read yet
    except OSError as e:
        raise FeatinvError(f"{path}: cannot read ({e.strerror})") from None
    except Exception:  # not a .npy at all
        return False
    return isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.ndim in (2, 4)  # an .npz is not


def check_feature_output(path: str | Path) -> None:
    """-o of a command that writes features, before any work: a feature file's name, replacing only
    features (``check_replaceable``)."""
    check_feature_name(path)
    check_replaceable(path, FEATURES_FORMAT)


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
    if bytes(data[:6]) == NPY_MAGIC:
        return None
    refuse_foreign(data, name)
    tensors, meta = parse_safetensors(data, name)
    if meta.get("format") != STATS_FORMAT:
        return None
    shape = json_field(meta, "shape", name)
    if not isinstance(shape, list) or not all(isinstance(v, int) and v > 0 for v in shape):
        raise FeatinvError(f"{name}: statistics file has no valid feature shape")
    size = json_field(meta, "image_size", name)
    return StatsFile(tensors, shape, int(meta.get("fitted_on", 0)), meta.get("feature") or None,
                     json_field(meta, "params", name, {}), tuple(size) if size else None)


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


# Model files written before the paper's three networks became forms of one name.
OLD_ARCH_NAMES = {"paper-conv": {"name": "paper", "form": "conv"}, "paper-fc": {"name": "paper", "form": "fc"}}


def canonical_arch(arch: dict) -> dict:
    """A model file's ``arch`` under today's names, the ones `train --arch` takes (old files said
    paper-conv, paper-fc). No torch: `featinv info` shows it."""
    return {**arch, **OLD_ARCH_NAMES.get(arch.get("name"), {})}


def save_model(path: str | Path, mf: ModelFile, dtype: torch.dtype | None = None) -> None:
    """Weights as ``dtype`` (default float32; featinv ships float16)."""
    import torch

    dtype = dtype or torch.float32
    meta = {"format": MODEL_FORMAT, "feature": mf.feature, "params": json.dumps(mf.params, sort_keys=True),
            "arch": json.dumps(mf.arch, sort_keys=True), "image_size": json.dumps(mf.image_size),
            "normalization": json.dumps(mf.normalization), "train": json.dumps(mf.train),
            "featinv_version": mf.version}
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in mf.state.items()}
    atomic_write(path, encode_safetensors(state, meta))


def store_evaluation(path: str | Path, evaluation: dict) -> None:
    """Add (or replace) a model file's ``evaluation`` metadata; the weights are written back unchanged."""
    tensors, meta = parse_safetensors(map_file(path), str(path))
    if meta.get("format") != MODEL_FORMAT:
        raise FeatinvError(f"{path}: not a featinv model file")
    atomic_write(path, encode_safetensors({k: v.clone() for k, v in tensors.items()},
                                          {**meta, "evaluation": json.dumps(evaluation)}))


def load_model(path: str | Path) -> ModelFile:
    return model_from_bytes(map_file(path), "<stdin>" if str(path) == "-" else str(path))


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


# ------------------------------------------------------------------------------- checkpoints

# Settings a resumed run must share with its checkpoint, so that the model's record says how it was made
# (the others, such as --workers, may change; the data may move, but must be the same: train compares
# its fingerprint).
SAME_ON_RESUME = ("feature", "arch", "width", "upsample", "crop", "batch", "seed", "steps", "max_zoom", "features",
                  "finetune_encoder", "ema", "low_res", "minutes", "lr", "warmup", "init")
# Values of settings added after checkpoints were first written, as those runs had them.
BEFORE = {"upsample": "zeros", "ema": 0.0, "low_res": 0.0, "minutes": 0.0, "init": "", "warmup": 0}


def checkpoint_path(output: str | Path) -> Path:
    return Path(str(output) + ".ckpt")


def save_checkpoint(path: Path, model, averaged, opt, step: int, cfg: TrainConfig, extra: dict) -> None:
    import torch

    tensors = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    if averaged is not None:
        tensors.update({f"ema.{k}": v.detach().cpu() for k, v in averaged.state_dict().items()})
    for i, state in opt.state_dict()["state"].items():
        for k, v in state.items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu()
    meta = {"format": CHECKPOINT_FORMAT, "step": str(step),
            "config": json.dumps(dataclasses.asdict(cfg)), "extra": json.dumps(extra)}
    atomic_write(path, encode_safetensors(tensors, meta))


def peek(path: Path) -> dict:
    """The step, settings and ``extra`` record (mean colour, feature scale) of a checkpoint, reading
    only its header."""
    meta = read_metadata(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise FeatinvError(f"{path}: not a featinv training checkpoint")
    return {"step": int(meta["step"]), "config": {**BEFORE, **json.loads(meta["config"])},
            "extra": json.loads(meta.get("extra", "{}"))}


def resumable(path: Path, cfg: TrainConfig) -> dict:
    """``peek`` of a checkpoint that a run with ``cfg`` may continue (the settings SAME_ON_RESUME names
    agree), else a FeatinvError naming the first that differs (before anything says it resumes)."""
    head = peek(path)
    for key in SAME_ON_RESUME:
        if head["config"].get(key) != getattr(cfg, key):
            raise FeatinvError(f"{path}: checkpoint was made with {key}={head['config'].get(key)!r}, this run "
                               f"has {getattr(cfg, key)!r}; resume with the same settings")
    return head


def load_checkpoint(path: Path, model, averaged, opt, cfg: TrainConfig) -> tuple[int, dict]:
    """Load weights, average and optimizer state into the given objects; returns (step, extra)."""
    head = resumable(path, cfg)
    tensors, _ = parse_safetensors(map_file(path), str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if averaged is not None:
        averaged.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state = opt.state_dict()
    for i in range(len(state["param_groups"][0]["params"])):
        if f"opt.{i}.exp_avg" in tensors:
            state["state"][i] = {k: tensors[f"opt.{i}.{k}"].clone() for k in ("step", "exp_avg", "exp_avg_sq")}
    opt.load_state_dict(state)
    return head["step"], head["extra"]
