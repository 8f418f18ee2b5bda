"""featinv interpolate: feature vectors on the straight line between two others (paper §4.5)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from ..errors import FeatinvError, UsageError, note

if TYPE_CHECKING:  # annotations only; imported where used, so --help stays fast
    from ..formats.features import FeatureFile


def same_space(a: FeatureFile, b: FeatureFile, name_a: str, name_b: str) -> None:
    """Refuse to combine features from different extractors, settings, image sizes (where the size
    changes the features) or shapes."""
    from ..features import from_metadata

    if (a.feature or None) != (b.feature or None):
        raise FeatinvError(f"{name_a} holds {a.feature or 'undescribed'} features, {name_b} holds "
                           f"{b.feature or 'undescribed'}; both must come from one extractor")
    if (a.params or {}) != (b.params or {}):
        raise FeatinvError(f"{name_a} and {name_b} were extracted with different settings "
                           f"({a.params} vs {b.params})")
    if a.image_size and b.image_size and tuple(a.image_size) != tuple(b.image_size):
        sizes = (f"{name_a} comes from a {a.image_size[0]}x{a.image_size[1]} image, {name_b} from "
                 f"{b.image_size[0]}x{b.image_size[1]}")
        if not (a.feature and from_metadata(a.feature, a.params).input_resized):
            raise FeatinvError(f"{sizes}; extract both at one size (--resize/--crop)")
        note(f"{sizes}; {a.feature} features do not depend on it (the network sees both at its input size): "
             f"the reconstructions come out at {a.image_size[0]}x{a.image_size[1]}")
    if a.features.shape != b.features.shape:
        raise FeatinvError(f"{name_a} has shape {tuple(a.features.shape)}, {name_b} "
                           f"{tuple(b.features.shape)}; they must match")


def interpolate(
    a: str = typer.Argument(..., help="Start: feature file (or - for stdin)."),
    b: str = typer.Argument(..., help="End: feature file with the same extractor, size and shape."),
    count: int = typer.Option(8, "--count", "-n", help="How many vectors: points on the line, end points "
                              "included (>= 2)."),
    output: str = typer.Option(..., "--output", "-o", help="Feature file to write, or - for stdout."),
):
    """Write COUNT feature vectors on the straight line from A to B (end points included).

    With several rows in A and B, row i of A is paired with row i of B and each pair's steps are
    consecutive. Rows are labelled "t = 0.25" etc., so `featinv invert` draws a captioned strip, a
    grid row per pair titled "a to b". A bare .npy end takes the other end's description (a note says so).

    \b
    Examples:
      featinv interpolate a.safetensors b.safetensors -n 8 -o ab.safetensors
      featinv invert ab.safetensors -o ab.png
    """
    from .. import analysis
    from ..outputs import Output
    from ..formats.features import FEATURE_FILE, FeatureFile, load_features, note_if_bare, save_features

    if count < 2:
        raise UsageError("-n/--count must be at least 2 (the two end points)")
    if a == "-" and b == "-":
        raise UsageError("only one of A and B can be read from stdin")
    Output(output, FEATURE_FILE, inputs=[a, b])
    fa, fb = load_features(a), load_features(b)
    for bare, described, name in ((fa, fb, a), (fb, fa, b)):
        if bare.feature is None and described.feature is not None:  # a .npy beside its extract's file
            bare.feature, bare.params, bare.image_size = described.feature, described.params, described.image_size
            note(f"{'<stdin>' if name == '-' else name} holds a bare array; taken as "
                 f"{described.feature} features like the other end (same settings and image size)")
    same_space(fa, fb, a, b)
    out = FeatureFile(analysis.interpolate(fa.features, fb.features, count), fa.feature, fa.params,
                      fa.image_size, [s for pair in zip(fa.sources or [a] * len(fa), fb.sources or [b] * len(fb))
                                      for s in [f"{pair[0]} -> {pair[1]}"] * count],
                      history=fa.history + [f"interpolate {count} points to {b}"],
                      labels=[f"t = {i / (count - 1):.3g}" for i in range(count)] * len(fa), row_length=count)
    note_if_bare(output, out)
    save_features(output, out)
