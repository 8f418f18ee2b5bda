"""What every extractor provides, so commands never need to know which one they hold."""
from __future__ import annotations

import dataclasses
import json

import torch

# ITU-R 709 luma, the weights of scikit-image's rgb2gray (what users of skimage expect).
GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) or (N, 1, H, W) in [0, 1] -> (N, H, W)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1|3, H, W), got {tuple(images.shape)}")
    if images.shape[1] == 1:
        return images[:, 0]
    w = torch.tensor(GRAY_WEIGHTS, dtype=images.dtype, device=images.device)
    return torch.einsum("nchw,c->nhw", images, w)


class Extractor:
    """A feature extractor: a frozen dataclass of its parameters plus ``__call__(images)``.

    Subclasses set ``name`` and implement ``channels``, ``stride`` (image pixels per feature cell),
    ``grid_size(H, W)`` and ``__call__((N, 3, H, W) in [0, 1]) -> (N, C, Hc, Wc) float32``.
    """

    name: str = ""
    differentiable: bool = True

    @property
    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def spec(self) -> str:
        """The canonical spec string: the name plus every parameter that differs from its default."""
        changed = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                   if getattr(self, f.name) != f.default]
        return ":".join([self.name, ",".join(changed)]) if changed else self.name

    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True)

    def min_size(self) -> int:
        return self.stride

    def image_size_from_grid(self, hc: int, wc: int) -> tuple[int, int]:
        """Best guess of the image size when only the grid is known (bare ``.npy`` input)."""
        return hc * self.stride, wc * self.stride
