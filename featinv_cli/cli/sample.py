"""featinv sample: random feature vectors from fitted statistics (paper §4.5)."""
from __future__ import annotations

import math
from typing import Optional

import typer

from ..errors import FeatinvError, UsageError


def geometry_channels(feature: str | None) -> int:
    """How many trailing channels of ``feature`` (a spec: "sift:cell=8") are geometry, not strength."""
    from ..features import EXTRACTORS

    cls = EXTRACTORS.get((feature or "").partition(":")[0])
    return cls.geometry_channels if cls else 0


def sample(
    source: str = typer.Argument(..., help="Statistics from `sample --fit`, or feature vectors to fit now."),
    output: str = typer.Option(..., "--output", "-o", help="Feature file (or statistics, with --fit)."),
    n: int = typer.Option(8, "--count", "-n", help="How many vectors to draw."),
    method: str = typer.Option("histogram", help="histogram: each dimension from its own histogram, "
                               "sparsity matched; gaussian: one shifted truncated Gaussian for all."),
    alpha: float = typer.Option(2.0, "--alpha", help="Contrast factor the samples are multiplied by (paper: 2)."),
    bins: Optional[int] = typer.Option(None, help="Histogram bins per dimension, when fitting feature "
                                       "vectors [default: 32]; statistics keep the bins they were fitted with."),
    fit_only: bool = typer.Option(False, "--fit", help="Only fit the statistics of SOURCE and save them to -o."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
):
    """Draw random feature vectors the two ways of paper §4.5, to see what the inverter makes of them.

    Assuming independent dimensions (a strong, wrong assumption, as the paper says), each dimension
    is drawn from a histogram of its values over a set of real feature vectors, with the same
    fraction of zeros; or all from one shifted Gaussian truncated at zero. Samples are multiplied by
    --alpha to raise the contrast (SIFT's position, angle and scale channels are left as drawn).

    \b
    Examples:
      featinv sample --fit many.safetensors -o stats.safetensors
      featinv sample stats.safetensors -n 16 -o random.safetensors && featinv invert random.safetensors -o r.png
      featinv sample many.safetensors --method gaussian -n 8 -o - | featinv invert - -o g.png
    """
    import torch
    from .. import analysis
    from ..files import read_bytes
    from ..formats.features import FEATURE_FILE, FeatureFile, all_finite, features_from_bytes, note_if_bare, save_features
    from ..formats.statistics import STATS_FILE, save_stats, stats_from_bytes
    from ..outputs import Output

    if method not in ("histogram", "gaussian"):
        raise UsageError(f"--method {method!r}: choose histogram or gaussian")
    if n < 1:
        raise UsageError(f"--count {n}: draw at least 1 vector")
    if bins is not None and bins < 1:
        raise UsageError(f"--bins {bins}: give at least 1 bin")
    if bins is not None and method == "gaussian" and not fit_only:
        raise UsageError("--bins: --method gaussian draws from one Gaussian and uses no histogram bins")
    if not (math.isfinite(alpha) and alpha > 0):
        raise UsageError(f"--alpha {alpha}: give a positive contrast factor (the paper's is 2)")
    Output(output, STATS_FILE if fit_only else FEATURE_FILE, inputs=[source])
    data, name = read_bytes(source), "<stdin>" if source == "-" else source
    stats = stats_from_bytes(data, name)
    if stats is not None and bins is not None:
        raise UsageError(f"--bins: {name} holds statistics already fitted with their own bins; --bins applies "
                         f"when fitting feature vectors")
    if stats is not None and fit_only:
        raise UsageError(f"--fit: {name} holds statistics already; --fit reads feature vectors")
    stats = stats or analysis.fit_statistics(features_from_bytes(data, name), bins or 32, name)
    if fit_only:
        save_stats(output, stats)
        return
    gen = torch.Generator().manual_seed(seed)
    if method == "histogram":
        flat = analysis.sample_histograms(stats.tensors, n, gen)
    else:
        flat = analysis.sample_gaussian(stats.tensors["gaussian"], n, math.prod(stats.shape), gen)
    flat = analysis.raise_contrast(flat, stats.shape, alpha, geometry_channels(stats.feature))
    if not all_finite(flat):
        raise FeatinvError(f"--alpha {alpha:g}: the samples overflow float32; nothing written")
    ff = FeatureFile(
        flat.reshape([n] + stats.shape), stats.feature, stats.params, stats.image_size, [],
        history=[f"sample {method}, alpha {alpha:g}, seed {seed}, statistics of {stats.fitted_on} vectors ({name})"],
        labels=[f"{method} #{i + 1}" for i in range(n)])
    note_if_bare(output, ff)
    save_features(output, ff)
