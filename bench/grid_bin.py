"""Keypoints per second of featinv::grid_bin: the C++ (or CUDA) op, the pure-torch version, a Python loop.

    python bench/grid_bin.py            # 3,000 keypoints per image, batches of 64 (the issue's setting)
    python bench/grid_bin.py --quick    # smaller, for a smoke run

The loop is timed on a few images only (it is slow) and reported per keypoint like the others.
"""
from __future__ import annotations

import argparse
import time

import torch

from featinv_cli import ops


def case(n: int, per: int, height: int, width: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    k = n * per
    kp = torch.rand(k, 4, generator=g)
    kp[:, 0] *= width
    kp[:, 1] *= height
    kp[:, 2] = kp[:, 2] * 10 + 0.5
    kp[:, 3] *= 6.2831853
    return kp, torch.rand(k, 128, generator=g) * 0.1, torch.full((n,), per, dtype=torch.long), height, width


def rate(fn, args, keypoints: int, repeat: int, sync=lambda: None) -> float:
    fn(*args)  # warm-up (and, for the extension, the build)
    sync()
    t = time.perf_counter()
    for _ in range(repeat):
        fn(*args)
    sync()
    return keypoints * repeat / (time.perf_counter() - t)


def main() -> None:
    from common import record, save_results  # bench/common.py, beside this file: one results file for all

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--per-image", type=int, default=3000)
    args = p.parse_args()
    batch = 8 if args.quick else args.batch
    repeat = 2 if args.quick else 10
    h, w = 480, 640  # a typical photograph: ~3,000 SIFT keypoints
    kp, desc, counts, _, _ = case(batch, args.per_image, h, w)
    total = kp.shape[0]
    backend = ops.build()
    rows = []
    threads = torch.get_num_threads()
    if backend == "extension":
        rows.append((f"C++ op ({threads} threads)", rate(lambda *a: torch.ops.featinv.grid_bin(*a, 4, 0),
                                                         (kp, desc, counts, h, w), total, repeat)))
    rows.append(("pure torch (CPU)", rate(lambda *a: ops.grid_bin_torch(*a, 4, 0),
                                          (kp, desc, counts, h, w), total, repeat)))
    if torch.cuda.is_available() and ops.compiled("grid_bin", "cuda"):  # else "CUDA op" would time the torch version
        gpu = (kp.cuda(), desc.cuda(), counts.cuda(), h, w)
        sync = torch.cuda.synchronize
        rows.append(("CUDA op", rate(lambda *a: ops.grid_bin(*a, 4, 0), gpu, total, repeat * 10, sync)))
        rows.append(("pure torch (CUDA)", rate(lambda *a: ops.grid_bin_torch(*a, 4, 0), gpu, total,
                                               repeat * 10, sync)))
    small = 1 if args.quick else 2
    loop_case = case(small, args.per_image, h, w)
    rows.append(("Python loop", rate(lambda *a: ops.grid_bin_loop(*a, 4, 0), loop_case[:3] + (h, w),
                                     small * args.per_image, 1)))
    loop = rows[-1][1]
    print(f"featinv::grid_bin, {args.per_image} keypoints/image, batch {batch}, {h}x{w}, cell 4, "
          f"backend: {backend}")
    print(f"{'implementation':<26}{'keypoints/s':>16}{'x loop':>10}")
    for name, r in rows:
        print(f"{name:<26}{r:>16,.0f}{r / loop:>10.1f}")
        record("grid_bin", f"{name} keypoints/s (batch {batch})", r)
    if not args.quick:
        save_results()


if __name__ == "__main__":
    main()
