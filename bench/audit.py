"""How long `featinv audit` takes, and how much memory it holds, on a COLMAP database of many images.

    python bench/audit.py --photos ../shared/data/photos/train -n 1000 --side 160 --work /tmp/audit-bench

Takes the first N photos (sorted), writes each one's centre square of SIDE pixels (after resizing the
shorter side to SIDE) as a PNG, has pycolmap make database.db from them (COLMAP's defaults; the colmap
extra), then times `featinv audit database.db -r views/ -o report/` in a fresh process without the
defence sweep (--keep 1) and with the default sweep (four inversions per image), reading each run's
peak resident memory (the child's maximum RSS). Prints a Markdown table and writes --json (with date,
machine, load average and the commands).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_views(photos: Path, n: int, side: int, work: Path) -> Path:
    from featinv_cli.data import eval_view
    from featinv_cli.arguments import list_images
    from featinv_cli.formats.png import write_image
    from featinv_cli.images import read_image

    views = work / "views"
    if views.is_dir() and len(list(views.glob("*.png"))) == n:
        return views
    views.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(list_images(photos)[:n]):
        write_image(views / f"{i:05d}_{f.stem}.png", eval_view(read_image(f), side))
    return views


def make_database(views: Path, work: Path) -> Path:
    db = work / "database.db"
    if not db.exists():  # pycolmap in its own process: imported beside Pillow's zlib, it crashes here
        code = ("import sys, pycolmap; pycolmap.logging.minloglevel = 2; "
                "pycolmap.extract_features(sys.argv[1], sys.argv[2], device=pycolmap.Device.cpu)")
        subprocess.run([sys.executable, "-c", code, str(db), str(views)], check=True)
    return db


def timed(args: list[str]) -> dict:
    """Wall time and the child's peak RSS of one `featinv` run (RUSAGE_CHILDREN's maximum: run each in a
    fresh `python bench/audit.py` only after the views and database exist, or it includes pycolmap's)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "featinv_cli", *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak / 1024) if peak > before else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", default=str(ROOT.parent / "shared" / "data" / "photos" / "train"))
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--side", type=int, default=160)
    p.add_argument("--work", default="/tmp/featinv-audit-bench")
    p.add_argument("--json", default=str(ROOT / "bench" / "audit.json"))
    p.add_argument("--sweep", default="1,0.5,0.25,0.1")
    args = p.parse_args()
    work = Path(args.work)
    views = make_views(Path(args.photos), args.n, args.side, work)
    db = make_database(views, work)
    runs = {}
    for label, keep in (("without the defence sweep", "1"), (f"with the sweep --keep {args.sweep}", args.sweep)):
        command = ["audit", str(db), "-r", f"{views}/", "-o", f"{work}/report/", "--keep", keep, "-q"]
        # each run in its own interpreter, so RUSAGE_CHILDREN's maximum is that run's alone
        r = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); "
                            f"import audit, json; print(json.dumps(audit.timed({command!r})))"],
                           check=True, capture_output=True, text=True, cwd=ROOT)
        runs[label] = dict(json.loads(r.stdout.strip().splitlines()[-1]), command="featinv " + " ".join(command))
    record = {"date": datetime.date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores", "load_before": os.getloadavg(), "images": args.n, "side": args.side,
              "runs": runs}
    Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    print(f"| {args.n} images of {args.side} px | seconds | images/s | peak memory (MB) |\n|---|---|---|---|")
    for label, r in runs.items():
        print(f"| {label} | {r['seconds']} | {args.n / r['seconds']:.1f} | {r['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
