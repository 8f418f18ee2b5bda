"""What a training run learns from: views (a `featinv pack` file, or folders decoded once into views in
memory) cut into batches each step, or the rows of stored feature files (train --features)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch

from .batches import FeatureRowBatches, ViewBatches
from .data import FeatureRowsDataset, fingerprint, mean_color, uint8_pixels
from .errors import FeatinvError, UsageError, counted
from .features import from_metadata
from .settings import TrainConfig, check_crop


@dataclasses.dataclass
class Data:
    """What the loop trains on: ``batches(step, low_res)`` -> (images, features) on the device."""

    batches: Callable[[int, bool], tuple[torch.Tensor, torch.Tensor]]
    images: int  # photos in the set
    fingerprint: str
    mean: Callable[[], list[float]]  # mean RGB of the set
    crop: int  # training image size (the model file's image_size)
    resizable: bool = True  # batches can be made at half resolution (--low-res)


def view_side(cfg: TrainConfig) -> int:
    """The size folders are decoded to: room for the largest zoom of a crop (160 for 128-px crops)."""
    return max(cfg.crop, round(cfg.crop * cfg.max_zoom))


def training_data(cfg: TrainConfig, extractor, device: torch.device, rank: int, world: int, on_decode=None) -> Data:
    """Views (a `featinv pack` file, or folders decoded once into views in memory) or stored features."""
    from .arguments import list_images
    from .formats.views import is_views_file, load_views
    from .packing import pack

    if cfg.batch % world:
        raise UsageError(f"--batch {cfg.batch} does not split evenly over {world} processes")
    if cfg.features:
        return stored_features(cfg, extractor, device, rank, world)
    check_crop(cfg.crop)
    packed = [d for d in cfg.data if is_views_file(d)]
    if packed and len(cfg.data) > 1:
        raise UsageError("train from one views file (featinv pack) or from folders, not both")
    if packed:
        vs = load_views(packed[0])
    else:
        files = list_images(*cfg.data)
        if len(files) < cfg.batch:
            raise FeatinvError(f"{', '.join(cfg.data)}: {counted(len(files), 'image')} cannot fill a batch of {cfg.batch}; "
                               f"lower --batch")
        sift = extractor if extractor.keypoint_grid else None
        vs = pack(files, [f.name for f in files], view_side(cfg), sift, cfg.workers, on_decode)
    feats = None if cfg.finetune_encoder else extractor
    batches = ViewBatches(vs, feats, cfg.crop, cfg.batch, cfg.seed, cfg.max_zoom, device, rank, world)
    # The mean of up to 2000 views (in memory or mapped); of up to 1000 photo files (each decoded) below.
    return Data(batches, len(vs), vs.fingerprint, lambda: mean_color(vs.views, 2000, read=uint8_pixels), cfg.crop,
                resizable=not batches.sift)


def stored_features(cfg: TrainConfig, extractor, device, rank: int, world: int) -> Data:
    """The rows of `featinv extract` files (--features) and their source photos in the one --data folder."""
    if len(cfg.data) != 1:
        raise FeatinvError("training from --features reads their images from one --data folder")
    dataset = FeatureRowsDataset([Path(f) for f in cfg.features], Path(cfg.data[0]))
    stored = from_metadata(dataset.meta["feature"], dataset.meta["params"])
    if stored.spec != extractor.spec:
        raise FeatinvError(f"the feature files hold {stored.spec} features, not {extractor.spec}")
    size = dataset.image_size
    # A hand-made feature's grid must tile the image; a CNN layer's grid is fixed by the network.
    if not extractor.is_cnn and tuple(g * extractor.stride for g in extractor.grid_size(*size)) != tuple(size):
        raise FeatinvError(f"the feature files come from {size[0]}x{size[1]} images; training from "
                           f"stored features needs a size that is a multiple of {extractor.stride} (--crop N)")
    files = [Path(cfg.data[0]) / name for _, _, name in dataset.index]
    if len(files) < cfg.batch:
        raise FeatinvError(f"the feature files' {counted(len(files), 'row')} cannot fill a batch of {cfg.batch}; lower --batch")
    batches = FeatureRowBatches(dataset, cfg.batch, cfg.seed, cfg.workers, device, rank, world)
    return Data(batches, len(files), fingerprint(files), lambda: mean_color(files, 1000), size[0], resizable=False)
