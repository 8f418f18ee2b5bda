"""Probing a feature space (paper §4.3-4.5): perturb, interpolate, sample. Pure tensor functions.

Every function takes features ``(N, ...)`` and treats each row as one flattened vector.
"""
from __future__ import annotations

import math

import torch


def _flat(f: torch.Tensor) -> torch.Tensor:
    return f.reshape(f.shape[0], -1)


def binarize(f: torch.Tensor) -> torch.Tensor:
    """Keep signs, give every non-zero entry one magnitude so each row keeps its Euclidean norm."""
    x = _flat(f)
    nnz = (x != 0).sum(1, keepdim=True).clamp_min(1)
    c = x.norm(dim=1, keepdim=True) / nnz.sqrt()
    return (torch.sign(x) * c).reshape(f.shape)


def _rescale_to(x: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    now = x.norm(dim=1, keepdim=True)
    return torch.where(now > 0, x * (norm / now.clamp_min(1e-30)), x)


def dropout(f: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero exactly round(p * D) randomly chosen entries of each row, then rescale the row to its
    original norm (paper §4.4: dropout with norm-preserving renormalisation)."""
    x = _flat(f)
    k = round(p * x.shape[1])
    order = torch.rand(x.shape, generator=generator).argsort(dim=1)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask.scatter_(1, order[:, :k].to(x.device), False)
    return _rescale_to(x * mask, x.norm(dim=1, keepdim=True)).reshape(f.shape)


def drop_least(f: torch.Tensor, p: float) -> torch.Tensor:
    """Zero round(p * nnz) of each row's non-zero entries, those of smallest magnitude (ties: lower
    index first). No rescaling: the paper combines it with binarize, which sets the norm."""
    x = _flat(f).clone()
    for row in x:
        nz = row.nonzero().squeeze(1)
        k = round(p * len(nz))
        if k:
            order = torch.argsort(row[nz].abs(), stable=True)
            row[nz[order[:k]]] = 0
    return x.reshape(f.shape)


def top_k_mask(f: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest entries of each row (ties: lower index first)."""
    x = _flat(f)
    order = torch.argsort(-x, dim=1, stable=True)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask.scatter_(1, order[:, :k], True)
    return mask.reshape(f.shape)


def keep_top(f: torch.Tensor, k: int) -> torch.Tensor:
    """Zero everything but the k largest activations of each row (paper Fig. 8, FC8)."""
    return torch.where(top_k_mask(f, k), f, torch.zeros_like(f))


def zero_top(f: torch.Tensor, k: int) -> torch.Tensor:
    """Zero the k largest activations of each row."""
    return torch.where(top_k_mask(f, k), torch.zeros_like(f), f)


def scale(f: torch.Tensor, a: float) -> torch.Tensor:
    return f * a


# `featinv perturb --NAME VALUE` -> the function above that does it (features, value, generator) and
# the caption it leaves. One table, so --dropout leads to dropout() by name.
PERTURBATIONS = {
    "binarize": (lambda f, v, g: binarize(f), lambda v: "binarize"),
    "dropout": (lambda f, p, g: dropout(f, p, g), lambda p: f"dropout {p:g}"),
    "drop_least": (lambda f, p, g: drop_least(f, p), lambda p: f"drop-least {p:g}"),
    "keep_top": (lambda f, k, g: keep_top(f, k), lambda k: f"keep-top {k}"),
    "zero_top": (lambda f, k, g: zero_top(f, k), lambda k: f"zero-top {k}"),
    "scale": (lambda f, a, g: scale(f, a), lambda a: f"scale {a:g}"),
}


def perturb(f: torch.Tensor, ops: list[tuple[str, object]], seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Apply ``[(name, value), ...]`` of PERTURBATIONS in order to every row; returns the features and a
    caption per operation. Seeded (only dropout draws random numbers)."""
    gen = torch.Generator().manual_seed(seed)
    labels = []
    for name, value in ops:
        fn, label = PERTURBATIONS[name]
        f = fn(f, value, gen)
        labels.append(label(value))
    return f, labels


# ------------------------------------------------------------------- keypoint-level defences
# A stored SfM map keeps keypoints, not grids: its defences act on the raw keypoints and descriptors
# (``keypoints`` (K, 4), ``descriptors`` (K, 128) in 0..255, ``counts`` (N,)), and the grid is made
# again from what is left (KeypointGrid.grid), so a cell a dropped keypoint won may go to another.

def row_seed(seed: int, key: str) -> int:
    """A generator seed for one image from the run's seed and the image's name: the same keypoints are
    kept for a photo whatever else is in its file or database, and in whatever order."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") >> 1


def keep_keypoints(raw: dict[str, torch.Tensor], p: float, seed: int, keys: list[str]) -> dict[str, torch.Tensor]:
    """Keep round(p * K_i) of each image's K_i keypoints, chosen at random (seeded per image by
    ``row_seed(seed, keys[i])``), each with its whole descriptor and geometry, in their stored order.
    p = 1 keeps everything."""
    counts = raw["counts"].tolist()
    if p >= 1:
        return dict(raw)
    keep, start = [], 0
    for k, key in zip(counts, keys):
        gen = torch.Generator().manual_seed(row_seed(seed, key))
        chosen = torch.randperm(k, generator=gen)[:round(p * k)].sort().values
        keep.append(chosen + start)
        start += k
    idx = torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long)
    return {"keypoints": raw["keypoints"][idx], "descriptors": raw["descriptors"][idx],
            "counts": torch.tensor([len(i) for i in keep], dtype=torch.long)}


def quantize_descriptors(raw: dict[str, torch.Tensor], bits: int) -> dict[str, torch.Tensor]:
    """Descriptors (0..255) kept to ``bits`` bits: each entry becomes the middle whole number of its
    one of 2^bits equal bins, so 8 bits changes nothing (COLMAP stores whole numbers) and 1 bit keeps
    only which entries are large."""
    step = 2 ** (8 - bits)
    d = raw["descriptors"].float().clamp(0, 255)
    return dict(raw, descriptors=(d / step).floor() * step + (step - 1) // 2)


# `perturb --NAME VALUE` for the keypoint-level defences: (function of (raw, value, seed, keys), caption).
KEYPOINT_PERTURBATIONS = {
    "keep_keypoints": (lambda raw, p, seed, keys: keep_keypoints(raw, p, seed, keys), lambda p: f"keep-keypoints {p:g}"),
    "quantize_descriptors": (lambda raw, b, seed, keys: quantize_descriptors(raw, b),
                             lambda b: f"quantize-descriptors {b}"),
}


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` points on the line from each row of ``a`` to the same row of ``b``, end points included.

    a, b: (N, ...) -> (N * steps, ...), the steps of one pair consecutive; row 0 equals a, row
    steps - 1 equals b exactly.
    """
    t = torch.linspace(0, 1, steps, dtype=a.dtype)
    shape = (1, steps) + (1,) * (a.ndim - 1)
    out = a.unsqueeze(1) * (1 - t.view(shape)) + b.unsqueeze(1) * t.view(shape)
    out[:, 0], out[:, -1] = a, b  # exact end points, whatever the rounding of 1 - t
    return out.reshape((-1,) + tuple(a.shape[1:]))


# ------------------------------------------------------------------------------------- sampling

def fit_histograms(f: torch.Tensor, bins: int = 32) -> dict[str, torch.Tensor]:
    """Per-dimension statistics of a set of feature vectors (N, ...) for ``sample_histograms``:
    the fraction of zeros of each dimension and a histogram of its non-zero values."""
    x = _flat(f).double()
    nonzero = x != 0
    p_zero = 1 - nonzero.double().mean(0)
    big = torch.finfo(torch.float64).max
    lo = torch.where(nonzero, x, torch.full_like(x, big)).min(0).values
    hi = torch.where(nonzero, x, torch.full_like(x, -big)).max(0).values
    empty = ~nonzero.any(0)
    lo, hi = torch.where(empty, 0.0, lo), torch.where(empty, 0.0, hi)
    width = (hi - lo) / bins
    idx = torch.where(width > 0, ((x - lo) / width.clamp_min(1e-300)).floor(), torch.zeros_like(x))
    idx = idx.clamp(0, bins - 1).long()
    counts = torch.zeros(x.shape[1], bins, dtype=torch.float64)
    counts.scatter_add_(1, idx.T, nonzero.double().T)
    probs = counts / counts.sum(1, keepdim=True).clamp_min(1)
    return {"p_zero": p_zero.float(), "lo": lo.float(), "hi": hi.float(), "probs": probs.float()}


def sample_histograms(stats: dict[str, torch.Tensor], n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n vectors (n, D), each dimension drawn independently from its histogram, zero with the
    dimension's observed probability (so sparsity matches the data)."""
    p_zero, lo, hi, probs = stats["p_zero"], stats["lo"].double(), stats["hi"].double(), stats["probs"].double()
    d, bins = probs.shape
    cdf = probs.cumsum(1)
    cdf[:, -1] = 1.0
    u = torch.rand(d, n, generator=generator, dtype=torch.float64)
    b = torch.searchsorted(cdf, u).clamp(max=bins - 1)
    within = torch.rand(d, n, generator=generator, dtype=torch.float64)
    value = lo.unsqueeze(1) + (b + within) * ((hi - lo) / bins).unsqueeze(1)
    keep = torch.rand(d, n, generator=generator, dtype=torch.float64) >= p_zero.double().unsqueeze(1)
    return torch.where(keep & (probs.sum(1, keepdim=True) > 0), value, 0.0).T.float()


def raise_contrast(flat: torch.Tensor, shape: list[int], alpha: float, geometry: int = 0) -> torch.Tensor:
    """Samples (n, D) times alpha (paper §4.5), except the last ``geometry`` channels of (C, H, W)
    vectors: a keypoint's position, angle or scale times 2 is no longer a keypoint."""
    if not geometry or len(shape) != 3:
        return flat * alpha
    out = flat.reshape([len(flat)] + shape).clone()
    out[:, :shape[0] - geometry] *= alpha
    return out.reshape(len(flat), -1)


def fit_gaussian(f: torch.Tensor) -> torch.Tensor:
    """One Gaussian for all dimensions: ``(mu, sigma, truncated)``.

    For non-negative features (ReLU layers, HOG, LBP) a shifted Gaussian truncated at zero,
    max(0, N(mu, sigma)), whose zero fraction and mean of non-zero values equal the data's; for
    features with negative entries a plain Gaussian of all values.
    """
    x = _flat(f).double().reshape(-1)
    if (x < 0).any():
        return torch.tensor([x.mean(), x.std(), 0.0])
    p0 = float((x == 0).double().mean())
    if p0 <= 0 or p0 >= 1:
        return torch.tensor([x.mean(), x.std(), 1.0])
    normal = torch.distributions.Normal(0.0, 1.0)
    a = float(normal.icdf(torch.tensor(p0)))  # P(N(mu, sigma) < 0) = p0  <=>  -mu / sigma = a
    pdf = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    m_pos = float(x[x > 0].mean())
    sigma = m_pos / (pdf / (1 - p0) - a)  # mean of the positive part of the truncated Gaussian
    return torch.tensor([-a * sigma, sigma, 1.0])


def sample_gaussian(params: torch.Tensor, n: int, d: int, generator: torch.Generator | None = None) -> torch.Tensor:
    mu, sigma, truncated = (float(v) for v in params)
    x = mu + sigma * torch.randn(n, d, generator=generator, dtype=torch.float64)
    if truncated:
        x = x.clamp_min(0)
    return x.float()


def fit_statistics(ff, bins: int, name: str = "features"):
    """``sample --fit``: histograms per dimension and one Gaussian of the rows of a FeatureFile, as a
    StatsFile (formats/statistics.py) that records what features they describe."""
    from .errors import FeatinvError
    from .formats.statistics import StatsFile

    if len(ff) < 2:
        raise FeatinvError(f"{name}: fitting statistics needs several feature vectors, this file has {len(ff)}")
    tensors = fit_histograms(ff.features, bins)
    tensors["gaussian"] = fit_gaussian(ff.features).float()
    return StatsFile(tensors, list(ff.features.shape[1:]), len(ff), ff.feature, ff.params, ff.image_size)
