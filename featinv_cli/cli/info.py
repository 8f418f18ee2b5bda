"""featinv info: what a feature, model, statistics or views file holds."""
from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from ..errors import FeatinvError
from .common import JSON, out, show_table


def describe_npy(data, name: str) -> dict:
    """A bare array: its shape, and what `featinv invert` would take it for (this needs torch)."""
    from ..features import resolve
    from ..formats import features_from_bytes, npy_array

    ff = features_from_bytes(data, name)  # validated; a single map becomes a batch of one
    d = {"file": name, "kind": "bare array (.npy, no metadata)", "shape": list(npy_array(data, name).shape)}
    try:
        extractor, size = resolve(ff, name)
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


def read_any_header(path: str):
    """(name, the bytes when read whole (stdin, a pipe) else None, entries, metadata, header length) of a
    safetensors file; a bare .npy is described at once (a dict). Anything else is refused by name."""
    from ..files import read_bytes
    from ..formats import NPY_MAGIC, refuse_foreign
    from ..safetensors_codec import read_header, safetensors_header

    name = "<stdin>" if path == "-" else path
    p = Path(path)
    if path == "-" or p.exists() and not p.is_file() and not p.is_dir():  # stdin, a pipe, <(...)
        data = read_bytes(path)
        if bytes(data[:6]) == NPY_MAGIC:
            return describe_npy(data, name)
        refuse_foreign(data, name)
        return (name, data, *safetensors_header(data, name))
    if not p.is_file():
        raise FeatinvError(f"{p}: no such file" if not p.exists() else f"{p}: is a directory, expected a file")
    with p.open("rb") as f:
        head = f.read(8)
    if head[:6] == NPY_MAGIC:
        return describe_npy(read_bytes(path), name)
    refuse_foreign(head, name)
    return (name, None, *read_header(path))


def describe(path: str) -> dict:
    """Everything but a bare .npy is described from the safetensors header alone: no torch, no tensors
    read (but SIFT's keypoint counts), so info answers in a fraction of a second."""
    from ..formats import CHECKPOINT_FORMAT, FEATURES_FORMAT, MODEL_FORMAT, STATS_FORMAT, VIEWS_FORMAT

    header = read_any_header(path)
    if isinstance(header, dict):
        return header
    name, data, entries, meta, header_len = header
    fmt = meta.get("format")
    kinds = {FEATURES_FORMAT: _features, STATS_FORMAT: _statistics, MODEL_FORMAT: _model, VIEWS_FORMAT: _views,
             CHECKPOINT_FORMAT: _checkpoint}
    if fmt in kinds:
        return kinds[fmt](name, data if data is not None else path, entries, meta, header_len)
    if "source" in meta and "model" in meta:  # a network's weights as featinv ships them (SqueezeNet)
        return {"file": name, "kind": "encoder weights", **meta,
                "weights": sum(math.prod(v["shape"]) for v in entries.values())}
    raise FeatinvError(f"{name}: safetensors file without featinv metadata (format={fmt!r})")


def _features(name, source, entries, meta, header_len) -> dict:
    from ..formats import feature_fields

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


def _statistics(name, source, entries, meta, header_len) -> dict:
    from ..safetensors_codec import json_field

    return {"file": name, "kind": "feature statistics (featinv sample --fit)", "feature": meta.get("feature") or None,
            "params": json_field(meta, "params", name, {}), "feature_shape": json_field(meta, "shape", name),
            "image_size": json_field(meta, "image_size", name), "fitted_on": int(meta.get("fitted_on", 0)),
            "tensors": {k: list(v["shape"]) for k, v in entries.items()}}


def _model(name, source, entries, meta, header_len) -> dict:
    from ..formats import canonical_arch
    from ..safetensors_codec import json_field

    return {"file": name, "kind": "model", "feature": meta.get("feature"), "params": json_field(meta, "params", name, {}),
            "arch": canonical_arch(json_field(meta, "arch", name, {})),
            "weights": sum(math.prod(v["shape"]) for v in entries.values()),
            "image_size": json_field(meta, "image_size", name, []),
            "normalization": json_field(meta, "normalization", name, {}),
            "train": json_field(meta, "train", name, {}),
            **({"evaluation": json_field(meta, "evaluation", name)} if "evaluation" in meta else {}),
            "featinv_version": meta.get("featinv_version", "?"),
            "size_bytes": Path(source).stat().st_size if isinstance(source, (str, Path)) else len(source)}


def _views(name, source, entries, meta, header_len) -> dict:
    from ..views import views_header

    h = views_header(entries, meta, name)  # the format's own checks: what train would refuse, info refuses
    out = {"file": name, "kind": "training views (featinv pack)", "views": h.count, "side": h.side,
           "storage": ("webp" + (f", quality {h.webp_quality}" if h.webp_quality else "")) if h.webp else "raw uint8",
           "fingerprint": h.fingerprint}
    if h.sift_params is not None or h.sift_keypoints:  # keypoints of each view and its mirror
        out.update(sift_params=h.sift_params, sift_keypoints=h.sift_keypoints)
    return out


def _checkpoint(name, source, entries, meta, header_len) -> dict:
    from ..safetensors_codec import json_field

    config = json_field(meta, "config", name, {})
    return {"file": name, "kind": "training checkpoint (featinv train; --resume continues it)",
            "feature": config.get("feature"), "step": int(meta.get("step", 0)),
            "steps": config.get("steps"), "minutes": config.get("minutes"), "output": config.get("output"),
            "config": config, "tensors": len(entries)}


def info(
    file: str = typer.Argument(..., help="Feature, model, statistics or views file, or - for stdin."),
    as_json: bool = JSON,
):
    """Show what a featinv file holds: extractor, parameters, shapes, training record.

    \b
    Examples:
      featinv info photo.safetensors
      featinv info featinv_cli/assets/hog.safetensors --json
      featinv info views.safetensors
    """
    from rich.table import Table

    d = describe(file)
    if as_json:
        out.print_json(json.dumps(d))
        return
    table = Table(show_header=False, box=None)
    for k, v in d.items():
        table.add_row(f"[bold]{k}[/bold]", v if isinstance(v, str) else json.dumps(v))
    show_table(table)
