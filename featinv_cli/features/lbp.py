"""Uniform local binary patterns exactly as VLFeat's ``vl_lbp`` computes them.

Not differentiable (codes come from comparisons): the reason the paper includes it.
``featinv::lbp`` runs compiled C++ on the CPU (kernels/hog_lbp_cpu.cpp); the batched torch version
below is its reference, the fallback where nothing compiles and the GPU implementation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import ops
from .base import Extractor, check_images, spread_to_cells, to_gray

# Neighbour offsets (dy, dx) for bits 0..7: E, SE, S, SW, W, NW, N, NE (VLFeat's order).
NEIGHBOURS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))


def uniform_mapping() -> torch.Tensor:
    """256 bit strings -> 58 codes: 8 x 7 runs of ones (code i*7 + j-1 for a run of j ones starting
    at bit i), 56 for the two constant strings, 57 for every non-uniform string."""
    mapping = torch.full((256,), 57, dtype=torch.long)
    mapping[0x00] = mapping[0xFF] = 56
    for i in range(8):
        for j in range(1, 8):
            s = ((1 << j) - 1) << i
            mapping[(s | (s >> 8)) & 0xFF] = i * 7 + (j - 1)
    return mapping


MAPPING = uniform_mapping()


def mirrored_codes() -> tuple[int, ...]:
    """Code c of a left-right mirrored image is code MIRROR[c] of the original: mirroring swaps the
    neighbours E<->W, SE<->SW, NE<->NW (bit b -> bit (4 - b) mod 8), which maps uniform strings to
    uniform strings, constant to constant, non-uniform to non-uniform."""
    first = {int(code): bits for bits, code in reversed(list(enumerate(MAPPING.tolist())))}
    mirror = lambda bits: sum(1 << ((4 - b) % 8) for b in range(8) if bits >> b & 1)  # noqa: E731
    return tuple(int(MAPPING[mirror(first[c])]) for c in range(58))


MIRROR = mirrored_codes()


def lbp_codes(gray: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, H-2, W-2) uniform codes of the interior pixels."""
    c = gray[:, 1:-1, 1:-1]
    h, w = c.shape[-2:]
    bits = torch.zeros_like(c, dtype=torch.long)
    for b, (dy, dx) in enumerate(NEIGHBOURS):
        nb = gray[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        bits |= (nb > c).long() << b
    return MAPPING.to(gray.device)[bits]


def vl_lbp(images: torch.Tensor, cell: int = 16) -> torch.Tensor:
    """LBP histograms of the luma of (N, 1 or 3, H, W) images -> (N, 58, H // cell, W // cell) float32.

    Each interior pixel votes for its code in the 4 nearest cells (bilinear); each cell's histogram
    h becomes sqrt(h) / (sqrt(sum h) + 1e-10).
    """
    return torch.ops.featinv.lbp(images.to(torch.float32), cell)


def check_lbp(images: torch.Tensor, cell: int) -> None:
    check_images(images, "LBP")
    height, width = images.shape[2:]
    if cell < 1 or min(height // cell, width // cell) < 1 or min(height, width) < 3:
        raise ValueError(f"a {height}x{width} image has no {cell}x{cell} LBP cell")


def vl_lbp_torch(images: torch.Tensor, cell: int = 16) -> torch.Tensor:
    """The torch version of ``featinv::lbp`` (same arguments and result)."""
    check_lbp(images, cell)
    gray = to_gray(images)
    n, height, width = gray.shape
    cells = (height // cell, width // cell)
    codes = torch.zeros(n, height, width, dtype=torch.long, device=gray.device)
    codes[:, 1:-1, 1:-1] = lbp_codes(gray)  # borders: weight 0 in spread_to_cells
    hist = spread_to_cells(codes, torch.ones(n, height, width, device=gray.device), 58, cell, cells)
    norm = hist.sum(1, keepdim=True).sqrt() + 1e-10
    return (hist.sqrt() / norm).to(torch.float32)


ops.define("lbp", "lbp(Tensor images, int cell) -> Tensor", vl_lbp_torch, check_lbp,
           lambda images, cell: (images.shape[0], 58, images.shape[2] // cell, images.shape[3] // cell))


@dataclass(frozen=True)
class LBP(Extractor):
    """Uniform LBP (58 codes) of the grayscale image in 16x16 cells (VLFeat ``vl_lbp`` defaults)."""

    cell: int = 16
    name = "lbp"
    uses_operators = True
    differentiable = False
    mirror_channels = MIRROR

    @property
    def channels(self) -> int:
        return 58

    @property
    def stride(self) -> int:
        return self.cell

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        return height // self.cell, width // self.cell

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3, H, W) float in [0, 1] -> (N, 58, H // cell, W // cell) float32."""
        return vl_lbp(images, self.cell)
