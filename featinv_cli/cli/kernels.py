"""featinv kernels: build the custom operator ahead of time and say which implementation is in use."""
from __future__ import annotations

import json

import typer

from .common import JSON, out


def kernels(
    verbose: bool = typer.Option(False, "--verbose", help="Show the compiler's output while building."),
    as_json: bool = JSON,
):
    """Build (or load from cache) the C++/CUDA featinv::grid_bin operator used by SIFT.

    It is otherwise built on first use, which takes a minute once; torch caches it (TORCH_EXTENSIONS_DIR,
    default ~/.cache/torch_extensions). Where no compiler exists featinv uses a pure-torch version with
    identical results; FEATINV_NO_EXTENSION=1 chooses that version deliberately.

    \b
    Example:
      featinv kernels
    """
    from .. import ops

    backend = ops.build(verbose=verbose)
    status = ops.status()
    import torch

    status["cuda"] = bool(torch.cuda.is_available())
    if as_json:
        out.print_json(json.dumps(status))
        return
    if backend == "extension":
        out.print("featinv::grid_bin: compiled C++ extension"
                  + (" with CUDA kernel" if status["cuda"] else " (CPU; no CUDA device, GPU tensors use pure torch)"))
    else:
        out.print(f"featinv::grid_bin: pure-torch fallback ({status['reason']})")
