"""Train the shipped inverters on one lent GPU in minutes: a driver of `featinv train`.

Two steps, because the GPU machine sees only what travels with the repository:

  python examples/gpu_models.py pack -d TRAIN_DIR... --val VAL_DIR -o .gpu/
      (here, on the CPU) `featinv pack`: the training photos as 160-px views stored as WebP
      (.gpu/train.safetensors, ~50 MB for 15,000 photos) and the validation photos as the README's
      evaluation views, raw (.gpu/val.safetensors).
  python examples/gpu_models.py train --pack .gpu/ --out DIR [--budget 420] [--quick] [--only NAME...]
                                [--width NAME=W...]
      (on the GPU machine) one `featinv train` process per model of MODELS, all at once, each for
      ``--budget`` seconds of wall time (`--minutes`), continuing the shipped model where one exists
      (`--init shipped`), with --val on the validation views. SIFT needs keypoints, which would make
      the pack too big to carry: when it has none, they are detected there first on every core
      (`featinv pack train.safetensors --sift sift --workers N`, ~25 ms a view and its mirror per
      core). DIR/summary.json holds each model's validation scores as `featinv train --val` printed
      them, read back from the model files.

``--quick`` runs the same commands on the CPU with a few seconds per model (a test of the driver
before GPU time is spent on it). Everything that trains is `featinv train`: this file only chooses
settings and runs processes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FEATINV = [sys.executable, "-m", "featinv_cli"]

# name -> (feature spec, architecture, width). Widths keep each float16 file under 16 MB (what a lent
# machine hands back per file) and all of them under 64 MB together; where they are wider than the
# shipped model's, its network is grown to them (train --init shipped --width).
MODELS = {
    "hog": ("hog", "skip", 0.38),
    "lbp": ("lbp", "skip", 0.65),
    "sift": ("sift", "skip", 0.2),
    "squeezenet-conv1": ("squeezenet:conv1", "paper", 0.5),
    "squeezenet-fire5": ("squeezenet:fire5", "paper", 0.5),
    "squeezenet-fire9": ("squeezenet:fire9", "paper", 0.5),
    "squeezenet-pool10": ("squeezenet:pool10", "paper", 0.35),
}


def megabytes(name: str, width: float) -> float:
    """Size of the model's float16 file at this width (what a lent machine may hand back: 16 MB a file)."""
    from featinv_cli.features import parse_spec
    from featinv_cli.models.registry import for_extractor

    spec, arch, _ = MODELS[name]
    net, _ = for_extractor(arch, parse_spec(spec), width=width)
    return sum(p.numel() for p in net.parameters()) * 2 / 2 ** 20


def run(cmd: list[str], **kw) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, **kw)


def pack(dirs: list[str], val: str, out: Path, quality: int, workers: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    run([*FEATINV, "pack", *dirs, "-o", str(out / "train.safetensors"), "--webp", str(quality),
         "--workers", str(workers)])
    run([*FEATINV, "pack", val, "--side", "128", "-o", str(out / "val.safetensors")])


def train_command(name: str, pack_dir: Path, out: Path, budget: float, device: str, batch: int,
                  width: float | None = None, data: Path | None = None) -> list[str]:
    """The `featinv train` command of one model: the shipped model continued (MODELS' width, or a larger
    ``width``: the shipped network grown to it, `train --init --width`); from scratch where no shipped
    model of that architecture exists or ``width`` is smaller than its."""
    from featinv_cli.features import parse_spec
    from featinv_cli.inverter import shipped_path

    spec, arch, default_width = MODELS[name]
    width = width or default_width
    shipped = shipped_path(parse_spec(spec))
    start = ["--init", "shipped", "--width", str(width)] if shipped.exists() and _grows(shipped, arch, width) \
        else ["--arch", arch, "--width", str(width)]
    return [*FEATINV, "train", spec, "-d", str(data or pack_dir / "train.safetensors"), "-o", str(out / f"{name}.safetensors"),
            *start, "--steps", str(10 ** 9), "--minutes", str(budget / 60), "--batch", str(batch),
            "--device", device, "--val", str(pack_dir / "val.safetensors"), "--log-every", "200"]


def _grows(model: Path, arch: str, width: float) -> bool:
    """Whether --init can start a run of ``arch`` at ``width`` from ``model`` (train's own rule: its
    network at the same width, or a narrower one grown, which fully connected networks cannot be)."""
    from featinv_cli.warmstart import file_network, init_refusal

    return not init_refusal(model, file_network(model), arch, width)


def train_all(pack_dir: Path, out: Path, budget: float, quick: bool, only: list[str] | None,
              widths: dict[str, float] | None = None) -> None:
    import torch

    from featinv_cli.evaluate import evaluate
    from featinv_cli.formats.views import load_views

    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() and not quick else "cpu"
    names = only or list(MODELS)
    cores = os.cpu_count() or 2
    sift_pack = pack_dir / "train.safetensors"
    if any(MODELS[n][0] == "sift" for n in names) and not load_views(sift_pack).sift:
        sift_pack = pack_dir / "train-sift.safetensors"  # detected here, once, before any training starts
        if not sift_pack.exists():
            run([*FEATINV, "pack", str(pack_dir / "train.safetensors"), "--sift", "sift", "--workers", str(cores),
                 "-o", str(sift_pack), "-q"])
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, cores // len(names))), PYTHONPATH=str(ROOT))
    t0, procs = time.perf_counter(), {}
    for name in names:
        cmd = train_command(name, pack_dir, out, budget, device, 4 if quick else 64, (widths or {}).get(name),
                            sift_pack if MODELS[name][0] == "sift" else None)
        print("$", " ".join(cmd), flush=True)
        procs[name] = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True)
    summary = {}
    for name, p in procs.items():
        text, _ = p.communicate()
        sys.stdout.write("".join(f"[{name}] {line}\n" for line in text.splitlines()))
        path = out / f"{name}.safetensors"
        if p.returncode or not path.exists():
            summary[name] = {"failed": p.returncode}
            continue
        from featinv_cli.formats.model import load_model

        t = load_model(path).train
        score = evaluate(path, pack_dir / "val.safetensors")
        summary[name] = {**{k: round(v, 4) for k, v in score.items() if isinstance(v, float)},
                         "steps": t["steps_done"], "seconds": t["seconds"], "images_per_second": t["images_per_second"],
                         "megabytes": round(path.stat().st_size / 2 ** 20, 2)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"total {time.perf_counter() - t0:.0f} s")
    if any("failed" in s for s in summary.values()):
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="pack training photos and validation views for the GPU machine")
    p.add_argument("-d", "--data", nargs="+", required=True)
    p.add_argument("--val", required=True)
    p.add_argument("-o", "--output", required=True, type=Path, help="folder for train.safetensors, val.safetensors")
    p.add_argument("--quality", type=int, default=75)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    t = sub.add_parser("train", help="train every model at once on the GPU (or --quick on the CPU)")
    t.add_argument("--pack", required=True, type=Path, help="the folder `pack` wrote")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--budget", type=float, default=420.0, help="seconds of training per model (wall time)")
    t.add_argument("--quick", action="store_true", help="CPU, a few seconds per model: a test of the driver")
    t.add_argument("--only", nargs="+", choices=list(MODELS))
    t.add_argument("--width", nargs="+", default=[], metavar="NAME=W",
                   help="another width for these models (the shipped network grown to it when "
                        "wider, else from scratch), e.g. lbp=0.5 sift=0.125 (at most 16 MB a file: "
                        "hog 0.38, lbp 0.7, sift 0.2)")
    args = ap.parse_args()
    # featinv runs in the repository root (cwd=ROOT): paths given relative to where this was started
    # (make -C examples gives ../../shared/...) are made absolute first.
    if args.cmd == "pack":
        pack([str(Path(d).resolve()) for d in args.data], str(Path(args.val).resolve()), args.output.resolve(),
             args.quality, args.workers)
    else:
        widths = {}
        for item in getattr(args, "width", []):
            name, _, value = item.partition("=")
            if name not in MODELS or not value:
                ap.error(f"--width {item}: give NAME=W with NAME one of {', '.join(MODELS)}")
            widths[name] = float(value)
            size = megabytes(name, widths[name])
            if size > 16:
                ap.error(f"--width {item}: a {size:.1f} MB model file, over the 16 MB a lent machine hands back "
                         f"(and a shipped model's 20 MB)")
        train_all(args.pack.resolve(), args.out.resolve(), 3.0 if args.quick else args.budget, args.quick, args.only,
                  widths)


if __name__ == "__main__":
    main()
