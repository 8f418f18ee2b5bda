"""How good is a reconstruction: the paper's normalized error, PSNR and SSIM (paper §4.1; README, "Shipped models")."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def match_size(recon: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of (N, 3, h, w) to ``size`` (paper §4.1: evaluate at the input size)."""
    if tuple(recon.shape[-2:]) == tuple(size):
        return recon
    shrink = recon.shape[-2] > size[0] or recon.shape[-1] > size[1]
    return F.interpolate(recon, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)


def mean_pairwise_distance(images: torch.Tensor) -> float:
    """N of the paper: mean Euclidean distance between distinct pairs of test images (N, ...)."""
    flat = images.reshape(images.shape[0], -1).double()
    if flat.shape[0] < 2:
        raise ValueError("the normalized error needs at least two reference images")
    d = torch.cdist(flat, flat)
    n = flat.shape[0]
    return float(d.sum() / (n * (n - 1)))


def blocked_mean_distance(views: torch.Tensor, block: int = 64) -> float:
    """``mean_pairwise_distance`` of (N, ...) 8-bit views in [0, 255], a block of rows at a time
    (in float64, as it is), so a thousand views need no N x N x pixels intermediates."""
    flat = views.reshape(len(views), -1)
    n, total = len(flat), 0.0
    for i in range(0, n, block):
        a = flat[i:i + block].double() / 255.0
        for j in range(0, n, block):
            total += float(torch.cdist(a, flat[j:j + block].double() / 255.0).sum())
    return total / (n * (n - 1))


def normalized_errors(recon: torch.Tensor, ref: torch.Tensor, norm: float | None = None) -> torch.Tensor:
    """Per-image ||x_i - f(phi(x_i))||_2 / N for (N, 3, H, W) in [0, 1]; the paper reports the mean."""
    if norm is None:
        norm = mean_pairwise_distance(ref)
    diff = (recon.double() - ref.double()).reshape(ref.shape[0], -1)
    return diff.norm(dim=1) / norm


def thumbnail_errors(recon: torch.Tensor, ref: torch.Tensor, side: int = 16) -> torch.Tensor:
    """Normalized error of side x side thumbnails (area averages): how well colour and rough layout
    are reconstructed, with every detail averaged away."""
    shrink = lambda x: F.interpolate(x.double(), size=(side, side), mode="area")  # noqa: E731
    return normalized_errors(shrink(recon), shrink(ref))


def mae(recon: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean absolute pixel error per image, pixels in [0, 1] (0 = identical, 1 = black for white)."""
    return (recon.double() - ref.double()).abs().flatten(1).mean(1)


PSNR_IDENTICAL = 120.0  # dB for identical images (infinite in theory): the MSE is floored at 1e-12


def psnr(recon: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    mse = ((recon.double() - ref.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(10 ** (-PSNR_IDENTICAL / 10)))


def mean_psnr(values: list[float]) -> float:
    """The mean PSNR of the pairs that differ: one identical pair's 120 dB would outweigh every real
    figure (28 and 120 dB average to 74). Only if all pairs are identical is the mean 120."""
    differ = [v for v in values if v < PSNR_IDENTICAL]
    return sum(differ) / len(differ) if differ else PSNR_IDENTICAL


def ssim(recon: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    from skimage.metrics import structural_similarity

    out = []
    for a, b in zip(recon, ref):
        a_np = a.permute(1, 2, 0).double().numpy()
        b_np = b.permute(1, 2, 0).double().numpy()
        win = min(7, *a_np.shape[:2])
        win -= 1 - win % 2  # odd window no larger than the image
        out.append(structural_similarity(a_np, b_np, channel_axis=2, data_range=1.0, win_size=max(win, 3)))
    return torch.tensor(out, dtype=torch.float64)


def score(recon: torch.Tensor, ref: torch.Tensor) -> dict:
    """All metrics for same-size batches; recon is resized to ref's size first."""
    recon = match_size(recon.float(), tuple(ref.shape[-2:])).clamp(0, 1)
    errors = normalized_errors(recon, ref)
    p, s, m = psnr(recon, ref), ssim(recon, ref), mae(recon, ref)
    out = {"normalized_error": errors.tolist(), "psnr": p.tolist(), "ssim": s.tolist(), "mae": m.tolist(),
           "mean": {"normalized_error": float(errors.mean()), "psnr": mean_psnr(p.tolist()), "ssim": float(s.mean()),
                    "mae": float(m.mean())}}
    if min(ref.shape[-2:]) >= 16 and ref.shape[0] >= 2:
        thumb = thumbnail_errors(recon, ref)
        out["thumbnail_error"] = thumb.tolist()
        out["mean"]["thumbnail_error"] = float(thumb.mean())
    return out


def score_pairs(recons: list[torch.Tensor], refs: list[torch.Tensor]) -> dict:
    """``score`` for (3, H, W) pairs that may differ in size from pair to pair: each reconstruction is
    resized to its reference. The normalized error needs two or more references of one size; without
    them, or when the references are all one image (N = 0), it is None (per image and in the mean) and
    PSNR and SSIM are still given."""
    if len(refs) >= 2 and len({tuple(r.shape[-2:]) for r in refs}) == 1:
        stack = torch.stack(refs)
        norm = mean_pairwise_distance(stack)
        if norm > 0:
            out = score(torch.cat([match_size(x[None].float(), tuple(stack.shape[-2:])) for x in recons]), stack)
            out["normalizer"] = norm
            return out
    pairs = [(match_size(x[None].float(), tuple(r.shape[-2:])).clamp(0, 1), r[None]) for x, r in zip(recons, refs)]
    p = [float(psnr(x, r)[0]) for x, r in pairs]
    s = [float(ssim(x, r)[0]) for x, r in pairs]
    m = [float(mae(x, r)[0]) for x, r in pairs]
    return {"normalized_error": [None] * len(pairs), "psnr": p, "ssim": s, "mae": m, "normalizer": None,
            "mean": {"normalized_error": None, "psnr": mean_psnr(p), "ssim": sum(s) / len(s),
                     "mae": sum(m) / len(m)}}
