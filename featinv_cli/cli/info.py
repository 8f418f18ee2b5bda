"""featinv info: what a feature or model file holds."""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ..errors import FeatinvError
from ..io import FEATURES_FORMAT, MODEL_FORMAT, NPY_MAGIC, features_from_bytes, load_model, parse_safetensors, read_bytes
from .common import JSON, out


def describe(path: str) -> dict:
    data = read_bytes(path)
    name = "<stdin>" if path == "-" else path
    if data[:6] == NPY_MAGIC:
        ff = features_from_bytes(data, name)
        shape = list(ff.features.shape)
        return {"file": name, "kind": "bare array (.npy, no metadata)", "shape": shape}
    _, meta = parse_safetensors(data, name)
    fmt = meta.get("format")
    if fmt == FEATURES_FORMAT:
        ff = features_from_bytes(data, name)
        d = {"file": name, "kind": "features", "feature": ff.feature, "params": ff.params,
             "shape": list(ff.features.shape), "image_size": list(ff.image_size or []),
             "rows": len(ff), "sources": ff.sources}
        if "counts" in ff.extra:
            d["keypoints"] = int(ff.extra["counts"].sum())
        if ff.history:
            d["history"] = ff.history
        if ff.labels:
            d["labels"] = ff.labels
        return d
    if fmt == MODEL_FORMAT:
        mf = load_model(path)
        params = sum(v.numel() for v in mf.state.values())
        return {"file": name, "kind": "model", "feature": mf.feature, "params": mf.params, "arch": mf.arch,
                "weights": params, "image_size": mf.image_size, "normalization": mf.normalization,
                "train": mf.train, "featinv_version": mf.version,
                "size_bytes": Path(path).stat().st_size if path != "-" else len(data)}
    raise FeatinvError(f"{name}: safetensors file without featinv metadata (format={fmt!r})")


def info(
    file: str = typer.Argument(..., help="Feature file, model file, or - for stdin."),
    as_json: bool = JSON,
):
    """Show what a feature or model file holds: extractor, parameters, shapes, training record.

    \b
    Examples:
      featinv info photo.safetensors
      featinv info featinv_cli/assets/hog.safetensors --json
    """
    d = describe(file)
    if as_json:
        out.print_json(json.dumps(d))
        return
    table = Table(show_header=False, box=None)
    for k, v in d.items():
        table.add_row(f"[bold]{k}[/bold]", v if isinstance(v, str) else json.dumps(v))
    out.print(table)
