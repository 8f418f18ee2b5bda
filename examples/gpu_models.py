"""Train the shipped inverters on one GPU in minutes: the recipe for a lent machine.

Two steps, because the GPU machine sees only what travels with the repository:

  python examples/gpu_models.py pack -d TRAIN_DIR... --val VAL_DIR -o .gpu/pack.npz
      (here, on the CPU) every training photo as its evaluation view (shorter side 128, centre crop
      128) encoded as WebP, plus the validation views as raw pixels: ~45 MB for 15,000 photos.
  python examples/gpu_models.py train --pack .gpu/pack.npz --out DIR [--budget 420] [--quick]
      (on the GPU machine) decodes the photos once into GPU memory (16 processes), then trains every
      model of MODELS at once, one process each, for ``--budget`` seconds of wall time: random flips and
      zoom on the GPU, HOG/LBP/SqueezeNet features on the GPU, SIFT extracted once per photo and flip
      over the CPU cores; bf16 autocast, channels_last; learning rate constant, then a cosine decay
      over the last 40% of the budget. Each model is written in featinv's model format (float16) and
      scored on the validation views with the README's protocol; DIR/summary.json holds the scores.

``--quick`` runs the same code on the CPU with 96 photos and a few seconds per model (a test of the
recipe before GPU time is spent on it). Needs: torch, numpy, opencv, pillow (WebP), featinv's package.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> (feature spec, architecture, width). Widths keep each float16 file under 16 MB (what a lent
# machine hands back per file) and the seven under 64 MB together.
MODELS = {
    "hog": ("hog", "skip", 0.3),
    "lbp": ("lbp", "skip", 0.5),
    "sift": ("sift", "skip", 0.2),
    "squeezenet-conv1": ("squeezenet:conv1", "paper", 0.5),
    "squeezenet-fire5": ("squeezenet:fire5", "paper", 0.5),
    "squeezenet-fire9": ("squeezenet:fire9", "paper", 0.5),
    "squeezenet-pool10": ("squeezenet:pool10", "paper", 0.35),
}
SIDE = 128
MAX_ZOOM = 1.25  # crops cover 1/MAX_ZOOM .. 1 of the stored view (the stored view is the eval scale)


# ----------------------------------------------------------------------------------------- pack

def _view_webp(args: tuple[str, int]) -> bytes:
    import torch
    from PIL import Image

    from featinv_cli.data import eval_view
    from featinv_cli.io import read_image

    path, quality = args
    view = (eval_view(read_image(path), SIDE) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    out = io.BytesIO()
    Image.fromarray(view).save(out, "WEBP", quality=quality, method=6)
    return out.getvalue()


def pack(dirs: list[str], val: str, output: str, quality: int, limit: int | None) -> None:
    from multiprocessing import Pool

    import torch

    from featinv_cli.data import eval_view, fingerprint
    from featinv_cli.io import list_images, read_image

    files = list_images(*dirs)
    if limit:
        files = files[:: max(1, len(files) // limit)][:limit]
    with Pool(os.cpu_count()) as pool:
        blobs = pool.map(_view_webp, [(str(f), quality) for f in files], chunksize=64)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    val_views = torch.stack([eval_view(read_image(f), SIDE) for f in list_images(val)])
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, webp=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets,
             val=(val_views * 255).round().to(torch.uint8).numpy(),
             names=np.array([str(f.relative_to(f.parents[1])) for f in files]),
             fingerprint=np.array(fingerprint(files)))
    print(f"{output}: {len(files)} training views ({offsets[-1] / 2**20:.1f} MB WebP q{quality}), "
          f"{len(val_views)} validation views")


# ---------------------------------------------------------------------------------------- train

def _decode(blob: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))


def decode_pack(path: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 training views and (V, 3, H, W) uint8 validation views."""
    from multiprocessing import Pool

    z = np.load(path)
    data, off = z["webp"].tobytes(), z["offsets"]
    n = len(off) - 1 if not limit else min(limit, len(off) - 1)
    with Pool(os.cpu_count()) as pool:
        views = pool.map(_decode, [data[off[i]:off[i + 1]] for i in range(n)], chunksize=64)
    return np.stack(views), z["val"]


def _sift_raw(args):
    """SIFT of one uint8 (H, W, 3) view, optionally mirrored: (keypoints (K, 4), descriptors (K, 128))."""
    import torch

    from featinv_cli.features import parse_spec

    view, flip = args
    x = torch.from_numpy(np.ascontiguousarray(view[:, ::-1] if flip else view)).permute(2, 0, 1)[None].float() / 255
    raw = parse_spec("sift").detect(x)
    return raw["keypoints"].numpy(), raw["descriptors"].numpy()


def sift_grids(views: np.ndarray, device, workers: int):
    """Dense SIFT grids of every view and its mirror image: (2N, 133, 32, 32) float16 on ``device``;
    row 2i is view i, row 2i+1 its mirror."""
    from multiprocessing import Pool

    import torch

    from featinv_cli.features.sift import DESCRIPTOR_SCALE
    from featinv_cli.ops import grid_bin_reference

    jobs = [(v, flip) for v in views for flip in (False, True)]
    with Pool(workers) as pool:
        raws = pool.map(_sift_raw, jobs, chunksize=32)
    grids = []
    for start in range(0, len(raws), 512):
        part = raws[start:start + 512]
        kp = torch.from_numpy(np.concatenate([k for k, _ in part])).to(device)
        desc = torch.from_numpy(np.concatenate([d for _, d in part])).to(device) * DESCRIPTOR_SCALE
        counts = torch.tensor([len(k) for k, _ in part], device=device)
        grids.append(grid_bin_reference(kp, desc, counts, SIDE, SIDE, 4, 0).half())
    return torch.cat(grids)


def augment(x, generator):
    """Random zoom (crop of 1/MAX_ZOOM..1 of the view, resized back) and mirror, per image, on x's device.
    Returns the images and which were mirrored."""
    import torch
    from torch.nn import functional as F

    n = x.shape[0]
    s = 1.0 / (1.0 + (MAX_ZOOM - 1.0) * torch.rand(n, device=x.device, generator=generator))  # crop fraction
    tx = (1 - s) * (2 * torch.rand(n, device=x.device, generator=generator) - 1)
    ty = (1 - s) * (2 * torch.rand(n, device=x.device, generator=generator) - 1)
    flip = torch.rand(n, device=x.device, generator=generator) < 0.5
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = torch.where(flip, -s, s)
    theta[:, 1, 1] = s
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False), flip


def learning_rate(fraction: float, lr: float = 1e-3, decay_from: float = 0.6) -> float:
    """featinv train's schedule over wall time: constant, then its cosine to 1% over the last 40%."""
    from featinv_cli.train import cosine_to_one_percent

    if fraction < decay_from:
        return lr
    return cosine_to_one_percent(lr, min(1.0, (fraction - decay_from) / (1 - decay_from)))


def train_one(name: str, views_path: str, val_path: str, out: Path, budget: float, device_name: str,
              workers: int, batch: int) -> dict:
    import torch
    from torch.nn import functional as F

    from featinv_cli import __version__, metrics
    from featinv_cli.features import parse_spec
    from featinv_cli.inverter import Inverter
    from featinv_cli.io import ModelFile, save_model
    from featinv_cli.models import for_extractor

    torch.manual_seed(0)
    device = torch.device(device_name)
    spec, arch_name, width = MODELS[name]
    extractor = parse_spec(spec)
    views = torch.from_numpy(np.load(views_path)).permute(0, 3, 1, 2).contiguous().to(device)  # uint8
    mean = (views.double().mean(dim=(0, 2, 3)) / 255).float()
    sift = sift_grids(np.load(views_path), device, workers) if spec == "sift" else None
    gen = torch.Generator(device=device).manual_seed(0)

    def batch_of(n):
        idx = torch.randint(0, len(views), (n,), device=device, generator=gen)
        x = views[idx].float() / 255
        if sift is not None:  # stored SIFT: no zoom, mirror by picking the mirrored row
            flip = torch.rand(n, device=device, generator=gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            return x, sift[2 * idx + flip.long()].float()
        x, _ = augment(x, gen)
        with torch.no_grad():
            return x, extractor(x)

    scale = 1.0
    if spec.startswith("squeezenet"):  # CNN activations run to the hundreds: scale them to order one
        with torch.no_grad():
            scale = float(1.0 / batch_of(256)[1].float().std().clamp_min(1e-6))
    model, arch = for_extractor(arch_name, extractor, width=width, **({"input_scale": scale} if scale != 1.0 else {}))
    model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), fused=device.type == "cuda")
    bf16 = device.type == "cuda" or torch.backends.mkldnn.is_available()
    mean_px = mean.to(device).view(1, 3, 1, 1)
    ready = time.perf_counter()
    deadline, step, ema, last_print = ready + budget, 0, 0.0, ready
    while True:
        now = time.perf_counter()
        if now >= deadline:
            break
        for g in opt.param_groups:
            g["lr"] = learning_rate((now - ready) / max(1e-6, deadline - ready))
        x, feats = batch_of(batch)
        if feats.ndim == 4:
            feats = feats.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = model(feats)
        pred = pred.float()
        if pred.shape[-2:] != x.shape[-2:]:
            x = F.interpolate(x, size=pred.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
        loss = F.mse_loss(pred, x - mean_px)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # One bad batch can blow bf16 training up (seen: HOG, step ~6,000 of a GPU run); clipping keeps it.
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0 or step < 5:
            ema = loss.item() if ema == 0 else 0.9 * ema + 0.1 * loss.item()
        if time.perf_counter() - last_print > 60:
            last_print = time.perf_counter()
            print(f"[{name}] step {step} loss {ema:.4f} {step * batch / (last_print - ready):.0f} img/s", flush=True)
    elapsed = time.perf_counter() - ready
    path = out / f"{name}.safetensors"
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    meta = {"recipe": "examples/gpu_models.py", "device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else "cpu", "precision": "bf16" if bf16 else "fp32", "steps_done": step, "batch": batch,
            "seconds": round(elapsed, 1), "images_per_second": round(step * batch / max(elapsed, 1e-6), 1),
            "data_images": len(views), "augment": f"flip, zoom 1..{MAX_ZOOM}" if sift is None else "flip",
            "final_loss": ema, "lr": "1e-3, cosine to 1% over the last 40% of the budget", "clip_grad_norm": 1.0,
            "data": "training photos as evaluation views (shorter side 128, centre crop 128) stored as WebP",
            "data_fingerprint": (Path(views_path).parent / "fingerprint.txt").read_text()}
    save_model(path, ModelFile(state=state, feature=extractor.spec, params=extractor.params, arch=arch,
                               image_size=[SIDE, SIDE], normalization={"mean": mean.tolist(), "scale": 1.0},
                               train=meta, version=__version__), dtype=torch.float16)
    # Score the file as shipped (float16 weights) with the README's protocol.
    val = torch.from_numpy(np.load(val_path)).float() / 255
    inverter = Inverter(path, device_name)
    if sift is not None:
        feats = sift_grids(np.load(val_path).transpose(0, 2, 3, 1), device, workers)[0::2].float()
    else:
        feats = torch.cat([inverter.encode(c.to(device)) for c in val.split(50)])
    recon = inverter(feats, (SIDE, SIDE), batch=50)
    score = dict(metrics.score(recon, val)["mean"], steps=step, seconds=round(elapsed, 1),
                 images_per_second=meta["images_per_second"], megabytes=round(path.stat().st_size / 2**20, 2))
    print(f"[{name}] done: {json.dumps(score)}", flush=True)
    return score


def train_all(pack_path: str, out: Path, budget: float, quick: bool, only: list[str] | None) -> None:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() and not quick else "cpu"
    names = only or list(MODELS)
    t0 = time.perf_counter()
    views, val = decode_pack(pack_path, 96 if quick else None)
    if quick:
        val = val[:8]
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"featinv-gpu-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "views.npy", views)
    np.save(tmp / "val.npy", val)
    z = np.load(pack_path)
    (tmp / "fingerprint.txt").write_text(str(z["fingerprint"]) if "fingerprint" in z.files else "")
    print(f"decoded {len(views)} training views, {len(val)} val views in {time.perf_counter() - t0:.1f} s; "
          f"training {', '.join(names)} for {budget:.0f} s each on {device}", flush=True)
    cores = os.cpu_count() or 2
    procs = {}
    for name in names:
        cmd = [sys.executable, __file__, "one", name, str(tmp / "views.npy"), str(tmp / "val.npy"), str(out),
               str(budget), device, str(max(1, cores - len(names)) if name == "sift" else 1),
               str(16 if quick else 64)]
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, cores // len(names))), FEATINV_NO_EXTENSION="1")
        procs[name] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    summary = {}
    for name, p in procs.items():
        text, _ = p.communicate()
        sys.stdout.write(text)
        done = [line for line in text.splitlines() if line.startswith(f"[{name}] done: ")]
        summary[name] = json.loads(done[-1].split("done: ", 1)[1]) if done else {"failed": p.returncode}
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
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--quality", type=int, default=75)
    p.add_argument("--limit", type=int, default=None, help="at most this many training photos, evenly spaced")
    t = sub.add_parser("train", help="train every model at once on the GPU (or --quick on the CPU)")
    t.add_argument("--pack", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--budget", type=float, default=420.0, help="seconds of training per model (wall time)")
    t.add_argument("--quick", action="store_true", help="96 photos, CPU: a test of the recipe")
    t.add_argument("--only", nargs="+", choices=list(MODELS))
    o = sub.add_parser("one")  # internal: one model's training process
    for a in ("name", "views", "val", "out", "budget", "device", "workers", "batch"):
        o.add_argument(a)
    args = ap.parse_args()
    if args.cmd == "pack":
        pack(args.data, args.val, args.output, args.quality, args.limit)
    elif args.cmd == "train":
        train_all(args.pack, Path(args.out), 8.0 if args.quick else args.budget, args.quick, args.only)
    else:
        train_one(args.name, args.views, args.val, Path(args.out), float(args.budget), args.device,
                  int(args.workers), int(args.batch))


if __name__ == "__main__":
    main()
