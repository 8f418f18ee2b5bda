"""Architecture names to networks. A model file's ``arch`` metadata is enough to rebuild it."""
from __future__ import annotations

import math

from torch import nn

from ..errors import FeatinvError
from ..features.base import Extractor
from .deep import ConvLayerInverter, FCLayerInverter
from .shallow import ShallowInverter, SkipInverter, contractions


def _check_stride(extractor: Extractor) -> None:
    try:
        contractions(extractor.stride)
    except ValueError as e:
        raise FeatinvError(f"no inverter network fits {extractor.spec} features: {e}") from None


def _paper(extractor: Extractor, width: float = 1.0, input_scale: float = 1.0,
           upsample: str = "zeros") -> tuple[nn.Module, dict]:
    """The paper's network for this kind of feature: fc layers Table 1, CNN conv layers three
    convolutions and up-convolutions, hand-made features contracting to 1/64 and back.
    ``input_scale`` (CNN features only) multiplies the features before the first layer."""
    if upsample != "zeros":
        raise FeatinvError("--upsample resize is a variant of --arch skip; the paper's network up-samples with zeros")
    if extractor.is_vector:
        arch = {"name": "paper-fc", "in_channels": extractor.channels, "width": width, "input_scale": input_scale}
    elif extractor.is_cnn:
        ups = max(1, round(math.log2(extractor.stride)))
        arch = {"name": "paper-conv", "in_channels": extractor.channels, "ups": ups, "width": width,
                "input_scale": input_scale}
    else:
        _check_stride(extractor)
        arch = {"name": "paper", "in_channels": extractor.channels, "stride": extractor.stride, "width": width}
    return build(arch), arch


def _skip(extractor: Extractor, width: float = 1.0, input_scale: float = 1.0,
          upsample: str = "zeros") -> tuple[nn.Module, dict]:
    """The hand-made-feature network with U-Net skip connections (models/shallow.py, SkipInverter)."""
    if extractor.is_vector or extractor.is_cnn:
        raise FeatinvError(f"--arch skip is for dense hand-made features (hog, lbp, sift), not {extractor.spec}")
    _check_stride(extractor)
    arch = {"name": "skip", "in_channels": extractor.channels, "stride": extractor.stride, "width": width}
    if upsample != "zeros":  # files of the default variant stay as they were
        arch["upsample"] = upsample
    return build(arch), arch


ARCHS = {"paper": _paper, "skip": _skip}


def names() -> list[str]:
    return sorted(ARCHS)


def for_extractor(name: str, extractor: Extractor, **hyper) -> tuple[nn.Module, dict]:
    """A fresh network of architecture ``name`` for this extractor, and its ``arch`` metadata."""
    if name not in ARCHS:
        raise FeatinvError(f"unknown architecture {name!r}; choose one of: {', '.join(names())}")
    return ARCHS[name](extractor, **hyper)


def build(arch: dict) -> nn.Module:
    """Rebuild a network from its ``arch`` metadata."""
    try:
        if arch["name"] == "paper":
            return ShallowInverter(int(arch["in_channels"]), int(arch["stride"]), float(arch.get("width", 1.0)))
        if arch["name"] == "skip":
            return SkipInverter(int(arch["in_channels"]), int(arch["stride"]), float(arch.get("width", 1.0)),
                                str(arch.get("upsample", "zeros")))
        if arch["name"] == "paper-conv":
            return ConvLayerInverter(int(arch["in_channels"]), int(arch["ups"]), float(arch.get("width", 1.0)),
                                     float(arch.get("input_scale", 1.0)))
        if arch["name"] == "paper-fc":
            return FCLayerInverter(int(arch["in_channels"]), float(arch.get("width", 1.0)),
                                   float(arch.get("input_scale", 1.0)))
    except (KeyError, TypeError, ValueError) as e:
        raise FeatinvError(f"model architecture metadata is incomplete or wrong: {e}") from None
    raise FeatinvError(f"unknown architecture {arch.get('name')!r} in model file")
