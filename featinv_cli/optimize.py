"""The optimisation baseline: Mahendran & Vedaldi's pre-image by gradient descent (CVPR 2015).

    minimise  ||phi(x) - phi0||^2 / ||phi0||^2  +  lambda_a R_a(x)  +  lambda_tv R_tv(x)

with R_a(x) = mean((|x - m| / B)^a), a = 6, and R_tv(x) = mean(((dx^2 + dy^2) / V^2)^(beta / 2)),
beta = 2, where m is the mean colour, B = 80/255 (their typical pixel deviation on a 0-255 scale)
and V = B / 6.5, the normalisations of their paper. Only differentiable extractors qualify: LBP and
SIFT are refused, which is the point the paper makes with them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .errors import FeatinvError
from .features import Extractor

B = 80.0 / 255.0
V = B / 6.5
MEAN = (0.485, 0.456, 0.406)


@dataclass
class OptimizeConfig:
    steps: int = 200
    lr: float = 0.05
    lambda_a: float = 1e-3
    lambda_tv: float = 0.05
    a: float = 6.0
    beta: float = 2.0
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if self.steps < 1:
            raise FeatinvError(f"--optimize-steps {self.steps}: must be at least 1")


def check_differentiable(extractor: Extractor) -> None:
    if not extractor.differentiable:
        raise FeatinvError(f"--method optimize needs gradients of the features, and {extractor.name} has none "
                           f"({'codes from pixel comparisons' if extractor.name == 'lbp' else 'keypoint detection'} "
                           f"is piecewise constant); use the learned inverter (the paper's point)")


def invert_by_optimization(extractor: Extractor, target: torch.Tensor, size: tuple[int, int],
                           cfg: OptimizeConfig = OptimizeConfig(),
                           on_step: Callable[[int, float], None] | None = None) -> tuple[torch.Tensor, list[float]]:
    """One image: target features (1, ...) -> (image (1, 3, H, W) in [0, 1], feature-loss history)."""
    check_differentiable(extractor)
    g = torch.Generator().manual_seed(cfg.seed)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1).to(cfg.device)
    x = (mean + 0.01 * torch.randn(1, 3, *size, generator=g).to(cfg.device)).requires_grad_(True)
    target = target.to(cfg.device)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    norm = target.pow(2).sum().clamp_min(1e-12)
    history = []
    for step in range(cfg.steps):
        phi = extractor(x)
        feature_loss = (phi - target).pow(2).sum() / norm
        d = x - mean
        r_a = (d.abs() / B).pow(cfg.a).mean()
        dx = x[..., :, 1:] - x[..., :, :-1]
        dy = x[..., 1:, :] - x[..., :-1, :]
        r_tv = ((dx[..., :-1, :] ** 2 + dy[..., :, :-1] ** 2) / V ** 2).pow(cfg.beta / 2).mean()
        loss = feature_loss + cfg.lambda_a * r_a + cfg.lambda_tv * r_tv
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(feature_loss.detach()))
        if on_step:
            on_step(step + 1, history[-1])
    return x.detach().clamp(0, 1).cpu(), history


def invert_each_by_optimization(extractor: Extractor, features: torch.Tensor, size: tuple[int, int],
                                cfg: OptimizeConfig = OptimizeConfig(),
                                on_step: Callable[[int, int, float], None] | None = None) -> torch.Tensor:
    """Every row of (N, ...) features on its own (the optimisation is per image) -> (N, 3, H, W);
    ``on_step(row, step, loss)``."""
    check_differentiable(extractor)
    out = []
    for i, row in enumerate(features):
        step = (lambda s, loss, i=i: on_step(i, s, loss)) if on_step else None
        out.append(invert_by_optimization(extractor, row[None], size, cfg, on_step=step)[0])
    return torch.cat(out)
