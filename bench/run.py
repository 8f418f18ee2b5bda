"""featinv benchmarks: extraction, inversion and training throughput, printed as tables.

    python bench/run.py            # the numbers in BENCHMARKS.md
    python bench/run.py --quick    # fewer repetitions and steps (well under 5 minutes)
    python bench/run.py --only inversion,optimisation   # some sections
    python bench/run.py --only memory   # peak memory by image size, up to a 6000x6000 photo
    python bench/run.py --only cnn      # SqueezeNet layers on a batch, images/s

Extraction is timed as ms per grayscale float32 image (extraction only, median of 3 rounds) at 1 and
2 torch threads, next to scikit-image's own `hog` and `local_binary_pattern` on the same images, then
as images/s for a batch of 64 RGB images against one at a time (and on a GPU when torch has one).
scikit-image does less work for LBP (it returns per-pixel codes; ours also builds VLFeat's bilinear
cell histograms), so that column flatters it. VLFeat's own C timings, the fixed anchor, are in
BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from featinv_cli.features import parse_spec
from featinv_cli.inverter import ASSETS, Inverter

from common import LOAD_AT_START, median_ms, per_second, photos, record, save_results  # bench/common.py


def extraction(repeat: int) -> None:
    """HOG and LBP per image, as issue-style figures: one grayscale float32 image at a time, extraction
    only, median of 3 rounds, at 1 and 2 torch threads, next to scikit-image on the same images."""
    from skimage.feature import hog as sk_hog, local_binary_pattern

    hog, lbp, sift = parse_spec("hog"), parse_spec("lbp"), parse_spec("sift")
    threads = torch.get_num_threads()
    print("\nExtraction, ms per image (one grayscale float32 image at a time, median of 3 rounds)")
    print(f"{'size':>6} {'threads':>7} {'hog':>7} {'skimage hog':>12} {'x':>5} {'lbp':>7} "
          f"{'skimage lbp':>12} {'x':>5} {'sift':>7}")
    for size in (256, 512):
        imgs = photos(size) * repeat
        grays = [(0.2125 * x[0] + 0.7154 * x[1] + 0.0721 * x[2])[None, None].contiguous() for x in imgs]
        np_grays = [g[0, 0].numpy() for g in grays]
        gray8 = [np.round(g * 255).astype(np.uint8) for g in np_grays]  # skimage's LBP wants integers
        for n in sorted({1, min(2, threads)}):
            torch.set_num_threads(n)
            ours_hog, ours_lbp = median_ms(hog, grays), median_ms(lbp, grays)
            sift_ms = median_ms(lambda x: sift(x[None]), imgs[:6])
            sk_h = median_ms(lambda g: sk_hog(g, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2)),
                             np_grays)
            sk_l = median_ms(lambda g: local_binary_pattern(g, 8, 1, "uniform"), gray8)
            print(f"{size:>6} {n:>7} {ours_hog:>7.2f} {sk_h:>12.2f} {sk_h / ours_hog:>5.1f} {ours_lbp:>7.2f} "
                  f"{sk_l:>12.2f} {sk_l / ours_lbp:>5.1f} {sift_ms:>7.1f}")
            for key, value in (("hog_ms", ours_hog), ("skimage_hog_ms", sk_h), ("lbp_ms", ours_lbp),
                               ("skimage_lbp_ms", sk_l), ("sift_ms", sift_ms)):
                record("extraction", f"{key} {size} px {n} thread(s)", value)
    torch.set_num_threads(threads)
    print("\nBatched extraction, 64 images of 256x256 (RGB), images/s")
    batch = torch.stack(photos(256) * 11)[:64]
    for n in sorted({1, min(2, threads)}):
        torch.set_num_threads(n)
        for name, fn in (("hog", hog), ("lbp", lbp)):
            one = 1000 / median_ms(lambda x: fn(x[None]), list(batch[:16]))
            many = 64 * 1000 / median_ms(fn, [batch])
            print(f"  {name} {n} thread(s): one at a time {one:8.1f}   batch of 64 {many:8.1f}")
            record("extraction", f"{name} images/s one at a time 256 px {n} thread(s)", one)
            record("extraction", f"{name} images/s batch of 64 256 px {n} thread(s)", many)
    torch.set_num_threads(threads)
    if torch.cuda.is_available():
        gpu = batch.cuda()
        for name, fn in (("hog", hog), ("lbp", lbp)):
            def run(x, fn=fn):
                fn(x)
                torch.cuda.synchronize()
            print(f"  {name} on {torch.cuda.get_device_name()}: batch of 64 {64 * 1000 / median_ms(run, [gpu]):8.1f}")


def cnn(repeat: int) -> None:
    """CNN features: the shipped SqueezeNet (channels-last, frozen) to each layer an inverter ships for,
    a batch of 64 RGB 128x128 photos (resized to the network's 224 input), images/s, median of rounds."""
    batch = torch.stack(photos(128) * 11)[:64]
    threads = torch.get_num_threads()
    print("\nCNN extraction, SqueezeNet, a batch of 64 RGB 128x128 images, images/s")
    for n in sorted({1, min(2, threads)}):
        torch.set_num_threads(n)
        for layer in ("conv1", "fire5", "fire9", "pool10"):
            extractor = parse_spec(f"squeezenet:{layer}")  # median_ms's warm-up call loads the weights
            rate = 64 * 1000 / median_ms(extractor, [batch], rounds=repeat)
            print(f"  {layer:<7} {n} thread(s): {rate:8.1f}")
            record("cnn", f"squeezenet:{layer} images/s batch of 64 128 px {n} thread(s)", rate)
    torch.set_num_threads(threads)


def inversion(repeat: int) -> None:
    print("\nInversion with the shipped HOG model, 128x128 images, images/s")
    inv = Inverter(ASSETS / "hog.safetensors")
    feats = parse_spec("hog")(torch.stack(photos(128)))
    for batch in (1, 64):
        f = feats.repeat(-(-batch // len(feats)), 1, 1, 1)[:batch]
        rate = per_second(lambda x: inv(x, (128, 128), batch=64), [f], repeat) * batch
        print(f"  batch {batch:>3}: {rate:>8.1f}")
        record("inversion", f"hog images/s batch {batch}", rate)


def optimisation(steps: int) -> None:
    """Seconds per image of `invert --method optimize` next to the learned inverter's time."""
    from featinv_cli.models import for_extractor
    from featinv_cli.optimize import OptimizeConfig, invert_by_optimization

    print(f"\nLearned inverter vs optimisation baseline ({steps} steps), one 128x128 image")
    image = torch.stack(photos(128))[:1]
    hog = parse_spec("hog")
    inv = Inverter(ASSETS / "hog.safetensors")
    conv3 = parse_spec("caffenet:conv3,weights=random:0")
    net, _ = for_extractor("paper", conv3)  # untrained, paper width: the timing is what matters here
    net.eval()
    cases = [("hog (shipped model)", hog, lambda f: inv(f, (128, 128))),
             ("caffenet:conv3 (random weights)", conv3, lambda f: net(f))]
    for name, extractor, learned in cases:
        f = extractor(image)
        with torch.no_grad():
            learned_s = 1 / per_second(learned, [f], 10)
        t = time.perf_counter()
        _, history = invert_by_optimization(extractor, f, (128, 128), OptimizeConfig(steps=steps))
        opt_s = time.perf_counter() - t
        print(f"  {name:<32} learned {1000 * learned_s:7.2f} ms   optimize {opt_s:6.2f} s   "
              f"{opt_s / learned_s:6.0f}x   (feature loss {history[0]:.3f} -> {history[-1]:.3f})")
        record("optimisation", f"{name} learned ms", 1000 * learned_s)
        record("optimisation", f"{name} optimize s ({steps} steps)", opt_s)


def training_photos(folder: Path, count: int = 100) -> Path:
    """``count`` JPEG photos: the validation photos beside the project if present (the issue's set of
    100), else crops of scikit-image's photographs written as JPEG."""
    import imageio.v3 as iio

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample" / "val"
    if shared.is_dir():
        return shared
    rng = np.random.default_rng(0)
    for i in range(count):
        x = photos(256)[i % 6]
        top, left = rng.integers(0, 64, 2)
        arr = (x[:, top:top + 192, left:left + 192].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        iio.imwrite(folder / f"{i:03d}.jpg", arr, quality=90)
    return folder


def matmul_peak(n: int = 2048, repeat: int = 5) -> float:
    """fp32 GFLOP/s of an n x n matmul on this machine with torch's threads: the peak to compare with."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n ** 3 * repeat / (time.perf_counter() - t) / 1e9


def compute_only(feature: str, width: float, batch: int, steps: int, data) -> tuple[float, float]:
    """(images/s, GFLOP/s) of the bare training step (`featinv train`'s own: forward, loss, backward,
    clipping, Adam) of the network `featinv train` builds, in fp32, on one fixed batch: no data work at all."""
    from torch.utils.flop_counter import FlopCounterMode

    from featinv_cli.batches import ViewBatches
    from featinv_cli.models import for_extractor
    from featinv_cli.settings import TrainConfig
    from featinv_cli.train import training_step

    extractor = parse_spec(feature)
    x, feats = ViewBatches(data, extractor, 128, batch, 0, 1.25, torch.device("cpu"))(0)
    net, _ = for_extractor("skip", extractor, width=width)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    mean = torch.zeros(1, 3, 1, 1)  # the data's mean colour changes the numbers, not the work

    held = []  # the last step's output, kept until the next is made, as train's loop keeps it (train.Step)

    def step():
        held[:] = [training_step(net, opt, feats, x, mean, clip_grad_norm=TrainConfig.clip_grad_norm)]
    with FlopCounterMode(display=False) as counter:
        step()
    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t) / steps
    return batch / seconds, counter.get_total_flops() / seconds / 1e9


def end_to_end(feature: str, width: float, batch: int, steps: int, data: str, out: Path) -> float:
    """Steady-state images/s of `featinv train` itself (the library's loop the command runs), in fp32 like
    the bare step it is compared with (the command's `--precision auto` picks bf16 on CPUs with AMX): the
    steps after the first fifth, so start-up, decoding and the first batches are left out."""
    from featinv_cli.train import TrainConfig, train

    times = []
    train(TrainConfig(feature=feature, data=data, output=str(out), arch="skip", width=width, batch=batch,
                      steps=steps, workers=1, checkpoint_every=10 ** 6, device="cpu", precision="fp32",
                      low_res=0.0),  # the step's own resolution
          on_step=lambda *a: times.append(time.perf_counter()))
    skip = max(1, steps // 5)
    return batch * (len(times) - 1 - skip) / (times[-1] - times[skip])


def training(steps: int) -> None:
    """End-to-end `featinv train` against its bare step, for hog, lbp and sift: what the data path costs."""
    from featinv_cli.arguments import list_images
    from featinv_cli.formats.views import load_views, save_views
    from featinv_cli.packing import pack

    peak = matmul_peak()
    print(f"\nTraining throughput, {torch.get_num_threads()} threads, batch 32, 128-px crops, {steps} steps; "
          f"fp32 matmul peak {peak:.0f} GFLOP/s")
    print(f"  {'feature':<8} {'width':>5} {'step only':>10} {'views file':>11} {'JPEG folder':>12} {'GFLOP/s':>8}")
    with tempfile.TemporaryDirectory() as d:
        folder = training_photos(Path(d))
        files = list_images(folder)
        # The photos differ between a checkout beside the project's data and a fresh clone: say which.
        beside = folder.is_relative_to(Path(__file__).resolve().parents[2] / "shared")
        record("training", "photos", f"{len(files)} " + ("validation photos beside the project" if beside
                                                         else "crops of scikit-image's photographs"))
        for feature, width in (("hog", 0.3), ("lbp", 0.5), ("sift", 0.2)):
            sift = parse_spec("sift") if feature == "sift" else None
            views = Path(d) / f"views-{feature}.safetensors"
            save_views(views, pack(files, [f.name for f in files], 160, sift))
            rate, gflops = compute_only(feature, width, 32, max(3, steps // 4), load_views(views))
            cached = end_to_end(feature, width, 32, steps, str(views), Path(d) / "m.safetensors")
            jpeg = end_to_end(feature, width, 32, steps, str(folder), Path(d) / "m.safetensors")
            print(f"  {feature:<8} {width:>5} {rate:8.1f}/s {cached:7.1f}/s {cached / rate:.2f}x "
                  f"{jpeg:6.1f}/s {jpeg / rate:.2f}x {gflops:6.0f} ({100 * gflops / peak:.0f}%)")
            for key, value in (("step only images/s", rate), ("views file images/s", cached),
                               ("JPEG folder images/s", jpeg), ("GFLOP/s", gflops)):
                record("training", f"{feature} {key}", value)
    record("training", "fp32 matmul peak GFLOP/s", peak)


def precision(steps: int) -> None:
    """Seconds per training step (`featinv train`'s, without clipping as BENCHMARKS records it: forward,
    backward, Adam) of the skip network on HOG-shaped input, fp32 against bf16 autocast (what
    `train --precision` switches), no data loading."""
    from featinv_cli.models.dense import SkipInverter
    from featinv_cli.train import training_step

    print(f"\nTraining step, skip network for HOG, batch 64 of 128x128, mean of {steps} steps after 1 warm-up")
    for width in (0.25, 0.5):
        row = []
        for mode in ("fp32", "bf16"):
            torch.manual_seed(0)
            net = SkipInverter(31, 8, width)
            opt = torch.optim.Adam(net.parameters(), 1e-3)
            x, y = torch.randn(64, 31, 16, 16), torch.randn(64, 3, 128, 128)
            mean = torch.zeros(1, 3, 1, 1)

            held = []  # kept until the next step's is made, as train's loop keeps it (train.Step)

            def step():
                held[:] = [training_step(net, opt, x, y, mean, bf16=mode == "bf16", clip_grad_norm=0.0)]
            step()
            t = time.perf_counter()
            for _ in range(steps):
                step()
            row.append((time.perf_counter() - t) / steps)
        print(f"  width {width:<5} fp32 {row[0]:.3f} s   bf16 {row[1]:.3f} s   {row[0] / row[1]:.2f}x")
        record("precision", f"width {width} fp32 s/step", row[0])
        record("precision", f"width {width} bf16 s/step", row[1])
    from featinv_cli.settings import bf16_supported

    choice = "bf16" if bf16_supported("cpu") else "fp32"
    print(f"  train --precision auto picks {choice} on this CPU")
    record("precision", "auto picks", choice)


def peak_memory(command: list[str]) -> tuple[float, float]:
    """Peak resident memory (GB) and seconds of one command, run in a fresh process."""
    import subprocess
    import sys

    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", probe, *command], check=True, capture_output=True, text=True).stdout
    kb, seconds = out.split()
    return int(kb) / 2 ** 20, float(seconds)


def memory(sizes: tuple[int, ...]) -> None:
    """Peak memory of `featinv extract` and `featinv invert` (shipped model, PNG out) by image size:
    scikit-image's astronaut resized to a square photo, with noise so SIFT finds keypoints."""
    import shutil
    import sys

    import cv2
    import imageio.v3 as iio
    from skimage import data

    from featinv_cli import ops

    ops.build()  # an empty cache would compile inside the first measured process (the compiler's memory)
    featinv = [shutil.which("featinv") or sys.executable, *([] if shutil.which("featinv") else ["-m", "featinv_cli"])]
    print("\nPeak memory (GB) and seconds, one photo, extract then invert")
    print(f"{'size':>6} {'feature':>18} {'extract GB':>11} {'s':>6} {'invert GB':>10} {'s':>6}")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        for size in sizes:
            photo = cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_CUBIC)
            photo = np.clip(photo.astype(np.int16) + rng.integers(-8, 9, photo.shape), 0, 255).astype(np.uint8)
            iio.imwrite(f"{d}/photo.jpg", photo, quality=90)
            for spec in ("hog", "lbp", "sift", "squeezenet:fire9"):
                ex = peak_memory([*featinv, "extract", spec, f"{d}/photo.jpg", "-o", f"{d}/f.safetensors", "-q"])
                inv = peak_memory([*featinv, "invert", f"{d}/f.safetensors", "-o", f"{d}/r.png"])
                print(f"{size:>6} {spec:>18} {ex[0]:>11.2f} {ex[1]:>6.1f} {inv[0]:>10.2f} {inv[1]:>6.1f}")
                for key, value in zip(("extract GB", "extract s", "invert GB", "invert s"), (*ex, *inv)):
                    record("memory", f"{spec} {size} px {key}", value)


def startup(rounds: int) -> None:
    """Wall time of whole commands (median of ``rounds``, interleaved so machine noise hits all alike)
    against `python -c "import torch"`: what a user waits for at the prompt."""
    import shutil
    import subprocess
    import sys

    featinv = [shutil.which("featinv") or sys.executable, *([] if shutil.which("featinv") else ["-m", "featinv_cli"])]
    with tempfile.TemporaryDirectory() as d:
        import imageio.v3 as iio
        from skimage import data

        iio.imwrite(f"{d}/p.png", data.astronaut()[:128, :128])
        subprocess.run([*featinv, "extract", "hog", f"{d}/p.png", "-o", f"{d}/f.safetensors", "-q"], check=True)
        cases = {"import torch": [sys.executable, "-c", "import torch"],
                 "featinv --help": [*featinv, "--help"], "featinv --version": [*featinv, "--version"],
                 "featinv invert (one 128x128 HOG image)": [*featinv, "invert", f"{d}/f.safetensors", "-o", f"{d}/r.png"],
                 "featinv extract hog (one image)": [*featinv, "extract", "hog", f"{d}/p.png", "-o", f"{d}/g.safetensors", "-q"]}
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(rounds):
            for name, command in cases.items():
                t = time.perf_counter()
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - t)
    base = sorted(times["import torch"])[rounds // 2]
    print(f"\nStart-up, seconds (median of {rounds} interleaved runs)")
    for name, ts in times.items():
        median = sorted(ts)[rounds // 2]
        print(f"  {name:<40} {median:6.2f}   {median / base:5.2f}x import torch")
        record("startup", f"{name} s", median)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    sections = ("extraction", "cnn", "inversion", "optimisation", "precision", "training", "memory", "startup")
    p.add_argument("--only", default=",".join(sections), help=f"comma-separated subset of {', '.join(sections)}")
    args = p.parse_args()
    only = set(args.only.split(","))
    if only - set(sections):
        p.error(f"--only: unknown section(s) {', '.join(sorted(only - set(sections)))}")
    print(f"featinv benchmarks on {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, load average {LOAD_AT_START:.2f} at the start")
    if LOAD_AT_START > 0.5:
        print(f"note: the machine is busy (load {LOAD_AT_START:.2f}); the figures will be low, and results.json "
              f"records the load beside them")
    if "extraction" in only:
        extraction(1 if args.quick else 3)
    if "cnn" in only:
        cnn(1 if args.quick else 3)
    if "inversion" in only:
        inversion(2 if args.quick else 10)
    if "optimisation" in only:
        optimisation(50 if args.quick else 200)
    if "precision" in only:
        precision(1 if args.quick else 3)  # bf16 autocast on an AVX2-only CPU takes ~10 s a step
    if "training" in only:
        training(10 if args.quick else 40)
    if "memory" in only:
        memory((1000, 2000) if args.quick else (1000, 3000, 6000))
    if "startup" in only:
        startup(3 if args.quick else 9)
    if not args.quick:  # --quick figures are too rough to quote
        save_results()


if __name__ == "__main__":
    main()
