"""featinv perturb: change feature vectors the ways of paper §4.3-4.4, in the order given."""
from __future__ import annotations

from typing import TYPE_CHECKING

from typing import Optional

import typer

from ..errors import UsageError

if TYPE_CHECKING:  # annotations only; imported where used, so --help stays fast
    import torch


def _record(name: str):
    """Option callback: remember the operation in command-line order (click processes options in the
    order they were typed, so the list comes out in the user's order)."""
    def callback(ctx: typer.Context, value):
        if value not in (None, False):
            ctx.meta.setdefault("featinv_ops", []).append((name, value))
        return value
    return callback


def _fraction(name: str, p: float) -> float:
    if not 0 <= p < 1:
        raise UsageError(f"--{name} {p}: give a fraction in [0, 1)")
    return p


def apply(ops: list[tuple[str, object]], features: torch.Tensor, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Apply operations in order; returns the features and a label per operation."""
    import torch
    from .. import analysis

    gen = torch.Generator().manual_seed(seed)
    size = features[0].numel()
    labels = []
    for name, value in ops:
        if name == "binarize":
            features = analysis.binarize(features)
            labels.append("binarize")
        elif name == "dropout":
            features = analysis.dropout(features, _fraction(name, value), gen)
            labels.append(f"dropout {value:g}")
        elif name == "drop-least":
            features = analysis.drop_least(features, _fraction(name, value))
            labels.append(f"drop-least {value:g}")
        elif name in ("keep-top", "zero-top"):
            if not 0 < value <= size:
                raise UsageError(f"--{name} {value}: K must be between 1 and the vector size ({size})")
            fn = analysis.keep_top if name == "keep-top" else analysis.zero_top
            features = fn(features, value)
            labels.append(f"{name} {value}")
        elif name == "scale":
            features = analysis.scale(features, value)
            labels.append(f"scale {value:g}")
    return features, labels


def perturb(
    ctx: typer.Context,
    features: str = typer.Argument(..., help="Feature file (.safetensors or .npy), or - for stdin."),
    output: str = typer.Option(..., "--output", "-o", help="Feature file to write, or - for stdout."),
    binarize: bool = typer.Option(False, "--binarize", callback=_record("binarize"),
                                  help="Keep signs; one magnitude for all non-zero entries, norm unchanged."),
    dropout: Optional[float] = typer.Option(None, "--dropout", callback=_record("dropout"), metavar="P",
                                            help="Zero a random fraction P of entries; rescale to the same norm."),
    drop_least: Optional[float] = typer.Option(None, "--drop-least", callback=_record("drop-least"),
                                               metavar="P",
                                               help="Zero the fraction P of non-zero entries with the smallest "
                                                    "magnitude."),
    keep_top: Optional[int] = typer.Option(None, "--keep-top", callback=_record("keep-top"), metavar="K",
                                           help="Keep only the K largest activations."),
    zero_top: Optional[int] = typer.Option(None, "--zero-top", callback=_record("zero-top"), metavar="K",
                                           help="Zero the K largest activations."),
    scale: Optional[float] = typer.Option(None, "--scale", callback=_record("scale"), metavar="A",
                                          help="Multiply by A."),
    seed: int = typer.Option(0, "--seed", help="Seed of --dropout."),
):
    """Perturb feature vectors (each row on its own), applying the operations in the order given.

    The output keeps the input's metadata and records what was done (featinv info shows it; invert
    uses it as the grid caption).

    \b
    Examples:
      featinv perturb fc6.safetensors --dropout 0.5 -o fc6-drop.safetensors
      featinv perturb fc6.safetensors --drop-least 0.5 --binarize -o fc6-bin.safetensors
      featinv extract hog img.jpg -o - | featinv perturb - --dropout 0.5 -o - | featinv invert - -o out.png
    """
    from ..io import check_not_input, load_features, save_features

    ops = ctx.meta.get("featinv_ops", [])
    if not ops:
        raise UsageError("give at least one operation: --binarize, --dropout P, --drop-least P, "
                         "--keep-top K, --zero-top K or --scale A")
    check_not_input(output, [features])
    ff = load_features(features)
    ff.features, labels = apply(ops, ff.features, seed)
    label = ", ".join(labels)
    ff.history = ff.history + [label + (f" (seed {seed})" if any(n == "dropout" for n, _ in ops) else "")]
    ff.labels = [label] * len(ff)
    save_features(output, ff)
