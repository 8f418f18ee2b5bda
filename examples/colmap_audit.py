"""A privacy audit of a COLMAP database, end to end, on photos featinv never saw.

    python examples/colmap_audit.py --photos ../shared/data/imagenet-sample/val --out out/audit

1. Each photo's evaluation view (shorter side 128, centre crop 128, as the README's table) is written
   as a PNG under OUT/photos/, and pycolmap makes OUT/database.db from them with COLMAP's defaults
   (needs the extra: pip install 'featinv[colmap]').
2. The audit itself is the README's three commands, run as a user would:
       featinv extract colmap-sift OUT/database.db -o OUT/feats/
       featinv invert OUT/feats/*.safetensors -o OUT/leaked/ [-m MODEL]
       featinv score OUT/leaked/ -r OUT/photos/ --json
   and, for comparison, the same features read by OpenCV's SIFT model (--sift-model): what converting
   the database by hand gives.
3. OUT/audit.json (the mean scores; README's table is made from it: copy it to
   docs/figures/colmap-audit.json and run bench/readme.py) and OUT/audit.png (photos over their reconstructions, labelled).

--full-size makes the database from the photos as they are (what an auditor is given) and reads it two
ways: `extract --resize 128 --crop 128` (the photos' view) and at its size, each scored on the 128-px
view (`score --resize 128 --crop 128`); docs/figures/colmap-fullsize.json is its audit.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FEATINV = [sys.executable, "-m", "featinv_cli"]


def featinv(*args) -> str:
    r = subprocess.run([*FEATINV, *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"featinv {' '.join(map(str, args))}: {r.stderr.strip()}")
    return r.stdout


def make_database(photos: Path, out: Path, full_size: bool) -> None:
    from featinv_cli.evaluate import evaluation_views
    from featinv_cli.extraction import per_file_names
    from featinv_cli.arguments import list_images, source_names
    from featinv_cli.formats.png import write_image

    files = list_images(photos)
    shutil.rmtree(out / "photos", ignore_errors=True)
    shutil.rmtree(out / "views", ignore_errors=True)
    # Class folders kept and equal names numbered, as extract -o DIR/ names them: no photo lost to another.
    names = per_file_names(source_names(files, [photos]))
    for name, f, v in zip(names, files, evaluation_views(photos, 128)):
        (out / "photos" / name).parent.mkdir(parents=True, exist_ok=True)
        if full_size:  # the photo as it is; its view beside, for the figure
            shutil.copyfile(f, out / "photos" / f"{name}{f.suffix}")
            (out / "views" / name).parent.mkdir(parents=True, exist_ok=True)
            write_image(out / "views" / f"{name}.png", v)
        else:
            write_image(out / "photos" / f"{name}.png", v)
    (out / "database.db").unlink(missing_ok=True)
    # Imported after the PNGs are written: pycolmap 4.x imported before Pillow encodes one crashes the
    # process here (a double free in zlib's deflateEnd).
    import pycolmap

    pycolmap.logging.minloglevel = 2
    pycolmap.extract_features(out / "database.db", out / "photos", device=pycolmap.Device.cpu)  # COLMAP's defaults


def hand_conversion(feats: list[Path], root: Path, model: Path, out: Path) -> None:
    """The same grids through OpenCV's SIFT model, which `featinv invert` refuses (another feature):
    what a user converting the database by hand would get."""
    import torch

    from featinv_cli.formats.features import load_features
    from featinv_cli.formats.png import write_image
    from featinv_cli.inverter import Inverter

    inverter = Inverter(model)
    for f in feats:
        ff = load_features(f)
        target = out / f.relative_to(root).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            write_image(target, inverter(ff.features, tuple(ff.image_size))[0])


def figure(out: Path, names: list[str], rows: dict[str, Path], scores: dict[str, dict], n: int) -> None:
    import imageio.v3 as iio

    from featinv_cli.grid import labelled_grid
    from featinv_cli.formats.png import write_image

    tiles, labels = [], []
    for label, folder in rows.items():
        tiles.append([np.asarray(iio.imread(folder / name))[..., :3] for name in names[:n]])
        e = scores.get(label)
        labels.append(label if e is None else f"{label}: normalized error {e['mean']['normalized_error']:.2f}")
    write_image(out / "audit.png", labelled_grid(tiles, row_labels=labels, col_labels=names[:n]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", default=str(ROOT.parent / "shared" / "data" / "imagenet-sample" / "val"))
    p.add_argument("--out", default="out/audit")
    p.add_argument("-m", "--model", default=None, help="colmap-sift model (default: the shipped one)")
    p.add_argument("--sift-model", default=str(ROOT / "featinv_cli" / "assets" / "sift.safetensors"),
                   help="OpenCV-SIFT model to read the same grids with (the hand conversion); '' to skip")
    p.add_argument("--baseline-mean", default=None, help="also score predicting the mean image of this folder "
                   "(default: train/ beside the photos' folder, when there is one)")
    p.add_argument("--figure-images", type=int, default=6)
    p.add_argument("--full-size", action="store_true", help="database of the photos as they are, read at the "
                   "128-px view (extract --resize 128 --crop 128) and at its size")
    args = p.parse_args()
    out = Path(args.out).resolve()
    if args.baseline_mean is None and (Path(args.photos).parent / "train").is_dir():
        args.baseline_mean = str(Path(args.photos).parent / "train")
    for name in ("photos", "model", "sift_model", "baseline_mean"):  # featinv runs from the repository root
        if getattr(args, name):
            setattr(args, name, str(Path(getattr(args, name)).resolve()))
    make_database(Path(args.photos), out, args.full_size)
    for d in ("feats", "leaked", "leaked-sift", "feats-full", "leaked-full"):
        shutil.rmtree(out / d, ignore_errors=True)
    view = ["--resize", "128", "--crop", "128"] if args.full_size else []
    featinv("extract", "colmap-sift", out / "database.db", *view, "-o", f"{out / 'feats'}/", "-q")
    feats = sorted((out / "feats").rglob("*.safetensors"))
    model = ["-m", args.model] if args.model else []
    featinv("invert", f"{out / 'feats'}/", *model, "-o", f"{out / 'leaked'}/", "-q")
    baseline = ["--baseline-mean", args.baseline_mean] if args.baseline_mean else []
    first = json.loads(featinv("score", f"{out / 'leaked'}/", "-r", f"{out / 'photos'}/", *view, *baseline,
                               "--json", "-q"))
    label = "colmap-sift model, `--resize 128 --crop 128`" if args.full_size else "colmap-sift model"
    scores = {label: first}
    rows = {"photo": out / ("views" if args.full_size else "photos"), label: out / "leaked"}
    if args.full_size:  # the same database read at its size; scored on the view of each reconstruction
        featinv("extract", "colmap-sift", out / "database.db", "-o", f"{out / 'feats-full'}/", "-q")
        featinv("invert", f"{out / 'feats-full'}/", *model, "-o", f"{out / 'leaked-full'}/", "-q")
        scores["colmap-sift model, at its size (`score` takes each reconstruction's view)"] = json.loads(featinv(
            "score", f"{out / 'leaked-full'}/", "-r", f"{out / 'photos'}/", *view, "--json", "-q"))
    elif args.sift_model:
        hand_conversion(feats, out / "feats", Path(args.sift_model), out / "leaked-sift")
        scores["OpenCV-SIFT model"] = json.loads(featinv("score", f"{out / 'leaked-sift'}/", "-r",
                                                         f"{out / 'photos'}/", "--json", "-q"))
        rows["OpenCV-SIFT model"] = out / "leaked-sift"
    record = {"photos": Path(args.photos).name, "images": len(feats), "database": "full-size photos, read with "
              "extract --resize 128 --crop 128" if args.full_size else "128-px views",
              "scores": {label: {"mean": s["mean"]} for label, s in scores.items()}}
    if "baseline_mean" in first:
        record["baseline_mean_error"] = first["baseline_mean"]["normalized_error"]
    (out / "audit.json").write_text(json.dumps(record, indent=1))
    names = sorted(p.relative_to(out / "leaked").as_posix() for p in (out / "leaked").rglob("*.png"))
    figure(out, names, rows, scores, args.figure_images)
    for label, s in scores.items():
        print(f"{label}: {json.dumps(s['mean'])}")
    print(f"wrote {out / 'audit.json'} and {out / 'audit.png'}")


if __name__ == "__main__":
    main()
