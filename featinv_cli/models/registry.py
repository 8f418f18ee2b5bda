"""The inverter architectures, by the names `train --arch` takes and model files store.

A model file's ``arch`` metadata is enough to rebuild its network: ``build(arch)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import FeatinvError
from ..formats.model import canonical_arch
from ..features.base import Extractor
from .deep import ConvLayerInverter, FCLayerInverter
from .blocks import UPSAMPLE
from .dense import DenseInverter, SkipInverter, contractions


@dataclass(frozen=True)
class Architecture:
    name: str  # what `train --arch` takes and what a model file's arch metadata stores
    describe: Callable[..., dict]  # (extractor, width, input_scale, upsample) -> arch metadata, or FeatinvError
    network: Callable[[dict], nn.Module]  # arch metadata -> a fresh network


def _dense_stride(extractor: Extractor) -> int:
    try:
        contractions(extractor.stride)
    except ValueError as e:
        raise FeatinvError(f"no inverter network fits {extractor.spec} features: {e}") from None
    return extractor.stride


def _paper_form(extractor: Extractor) -> str:
    """The paper's three networks: fc layers (Table 1), CNN conv layers (three convolutions and
    up-convolutions), dense hand-made features (contracting to 1/64 of the image and back)."""
    return "fc" if extractor.is_vector else "conv" if extractor.is_cnn else "dense"


def _describe_paper(extractor: Extractor, width: float = 1.0, input_scale: float = 1.0,
                    upsample: str = "zeros") -> dict:
    """``input_scale`` (CNN features only) multiplies the features before the first layer."""
    if upsample != "zeros":
        raise FeatinvError("--upsample resize is a variant of --arch skip; the paper's network up-samples with zeros")
    form = _paper_form(extractor)
    arch = {"name": "paper", "form": form, "in_channels": extractor.channels, "width": width}
    if form == "dense":
        return {**arch, "stride": _dense_stride(extractor)}
    extra = {"ups": max(1, round(math.log2(extractor.stride)))} if form == "conv" else {}
    return {**arch, **extra, "input_scale": input_scale}


def _describe_skip(extractor: Extractor, width: float = 1.0, input_scale: float = 1.0,
                   upsample: str = "zeros") -> dict:
    if extractor.is_vector or extractor.is_cnn:
        raise FeatinvError(f"--arch skip is for dense hand-made features (hog, lbp, sift), not {extractor.spec}")
    arch = {"name": "skip", "in_channels": extractor.channels, "stride": _dense_stride(extractor), "width": width}
    if upsample != "zeros":  # files of the default variant stay as they were
        arch["upsample"] = upsample
    return arch


PAPER_NETWORKS = {
    "dense": lambda a: DenseInverter(int(a["in_channels"]), int(a["stride"]), float(a.get("width", 1.0))),
    "conv": lambda a: ConvLayerInverter(int(a["in_channels"]), int(a["ups"]), float(a.get("width", 1.0)),
                                        float(a.get("input_scale", 1.0))),
    "fc": lambda a: FCLayerInverter(int(a["in_channels"]), float(a.get("width", 1.0)), float(a.get("input_scale", 1.0))),
}


def _paper_network(arch: dict) -> nn.Module:
    form = arch.get("form", "dense")
    if form not in PAPER_NETWORKS:
        raise FeatinvError(f"unknown form {form!r} of the paper's architecture in model file")
    return PAPER_NETWORKS[form](arch)


def _skip_network(arch: dict) -> nn.Module:
    upsample = str(arch.get("upsample", "zeros"))
    if upsample not in UPSAMPLE:
        raise FeatinvError(f"unknown upsample {upsample!r} in model file")
    return SkipInverter(int(arch["in_channels"]), int(arch["stride"]), float(arch.get("width", 1.0)), upsample)


ARCHITECTURES = {a.name: a for a in (Architecture("paper", _describe_paper, _paper_network),
                                     Architecture("skip", _describe_skip, _skip_network))}


def names() -> list[str]:
    return sorted(ARCHITECTURES)


def for_extractor(name: str, extractor: Extractor, **hyper) -> tuple[nn.Module, dict]:
    """A fresh network of architecture ``name`` for this extractor, and its ``arch`` metadata."""
    if name not in ARCHITECTURES:
        raise FeatinvError(f"unknown architecture {name!r}; choose one of: {', '.join(names())}")
    arch = ARCHITECTURES[name].describe(extractor, **hyper)
    return build(arch), arch


def build(arch: dict) -> nn.Module:
    """Rebuild a network from its ``arch`` metadata."""
    arch = canonical_arch(arch)
    if arch.get("name") not in ARCHITECTURES:
        raise FeatinvError(f"unknown architecture {arch.get('name')!r} in model file")
    try:
        return ARCHITECTURES[arch["name"]].network(arch)
    except (KeyError, TypeError, ValueError) as e:
        raise FeatinvError(f"model architecture metadata is incomplete or wrong: {e}") from None


def build_holding(arch: dict, state: dict, name: str) -> nn.Module:
    """The network of a model file, built once its ``arch`` is known to hold exactly the file's weights:
    drawn first on torch's meta device (no memory), so a header claiming a network far wider than its
    weights (``"width": 1000``: terabytes) is refused in one line instead of allocated."""
    import torch

    with torch.device("meta"):
        wanted = {k: tuple(v.shape) for k, v in build(arch).state_dict().items()}
    if wanted != {k: tuple(v.shape) for k, v in state.items()}:
        raise FeatinvError(f"{name}: weights do not fit the architecture in its metadata; "
                           f"the file is damaged or was edited")
    return build(arch)
