"""Spec strings (``hog``, ``hog:cell=8``) to extractors: the one place that knows every extractor."""
from __future__ import annotations

import dataclasses
import json

from ..errors import FeatinvError
from .base import Extractor
from .hog import HOG

EXTRACTORS: dict[str, type[Extractor]] = {"hog": HOG}


def names() -> list[str]:
    return sorted(EXTRACTORS)


def _coerce(field: dataclasses.Field, text: str):
    kind = field.type if isinstance(field.type, type) else {"int": int, "float": float, "str": str,
                                                            "bool": bool}.get(str(field.type), str)
    try:
        if kind is bool:
            return text.lower() in ("1", "true", "yes")
        return kind(text)
    except ValueError:
        raise FeatinvError(f"parameter {field.name}={text!r} is not a valid {kind.__name__}") from None


def parse_spec(spec: str) -> Extractor:
    """``"hog:cell=8"`` -> HOG(cell=8). Unknown names or parameters are a FeatinvError."""
    name, _, rest = spec.strip().partition(":")
    if name not in EXTRACTORS:
        raise FeatinvError(f"unknown feature {name!r}; choose one of: {', '.join(names())}")
    cls = EXTRACTORS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in fields:
            raise FeatinvError(f"bad parameter {item!r} in feature spec {spec!r}; "
                               f"{name} takes: {', '.join(fields) or 'nothing'}")
        kwargs[key] = _coerce(fields[key], value)
    return cls(**kwargs)


def from_metadata(name: str, params_json: str | None) -> Extractor:
    """Rebuild an extractor from a file's ``feature`` and ``params`` metadata."""
    base = parse_spec(name.partition(":")[0])
    if not params_json:
        return parse_spec(name)
    params = json.loads(params_json)
    known = {f.name for f in dataclasses.fields(type(base))}
    return type(base)(**{k: v for k, v in params.items() if k in known})


def guess_from_channels(channels: int) -> Extractor | None:
    """The extractor a bare array with this channel count must come from, if exactly one fits."""
    fits = [cls() for cls in EXTRACTORS.values() if _default_channels(cls) == channels]
    return fits[0] if len(fits) == 1 else None


def _default_channels(cls: type[Extractor]) -> int | None:
    try:
        return cls().channels
    except Exception:  # extractors whose width depends on weights have no default
        return None
