"""Big photos: inversion in tiles gives the untiled result, SIFT detection in tiles nearly so.

A 6000x6000 photo would otherwise take 9 GB (SIFT extraction) or 4.7 GB (inverting its SIFT grid);
bench/run.py --only memory reports the peak memory of every feature by image size.
"""
from collections import Counter

import numpy as np
import pytest
import torch

from conftest import photo
from featinv_cli.features import parse_spec
from featinv_cli.inverter import ASSETS, Inverter

MOSAIC_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "immunohistochemistry")


def mosaic(size: int) -> torch.Tensor:
    """(1, 3, size, size) in [0, 1]: scikit-image's photographs side by side at their own scale, so
    keypoints are as dense as in a real large photo (an upscaled photo is smooth and has few)."""
    rng = np.random.default_rng(0)
    canvas = np.zeros((size, size, 3), np.uint8)
    y = 0
    while y < size:
        x, h = 0, 0
        while x < size:
            p = photo(MOSAIC_PHOTOS[rng.integers(len(MOSAIC_PHOTOS))])[:, ::rng.choice([1, -1])]
            th, tw = min(p.shape[0], size - y), min(p.shape[1], size - x)
            canvas[y:y + th, x:x + tw] = p[:th, :tw]
            x, h = x + tw, max(h, th)
        y += h
    return torch.from_numpy(canvas).permute(2, 0, 1).float()[None] / 255


@pytest.mark.parametrize("name", ["hog", "lbp", "sift"])
def test_tiled_inversion_equals_one_pass(name, monkeypatch):
    """A map inverted in 512-pixel tiles (each with its 384-pixel margin) equals one pass over the
    whole map to float rounding, with the tiles' seams inside the image."""
    from featinv_cli import inverter as module

    x = mosaic(1024)
    features = parse_spec(name)(x)
    inverter = Inverter(ASSETS / f"{name}.safetensors")
    whole = inverter(features, tile=1 << 20)
    calls = []
    real = module.tiled
    monkeypatch.setattr(module, "tiled", lambda net, f, tile, margin: calls.append(tile) or real(net, f, tile, margin))
    tiled = inverter(features, tile=512)
    assert calls == [512 // inverter.stride]  # it did go through the tiles
    assert (tiled - whole).abs().max() < 2e-6  # README: 1.2e-6
    # ...while a margin too small changes the result, so the comparison can fail
    net = lambda f: inverter.net(f)  # noqa: E731
    s = inverter.stride
    narrow = real(net, features.float(), 512 // s, 64 // s) + inverter.mean
    assert (narrow.clamp(0, 1) - whole).abs().max() > 1e-2


def test_sift_in_tiles_finds_nearly_the_same_keypoints(monkeypatch):
    """Forcing tiles of 1024 pixels on a 2048-pixel mosaic: 99% of keypoints are the same as in one
    pass (measured 99.6% on 3072 pixels); what differs is float noise in OpenCV's pyramid, not the seams."""
    from featinv_cli.features import sift

    x = mosaic(2048)
    extractor = parse_spec("sift")
    whole = extractor.detect(x)
    monkeypatch.setattr(sift, "UNTILED_PIXELS", 0)
    tiles = extractor.detect(x)

    def keys(raw):
        return Counter(tuple(np.round(k, 2)) for k in raw["keypoints"].numpy())

    a, b = keys(whole), keys(tiles)
    same = sum((a & b).values())
    assert len(whole["keypoints"]) > 5000
    assert same > 0.99 * len(whole["keypoints"]) and same > 0.99 * len(tiles["keypoints"])
    assert tiles["counts"].tolist() == [len(tiles["keypoints"])] == [len(tiles["descriptors"])]
