"""featinv info: what a feature or model file holds."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import FeatinvError
from .common import JSON, out


def describe(path: str) -> dict:
    from ..features import resolve
    from ..io import (FEATURES_FORMAT, MODEL_FORMAT, NPY_MAGIC, STATS_FORMAT, features_from_bytes, model_from_bytes,
                      npy_array, parse_safetensors, read_bytes, stats_from_bytes)

    data = read_bytes(path)
    name = "<stdin>" if path == "-" else path
    if data[:6] == NPY_MAGIC:
        ff = features_from_bytes(data, name)  # validated; a single map becomes a batch of one
        d = {"file": name, "kind": "bare array (.npy, no metadata)", "shape": list(npy_array(data, name).shape)}
        try:  # what `featinv invert` would take it for
            extractor, size = resolve(ff, name)
            d.update(guessed_feature=extractor.spec, guessed_image_size=list(size))
        except FeatinvError as e:
            d["guessed_feature"] = f"none ({e})"
        return d
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
    if fmt == STATS_FORMAT:
        st = stats_from_bytes(data, name)
        return {"file": name, "kind": "feature statistics (featinv sample --fit)", "feature": st.feature,
                "params": st.params, "feature_shape": st.shape,
                "image_size": list(st.image_size) if st.image_size else None, "fitted_on": st.fitted_on,
                "tensors": {k: list(v.shape) for k, v in st.tensors.items()}}
    if fmt == MODEL_FORMAT:
        mf = model_from_bytes(data, name)
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
    from rich.table import Table

    d = describe(file)
    if as_json:
        out.print_json(json.dumps(d))
        return
    table = Table(show_header=False, box=None)
    for k, v in d.items():
        table.add_row(f"[bold]{k}[/bold]", v if isinstance(v, str) else json.dumps(v))
    out.print(table)
