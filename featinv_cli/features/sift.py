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


@dataclass(frozen=True)
class SIFT(Extractor):
    """OpenCV SIFT keypoints + descriptors of the grayscale image, gridded into cell x cell cells."""

    cell: int = 4
    seed: int = 0
    n_features: int = 0  # 0: keep every keypoint the detector finds
    octave_layers: int = 3
    contrast_threshold: float = 0.04
    edge_threshold: float = 10.0
    sigma: float = 1.6
    name = "sift"
    differentiable = False

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
            found, desc = sift.detectAndCompute(g, None)
            order = sorted(range(len(found)), key=lambda i: -found[i].response)
            kps.append(np.array([[found[i].pt[0], found[i].pt[1], found[i].size, math.radians(found[i].angle)]
                                 for i in order], dtype=np.float32).reshape(-1, 4))
            descs.append(desc[order].astype(np.float32) if desc is not None and len(order)
                         else np.zeros((0, 128), np.float32))
            counts.append(len(order))
        return {"keypoints": torch.from_numpy(np.concatenate(kps)),
                "descriptors": torch.from_numpy(np.concatenate(descs)),
                "counts": torch.tensor(counts, dtype=torch.long)}

    def grid(self, raw: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
        """Raw keypoints -> (N, 133, ceil(H / cell), ceil(W / cell)) with featinv::grid_bin."""
        from ..ops import grid_bin

        return grid_bin(raw["keypoints"], raw["descriptors"] * DESCRIPTOR_SCALE, raw["counts"],
                        height, width, self.cell, self.seed)

    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raw = self.detect(images)
        return self.grid(raw, *images.shape[-2:]), raw

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3, H, W) float in [0, 1] -> (N, 133, ceil(H / cell), ceil(W / cell)) float32."""
        return self.extract(images)[0]
