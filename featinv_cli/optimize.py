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
    prox: float = 0.0  # refine: weight of the mean squared distance to the learned reconstruction

    def __post_init__(self):
        if self.steps < 1:
            raise FeatinvError(f"--optimize-steps {self.steps}: must be at least 1")


def check_differentiable(extractor: Extractor) -> None:
    if not extractor.differentiable:
        raise FeatinvError(f"--method optimize and refine need gradients of the features, and {extractor.name} has none "
                           f"({'codes from pixel comparisons' if extractor.name == 'lbp' else 'keypoint detection'} "
                           f"is piecewise constant); use the learned inverter (the paper's point)")


def objective(extractor: Extractor, x: torch.Tensor, target: torch.Tensor, norm: torch.Tensor,
              cfg: OptimizeConfig, anchor: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss to descend, each image's feature loss) for images x (N, 3, H, W) and their target
    features (N, ...), ``norm`` = each target's squared norm (N,). Every term is a per-image mean or
    ratio summed over the batch, so an image's gradient is the one it would have alone (and Adam's
    steps, elementwise, the same): a batch is N optimisations run together. ``anchor`` (N, 3, H, W) adds
    ``cfg.prox`` times the mean squared distance to it (refine's learned reconstruction)."""
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    feature_loss = (extractor(x) - target).pow(2).flatten(1).sum(1) / norm
    r_a = ((x - mean).abs() / B).pow(cfg.a).flatten(1).mean(1)
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    r_tv = ((dx[..., :-1, :] ** 2 + dy[..., :, :-1] ** 2) / V ** 2).pow(cfg.beta / 2).flatten(1).mean(1)
    loss = feature_loss + cfg.lambda_a * r_a + cfg.lambda_tv * r_tv
    if anchor is not None and cfg.prox:
        loss = loss + cfg.prox * ((x - anchor) / B).pow(2).flatten(1).mean(1)
    return loss.sum(), feature_loss.detach()


def descend(extractor: Extractor, x: torch.Tensor, target: torch.Tensor, cfg: OptimizeConfig,
            anchor: torch.Tensor | None = None,
            on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None
            ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``cfg.steps`` Adam steps on ``objective`` from images x (N, 3, H, W): (the images clamped to
    [0, 1], each step's per-image feature losses). ``on_step(step, losses, images so far)``."""
    x = x.clone().to(cfg.device).requires_grad_(True)
    target = target.to(cfg.device)
    norm = target.pow(2).flatten(1).sum(1).clamp_min(1e-12)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    history = []
    for step in range(cfg.steps):
        loss, feature_loss = objective(extractor, x, target, norm, cfg, anchor)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(feature_loss.cpu())
        if on_step:
            on_step(step + 1, history[-1], x.detach())
    return x.detach().clamp(0, 1).cpu(), history


def invert_by_optimization(extractor: Extractor, target: torch.Tensor, size: tuple[int, int],
                           cfg: OptimizeConfig = OptimizeConfig(),
                           on_step: Callable[[int, float], None] | None = None) -> tuple[torch.Tensor, list[float]]:
    """One image: target features (1, ...) -> (image (1, 3, H, W) in [0, 1], feature-loss history),
    from the mean colour and a little seeded noise."""
    check_differentiable(extractor)
    g = torch.Generator().manual_seed(cfg.seed)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    start = mean + 0.01 * torch.randn(1, 3, *size, generator=g)
    step = (lambda s, losses, _: on_step(s, float(losses[0]))) if on_step else None
    x, history = descend(extractor, start, target, cfg, on_step=step)
    return x, [float(h[0]) for h in history]


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


# `invert --method refine`'s default steps per feature (lr 0.01 from the shipped model's reconstruction),
# chosen by bench/refine.py on 16 validation photos (docs/figures/refine-selection.json): the fewest of 10, 20,
# 40 and 80 steps within 0.005 of the lowest error, where that lowers the learned error by 0.005 or more.
# The others (HOG, fire7 and deeper) only got worse: their invariances let the image drift from the
# expected one while the features still match; refine keeps their learned reconstruction and says so.
REFINE_STEPS: dict[str, int] = {"squeezenet:conv1": 40, "squeezenet:fire2": 80, "squeezenet:fire3": 40,
                                "squeezenet:fire4": 40, "squeezenet:fire5": 40, "squeezenet:fire6": 40}
REFINE_BATCH = 32  # images optimised together: one batch, one Adam, N independent problems
REFINE_LR = 0.01  # a fifth of optimize's: the start is already the expected image


def refine_steps(extractor: Extractor) -> int:
    return REFINE_STEPS.get(extractor.spec, 0)


def refine_config(steps: int, device: str = "cpu", **priors) -> OptimizeConfig:
    """Refine's settings: ``steps`` at REFINE_LR, the optimisation's priors (or ``lambda_a``/``lambda_tv``)."""
    return OptimizeConfig(steps=steps, lr=REFINE_LR, device=device, **priors)


def refine(extractor: Extractor, features: torch.Tensor, learned: torch.Tensor, cfg: OptimizeConfig,
           on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Learned, then refined: ``cfg.steps`` steps of the optimisation's objective from the learned
    reconstructions (N, 3, H, W) of features (N, ...), REFINE_BATCH images at a time, each held near
    its start by ``cfg.prox``. ``on_step(images advanced)`` after every step of a batch."""
    check_differentiable(extractor)
    out = []
    for feats, start in zip(features.split(REFINE_BATCH), learned.split(REFINE_BATCH)):
        step = (lambda s, losses, x, n=len(start): on_step(n)) if on_step else None
        out.append(descend(extractor, start, feats, cfg, anchor=start.to(cfg.device), on_step=step)[0])
    return torch.cat(out)
