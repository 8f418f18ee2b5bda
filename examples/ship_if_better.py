"""Copy a model over the shipped one for its feature only when its stored validation error is lower.

    python examples/ship_if_better.py MODEL.safetensors
    python examples/ship_if_better.py MODEL.safetensors --val VAL_DIR   # score both again first

A feature with no shipped model yet gets this one (it needs an evaluation all the same). Both files
must carry an ``evaluation`` in their metadata (`featinv train --val` stores it; the shipped
ones carry theirs) made with the same protocol on the same photos; the new file must be under 20 MB.
With ``--val`` both are scored again on VAL_DIR by this checkout's code and their stored evaluations
replaced first: for a model trained by an older checkout (a background run from a worktree) when the
features have changed since (the evaluation is what the file scores today).
Prints the two errors and what it did; exit status 0 either way, 2 when the files cannot be compared.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from featinv_cli.features import from_metadata
    from featinv_cli.inverter import shipped_path
    from featinv_cli.safetensors_codec import json_field, read_metadata

    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--val", help="score both files again on this folder first")
    args = ap.parse_args()
    val, new = args.val, args.model
    meta = read_metadata(new)
    shipped = shipped_path(from_metadata(meta["feature"], json_field(meta, "params", str(new), {})))
    if val:
        from featinv_cli.evaluate import baseline_mean, evaluation_record
        from featinv_cli.formats.model import store_evaluation

        train_dir = Path(val).parent / "train"
        mean = baseline_mean(str(train_dir), 128) if train_dir.is_dir() else None
        for path in (new, shipped) if shipped.exists() else (new,):
            store_evaluation(path, evaluation_record(path, val, mean))
    if new.stat().st_size > 20 * 2 ** 20:
        print(f"{new}: {new.stat().st_size / 2**20:.1f} MB, over the 20 MB a shipped model may take")
        sys.exit(2)
    mine = json_field(read_metadata(new), "evaluation", str(new))
    if not shipped.exists():  # the first model for this feature: it needs its evaluation, nothing to beat
        if not mine:
            print(f"{new}: no evaluation in its metadata; train with --val, or give --val here")
            sys.exit(2)
        shutil.copyfile(new, shipped)
        print(f"shipped {new} as {shipped.name}, the first model for {meta['feature']}: validation error "
              f"{mine['normalized_error']:.4f}")
        return
    theirs = json_field(read_metadata(shipped), "evaluation", str(shipped))
    if not mine or not theirs or (mine["on"], mine["images"], mine["protocol"]) != \
            (theirs["on"], theirs["images"], theirs["protocol"]):
        print(f"{new}: no evaluation comparable with {shipped.name}'s; train with --val on the same photos")
        sys.exit(2)
    a, b = mine["normalized_error"], theirs["normalized_error"]
    if a < b:
        shutil.copyfile(new, shipped)
        print(f"shipped {new} as {shipped.name}: validation error {a:.4f} (was {b:.4f})")
    else:
        print(f"kept {shipped.name}: {new} scores {a:.4f}, the shipped model {b:.4f}")


if __name__ == "__main__":
    main()
