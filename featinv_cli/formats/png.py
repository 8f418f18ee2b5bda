"""featinv's PNG outputs: 8-bit RGB, written atomically, carrying featinv's mark (a text chunk), so that a
rerun replaces the PNGs an earlier run wrote and never a photo that shares their names."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import FeatinvError, UsageError
from ..files import atomic_write
from .base import Kind

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


def check_png_name(output: str, folders: bool = False) -> None:
    """-o FILE of a command that writes one PNG: a *.png name (a name without one is more likely a folder
    missing its /, where ``folders`` a command takes one)."""
    if output != "-" and Path(output).suffix.lower() != ".png":
        raise UsageError(f"-o {output}: featinv writes PNG images; name it *.png"
                         + (" (or end a folder's name with / for one PNG per row)" if folders else ""))


PNG_FILE = Kind("PNG", made_by_featinv, check_name=check_png_name, expected=lambda path: (
    "marked as written by featinv (a source photo? or the output of an older featinv, which did not mark its "
    "PNGs)"))
