"""featinv sample: random feature vectors from fitted statistics (paper §4.5)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import json

import typer

from ..errors import FeatinvError, UsageError

if TYPE_CHECKING:  # annotations only; imported where used, so --help stays fast
    import torch
    from ..io import FeatureFile


def fit(ff: FeatureFile, bins: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from .. import analysis
    from ..io import STATS_FORMAT

    stats = analysis.fit_histograms(ff.features, bins)
    stats["gaussian"] = analysis.fit_gaussian(ff.features).float()
    meta = {"format": STATS_FORMAT, "feature": ff.feature or "", "params": json.dumps(ff.params or {}),
            "shape": json.dumps(list(ff.features.shape[1:])), "fitted_on": str(len(ff))}
    if ff.image_size:
        meta["image_size"] = json.dumps(list(ff.image_size))
    return stats, meta


def load_stats_or_fit(path: str, bins: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from ..io import STATS_FORMAT, features_from_bytes, parse_safetensors, read_bytes

    data = read_bytes(path)
    name = "<stdin>" if path == "-" else path
    if data[:6] != b"\x93NUMPY":
        tensors, meta = parse_safetensors(data, name)
        if meta.get("format") == STATS_FORMAT:
            return tensors, meta
    ff = features_from_bytes(data, name)
    if len(ff) < 2:
        raise FeatinvError(f"{name}: fitting statistics needs several feature vectors, this file has {len(ff)}")
    return fit(ff, bins)


def sample(
    source: str = typer.Argument(..., help="Statistics from `sample --fit`, or feature vectors to fit now."),
    output: str = typer.Option(..., "--output", "-o", help="Feature file (or statistics, with --fit)."),
    n: int = typer.Option(8, "--count", "-n", help="How many vectors to draw."),
    method: str = typer.Option("histogram", help="histogram: each dimension from its own histogram, "
                               "sparsity matched; gaussian: one shifted truncated Gaussian for all."),
    alpha: float = typer.Option(2.0, "--alpha", help="Contrast factor the samples are multiplied by (paper: 2)."),
    bins: int = typer.Option(32, help="Histogram bins per dimension (when fitting)."),
    fit_only: bool = typer.Option(False, "--fit", help="Only fit the statistics of SOURCE and save them to -o."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
):
    """Draw random feature vectors the two ways of paper §4.5, to see what the inverter makes of them.

    Assuming independent dimensions (a strong, wrong assumption, as the paper says), each dimension
    is drawn from a histogram of its values over a set of real feature vectors, with the same
    fraction of zeros; or all from one shifted Gaussian truncated at zero. Samples are multiplied by
    --alpha to raise the contrast.

    \b
    Examples:
      featinv sample --fit many.safetensors -o stats.safetensors
      featinv sample stats.safetensors -n 16 -o random.safetensors && featinv invert random.safetensors -o r.png
      featinv sample many.safetensors --method gaussian -n 8 -o - | featinv invert - -o g.png
    """
    import torch
    from .. import analysis
    from ..io import FeatureFile, atomic_write, check_not_input, encode_safetensors, json_field, save_features

    if method not in ("histogram", "gaussian"):
        raise UsageError(f"--method {method!r}: choose histogram or gaussian")
    if n < 1 or bins < 1:
        raise UsageError("--n and --bins must be positive")
    check_not_input(output, [source])
    stats, meta = load_stats_or_fit(source, bins)
    if fit_only:
        atomic_write(output, encode_safetensors(stats, meta))
        return
    shape = json_field(meta, "shape", source)
    d = int(torch.tensor(shape).prod())
    gen = torch.Generator().manual_seed(seed)
    if method == "histogram":
        flat = analysis.sample_histograms(stats, n, alpha, gen)
    else:
        flat = analysis.sample_gaussian(stats["gaussian"], n, d, alpha, gen)
    size = json_field(meta, "image_size", source)
    save_features(output, FeatureFile(
        flat.reshape([n] + shape), meta.get("feature") or None, json_field(meta, "params", source, {}),
        tuple(size) if size else None, [], history=[f"sample {method}, alpha {alpha:g}, seed {seed}, "
                                                    f"fitted on {meta.get('fitted_on', '?')} vectors"],
        labels=[f"{method} #{i + 1}" for i in range(n)]))
