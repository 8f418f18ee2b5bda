"""Statistics files (featinv-formats(5)): what `featinv sample --fit` saves, per-dimension histograms
and one Gaussian of a set of feature vectors (analysis.fit_statistics), and what features they describe."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FeatinvError, UsageError
from ..files import atomic_write
from ..safetensors_codec import json_field, parse_safetensors, safetensors_chunks
from .base import NPY_MAGIC, Kind, header_says, refuse_foreign

if TYPE_CHECKING:
    import torch

STATS_FORMAT = "featinv-stats/1"  # `featinv sample --fit`: per-dimension histograms and a Gaussian


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
    return StatsFile(tensors, **stats_fields(meta, name))


def stats_fields(meta: dict[str, str], name: str) -> dict:
    """The StatsFile fields a statistics file's metadata holds, checked (the reader's checks, and `info`'s)."""
    shape = json_field(meta, "shape", name)
    if not isinstance(shape, list) or not all(isinstance(v, int) and v > 0 for v in shape):
        raise FeatinvError(f"{name}: statistics file has no valid feature shape")
    fitted_on = meta.get("fitted_on", "0")
    if not fitted_on.isdigit():
        raise FeatinvError(f"{name}: metadata fitted_on must be a whole number >= 0, got {fitted_on!r}")
    size = json_field(meta, "image_size", name)
    return dict(shape=shape, fitted_on=int(fitted_on), feature=meta.get("feature") or None,
                params=json_field(meta, "params", name, {}), image_size=tuple(size) if size else None)


def describe(name, source, entries, meta, header_len) -> dict:
    fields = stats_fields(meta, name)
    return {"file": name, "kind": "feature statistics (featinv sample --fit)", "feature": fields["feature"],
            "params": fields["params"], "feature_shape": fields["shape"],
            "image_size": list(fields["image_size"]) if fields["image_size"] else None,
            "fitted_on": fields["fitted_on"], "tensors": {k: list(v["shape"]) for k, v in entries.items()}}


def check_stats_name(output: str, folders: bool = False) -> None:
    if output != "-" and not output.endswith(".safetensors"):
        raise UsageError(f"-o {output}: statistics are a safetensors file; name it *.safetensors (or - for a pipe)")


STATS_FILE = Kind("statistics file", header_says(STATS_FORMAT), STATS_FORMAT, describe, check_stats_name)
