"""Image files in: any common kind read as (3, H, W) floats in [0, 1] (featinv's PNGs out: formats.png)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import FeatinvError
from .files import read_bytes


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as (3, H, W) float32 in [0, 1]; gray, 16-bit, RGBA and palette images too."""
    import io

    import imageio.v3 as iio
    from PIL import Image

    data = read_bytes(path)
    limit, pillows = max_pixels(), Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # featinv's own limit below replaces Pillow's (restored after)
    try:
        with warnings.catch_warnings():  # imageio warns while it tries plugins on a non-image
            warnings.simplefilter("ignore")
            try:
                with Image.open(io.BytesIO(data)) as header:  # the header only
                    (w, h), mode = header.size, header.mode
            except Exception:
                w = h = 0
                mode = ""
            if w * h > limit:
                raise FeatinvError(f"{path}: {w}x{h} is {w * h / 1e6:.0f} megapixels, over featinv's limit of "
                                   f"{limit / 1e6:.0f} (a guard against decompression bombs); shrink it first, "
                                   f"or set FEATINV_MAX_PIXELS to a larger number if you trust the file (about "
                                   f"50 bytes of memory a pixel)")
            # CMYK JPEGs (print photos; ImageNet has some) and other colour spaces are converted by Pillow:
            # their four or three channels taken as RGB(A) would be cyan and yellow nonsense.
            # Pillow opens a 16-bit PGM as 32-bit "I": as I;16 it is scaled by 65535, as 16-bit PNGs are.
            convert = {"mode": "RGB"} if mode in ("CMYK", "YCbCr", "LAB", "HSV") else \
                {"mode": "I;16"} if mode == "I" else {}
            # index 0: a GIF (imageio gives every GIF, even of one frame, as a stack) or an APNG is its first frame
            arr = np.asarray(iio.imread(bytes(data), plugin="pillow", index=0, **convert))  # not OpenCV: it logs
    except FeatinvError:
        raise
    except Exception:
        from .formats import featinv_kind

        kind = featinv_kind(data)
        raise FeatinvError(f"{path}: is {kind}, not an image" if kind else
                           f"{path}: not a readable image (PNG, JPEG, ...)") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillows
    return image_from_array(arr, str(path))


def max_pixels() -> int:
    """The largest image featinv decodes: Pillow's own decompression-bomb limit (179 megapixels,
    e.g. 13,000 x 13,000), or $FEATINV_MAX_PIXELS."""
    import os

    try:
        return int(os.environ.get("FEATINV_MAX_PIXELS", 2 * 89_478_485))
    except ValueError:
        raise FeatinvError(f"FEATINV_MAX_PIXELS={os.environ['FEATINV_MAX_PIXELS']!r}: give a number of pixels") from None


def image_from_array(arr: np.ndarray, name: str = "image") -> torch.Tensor:
    if arr.ndim == 3 and arr.shape[0] == 1 and arr.shape[-1] not in (1, 3, 4):  # single-frame stack
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise FeatinvError(f"{name}: unsupported image layout {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise FeatinvError(f"{name}: image is empty ({arr.shape[0]}x{arr.shape[1]})")
    if arr.shape[2] in (2, 4):  # drop alpha: features describe the colour, not the mask
        arr = arr[:, :, :arr.shape[2] - 1]
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        # One float32 (3, H, W) allocation, converted in place; the same values as numpy's
        # arr.astype(float32) / 255 (tested): a 6000x6000 photo is 432 MB a copy.
        scale = 255.0 if arr.dtype == np.uint8 else 65535.0
        src = torch.from_numpy(arr if arr.dtype == np.uint8 else arr.astype(np.int32)).permute(2, 0, 1)
        x = torch.empty(src.shape, dtype=torch.float32).copy_(src).div_(scale)
        return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x
    if arr.dtype == bool:
        x = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        x = np.clip(arr.astype(np.float32), 0.0, 1.0)
        if not np.isfinite(x).all():
            raise FeatinvError(f"{name}: image contains NaN or Inf")
    else:
        info = np.iinfo(arr.dtype)
        x = (arr.astype(np.float64) - info.min) / (info.max - info.min)
        x = x.astype(np.float32)
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


