"""Inverter networks and the architecture registry."""
from .registry import build, build_holding, for_extractor

__all__ = ["build", "build_holding", "for_extractor"]
