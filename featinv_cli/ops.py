"""featinv's custom operators and the compiled kernels behind them (README, "The custom operators").

``featinv::grid_bin`` puts SIFT keypoints on the paper's grid; ``featinv::hog`` and ``featinv::lbp``
are VLFeat's HOG and LBP. Each op is defined here once: its schema, one input check, its output
shape for tracing, and a kernel registered for CPU and CUDA tensors at import. That kernel checks
the inputs, then runs the compiled implementation (kernels/*.cpp, *.cu: compiled on first use with
torch.utils.cpp_extension and cached) or, where there is none (no compiler, no headers,
FEATINV_NO_EXTENSION=1, or no CUDA kernel for that op), the op's torch version, with a one-time
note on stderr when a build failed. Both give the same result (tests/test_ops.py).
"""
from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path
from typing import Callable

import torch

from .errors import note

KERNELS = Path(__file__).resolve().parent / "kernels"  # in the repository a link to ../kernels; a real copy in a wheel

_lib = torch.library.Library("featinv", "DEF")
_state = {"backend": None, "reason": None, "module": None}
_lock = threading.Lock()
_torch_versions: dict[str, Callable] = {}

M32 = 0xFFFFFFFF


def define(name: str, schema: str, torch_version: Callable, check: Callable, shape: Callable) -> None:
    """Define ``featinv::name``: ``check(*args)`` raises ValueError on bad input (it runs once, before
    either implementation), ``torch_version(*args)`` is the torch version (what the others must equal, and the fallback), ``shape(*args)``
    the output shape (what tracing and torch.compile see)."""
    _lib.define(schema)
    _torch_versions[name] = torch_version

    def fake(*args):
        return args[0].new_empty(shape(*args), dtype=torch.float32)

    torch.library.register_fake(f"featinv::{name}", fake, lib=_lib)
    for key in ("CPU", "CUDA"):
        def kernel(*args, _device=key.lower()):
            check(*args)
            return implementation(name, _device)(*args)

        torch.library.impl(_lib, name, key)(kernel)


def compiled(name: str, device: str) -> bool:
    """Whether ``featinv::name`` runs compiled code on ``device`` (not its torch version): what a
    benchmark must know before it labels a figure "C++" or "CUDA"."""
    if _state["backend"] is None:
        build()
    return getattr(_state["module"], f"{name}_{device}", None) is not None


def implementation(name: str, device: str) -> Callable:
    """The function that computes ``featinv::name`` for tensors on ``device`` ("cpu" or "cuda")."""
    if _state["backend"] is None:
        build()
    compiled = getattr(_state["module"], f"{name}_{device}", None)
    return compiled or _torch_versions[name]


# --------------------------------------------------------------------------- the torch version

def _mul32(a: torch.Tensor, c: int) -> torch.Tensor:
    """(a * c) mod 2**32 for 0 <= a < 2**32 without overflowing int64: multiply 16 bits at a time."""
    return ((a & 0xFFFF) * c + ((((a >> 16) * c) & 0xFFFF) << 16)) & M32


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def priority_keys(seed: int, index: torch.Tensor) -> torch.Tensor:
    """The per-keypoint comparison key of kernels/grid_bin.h: priority << 31 | index (int64, >= 0).
    ``index`` is the keypoint's rank within its own image, so an image's grid does not depend on the
    batch it is binned in."""
    h = _fmix32((seed & M32) ^ _fmix32((index + 0x9E3779B9) & M32))
    return (h << 31) | (index & 0x7FFFFFFF)


def check_grid_bin(keypoints, descriptors, counts, height, width, cell, seed) -> None:
    if keypoints.ndim != 2 or keypoints.shape[1] != 4:
        raise ValueError("keypoints must be (K, 4)")
    if descriptors.ndim != 2 or descriptors.shape[0] != keypoints.shape[0]:
        raise ValueError("descriptors must be (K, D)")
    if not keypoints.device == descriptors.device == counts.device:
        raise ValueError(f"keypoints, descriptors and counts must be on one device (got {keypoints.device}, "
                         f"{descriptors.device}, {counts.device})")
    if counts.is_floating_point() or counts.is_complex():
        raise ValueError("counts must be integers (keypoints per image)")
    if counts.ndim != 1 or (counts < 0).any() or int(counts.sum()) != keypoints.shape[0]:
        raise ValueError("counts must be (N,), non-negative, adding up to the number of keypoints")
    if min(height, width, cell) <= 0:
        raise ValueError("height, width and cell must be positive")


def grid_bin_torch(keypoints: torch.Tensor, descriptors: torch.Tensor, counts: torch.Tensor,
                       height: int, width: int, cell: int, seed: int) -> torch.Tensor:
    """Pure-torch grid binning, vectorised (no Python loop over keypoints); works on any device.

    keypoints (K, 4) x, y, scale, angle (radians); descriptors (K, D); counts (N,) keypoints per image.
    Returns (N, D + 5, ceil(H / cell), ceil(W / cell)) float32.
    """
    check_grid_bin(keypoints, descriptors, counts, height, width, cell, seed)
    dev = keypoints.device
    kp = keypoints.to(torch.float32)
    desc = descriptors.to(torch.float32)
    n, k, d = counts.shape[0], kp.shape[0], desc.shape[1]
    hc, wc = -(-height // cell), -(-width // cell)
    counts = counts.to(dev, torch.long)
    image = torch.repeat_interleave(torch.arange(n, device=dev), counts)
    starts = torch.cumsum(counts, 0) - counts
    index = torch.arange(k, device=dev) - starts[image]
    x, y = kp[:, 0], kp[:, 1]
    valid = (x >= 0) & (y >= 0) & (x < width) & (y < height)  # False for NaN too
    cx = torch.clamp(torch.trunc(x / cell), 0, wc - 1).long()
    cy = torch.clamp(torch.trunc(y / cell), 0, hc - 1).long()
    cid = (image * hc + cy) * wc + cx
    key = priority_keys(seed, index)
    best = torch.full((n * hc * wc,), -1, dtype=torch.long, device=dev)
    best = best.scatter_reduce(0, cid[valid], key[valid], reduce="amax", include_self=True)
    win = valid & (key == best[cid.clamp(0, n * hc * wc - 1)])
    kw = kp[win].double()
    geometry = torch.stack([torch.fmod(kp[win, 0], float(cell)), torch.fmod(kp[win, 1], float(cell)),
                            torch.sin(kw[:, 3]).float(), torch.cos(kw[:, 3]).float(),
                            torch.log(kw[:, 2]).float()], dim=1)
    flat = torch.zeros(n * hc * wc, d + 5, dtype=torch.float32, device=dev)
    flat[cid[win]] = torch.cat([desc[win], geometry], dim=1)
    return flat.view(n, hc, wc, d + 5).permute(0, 3, 1, 2).contiguous()


def grid_bin_loop(keypoints, descriptors, counts, height: int, width: int, cell: int, seed: int) -> torch.Tensor:
    """The same rule one keypoint at a time in plain Python: the readable specification, and the
    slow baseline of bench/grid_bin.py. Same arguments and result as ``grid_bin_torch``."""
    n, d = len(counts), descriptors.shape[1]
    hc, wc = -(-height // cell), -(-width // cell)
    out = torch.zeros(n, d + 5, hc, wc)
    start = 0
    for img, count in enumerate(counts.tolist()):
        best: dict[tuple[int, int], tuple[int, int]] = {}
        for i in range(count):
            x, y, scale, angle = keypoints[start + i].tolist()
            if not (0 <= x < width and 0 <= y < height):
                continue
            key = int(priority_keys(seed, torch.tensor(i)))
            # float32 division, as in the kernels, then clamp (a quotient may round up to the edge)
            cy = min(int(torch.tensor(y, dtype=torch.float32) / cell), hc - 1)
            cx = min(int(torch.tensor(x, dtype=torch.float32) / cell), wc - 1)
            if key > best.get((cy, cx), (-1, 0))[0]:
                best[(cy, cx)] = (key, start + i)
        for (cy, cx), (_, k) in best.items():
            x, y, scale, angle = keypoints[k]
            out[img, :d, cy, cx] = descriptors[k]
            out[img, d:, cy, cx] = torch.stack([
                torch.fmod(x, float(cell)), torch.fmod(y, float(cell)), torch.sin(angle.double()).float(),
                torch.cos(angle.double()).float(), torch.log(scale.double()).float()])
        start += count
    return out


define("grid_bin", "grid_bin(Tensor keypoints, Tensor descriptors, Tensor counts, int height, int width, "
       "int cell, int seed) -> Tensor", grid_bin_torch, check_grid_bin,
       lambda kp, desc, counts, h, w, cell, seed: (counts.shape[0], desc.shape[1] + 5, -(-h // cell), -(-w // cell)))


# --------------------------------------------------------------------------------- the extension

def _sources() -> list[str]:
    src = [str(KERNELS / f) for f in ("bindings.cpp", "grid_bin_cpu.cpp", "hog_lbp_cpu.cpp")]
    if _cuda():
        src += [str(KERNELS / "grid_bin_cuda.cpp"), str(KERNELS / "grid_bin.cu")]
    return src


def _cuda() -> bool:
    return bool(torch.cuda.is_available() and torch.version.cuda)


# A build takes about a minute; a lock file older than this was left by a killed build, and torch would
# wait on it for ever (seen: two training runs hung after a third was killed mid-build).
STALE_LOCK_SECONDS = 600


def build_directory(name: str) -> Path:
    """Where the operators are compiled and cached: $FEATINV_CACHE, else $XDG_CACHE_HOME/featinv, else
    ~/.cache/featinv; one folder per build name (``build_name``)."""
    root = os.environ.get("FEATINV_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "featinv"
    return Path(root) / name


# -ffp-contract=off: no fused multiply-adds, so each product rounds as in the torch versions.
# -fopenmp: at::parallel_for is OpenMP code inlined from a header; without the flag it runs on one
# thread. The GOMP symbols resolve to the OpenMP runtime torch itself loads. (The C++ standard is torch's.)
CFLAGS = ["-O3", "-ffp-contract=off", "-fopenmp"]


def build_name() -> str:
    """The cached module's name: a hash of everything that makes it what it is. The kernel files (torch's
    cache only notices changes to the listed sources, not to headers), their folder (torch rebuilds when
    one name comes with other source paths, so two checkouts would rebuild each other's), and torch's
    version, the Python ABI and the flags: a module built against another torch loads into this one with
    undefined symbols or worse, and its headers come in through -isystem, which ninja does not watch."""
    import sysconfig

    cflags = CFLAGS + (["-DFEATINV_CUDA"] if _cuda() else [])
    key = "\n".join([str(KERNELS), torch.__version__, str(torch.version.git_version), str(torch.version.cuda),
                     sysconfig.get_config_var("SOABI") or sys.version, " ".join(cflags)]).encode()
    digest = hashlib.sha256(key + b"".join(p.read_bytes() for p in sorted(KERNELS.iterdir()) if p.is_file()))
    return f"featinv_ops_{'cuda_' if _cuda() else ''}{digest.hexdigest()[:10]}"


def _import_built(where: Path, name: str):
    """The module a finished build left, imported as it is: no lock file, no ninja run (so a read-only
    cache works, and a start-up costs no build check). None if there is none or it does not load."""
    import importlib.util

    for so in where.glob(f"{name}*.so"):
        try:
            spec = importlib.util.spec_from_file_location(name, so)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        except (ImportError, OSError):  # a partial file of a killed build: build again
            return None
    return None


def _missing_tools() -> str | None:
    """Why a build cannot start, said before announcing one: no C++ compiler, or no ninja (which torch's
    extension builder needs; the `ninja` package puts one beside this Python)."""
    import shutil

    bin_dir = str(Path(sys.executable).parent)  # a venv's bin/, where pip puts ninja, need not be on PATH
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    compiler = os.environ.get("CXX", "c++")
    if not shutil.which(compiler):
        return f"no C++ compiler ({compiler}) on PATH"
    if not shutil.which("ninja"):
        return "no ninja on PATH (pip install ninja)"
    return None


def _prepare(where: Path, name: str) -> None:
    """One line before a first build (a minute or so of silence otherwise); a stale lock removed."""
    import time

    lock = where / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
        lock.unlink(missing_ok=True)
        note(f"removed {lock}, left by a build that was stopped")
    note(f"building the featinv operators once (about a minute); they are cached in {where}")


FAILED = "failed"  # a file in the build folder: why the last build failed, so later runs do not retry


def _compile(where: Path, name: str, verbose: bool):
    import logging

    # On a CUDA build of torch without a GPU, importing cpp_extension logs "No CUDA runtime is found" to
    # stderr on every run; featinv builds for the CPU then and says nothing.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.cpp_extension import load

    where.mkdir(parents=True, exist_ok=True)
    _prepare(where, name)
    try:
        return load(name=name, sources=_sources(), extra_include_paths=[str(KERNELS)],
                    extra_cflags=CFLAGS + (["-DFEATINV_CUDA"] if _cuda() else []),
                    extra_cuda_cflags=["-O3"] if _cuda() else None, build_directory=str(where), verbose=verbose)
    except Exception as e:
        text = str(e)
        # The first compiler error says what is wrong; torch's own last line ("ninja: build stopped") does not.
        first = next((line for line in text.splitlines() if "error" in line.lower() and "ninja" not in line), None)
        reason = (first or (text.strip().splitlines() or [type(e).__name__])[-1]).strip()[:300]
        try:
            (where / FAILED).write_text(reason)
        except OSError:
            pass
        raise RuntimeError(reason) from None


def extension_refused() -> bool:
    """FEATINV_NO_EXTENSION set to anything but empty, 0, false, no or off."""
    return os.environ.get("FEATINV_NO_EXTENSION", "").strip().lower() not in ("", "0", "false", "no", "off")


def build(verbose: bool = False, retry: bool = False) -> str:
    """Compile (or load from the cache) the C++/CUDA kernels.

    Returns the backend in use: "extension" or "torch" (the torch versions). Never raises: after a failed
    build the ops use their torch versions, and ``status()`` records why. A failed build is remembered in
    the cache (not tried again on every command) until ``retry`` (`featinv kernels`) asks again.
    """
    with _lock:
        if _state["backend"] and not retry:
            return _state["backend"]
        reason, announce = None, True
        if extension_refused():
            reason, announce = "FEATINV_NO_EXTENSION is set", False
        else:
            try:
                name = build_name()
                where = build_directory(name)
                _state["module"] = _import_built(where, name)
                if _state["module"] is None:
                    failed = where / FAILED
                    if failed.exists() and not retry:
                        reason, announce = f"{failed.read_text()}; `featinv kernels` tries again", False
                    else:
                        failed.unlink(missing_ok=True)
                        reason = _missing_tools()
                        if reason is None:
                            _state["module"] = _compile(where, name, verbose)
            except Exception as e:  # a broken toolchain, an unwritable cache: fall back
                reason = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
        _state["backend"], _state["reason"] = ("extension", None) if reason is None else ("torch", reason)
        if reason and announce:
            note(f"could not build the C++ featinv operators ({reason}); "
                 f"using their torch versions (same results, slower)")
        return _state["backend"]


def status() -> dict:
    return {"backend": _state["backend"], "reason": _state["reason"]}


def grid_bin(keypoints: torch.Tensor, descriptors: torch.Tensor, counts: torch.Tensor,
             height: int, width: int, cell: int = 4, seed: int = 0) -> torch.Tensor:
    """Arrange keypoints on the paper's grid: one keypoint per ``cell`` x ``cell`` cell.

    keypoints: (K, 4) float32 x, y, scale, angle (radians), concatenated over images;
    descriptors: (K, D) float32; counts: (N,) int64 keypoints of each image, in order.
    Returns (N, D + 5, ceil(height / cell), ceil(width / cell)) float32: per cell with a keypoint
    ``(descriptor, x mod cell, y mod cell, sin a, cos a, log scale)``, zeros elsewhere. When several
    keypoints share a cell the one with the highest ``hash(seed, index)`` wins, ``index`` being the
    keypoint's rank within its image: an image's grid is the same alone or anywhere in a batch.
    """
    return torch.ops.featinv.grid_bin(keypoints, descriptors, counts, int(height), int(width), int(cell), int(seed))
