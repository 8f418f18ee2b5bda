"""Spec strings (``hog``, ``hog:cell=8``) to extractors: the one place that knows every extractor."""
from __future__ import annotations

import dataclasses

from ..errors import FeatinvError, UsageError
from .base import Extractor
from .hog import HOG
from .alexnet import AlexNetLayer, CaffeNetLayer
from .colmap import ColmapSIFT
from .lbp import LBP
from .sift import SIFT
from .squeezenet import SqueezeNetLayer
from .torchvision_layer import TorchvisionLayer

EXTRACTORS: dict[str, type[Extractor]] = {"hog": HOG, "lbp": LBP, "sift": SIFT, "alexnet": AlexNetLayer,
                                          "caffenet": CaffeNetLayer, "squeezenet": SqueezeNetLayer,
                                          "torchvision": TorchvisionLayer, "colmap-sift": ColmapSIFT}


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
        raise UsageError(f"parameter {field.name}={text!r} is not a valid {kind.__name__}") from None


def parse_spec(spec: str) -> Extractor:
    """``"hog:cell=8"`` -> HOG(cell=8); ``"alexnet:fc6"`` and ``"torchvision:resnet18:layer3"`` -> the
    leading parameters given by position (colon-separated). Unknown names or parameters are a
    UsageError (exit 2: specs come from the command line; from_metadata makes them a bad file's)."""
    name, _, rest = spec.strip().partition(":")
    if name not in EXTRACTORS:
        raise UsageError(f"unknown feature {name!r}; choose one of: {', '.join(names())}")
    cls = EXTRACTORS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    order = list(cls.positional or list(fields)[:1])
    items = list(filter(None, rest.split(",")))
    if items and "=" not in items[0]:  # positional values come first: "resnet18:layer3"
        values = items[0].split(":")
        if len(values) > len(order):
            raise UsageError(f"bad parameter {items[0]!r} in feature spec {spec!r}; {name} takes "
                               f"{len(order)} value(s) by position ({':'.join(o.upper() for o in order)})")
        items[:1] = [f"{key}={value}" for key, value in zip(order, values)]
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or key not in fields:
            raise UsageError(f"bad parameter {item!r} in feature spec {spec!r}; "
                               f"{name} takes: {', '.join(fields) or 'nothing'}")
        kwargs[key] = _coerce(fields[key], value)
    _check_numbers(name, kwargs, UsageError)
    try:
        return cls(**kwargs)
    except FeatinvError as e:  # an extractor's own check (squeezenet:fire10): a command line's mistake
        raise UsageError(str(e)) from None


# Numeric parameters are sizes and counts (cell, orientations, size, ...): positive. These may be 0 too
# (a seed; OpenCV's n_features=0, "all"; a contrast threshold of 0 keeps every extremum).
ZERO_ALLOWED = {"seed", "n_features", "contrast_threshold"}


def _check_numbers(name: str, params: dict, error: type) -> None:
    for key, value in params.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and \
                not (value >= 0 if key in ZERO_ALLOWED else value > 0):
            raise error(f"{name}: {key}={value} must be {'0 or more' if key in ZERO_ALLOWED else 'positive'}")


def from_metadata(name: str, params: dict | None) -> Extractor:
    """Rebuild an extractor from a file's ``feature`` and (parsed) ``params`` metadata."""
    try:
        base = parse_spec(name.partition(":")[0])
        if not params:
            return parse_spec(name)
    except UsageError as e:  # the file's metadata is wrong, not the command line
        raise FeatinvError(f"the file names an unknown feature: {e}") from None
    known = {f.name for f in dataclasses.fields(type(base))}
    kept = {k: v for k, v in params.items() if k in known}
    _check_numbers(f"the file's {base.name} parameters", kept, FeatinvError)
    return type(base)(**kept)


def guess_from_channels(channels: int) -> Extractor | None:
    """The hand-made extractor a bare array with this channel count comes from, if exactly one fits
    (133 is OpenCV's sift; colmap-sift and CNN layers are never guessed: their channel counts repeat)."""
    fits = [cls() for cls in EXTRACTORS.values()
            if cls.guess_by_channels and _default_channels(cls) == channels]
    return fits[0] if len(fits) == 1 else None


def _default_channels(cls: type[Extractor]) -> int | None:
    try:
        return cls().channels
    except Exception:  # extractors whose width depends on weights have no default
        return None


def specs_with_channels(channels: int, maps: bool = True) -> list[str]:
    """Specs whose features have this many channels: with ``maps`` (N, C, H, W) arrays, hand-made
    extractors at their defaults and the map layers of the built-in SqueezeNet; else (N, D) vectors,
    pool10's (others depend on the user's network)."""
    from .squeezenet import CHANNELS, POOLS_BEFORE

    fits = [cls().spec for cls in EXTRACTORS.values() if maps and not cls.is_cnn and _default_channels(cls) == channels]
    return fits + [f"squeezenet:{layer}" for layer, c in CHANNELS.items()
                   if c == channels and (layer in POOLS_BEFORE) == maps]


def resolve(ff, name: str, feature: str | None = None,
            image_size: tuple[int, int] | None = None) -> tuple[Extractor, tuple[int, int]]:
    """Which extractor made a feature file's array, and the size of the image it came from.

    Metadata wins; ``feature``/``image_size`` (the --feature/--image-size flags) describe a bare
    ``.npy`` and must agree with metadata when both exist. A bare array is identified by its channel
    count where exactly one hand-made extractor fits (133: sift), with image size = cells x cell size (featinv-formats(5)).
    """
    shape = tuple(ff.features.shape)
    if ff.feature:
        extractor = from_metadata(ff.feature, ff.params)
        if feature and parse_spec(feature).spec != extractor.spec:
            raise FeatinvError(f"{name}: file holds {extractor.spec} features, not {feature}")
    elif feature:
        extractor = parse_spec(feature)
    else:
        extractor = guess_from_channels(shape[1]) if len(shape) == 4 else None
        if extractor is None:
            fits = specs_with_channels(shape[1], maps=len(shape) == 4)
            raise FeatinvError(f"{name}: cannot tell which extractor made an array of shape {shape}; "
                               + (_channels_last(shape) or "add " + (
                                   f"--feature SPEC: {', '.join(fits)} give{'s' if len(fits) == 1 else ''} "
                                   f"{shape[1]} {'channels' if len(shape) == 4 else 'values'}" if fits else
                                   f"--feature SPEC (one of: {', '.join(names())}, with its layer)")))
    if len(shape) == 4 and shape[1] != extractor.channels:
        hint = _channels_last(shape)
        raise FeatinvError(f"{name}: {extractor.spec} features have {extractor.channels} channels, "
                           f"this array has {shape[1]}" + (f"; {hint}" if hint else ""))
    size = ff.image_size or image_size
    if ff.image_size and image_size and tuple(image_size) != tuple(ff.image_size):
        raise FeatinvError(f"{name}: file says the image was {ff.image_size[0]}x{ff.image_size[1]}, "
                           f"--image-size says {image_size[0]}x{image_size[1]}")
    if size is None:
        if len(shape) != 4:
            raise FeatinvError(f"{name}: a bare array of shape {shape} does not say the image size; "
                               f"add --image-size HxW")
        size = extractor.image_size_from_grid(shape[2], shape[3])
    size = (int(size[0]), int(size[1]))
    if len(shape) == 4 and extractor.grid_size(*size) != shape[2:]:
        raise FeatinvError(f"{name}: a {size[0]}x{size[1]} image gives a {extractor.grid_size(*size)} "
                           f"{extractor.name} grid, but the array is {shape[2]}x{shape[3]}")
    return extractor, size


def _channels_last(shape: tuple) -> str:
    """A hint for a bare array saved channels last, (N, H, W, C) as numpy and OpenCV lay out images: its
    last axis is a feature's channel count where its second is not."""
    if len(shape) != 4 or shape[1] == shape[3] or not specs_with_channels(shape[3], maps=True):
        return ""
    return (f"its last axis ({shape[3]}) is {specs_with_channels(shape[3], maps=True)[0]}'s channel count: "
            f"featinv reads maps channels first, (N, C, H, W): save a.transpose(0, 3, 1, 2) "
            f"(a.transpose(2, 0, 1) for one (H, W, C) map)")


def with_weights(spec: str, weights: str | None) -> str:
    """Add a --weights flag to a spec (CNN features only)."""
    if not weights:
        return spec
    if "weights" not in {f.name for f in dataclasses.fields(parse_spec(spec))}:
        raise FeatinvError(f"--weights applies to CNN features (alexnet, caffenet, squeezenet, torchvision), not {spec}")
    return f"{spec}{',' if ':' in spec else ':'}weights={weights}"
