"""Training batches: (images, features) pairs on the training device, one call per step.

``ViewBatches`` cuts them from a view cache (featinv_cli/formats/views.py) in the main process, whole batches
at a time: one zoom per step (the batch is resized, antialiased), a random crop and flip per image,
then the features of the batch from the batched operators (HOG, LBP) or the CNN, on the device. SIFT
comes from the keypoints detected once per view and per mirror image, moved into the crop and gridded
by ``featinv::grid_bin``. Nothing competes with the network for the cores: no worker processes, no
JPEG decoding. The randomness of step t depends only on (seed, t), so a resumed run and a run split
over torchrun processes (each takes its slice of the global batch) see the same batches.

``FeatureRowBatches`` reads pairs from feature files made by `featinv extract` (train --features).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .data import EpochBatches, epoch_order, worker_init
from .errors import FeatinvError, counted
from .formats.views import ViewSet


def resize8(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) uint8 images resized (bilinear, antialiased) to size x size, as uint8."""
    if x.device.type == "cpu":  # the fast 8-bit path exists on the CPU only
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return y.round_().clamp_(0, 255).to(torch.uint8)


class ViewBatches:
    """Batches of ``batch`` crops of ``crop`` pixels cut from ``views``; features by ``extractor``
    (None: images only, for --finetune-encoder, whose encoder makes the features in the step).

    Zoom: each step the views are resized so their shorter side is uniform in
    [crop, min(side, max_zoom x crop)] (1 or 0: the views' own scale when crop = side, else the
    smallest), so the network sees whole photos at the evaluation scale and somewhat magnified.
    ``low_res(step)`` true: the crop is then halved (antialiased): the same content at a quarter of
    the pixels, for the low-resolution first part of training (--low-res).
    """

    def __init__(self, views: ViewSet, extractor, crop: int, batch: int, seed: int, max_zoom: float,
                 device: torch.device, rank: int = 0, world: int = 1):
        if crop > views.side:
            raise FeatinvError(f"--crop {crop} is larger than the views ({views.side} px); pack them with "
                               f"--side {crop} or more, or lower --crop")
        if len(views) < batch:
            raise FeatinvError(f"{counted(len(views), 'image')} cannot fill a batch of {batch}; lower --batch")
        self.vs, self.extractor, self.crop, self.batch, self.seed = views, extractor, crop, batch, seed
        self.max_zoom, self.device = max_zoom, device
        share = batch // world
        self.slice = slice(rank * share, (rank + 1) * share)
        self.sift = extractor is not None and extractor.keypoint_grid
        if self.sift:
            if not views.sift:
                raise FeatinvError("training sift from views needs their keypoints: pack them with --sift")
            if views.sift_params != extractor.params:
                raise FeatinvError(f"the views' SIFT was detected with {views.sift_params}, this run wants "
                                   f"{extractor.params}; pack them again with --sift {extractor.spec}")
            counts = views.sift["counts"]
            self.first = torch.cumsum(counts, 0) - counts  # where each row's keypoints start
        self._order: tuple[int, torch.Tensor] | None = None

    def _indices(self, step: int) -> torch.Tensor:
        per_epoch = len(self.vs) // self.batch
        epoch, k = divmod(step, per_epoch)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(len(self.vs), self.seed, epoch))
        return self._order[1][k * self.batch:(k + 1) * self.batch]

    def __call__(self, step: int, low_res: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        side, crop = self.vs.side, self.crop
        top_zoom = max(crop, min(side, int(self.max_zoom * crop)))
        shorter = side if self.sift else int(torch.randint(crop, top_zoom + 1, (1,), generator=g))
        offsets = torch.randint(0, shorter - crop + 1, (self.batch, 2), generator=g)[self.slice]
        flips = (torch.rand(self.batch, generator=g) < 0.5)[self.slice]
        idx = self._indices(step)[self.slice]
        # In uint8 until the crop is cut: torch resizes 8-bit images 5x faster than floats on the CPU,
        # and the result is already an 8-bit image (as quantize8 would make it).
        x = self.vs.views[idx].to(self.device)
        if shorter != side:
            x = resize8(x, shorter)
        x = torch.stack([(v.flip(-1) if f else v)[:, t:t + crop, l:l + crop]
                         for v, (t, l), f in zip(x, offsets.tolist(), flips.tolist())])
        if self.sift:
            return x.float() / 255.0, self._sift_grid(idx, offsets, flips).to(self.device)
        if low_res:
            x = resize8(x, crop // 2)
        x = x.float() / 255.0
        if self.extractor is None:
            return x, x.new_zeros(0)
        with torch.no_grad():
            return x, self.extractor(x)

    def _sift_grid(self, idx: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """The grid of each crop from the keypoints of its view (or, flipped, of the mirrored view: the
        crop is cut from the mirror image) that fall inside it."""
        from .features.sift import DESCRIPTOR_SCALE
        from .ops import grid_bin

        sift, kps, descs, counts = self.vs.sift, [], [], []
        for i, (top, left), flip in zip(idx.tolist(), offsets.tolist(), flips.tolist()):
            row = 2 * i + int(flip)
            a = int(self.first[row])
            kp = sift["keypoints"][a:a + int(sift["counts"][row])].clone()
            kp[:, 0] -= left
            kp[:, 1] -= top
            inside = (kp[:, 0] >= 0) & (kp[:, 0] < self.crop) & (kp[:, 1] >= 0) & (kp[:, 1] < self.crop)
            kps.append(kp[inside])
            descs.append(sift["descriptors"][a:a + len(inside)][inside])
            counts.append(int(inside.sum()))
        return grid_bin(torch.cat(kps), torch.cat(descs).float() * DESCRIPTOR_SCALE,
                        torch.tensor(counts, dtype=torch.long), self.crop, self.crop, self.extractor.cell,
                        self.extractor.seed)


class FeatureRowBatches:
    """Batches of (image, stored features) rows of `featinv extract` files, read in DataLoader workers."""

    def __init__(self, dataset, batch: int, seed: int, workers: int, device: torch.device,
                 rank: int = 0, world: int = 1):
        self.dataset, self.batch, self.seed, self.workers = dataset, batch, seed, workers
        self.device, self.rank, self.world = device, rank, world
        self._it, self._next = None, None

    def __call__(self, step: int, low_res: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None or self._next != step:  # (re)start the loader at this step
            sampler = EpochBatches(len(self.dataset), self.batch, self.seed, step, 1 << 62, self.rank, self.world)
            self._it = iter(torch.utils.data.DataLoader(
                self.dataset, batch_sampler=sampler, num_workers=self.workers, worker_init_fn=worker_init,
                prefetch_factor=4 if self.workers else None))
        images, feats = next(self._it)
        self._next = step + 1
        return images.to(self.device, non_blocking=True), feats.to(self.device, non_blocking=True)
