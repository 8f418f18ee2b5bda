"""Feature extractors and the spec registry."""
from .base import Extractor, to_gray
from .registry import EXTRACTORS, from_metadata, guess_from_channels, parse_spec, resolve

__all__ = ["Extractor", "to_gray", "EXTRACTORS", "from_metadata", "guess_from_channels", "parse_spec", "resolve"]
