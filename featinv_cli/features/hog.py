"""UoCTTI HOG (Felzenszwalb et al.) exactly as VLFeat's ``vl_hog`` computes it.

``featinv::hog`` runs compiled C++ on the CPU (kernels/hog_lbp_cpu.cpp); the batched torch version
below is its reference, the fallback where nothing compiles, the GPU implementation, and the one
used when gradients must flow back to the pixels (`invert --method optimize`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import ops
from .base import Extractor, check_images, spread_to_cells, to_gray


def hog_cells(height: int, width: int, cell: int) -> tuple[int, int]:
    """VLFeat's HOG grid size: the last cell must be at least half inside the image."""
    return (height + cell // 2) // cell, (width + cell // 2) // cell


def uoctti_hog(images: torch.Tensor, cell: int = 8, orientations: int = 9) -> torch.Tensor:
    """HOG of a batch of images, computed on their luma (``to_gray``).

    images: (N, 1 or 3, H, W) float, any intensity scale. Returns (N, 3*orientations + 4, Hc, Wc)
    float32 with ``Hc, Wc = floor((H + cell/2) / cell), floor((W + cell/2) / cell)``.
    Channels: directed (2*O), undirected (O), texture (4), as in VLFeat. Differentiable in ``images``.
    """
    images = images.to(torch.float32)
    if images.requires_grad and torch.is_grad_enabled():
        return uoctti_hog_torch(images, cell, orientations)
    return torch.ops.featinv.hog(images, cell, orientations)


def check_hog(images: torch.Tensor, cell: int, orientations: int) -> None:
    check_images(images, "HOG")
    if cell < 1 or not 1 <= orientations <= 127:
        raise ValueError(f"HOG needs cell >= 1 and 1 <= orientations <= 127, got {cell} and {orientations}")


def uoctti_hog_torch(images: torch.Tensor, cell: int = 8, orientations: int = 9) -> torch.Tensor:
    """The torch version of ``featinv::hog`` (same arguments and result)."""
    check_hog(images, cell, orientations)
    img = to_gray(images)
    n, height, width = img.shape
    hc, wc = hog_cells(height, width, cell)
    o = orientations

    # Central differences on interior pixels; the borders stay zero (VLFeat skips them).
    gx = torch.zeros_like(img)
    gy = torch.zeros_like(img)
    gx[:, 1:-1, 1:-1] = img[:, 1:-1, 2:] - img[:, 1:-1, :-2]
    gy[:, 1:-1, 1:-1] = img[:, 2:, 1:-1] - img[:, :-2, 1:-1]
    # sqrt in double, rounded once: torch's vectorised float32 sqrt is not correctly rounded on every
    # CPU, C's sqrtf (VLFeat, the C++ kernel) is.
    # Where the image is flat the magnitude is 0 and sqrt's derivative there infinite: 0 * inf made every
    # gradient of an image with a flat region NaN (an 8-bit reconstruction has them). The flat pixels'
    # magnitude is set to 0 after a sqrt of 1, which has a zero gradient: the same values, finite gradients.
    sq = (gx * gx + gy * gy).double()
    flat = sq == 0
    mag = torch.sqrt(torch.where(flat, 1.0, sq)).masked_fill(flat, 0.0).float()

    # Hard assignment to the best of 2*O directed bins: the largest |<g, u_k>| over the O undirected
    # directions, its sign picking bin k or k + O. Scores use the un-normalised gradient (same winner).
    # A running maximum over the O directions instead of argmax over a (N, O, H, W) stack: argmax
    # along dim 1 was 70% of the time. Strict '>' keeps the first of equal scores, as VLFeat does.
    angles = torch.arange(o, dtype=torch.float64) * (math.pi / o)
    best = torch.zeros_like(img)
    directed = torch.zeros(img.shape, dtype=torch.long, device=img.device)
    for k, (ux, uy) in enumerate(zip(torch.cos(angles).tolist(), torch.sin(angles).tolist())):
        score = gx * ux + gy * uy
        magnitude = score.abs()
        better = magnitude > best
        best = torch.where(better, magnitude, best)
        directed = torch.where(better, torch.where(score < 0, k + o, k), directed)
    hist = spread_to_cells(directed, mag, 2 * o, cell, (hc, wc))  # (N, 2O, Hc, Wc)
    return uoctti_normalize(hist, o).to(torch.float32)


ops.define("hog", "hog(Tensor images, int cell, int orientations) -> Tensor", uoctti_hog_torch, check_hog,
           lambda images, cell, o: (images.shape[0], 3 * o + 4, *hog_cells(*images.shape[2:], cell)))


def uoctti_normalize(hist: torch.Tensor, o: int) -> torch.Tensor:
    """UoCTTI block normalisation of directed histograms (N, 2O, Hc, Wc) -> (N, 3O + 4, Hc, Wc)."""
    undirected = hist[:, :o] + hist[:, o:]
    energy = (undirected * undirected).sum(1, keepdim=True)  # (N, 1, Hc, Wc)
    # Neighbours beyond the border are the border cell itself (VLFeat clamps indices).
    e = torch.nn.functional.pad(energy, (1, 1, 1, 1), mode="replicate")
    hc, wc = hist.shape[-2:]

    def block(dy: int, dx: int) -> torch.Tensor:
        s = (e[..., dy:dy + hc, dx:dx + wc] + e[..., dy + 1:dy + 1 + hc, dx:dx + wc]
             + e[..., dy:dy + hc, dx + 1:dx + 1 + wc] + e[..., dy + 1:dy + 1 + hc, dx + 1:dx + 1 + wc])
        return 1.0 / torch.sqrt(s + 1e-4)

    factors = torch.stack([block(0, 0), block(0, 1), block(1, 0), block(1, 1)])  # (4, N, 1, Hc, Wc)
    ha = torch.clamp(factors * hist[:, :o], max=0.2)
    hb = torch.clamp(factors * hist[:, o:], max=0.2)
    hcl = torch.clamp(factors * undirected, max=0.2)
    texture = hcl.sum(2).permute(1, 0, 2, 3) / math.sqrt(18.0)  # (N, 4, Hc, Wc)
    return torch.cat([0.5 * ha.sum(0), 0.5 * hb.sum(0), 0.5 * hcl.sum(0), texture], dim=1)


@dataclass(frozen=True)
class HOG(Extractor):
    """UoCTTI HOG of the grayscale image (VLFeat ``vl_hog`` defaults)."""

    cell: int = 8
    orientations: int = 9
    name = "hog"
    uses_operators = True

    @property
    def channels(self) -> int:
        return 3 * self.orientations + 4

    @property
    def stride(self) -> int:
        return self.cell

    @property
    def mirror_channels(self) -> tuple[int, ...]:
        """Mirroring maps a gradient at angle t to pi - t: directed bin k (of 2o over 2 pi) goes to
        (o - k) mod 2o, undirected bin k (of o over pi) to -k mod o; the four texture energies, one
        per 2x2 block of cells around the cell, swap left and right."""
        o = self.orientations
        directed = [(o - k) % (2 * o) for k in range(2 * o)]
        undirected = [2 * o + (-k) % o for k in range(o)]
        return tuple(directed + undirected + [3 * o + 1, 3 * o, 3 * o + 3, 3 * o + 2])

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        return hog_cells(height, width, self.cell)

    def min_size(self) -> int:
        return max(4, self.cell)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3 or 1, H, W) float in [0, 1] -> (N, 31, Hc, Wc) float32."""
        return uoctti_hog(images, self.cell, self.orientations)
