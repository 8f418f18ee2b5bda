"""Architecture names to networks. A model file's ``arch`` metadata is enough to rebuild it."""
from __future__ import annotations

from torch import nn

from ..errors import FeatinvError
from ..features.base import Extractor
from .shallow import ShallowInverter


def _paper(extractor: Extractor, width: float = 1.0) -> tuple[nn.Module, dict]:
    arch = {"name": "paper", "in_channels": extractor.channels, "stride": extractor.stride, "width": width}
    return build(arch), arch


ARCHS = {"paper": _paper}


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
    except (KeyError, TypeError, ValueError) as e:
        raise FeatinvError(f"model architecture metadata is incomplete or wrong: {e}") from None
    raise FeatinvError(f"unknown architecture {arch.get('name')!r} in model file")
