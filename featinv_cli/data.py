"""Images as training and evaluation see them: views (resize, centre crop, 8 bits), the epoch order,
and the rows of stored feature files (train --features)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn import functional as F

from .images import read_image


def shorter_side_size(h: int, w: int, shorter: int) -> tuple[int, int]:
    """(H, W) of an h x w image resized so its shorter side is ``shorter``."""
    s = shorter / min(h, w)
    return max(shorter, round(h * s)), max(shorter, round(w * s))


def crop_corner(h: int, w: int, size: int) -> tuple[int, int]:
    """(top, left) of the centre size x size square of an h x w image."""
    return (h - size) // 2, (w - size) // 2


def resize_shorter(image: torch.Tensor, shorter: int) -> torch.Tensor:
    """Bilinear resize of (3, H, W) so the shorter side is ``shorter`` (antialiased when shrinking)."""
    h, w = image.shape[-2:]
    s = shorter / min(h, w)
    size = shorter_side_size(h, w, shorter)
    if size == (h, w):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                         antialias=s < 1)[0].clamp(0, 1)


def quantize8(image: torch.Tensor) -> torch.Tensor:
    """Round to the 256 levels of an 8-bit image file. A resized view is made an 8-bit image again, so
    features of a view equal the features of that view saved as a PNG (LBP compares neighbouring
    pixels: float residues of resampling would flip its bits in flat regions)."""
    return (image * 255.0).round() / 255.0


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from {h}x{w}")
    top, left = crop_corner(h, w, size)
    return image[..., top:top + size, left:left + size]


def prepare_view(image: torch.Tensor, resize: int | None, crop: int | None, name: str) -> torch.Tensor:
    """`extract --resize/--crop`: shorter side to ``resize``, then the centre ``crop`` square."""
    from .errors import FeatinvError

    if resize:
        image = quantize8(resize_shorter(image, resize))
    if crop:
        h, w = image.shape[-2:]
        if min(h, w) < crop:
            raise FeatinvError(f"{name}: {h}x{w} is smaller than --crop {crop}; add --resize {crop}")
        image = center_crop(image, crop)
    return image


def eval_view(image: torch.Tensor, size: int) -> torch.Tensor:
    """The evaluation protocol: shorter side bilinear-resized to ``size``, then the centre square,
    as an 8-bit image."""
    return quantize8(center_crop(resize_shorter(image, size), size))


def fingerprint(files: list[Path]) -> str:
    """Names and sizes of the training files: enough to tell two data sets apart in metadata."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def evenly_spaced(items, at_most: int):
    """Every k-th of ``items`` (a list or a tensor's rows), about ``at_most`` of them: a large set's
    mean from a sample that covers all of it."""
    return items[:: max(1, len(items) // at_most)]


def uint8_pixels(view: torch.Tensor) -> torch.Tensor:
    """A uint8 view (a views file's row) as float64 values in 0..1."""
    return view.double() / 255.0


def mean_color(images, at_most: int, read: Callable[[Any], torch.Tensor] = read_image) -> list[float]:
    """Mean RGB (0..1) of the training images, each image counting once, over at most ``at_most`` of
    them, evenly spaced (the normalization a model file stores). ``images``: image files, or what
    ``read`` makes (3, H, W) images in 0..1 of (``uint8_pixels``: the (N, 3, S, S) uint8 views)."""
    chosen = evenly_spaced(images, at_most)
    total = torch.zeros(3, dtype=torch.float64)
    for image in chosen:
        total += read(image).double().mean(dim=(1, 2))
    return (total / len(chosen)).tolist()


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The seeded permutation of ``n`` items in ``epoch``: the order of every training data source."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


class EpochBatches(torch.utils.data.Sampler):
    """Batches of ``(epoch, index)`` keys from ``start_step`` on; each epoch a seeded permutation.

    Under distributed training every process walks the same global batches and keeps its own
    contiguous slice (``rank`` of ``world``), so K processes together see exactly the batches of a
    single process with the same global batch size.
    """

    def __init__(self, n: int, batch: int, seed: int, start_step: int, total_steps: int,
                 rank: int = 0, world: int = 1):
        if n < batch:
            raise ValueError(f"{n} image{'' if n == 1 else 's'} cannot fill a batch of {batch}")
        if batch % world:
            raise ValueError(f"batch {batch} does not split evenly over {world} processes")
        self.n, self.batch, self.seed = n, batch, seed
        self.start, self.total = start_step, total_steps
        self.per_epoch = n // batch
        share = batch // world
        self.slice = slice(rank * share, (rank + 1) * share)

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self):
        step = self.start
        while step < self.total:
            epoch, k = divmod(step, self.per_epoch)
            order = epoch_order(self.n, self.seed, epoch)
            while k < self.per_epoch and step < self.total:
                yield [(epoch, int(i)) for i in order[k * self.batch:(k + 1) * self.batch][self.slice]]
                k += 1
                step += 1


class FeatureRowsDataset(torch.utils.data.Dataset):
    """Training pairs from feature files made by `featinv extract` (e.g. its shards): the features of
    row r, and the image named in the file's ``sources``, read from ``data`` and prepared with the
    file's recorded view. Rows are read one at a time from the memory-mapped files, so a large set
    costs little memory. Keys are ``(epoch, index)`` like CropDataset's; there is no augmentation.
    """

    def __init__(self, feature_files: list[Path], data: Path):
        from .errors import FeatinvError
        from .formats.features import read_feature_fields

        self.files, self.data, self.index = [Path(f) for f in feature_files], Path(data), []
        self.meta, self._open = None, {}
        for fi, f in enumerate(self.files):
            fields = read_feature_fields(f)  # the header only, checked as every featinv read is
            key = {k: fields[k] for k in ("feature", "params", "image_size", "view")}
            if key["view"] is None:
                raise FeatinvError(f"{f}: does not record how its images were prepared; re-extract it")
            if self.meta is None:
                self.meta = key
            elif key != self.meta:
                raise FeatinvError(f"{f}: extractor, settings, image size or view differ from {self.files[0]}")
            self.index += [(fi, r, name) for r, name in enumerate(fields["sources"])]
        if not self.index:
            raise FeatinvError("the feature files hold no rows")
        self.view = self.meta["view"]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.meta["image_size"]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: tuple[int, int]):
        from .files import map_file
        from .safetensors_codec import parse_safetensors

        _, i = key
        fi, r, name = self.index[i]
        if fi not in self._open:  # mapped once per process: a row read touches only its own pages
            self._open[fi] = parse_safetensors(map_file(self.files[fi]), str(self.files[fi]))[0]["features"]
        feats = self._open[fi][r].clone()
        img = prepare_view(read_image(self.data / name), self.view.get("resize"), self.view.get("crop"), name)
        return img, feats.float()


def worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers make features; the main process owns the cores for training
