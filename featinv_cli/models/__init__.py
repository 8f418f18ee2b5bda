"""Inverter networks and the architecture registry."""
from .registry import build, for_extractor

__all__ = ["build", "for_extractor"]
