"""Model files (featinv-formats(5)): an inverter's weights and what it inverts (extractor, parameters,
architecture, image size, normalization), its training record and evaluation; and the encoder weights
featinv ships (SqueezeNet), which `info` describes too."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FeatinvError
from ..files import atomic_write, map_file
from ..safetensors_codec import encode_safetensors, json_field, parse_safetensors
from .base import Kind, header_says

if TYPE_CHECKING:
    import torch

MODEL_FORMAT = "featinv-model/1"


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
    return ModelFile(state={k: v.float() if v.is_floating_point() else v for k, v in tensors.items()},
                     **model_fields(meta, name))


def model_fields(meta: dict[str, str], name: str) -> dict:
    """The ModelFile fields a model file's metadata holds, checked (the reader's checks, and `info`'s)."""
    if meta.get("format") != MODEL_FORMAT:
        raise FeatinvError(f"{name}: not a featinv model file "
                           f"({meta.get('format') or 'no featinv metadata'})")
    for key in ("feature", "params", "arch", "normalization"):
        if key not in meta:
            raise FeatinvError(f"{name}: model metadata lacks {key!r}; the file is damaged")
    arch = json_field(meta, "arch", name)
    if not isinstance(arch, dict) or "name" not in arch:
        raise FeatinvError(f"{name}: model metadata 'arch' must name an architecture")
    return dict(feature=meta["feature"], params=json_field(meta, "params", name, {}), arch=arch,
                image_size=json_field(meta, "image_size", name, []),
                normalization=json_field(meta, "normalization", name, {}),
                train=json_field(meta, "train", name, {}), version=meta.get("featinv_version", "?"))


def describe(name, source, entries, meta, header_len) -> dict:
    fields = model_fields(meta, name)
    return {"file": name, "kind": "model", "feature": fields["feature"], "params": fields["params"],
            "arch": canonical_arch(fields["arch"]), "weights": sum(math.prod(v["shape"]) for v in entries.values()),
            **{k: fields[k] for k in ("image_size", "normalization", "train")},
            **({"evaluation": json_field(meta, "evaluation", name)} if "evaluation" in meta else {}),
            "featinv_version": fields["version"],
            "size_bytes": Path(source).stat().st_size if isinstance(source, (str, Path)) else len(source)}


def describe_weights(name, source, entries, meta, header_len) -> dict:
    """A network's weights as featinv ships them (SqueezeNet's: a source and a model named)."""
    return {"file": name, "kind": "encoder weights", **meta,
            "weights": sum(math.prod(v["shape"]) for v in entries.values())}


MODEL_FILE = Kind("model", header_says(MODEL_FORMAT), MODEL_FORMAT, describe)
