"""featinv audit: from a COLMAP database, feature files or photos to a report of what the features leak."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import FeatinvError, UsageError, note
from ..settings import resolve_device
from ..threads import Threads
from .common import DEVICE, QUIET, THREADS, out, stages

CHUNK = 16  # images extracted, inverted and scored together; memory holds one chunk's reconstructions


def parse_keep(text: str) -> list[float]:
    """'1,0.5,0.25,0.1' -> fractions in (0, 1], 1 always among them (the undefended row)."""
    try:
        keep = sorted({float(v) for v in text.split(",") if v.strip()} | {1.0}, reverse=True)
    except ValueError:
        raise UsageError(f"--keep {text!r}: write fractions separated by commas, e.g. 1,0.5,0.25,0.1") from None
    if not all(0 < k <= 1 for k in keep):
        raise UsageError(f"--keep {text!r}: each fraction must be in (0, 1]")
    return keep


def check_report_folder(output: str) -> Path:
    """-o DIR, before any work: a folder that can be made, whose report files (if an earlier run left
    them) featinv wrote; the images inside are checked as they are written."""
    from ..formats.png import PNG_FILE
    from ..outputs import Output, check_replaceable
    from ..report import REPORT_FILE

    root = Output(output, REPORT_FILE, takes="folder").path
    for name in ("audit.json", "index.html"):
        check_replaceable(root / name, REPORT_FILE, "give -o another folder")
    check_replaceable(root / "defence.png", PNG_FILE, "give -o another folder")
    return root


def open_source(sources: list[str], feature: Optional[str], resize, crop):
    """(what the items are, their count or None, an iterator of audit.Items, the photos when the sources
    are photos) for a COLMAP database, feature files (folders walked) or photos with --feature."""
    from ..audit import database_items, feature_items, photo_items
    from ..features.colmap import is_database
    from ..formats.features import FEATURE_SUFFIXES
    from ..arguments import expand_image_args
    from ..formats.base import IMAGE_SUFFIXES

    if any(is_database(s) for s in sources):
        if len(sources) != 1:
            raise UsageError("audit one COLMAP database at a time (give nothing else beside it)")
        return (*database_items(sources[0], feature or "colmap-sift", resize, crop), None)
    if "-" in sources:  # read twice (checked before any work, then inverted): a pipe is read once
        raise UsageError("audit reads files, not stdin: write the features to a file first (extract -o FILE)")
    missing = [s for s in sources if not Path(s).exists()]
    if missing:
        raise FeatinvError(f"{missing[0]}: no such file or folder")
    is_photo = lambda p: p.suffix.lower() in IMAGE_SUFFIXES  # noqa: E731
    photos = any(is_photo(Path(s)) or (Path(s).is_dir() and not any(
        f.suffix.lower() in FEATURE_SUFFIXES for f in Path(s).rglob("*"))) for s in sources)
    if not photos:
        if resize or crop:
            raise UsageError("--resize/--crop prepare photos or a database; feature files say how their images were "
                             "prepared, and their references are prepared the same way")
        return (*feature_items(sources, feature), None)
    if not feature:
        raise UsageError("photos need --feature SPEC: which features to audit (e.g. --feature sift)")
    files = expand_image_args(sources)
    return (*photo_items(files, sources, feature, resize, crop), files)


def audit(
    sources: List[str] = typer.Argument(..., metavar="SOURCE...", help="A COLMAP database.db, feature files or "
                                        "folders of them, or photos (files or folders) with --feature."),
    reference: Optional[List[str]] = typer.Option(None, "--reference", "-r", help="The photos the features came "
                                                  "from (files or folders; repeat the flag), paired by name as score "
                                                  "pairs them. Photos as SOURCE are their own references."),
    output: str = typer.Option(..., "--output", "-o", help="Report folder: index.html, audit.json, the "
                               "reconstructions (at each reference's size), the defence plot."),
    feature: Optional[str] = typer.Option(None, "--feature", help="Feature spec: of the photos (required for "
                                          "photos), or of bare .npy files."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Inverter model (default: the shipped one)."),
    keep: str = typer.Option("1,0.5,0.25,0.1", "--keep", metavar="P,P,...", help="sift, colmap-sift: the defence "
                             "sweep, fractions of each image's keypoints kept (seeded); 1 alone skips it."),
    resize: Optional[int] = typer.Option(None, min=1, help="Photos and databases: shorter side first (as extract "
                                         "--resize), and the references the same way."),
    crop: Optional[int] = typer.Option(None, min=1, help="... then the centre square of this size."),
    seed: int = typer.Option(0, "--seed", help="Seed of the keypoints each --keep fraction keeps."),
    method: str = typer.Option("learned", "--method", help="learned (the network), or refine (then gradient "
                               "steps where they were measured to help: CNN layers up to fire6; a stronger "
                               "attack, about 1 s an image more on 2 cores)."),
    device: str = DEVICE,
    threads: Optional[int] = THREADS,
    quiet: bool = QUIET,
):
    """Audit what features leak: invert them, score the reconstructions against the photos, and write
    a report a person can act on.

    For each image: extract (a database's stored SIFT, or --feature of photos), invert with the
    shipped model (or -m), write the reconstruction at its photo's size, and score it: the paper's
    normalized error, PSNR, SSIM, and whether SqueezeNet recognises it (top-1, top-5; see featinv
    score --help). For sift and colmap-sift, the defence sweep inverts each image again keeping
    each --keep fraction of its keypoints. Images are streamed: memory does not grow with their number.

    OUT/index.html (one page, nothing fetched from the network: open it from disk) starts with a
    verdict, then the defence plot and a table of every image, most leaking first; OUT/audit.json
    holds every number it shows, the command and the versions. The numbers are a lower bound on what
    leaks: a better-trained inverter recovers more.

    \b
    Examples:
      featinv audit reconstruction/database.db -r photos/ -o report/
      featinv audit database.db -r photos/ --resize 128 --crop 128 -o report/   # full-size photos
      featinv audit photos/ --feature hog -o report/                             # photos, their own references
      featinv audit feats/ -r photos/ -o report/ --keep 1,0.3                    # feature files
    """
    from ..audit import Auditor
    from ..arguments import expand_image_args

    keeps = parse_keep(keep)
    root = check_report_folder(output)
    device = resolve_device(device)
    Threads(threads)
    if model is not None and not model.is_file():
        raise FeatinvError(f"-m {model}: no such model file")
    total, items, photos = open_source(list(sources), feature, resize, crop)
    refs = (expand_image_args(reference), list(reference)) if reference else (photos or [], list(sources))
    if method not in ("learned", "refine"):
        raise UsageError(f"--method {method!r}: choose learned or refine")
    auditor = Auditor(root, {}, keeps, seed, str(model) if model else None, device, method)
    lacking: list[str] = []
    with stages({"audit": total, **({"defence": total} if len(keeps) > 1 else {})}, quiet) as bars:
        chunk: list = []
        for item in items:
            chunk.append(item)
            if len(chunk) == CHUNK:
                lacking += run_chunk(auditor, chunk, refs, bars)
                chunk = []
        if chunk:
            lacking += run_chunk(auditor, chunk, refs, bars)
    if not auditor.rows:
        raise FeatinvError(f"{', '.join(sources)}: nothing to audit")
    if refs[0] and lacking:
        note(f"no reference for {len(lacking)} of {len(auditor.rows)} images ({', '.join(lacking[:3])}"
             f"{', ...' if len(lacking) > 3 else ''}): their reconstructions are in the report, without scores")
    record = write_report(root, auditor, list(sources), feature, keeps, seed)
    out.print(record["summary"]["verdict"])
    out.print(f"report: {root / 'index.html'}")


def run_chunk(auditor, chunk: list, refs: tuple[list, list], bars) -> list[str]:
    """Pair a chunk's images with their references, then invert, write and score them, and sweep the
    defence; returns the names that have no reference."""
    from ..audit import pair_references

    names = [i.name for i in chunk]
    if refs[0]:
        auditor.references.update(pair_references(names, *refs))
    found = auditor.add(chunk)
    bars["audit"].advance(len(chunk))
    if "defence" in bars:
        auditor.defend(chunk, found)
        bars["defence"].advance(len(chunk))
    return [n for n in names if n not in auditor.references]


def model_record(path: Path) -> dict:
    """A model the audit used, for its provenance: name, digest, and its own held-out error."""
    import hashlib
    import json

    from ..inverter import ASSETS
    from ..safetensors_codec import read_metadata

    evaluation = json.loads(read_metadata(path).get("evaluation", "{}") or "{}")
    shipped = path.resolve().parent == ASSETS.resolve()
    return {"file": f"shipped {path.name}" if shipped else str(path),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "held_out_error": evaluation.get("normalized_error"),
            "held_out_images": evaluation.get("images")}


def method_record(auditor) -> str:
    """How the reconstructions were made, for the provenance: learned, or refined and how far."""
    steps = {spec: n for spec, n in auditor.refined.items() if n}
    if auditor.method != "refine":
        return "learned"
    return ("learned, then refined: " + ", ".join(f"{spec} {n} steps" for spec, n in steps.items()) if steps else
            "learned (refine asked for; it keeps the learned reconstruction of these features, where gradient "
            "steps did not lower the error)")


def write_report(root: Path, auditor, sources: list[str], feature, keeps, seed) -> dict:
    """audit.json, the defence plot and index.html from the rows the auditor gathered."""
    import datetime
    import json
    import shlex

    import torch

    from .. import __version__
    from ..audit import AUDIT_FORMAT, summary
    from ..files import atomic_write
    from ..inverter import ASSETS
    from ..outputs import make_folder
    from ..recognition import JUDGE
    from ..report import page, plot_defence
    from . import common

    norm, rows, defence = auditor.finish()
    spec = next(iter(auditor.inverters.values())).extractor.spec if auditor.inverters else feature
    record = {"format": AUDIT_FORMAT, "summary": summary(rows, norm, defence), "defence": defence,
              "plot": None, "images": rows,
              "provenance": {"command": "featinv " + shlex.join(common.argv), "featinv_version": __version__,
                             "torch_version": torch.__version__, "date": datetime.datetime.now().astimezone().isoformat(
                                 timespec="seconds"), "sources": sources, "feature": spec,
                             "method": method_record(auditor),
                             "judge": JUDGE, "seed": seed, "keep": keeps,
                             "models": [model_record(p) for p in auditor.inverters],
                             "shipped_hog_error": model_record(ASSETS / "hog.safetensors")["held_out_error"]}}
    make_folder(root)
    if defence:
        atomic_write(auditor.claim("defence.png"), plot_defence(defence))
        record["plot"] = "defence.png"
    atomic_write(root / "audit.json", (json.dumps(record, indent=1) + "\n").encode())
    atomic_write(root / "index.html", page(record).encode())
    return record
