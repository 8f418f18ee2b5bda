"""Sparse SIFT (OpenCV's detector and 128-D descriptor) arranged on the paper's grid (§2.2).

The raw keypoints are kept (for the feature file); the grid is made by the custom operator
``featinv::grid_bin`` (featinv_cli/ops.py): cell ``d``, one keypoint per cell chosen by a seeded hash,
per cell ``(f, x mod d, y mod d, sin a, cos a, log s)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .base import Extractor, to_gray

# OpenCV scales each descriptor to an L2 norm of 512 (then saturates at 255); dividing by it gives
# the unit-norm descriptor the network sees, so the 128 entries and the 5 geometric ones are
# of comparable size.
DESCRIPTOR_SCALE = 1.0 / 512.0


# OpenCV's SIFT builds its pyramid from the image doubled in size: about 200 bytes per pixel, 9 GB for
# a 6000x6000 photo. Larger images than UNTILED_PIXELS are detected in tiles of TILE x TILE pixels
# plus TILE_MARGIN pixels of context on every side; each keeps the keypoints that fall in its own
# tile. Tiles start on multiples of 256 pixels, so each tile's pyramid subsamples the same pixels as
# the whole image's down to the 8th octave. Measured on a 3072x3072 mosaic of photographs: 99.6% of
# the keypoints are those of one pass; the others are spread over the image, not gathered at seams
# (OpenCV's float noise); tests/test_big_images.py holds it at 99% on 2048 pixels.
UNTILED_PIXELS = 3072 * 3072
TILE, TILE_MARGIN = 1024, 256


def detect_at(sift, gray: np.ndarray, x0: int, y0: int) -> list:
    """(keypoint, descriptor) pairs of a grayscale uint8 array whose top-left pixel is (x0, y0)."""
    found, desc = sift.detectAndCompute(np.ascontiguousarray(gray), None)
    for k in found:
        k.pt = (k.pt[0] + x0, k.pt[1] + y0)
    return list(zip(found, desc)) if found else []


def detect_tiled(sift, gray: np.ndarray) -> list:
    height, width = gray.shape
    found = []
    for r0 in range(0, height, TILE):
        for c0 in range(0, width, TILE):
            a0, b0 = max(r0 - TILE_MARGIN, 0), max(c0 - TILE_MARGIN, 0)
            tile = gray[a0:r0 + TILE + TILE_MARGIN, b0:c0 + TILE + TILE_MARGIN]
            found += [(k, d) for k, d in detect_at(sift, tile, b0, a0)
                      if r0 <= k.pt[1] < r0 + TILE and c0 <= k.pt[0] < c0 + TILE]
    return found


@dataclass(frozen=True)
class KeypointGrid(Extractor):
    """What every sparse-keypoint feature shares (``sift``, ``colmap-sift``): the paper's grid of
    ``cell`` x ``cell`` cells holding one keypoint's 128-D descriptor and 5 geometric values each."""

    uses_operators = True
    differentiable = False
    keypoint_grid = True
    geometry_channels = 5

    @property
    def channels(self) -> int:
        return 128 + 5

    @property
    def stride(self) -> int:
        return self.cell

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.cell), -(-width // self.cell)

    def min_size(self) -> int:
        return max(8, self.cell)

    def grid(self, raw: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
        """Raw keypoints (``keypoints`` (K, 4), ``descriptors`` (K, 128) in 0..255, ``counts`` (N,), as
        ``detect`` gives them and a feature file keeps them) -> (N, 133, ceil(H / cell), ceil(W / cell))
        with featinv::grid_bin: how `perturb --keep-keypoints` grids what it kept."""
        from ..ops import grid_bin

        return grid_bin(raw["keypoints"], raw["descriptors"].float() * DESCRIPTOR_SCALE, raw["counts"],
                        height, width, self.cell, self.seed)


@dataclass(frozen=True)
class SIFT(KeypointGrid):
    """OpenCV SIFT keypoints + descriptors of the grayscale image, gridded into cell x cell cells."""

    cell: int = 4
    seed: int = 0
    n_features: int = 0  # 0: keep every keypoint the detector finds
    octave_layers: int = 3
    contrast_threshold: float = 0.04
    edge_threshold: float = 10.0
    sigma: float = 1.6
    name = "sift"

    def detect(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw SIFT of (N, 3, H, W) images in [0, 1]: ``keypoints`` (K, 4) x, y, scale, angle (radians),
        ``descriptors`` (K, 128) as OpenCV gives them (0..255), ``counts`` (N,). Within an image,
        keypoints are sorted by detector response, strongest first."""
        import cv2

        sift = cv2.SIFT_create(nfeatures=self.n_features, nOctaveLayers=self.octave_layers,
                               contrastThreshold=self.contrast_threshold, edgeThreshold=self.edge_threshold,
                               sigma=self.sigma)
        gray = (to_gray(images.float()).clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
        kps, descs, counts = [], [], []
        for g in gray:
            found = detect_tiled(sift, g) if g.size > UNTILED_PIXELS else detect_at(sift, g, 0, 0)
            found.sort(key=lambda kd: -kd[0].response)
            found = found[:self.n_features] if self.n_features else found  # per tile, OpenCV kept that many
            kps.append(np.array([[k.pt[0], k.pt[1], k.size, math.radians(k.angle)] for k, _ in found],
                                dtype=np.float32).reshape(-1, 4))
            descs.append(np.stack([d for _, d in found]).astype(np.float32) if found else np.zeros((0, 128), np.float32))
            counts.append(len(found))
        return {"keypoints": torch.from_numpy(np.concatenate(kps)),
                "descriptors": torch.from_numpy(np.concatenate(descs)),
                "counts": torch.tensor(counts, dtype=torch.long)}

    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raw = self.detect(images)
        return self.grid(raw, *images.shape[-2:]), raw

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3, H, W) float in [0, 1] -> (N, 133, ceil(H / cell), ceil(W / cell)) float32."""
        return self.extract(images)[0]
