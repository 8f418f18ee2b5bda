"""Image files: reading any common kind as (3, H, W) floats, writing 8-bit PNG, listing folders."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import FeatinvError, note
from .files import atomic_write, read_bytes

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm"}


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


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float -> (H, W, 3) uint8, clipped, rounded half to even. Converted in bands of rows,
    so a 6000x6000 image needs no float temporaries of its own size."""
    x = image.detach()
    out = np.empty((x.shape[1], x.shape[2], 3), np.uint8)
    for r in range(0, x.shape[1], 256):
        band = x[:, r:r + 256].float().clamp(0, 1).mul_(255.0).round_().to(torch.uint8)
        out[r:r + 256] = band.permute(1, 2, 0).cpu().numpy()
    return out


MADE_BY = ("Software", "featinv")  # a PNG text chunk: `invert -o DIR/` overwrites only PNGs that carry it


def encode_png(array: np.ndarray) -> bytes:
    import imageio.v3 as iio
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(*MADE_BY)
    return iio.imwrite("<bytes>", array, extension=".png", plugin="pillow", pnginfo=info)  # named: no plugin search


def made_by_featinv(path: str | Path) -> bool:
    """Whether an existing file is a PNG that featinv wrote (encode_png's text chunk)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.format == "PNG" and im.info.get(MADE_BY[0]) == MADE_BY[1]
    except (OSError, ValueError):
        return False


def write_image(path: str | Path, image: torch.Tensor | np.ndarray) -> None:
    """Write (3, H, W) float in [0, 1] or (H, W, 3) uint8 as an 8-bit RGB PNG, atomically."""
    arr = image if isinstance(image, np.ndarray) else image_to_uint8(image)
    if str(path) != "-" and Path(path).suffix.lower() not in (".png", ""):
        raise FeatinvError(f"{path}: featinv writes PNG images; name the output *.png")
    atomic_write(path, encode_png(arr))


def list_images(*directories: str | Path) -> list[Path]:
    """Image files under one or more directories, sub-directories included (photos kept in class
    folders, ImageNet's layout), in sorted path order, each directory's files after the last's."""
    files: list[Path] = []
    for directory in directories:
        d = Path(directory)
        if not d.is_dir():
            from .formats import featinv_kind

            kind = featinv_kind(d)
            raise FeatinvError(f"{d}: no such file or directory" if not d.exists() else
                               f"{d}: is {kind}, not a folder of images" if kind else f"{d}: not a directory")
        found, other = [], []
        for p in d.rglob("*"):
            if p.is_file() and not p.name.startswith("._"):  # ._x.jpg: macOS's metadata beside x.jpg
                (found if p.suffix.lower() in IMAGE_SUFFIXES else other).append(p)
        found.sort()
        if other and found:
            note(f"{d}: {len(other)} file{'s' if len(other) > 1 else ''} not named as images "
                 f"{'are' if len(other) > 1 else 'is'} left out "
                 f"(e.g. {other[0].name}; featinv reads {', '.join(sorted(IMAGE_SUFFIXES))})")
        if not found:
            raise FeatinvError(f"{d}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, "
                               f"sub-directories included)")
        files += found
    return files


def source_names(files: list[Path], args) -> list[str]:
    """What a feature file records as each image's source: its path below the directory argument it
    was found in (``n01440764/a.jpg`` in ImageNet's class folders, so equal names in two folders stay
    apart and ``train --features -d DIR`` finds the image again), or its file name when given as a file."""
    roots = [Path(a) for a in args if Path(a).is_dir()]
    names = []
    for f in files:
        root = next((r for r in roots if r in f.parents), None)
        names.append(f.relative_to(root).as_posix() if root else f.name)
    return names


def expand_image_args(args) -> list[Path]:
    """Command-line image arguments: files as given, directories expanded to their images; a file named
    twice (``photos/ photos/sub``, ``a.png a.png``) once, with a note."""

    out: list[Path] = []
    seen: set[Path] = set()
    twice: list[Path] = []
    for a in args:
        p = Path(a)
        for f in list_images(p) if p.is_dir() else [p]:
            key = f.resolve()
            if key in seen:
                twice.append(f)
                continue
            seen.add(key)
            out.append(f)
    if twice:
        note(f"{len(twice)} image{'s' if len(twice) > 1 else ''} named twice (e.g. {twice[0]}) "
             f"{'are' if len(twice) > 1 else 'is'} used once")
    return out
