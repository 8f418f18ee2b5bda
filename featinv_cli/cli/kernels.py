"""featinv kernels: build the custom operators ahead of time and say which implementations are in use."""
from __future__ import annotations

import json

import typer

from .common import JSON, out


def kernels(
    verbose: bool = typer.Option(False, "--verbose", help="Show the compiler's output while building."),
    as_json: bool = JSON,
):
    """Build (or load from cache) the C++/CUDA operators: featinv::hog and featinv::lbp (C++) and
    featinv::grid_bin, which puts SIFT keypoints on the paper's grid (C++ and CUDA).

    They are otherwise built on first use, which takes about a minute once, and cached in
    $FEATINV_CACHE (default ~/.cache/featinv, or $XDG_CACHE_HOME/featinv), one module per kernel sources,
    torch version and Python. Where no compiler (or no ninja) exists featinv uses the ops' torch versions,
    with identical results, and remembers a failed build until this command tries again (exit 1 if it
    fails); FEATINV_NO_EXTENSION=1 chooses the torch versions deliberately.

    \b
    Example:
      featinv kernels
    """
    from .. import ops

    backend = ops.build(verbose=verbose, retry=True)  # a failure remembered from an earlier run is tried again
    status = ops.status()
    import torch

    status["cuda"] = bool(torch.cuda.is_available())
    if as_json:
        out.print_json(json.dumps(status))
        return
    if backend == "extension":
        out.print("featinv::hog, featinv::lbp: compiled C++ on the CPU; torch on a GPU")
        out.print("featinv::grid_bin: compiled C++" + (" and CUDA" if status["cuda"] else
                                                       " (no CUDA device here: GPU tensors would use torch)"))
    else:
        out.print(f"featinv::hog, featinv::lbp, featinv::grid_bin: their torch versions ({status['reason']})")
    if backend != "extension" and not ops.extension_refused():
        raise typer.Exit(1)  # asked to build, and it did not
