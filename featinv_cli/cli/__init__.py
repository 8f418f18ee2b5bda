"""The featinv command line: one module per subcommand, wired together here.

Each subcommand parses, calls the library, writes. Errors users can cause are FeatinvError, printed
once here as a single line; a traceback appears only with --debug.
"""
from __future__ import annotations

import os
import re
import sys

import typer

from .. import __version__
from ..errors import FeatinvError, set_quiet
from ..threads import before_torch
from .common import Command
from . import audit, demo, extract, info, interpolate, invert, kernels, pack, perturb, sample, score, train

app = typer.Typer(
    name="featinv", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]},
    help="What does a feature representation still know about the image?\n\n"
         "Invert HOG, LBP, sparse SIFT and CNN layers (SqueezeNet with ImageNet weights built in; "
         "AlexNet, CaffeNet and any torchvision model from your weights) with up-convolutional networks, "
         "after Dosovitskiy & Brox, CVPR 2016. Stages read and write files, so they pipe:\n\n"
         "  featinv extract hog photo.jpg -o - | featinv invert - -o recon.png\n\n"
         "perturb, interpolate and sample probe the feature space between extract and invert; audit turns a "
         "COLMAP database, feature files or photos into a report of what they leak.")

# Order = the data flow: extract -> (probe) -> train / invert -> score -> audit; helpers last. Each
# module holds the command of its name.
for _module in (extract, perturb, interpolate, sample, pack, train, invert, score, audit, info, demo, kernels):
    _name = _module.__name__.rsplit(".", 1)[1]
    app.command(name=_name, cls=Command)(getattr(_module, _name))


def _version(value: bool):
    if value:
        typer.echo(f"featinv {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks for errors."),
):
    # --debug is read by main() before parsing, so it covers errors in the command line too.
    return None


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"featinv: error: {message}\n")
    sys.exit(code)


def _without_worker_traceback(message: str) -> str:
    """A FeatinvError raised in a DataLoader worker (a photo that does not decode, read by `train
    --workers`) comes back with torch's "Caught FeatinvError in DataLoader worker process 0" and the
    worker's traceback in its message; the user's one line is what follows the class name at its end."""
    if "Original Traceback" not in message:
        return message
    _, found, rest = message.rpartition("\nfeatinv_cli.errors.")
    return rest.split(": ", 1)[1].strip() if found and ": " in rest else message


def _out_of_memory(e: BaseException) -> bool:
    """An allocation that failed (a huge -n, an enormous image): the user's request, not a bug. torch's
    CPU allocator raises a plain RuntimeError; CUDA's is torch.OutOfMemoryError (also a RuntimeError)."""
    text = str(e)
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()))


def _asked(text: str) -> str:
    """How much the failed allocation wanted, from torch's message (CPU: "... allocate 31744000000 bytes";
    CUDA: "Tried to allocate 20.00 GiB") or numpy's ("Unable to allocate 7.28 TiB")."""
    found = re.search(r"(?i)(?:tried|unable) to allocate ([\d.]+) ?(bytes|[KMGTPE]iB)", text)
    if not found:
        return ""
    amount, unit = found.groups()
    return f" (it needed {int(amount) / 2**30:,.1f} GiB at once)" if unit == "bytes" else f" (it needed {amount} {unit})"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning every expected failure into one line and an exit code."""
    try:
        _main(argv)
    finally:
        set_quiet(False)  # a command's -q ends with it (tests and scripts call main in one process)


def _main(argv: list[str] | None) -> None:
    from . import common

    before_torch()  # commands import torch inside them, after this
    common.argv = list(argv if argv is not None else sys.argv[1:])
    debug = "--debug" in common.argv or bool(os.environ.get("FEATINV_DEBUG"))
    try:
        code = app(args=argv, prog_name="featinv", standalone_mode=False)
    except FeatinvError as e:
        if debug:
            raise
        if e.exit_code in (130, 143):  # training stopped by SIGINT or SIGTERM, its checkpoint saved
            _interrupted(str(e), e.exit_code)
        _fail(_without_worker_traceback(str(e)), e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.TyperException as e:  # bad flag, missing argument (typer >= 0.29 vendors click)
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()
            sys.exit(2)
        ctx = getattr(e, "ctx", None)
        hint = f"  (see '{ctx.command_path} --help')" if ctx is not None else ""
        _fail(e.format_message() + hint, getattr(e, "exit_code", 2))
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except Exception as e:  # a bug, not the user's fault: still one line unless --debug
        if debug:
            raise
        if _out_of_memory(e):
            _fail(f"out of memory{_asked(str(e))}; ask for less at a time (fewer or smaller images, a smaller "
                  f"count or batch)", 1)
        _fail(f"unexpected {type(e).__name__}: {e} (rerun as featinv --debug COMMAND ... for a traceback; please report it)", 1)
    # Without standalone mode typer returns the exit code of Ctrl-C (130) instead of raising it.
    if code == 130:
        _interrupted()
    sys.exit(code if isinstance(code, int) else 0)


def run() -> None:
    """The `featinv` program: ``main``, then exit without Python's interpreter teardown, which took
    0.5 s here after torch had run (a third of a one-image invert). By then every file featinv wrote
    is closed, fsynced and renamed into place; only the standard streams need a flush. Tests call
    ``main`` itself."""
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if not isinstance(e.code, (int, type(None))):
            sys.stderr.write(f"{e.code}\n")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)


def _interrupted(detail: str = "", code: int = 130) -> None:
    """Ctrl-C: one line, exit 130 (128 + SIGINT; 143 for SIGTERM) as shells expect; atomic writes left
    no partial file."""
    sys.stderr.write(f"featinv: interrupted{': ' + detail if detail else ''}\n")
    sys.exit(code)
