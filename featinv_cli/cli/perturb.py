"""featinv perturb: change feature vectors the ways of paper §4.3-4.4, in the order given."""
from __future__ import annotations

import math
from typing import List, Optional

import typer

from ..errors import FeatinvError, UsageError, note


def _operations(ctx: typer.Context) -> list[tuple[str, object]]:
    """The operations given, in the order they were typed: click fills ctx.params in the order it
    processes options, which is command-line order for the options given."""
    from ..analysis import KEYPOINT_PERTURBATIONS, PERTURBATIONS

    ops = []
    for name, v in ctx.params.items():
        if (name not in PERTURBATIONS and name not in KEYPOINT_PERTURBATIONS) or v is None or v is False or v in ([], ()):  # 0 is a value (--scale 0)
            continue
        if isinstance(v, (list, tuple)):  # valued options collect repeats, so that a repeat can be refused
            if len(v) > 1:
                raise UsageError(f"--{name.replace('_', '-')} given {len(v)} times: each operation once "
                                 f"(pipe perturb into perturb to apply one twice)")
            v = v[0]
        ops.append((name, v))
    if not ops:
        raise UsageError("give at least one operation: --binarize, --dropout P, --drop-least P, "
                         "--keep-top K, --zero-top K, --scale A, --keep-keypoints P or --quantize-descriptors B")
    for name, v in ops:
        if name in ("dropout", "drop_least") and not 0 <= v < 1:
            raise UsageError(f"--{name.replace('_', '-')} {v}: give a fraction in [0, 1)")
        if name == "scale" and not math.isfinite(v):
            raise UsageError(f"--scale {v}: give a finite number")
        if name == "keep_keypoints" and not 0 < v <= 1:
            raise UsageError(f"--keep-keypoints {v}: give a fraction in (0, 1]")
        if name == "quantize_descriptors" and not 1 <= v <= 8:
            raise UsageError(f"--quantize-descriptors {v}: give a number of bits from 1 to 8")
    names = [n for n, _ in ops]
    first_on_grid = next((i for i, n in enumerate(names) if n not in KEYPOINT_PERTURBATIONS), len(names))
    if any(n in KEYPOINT_PERTURBATIONS for n in names[first_on_grid:]):
        # the keypoint operations make the grid again from the raw keypoints: what came before is lost
        raise UsageError("--keep-keypoints and --quantize-descriptors act on the raw keypoints and make the grid "
                         "again; give them before the operations on the grid")
    if "binarize" in names and "drop_least" in names and names.index("binarize") < names.index("drop_least"):
        # after binarize every non-zero entry has one magnitude: "the least" would be whichever comes first
        raise UsageError("--drop-least after --binarize: binarized entries all have one magnitude, so none is "
                         "least; give --drop-least first (the paper's order: --drop-least P --binarize)")
    return ops


def _check_sizes(ops: list[tuple[str, object]], size: int) -> None:
    """The options that count entries, against the vector size."""
    for name, v in ops:
        if name in ("keep_top", "zero_top") and not 0 < v <= size:
            raise UsageError(f"--{name.replace('_', '-')} {v}: K must be between 1 and the vector size ({size})")
        if name == "dropout" and round(v * size) == size:
            raise UsageError(f"--dropout {v:g} zeroes all {size} entries of each vector (round(P x {size}) = {size}), "
                             f"and no norm can be restored; give a smaller P")


def defend_keypoints(ff, name: str, ops: list[tuple[str, object]], seed: int) -> tuple[dict, list[str]]:
    """The keypoint-level operations on a sift or colmap-sift file's raw arrays, then its grid made again
    from what they left: (the raw arrays left, a caption per operation). Each image's keypoints are
    chosen by its source name, so an image keeps the same ones in any file (analysis.row_seed)."""
    from ..analysis import KEYPOINT_PERTURBATIONS
    from ..features import resolve

    extractor, size = resolve(ff, name)
    flags = ", ".join("--" + n.replace("_", "-") for n, _ in ops)
    if not extractor.keypoint_grid:
        raise UsageError(f"{flags}: for keypoint features (sift, colmap-sift); {name} holds {extractor.spec}")
    if not {"keypoints", "descriptors", "counts"} <= ff.extra.keys():
        raise FeatinvError(f"{name}: holds no raw keypoints (extracted with --no-raw, or perturbed on its grid "
                           f"before), which {flags} act{'s' if len(ops) == 1 else ''} on; extract it again "
                           f"without --no-raw")
    raw = {k: ff.extra[k] for k in ("keypoints", "descriptors", "counts")}
    keys = ff.sources if len(ff.sources) == len(ff) else [str(i) for i in range(len(ff))]
    labels = []
    for op, value in ops:
        fn, label = KEYPOINT_PERTURBATIONS[op]
        raw = fn(raw, value, seed, keys)
        labels.append(label(value))
    ff.features = extractor.grid(raw, *size)
    return raw, labels


def perturb(
    ctx: typer.Context,
    features: str = typer.Argument(..., help="Feature file (.safetensors or .npy), or - for stdin."),
    output: str = typer.Option(..., "--output", "-o", help="Feature file to write, or - for stdout."),
    binarize: bool = typer.Option(False, "--binarize",
                                  help="Keep signs; one magnitude for all non-zero entries, norm unchanged."),
    dropout: Optional[List[float]] = typer.Option(None, "--dropout", metavar="P",
                                            help="Zero a random fraction P of entries; rescale to the same norm."),
    drop_least: Optional[List[float]] = typer.Option(None, "--drop-least",
                                               metavar="P",
                                               help="Zero the fraction P of non-zero entries with the smallest "
                                                    "magnitude."),
    keep_top: Optional[List[int]] = typer.Option(None, "--keep-top", metavar="K",
                                           help="Keep only the K largest activations."),
    zero_top: Optional[List[int]] = typer.Option(None, "--zero-top", metavar="K",
                                           help="Zero the K largest activations."),
    scale: Optional[List[float]] = typer.Option(None, "--scale", metavar="A",
                                          help="Multiply by A."),
    keep_keypoints: Optional[List[float]] = typer.Option(None, "--keep-keypoints", metavar="P",
                                                         help="sift, colmap-sift: keep a random fraction P of "
                                                              "each image's keypoints (whole: descriptor and "
                                                              "geometry) and grid them again; 1 keeps all."),
    quantize_descriptors: Optional[List[int]] = typer.Option(None, "--quantize-descriptors", metavar="B",
                                                             help="sift, colmap-sift: keep B bits (1-8) of each "
                                                                  "descriptor entry and grid them again."),
    seed: int = typer.Option(0, "--seed", help="Seed of --dropout and --keep-keypoints."),
):
    """Perturb feature vectors (each row on its own), applying the operations in the order given.

    Each operation once (pipe perturb into perturb to apply one twice; a repeat is refused).

    The output keeps the input's metadata (but not SIFT's raw keypoints and descriptors, which would
    give the unperturbed image away) and records what was done (featinv info shows it; invert adds it
    to each tile's caption). --drop-least goes before --binarize, as in the paper.

    --keep-keypoints and --quantize-descriptors are the defences of a stored SfM map: they act on
    the raw keypoints a sift or colmap-sift file keeps (not on the grid), go before any operation on
    the grid, and the output keeps the raw arrays they leave (the defended database's).

    \b
    Examples:
      featinv perturb fc6.safetensors --dropout 0.5 -o fc6-drop.safetensors
      featinv perturb fc6.safetensors --drop-least 0.5 --binarize -o fc6-bin.safetensors
      featinv extract hog img.jpg -o - | featinv perturb - --dropout 0.5 -o - | featinv invert - -o out.png
      featinv perturb db.safetensors --keep-keypoints 0.25 --quantize-descriptors 4 -o defended.safetensors
    """
    from ..analysis import KEYPOINT_PERTURBATIONS, perturb as apply
    from ..outputs import Output
    from ..formats.features import FEATURE_FILE, all_finite, load_features, note_if_bare, save_features

    ops = _operations(ctx)
    Output(output, FEATURE_FILE, inputs=[features])
    ff = load_features(features)
    _check_sizes(ops, ff.features[0].numel())
    was_zero = int((~ff.features.flatten(1).ne(0).any(1)).sum())
    on_keypoints = [op for op in ops if op[0] in KEYPOINT_PERTURBATIONS]
    raw, labels = defend_keypoints(ff, features, on_keypoints, seed) if on_keypoints else ({}, [])
    ff.features, on_grid = apply(ff.features, ops[len(on_keypoints):], seed)
    labels += on_grid
    now_zero = int((~ff.features.flatten(1).ne(0).any(1)).sum())
    if now_zero > was_zero:  # --scale -1 --keep-top K keeps K zeros; invert would draw a flat grey
        note(f"{now_zero - was_zero} of {len(ff)} vectors are all zeros after {', '.join(labels)}")
    if not all_finite(ff.features):
        raise FeatinvError(f"{features}: the result holds values beyond float32's range (--scale too large?); "
                           f"nothing written")
    label = ", ".join(labels)
    seeded = any(n in ("dropout", "keep_keypoints") for n, _ in ops)
    ff.history = ff.history + [label + (f" (seed {seed})" if seeded else "")]
    # Each row keeps what it was ("t = 0.25" of an interpolation) and adds what was done to it.
    ff.labels = [f"{old}, {label}" for old in ff.labels] if len(ff.labels) == len(ff) else [label] * len(ff)
    # SIFT's raw keypoints and descriptors describe the unperturbed image: a "degraded" file must not
    # carry them along (interpolate and sample write none either). Those a keypoint defence left are the
    # defended map's, and stay while nothing was done to the grid after it.
    ff.extra = raw if len(on_keypoints) == len(ops) else {}
    note_if_bare(output, ff)
    save_features(output, ff)
