"""What every extractor provides, so commands never need to know which one they hold."""
from __future__ import annotations

import dataclasses

import torch

# ITU-R 709 luma, the weights of scikit-image's rgb2gray (what users of skimage expect).
GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) or (N, 1, H, W) in [0, 1] -> (N, H, W)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1|3, H, W), got {tuple(images.shape)}")
    if images.shape[1] == 1:
        return images[:, 0]
    # Written out, not an einsum: the same float operations in the same order as the C++ HOG and LBP
    # kernels (kernels/hog_lbp_cpu.cpp), and 3x faster on a batch.
    r, g, b = images.unbind(1)
    return r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2]


def check_images(images: torch.Tensor, what: str) -> None:
    """The input check of the HOG and LBP operators: float (N, 1 or 3, H, W)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3) or not images.is_floating_point():
        raise ValueError(f"{what} expects float images (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")


def _axis_weights(length: int, cell: int, cells: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each pixel along one axis, its two nearest cells and bilinear weights (VLFeat's rule).

    Cell centres sit at ``(i + 0.5) * cell - 0.5``. Border pixels (index 0 and ``length - 1``) get
    weight zero: VLFeat only measures interior pixels. Returns [(cell index, weight)] x 2, where a
    cell index outside the grid carries weight zero and is clamped to stay addressable.
    """
    x = torch.arange(length, dtype=torch.float64, device=device)
    h = (x + 0.5) / cell - 0.5
    lo = torch.floor(h)
    w_hi = h - lo
    interior = ((x >= 1) & (x <= length - 2)).double()
    out = []
    for idx, w in ((lo.long(), 1.0 - w_hi), (lo.long() + 1, w_hi)):
        ok = (idx >= 0) & (idx < cells)
        out.append((idx.clamp(0, cells - 1), w * interior * ok))
    return out


def spread_to_cells(bins: torch.Tensor, weight: torch.Tensor, nbins: int, cell: int,
                    cells: tuple[int, int]) -> torch.Tensor:
    """Per-pixel votes -> cell histograms, spread bilinearly over the 4 nearest cells.

    bins: (N, H, W) long in [0, nbins); weight: (N, H, W). Returns (N, nbins, Hc, Wc) float64.
    Four scatter-adds, so the cost is O(N H W) whatever the number of bins; differentiable in weight.
    """
    n, h, w = bins.shape
    hc, wc = cells
    base = (torch.arange(n, device=bins.device).view(n, 1, 1) * nbins + bins) * hc
    out = torch.zeros(n * nbins * hc * wc, dtype=torch.float64, device=bins.device)
    wt = weight.double()
    for cy, wy in _axis_weights(h, cell, hc, bins.device):
        for cx, wx in _axis_weights(w, cell, wc, bins.device):
            idx = (base + cy.view(1, h, 1)) * wc + cx.view(1, 1, w)
            out = out.index_add(0, idx.reshape(-1), (wt * wy.view(1, h, 1) * wx.view(1, 1, w)).reshape(-1))
    return out.view(n, nbins, hc, wc)


class Extractor:
    """A feature extractor: a frozen dataclass of its parameters plus ``__call__(images)``.

    Subclasses set ``name`` and implement ``channels``, ``stride`` (image pixels per feature cell),
    ``grid_size(H, W)`` and ``__call__((N, 3, H, W) in [0, 1]) -> (N, C, Hc, Wc) float32``.
    """

    name: str = ""
    # Capabilities, declared here so no caller has to probe for attributes:
    differentiable: bool = True  # gradients flow from features to pixels (`invert --method optimize`)
    is_cnn: bool = False  # a layer of a network: the paper's conv/fc inverters, a feature scale, weights
    fine_tunable: bool = False  # has run(net, images) with a copy of its network (`train --finetune-encoder`)
    guess_by_channels: bool = True  # a bare .npy with this extractor's channel count may be taken for it
    positional: tuple[str, ...] = ()  # parameters a spec gives by position ("alexnet:fc6"); default: the first
    is_vector: bool = False  # (N, D) features (fc layers) rather than (N, C, Hc, Wc) maps
    uses_operators: bool = False  # runs featinv's compiled operators (ops.py): built before workers fork
    # A grid of sparse keypoints, too slow to detect on every training batch: `detect(images)` gives the
    # raw keypoints, detected once per view and mirror image (`pack --sift`), gridded per crop by grid_bin.
    keypoint_grid: bool = False
    # Channel order of the features of the left-right mirrored image: features(flip(x)) equals
    # flip(features(x))[:, mirror_channels] up to border cells; None where no such permutation exists.
    mirror_channels: tuple[int, ...] | None = None
    # Trailing channels that say where something is rather than how strong (SIFT's position, angle and
    # scale): `sample --alpha` raises the contrast of the others and leaves these as drawn.
    geometry_channels: int = 0
    # The image is resized to a fixed input first (a CNN's), so its size changes no feature value: two
    # photos of different sizes give features of one space (`interpolate` combines them).
    input_resized: bool = False

    @property
    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def spec(self) -> str:
        """The canonical spec string: the name plus every parameter that differs from its default."""
        changed = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                   if getattr(self, f.name) != f.default]
        return ":".join([self.name, ",".join(changed)]) if changed else self.name

    @property
    def shipped_name(self) -> str:
        """Stem of the model file in the package that inverts these features (if one ships)."""
        return self.name

    def min_size(self) -> int:
        return self.stride

    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Features plus any raw arrays worth keeping in the feature file (SIFT's keypoints)."""
        return self(images), {}

    def image_size_from_grid(self, hc: int, wc: int) -> tuple[int, int]:
        """Best guess of the image size when only the grid is known (bare ``.npy`` input)."""
        return hc * self.stride, wc * self.stride
