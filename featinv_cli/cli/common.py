"""What every subcommand shares: options, progress bars, device choice, size parsing."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import get_args

import typer
from rich.console import Console
from typer.core import TyperCommand

from ..errors import UsageError, set_quiet
from ..threads import check_threads

err = Console(stderr=True, highlight=False, soft_wrap=True)
argv: list[str] = []  # the command line main() ran, for the records that say how to repeat a run (audit)
out = Console(highlight=False, soft_wrap=True)

QUIET = typer.Option(False, "--quiet", "-q", callback=set_quiet,
                     help="No progress bars or notes on stderr (errors still).")
THREADS = typer.Option(None, "--threads", metavar="N", callback=check_threads,
                       help="CPU threads to compute with. Default: $OMP_NUM_THREADS if set, else one per core "
                            "that other processes leave free (train looks again every few seconds).")
DEVICE = typer.Option("auto", "--device", help="auto, cpu or cuda (auto takes cuda when available).")
JSON = typer.Option(False, "--json", help="Print machine-readable JSON on stdout instead of a table.")
WEIGHTS = typer.Option(None, "--weights", help="CNN features: a torchvision-style .pth state dict or "
                       ".safetensors, or random:SEED (default: squeezenet's shipped ImageNet weights; for "
                       "the others torchvision's own file in torch's cache, else an error: never random unasked).")


def show_table(table) -> None:
    """A rich table on stdout: fitted to a terminal, at its own full width into a pipe or a file, which
    has no width to fit (rich's 80 columns cut file names short: "recon/astrona…")."""
    if out.is_terminal:
        out.print(table)
        return
    wide = out.measure(table, options=out.options.update_width(10 ** 6)).maximum
    Console(highlight=False, soft_wrap=True, width=max(out.width, wide)).print(table)


# What an option's value is, by its type, where the option does not name it itself (--threads N).
VALUE_NAMES = {"int": "N", "float": "X", "Path": "PATH", "str": "TEXT"}


class Command(TyperCommand):
    """A featinv command: its --help names values in words (FEATURE, IMAGES..., -o PATH, --side N), as
    man pages do, where typer would print Python's types (``{feature}``, ``<list[str]>``, ``<int>``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.param_type_name == "argument":
                word = (param.metavar or param.name.upper()) + ("..." if param.nargs != 1 else "")
                param.metavar = word
                # Instance attributes over typer's methods: the usage line without braces, no type after the name.
                param._usage_display_name = lambda word=word: word
                param._rich_display_name = lambda word=word: word
                param.display_type_rich = lambda ctx: None
            elif param.metavar is None and not getattr(param, "is_flag", False):
                kind = param.type_descriptor.annotation
                kind = (get_args(kind) or [kind])[0]  # a repeatable option's list[int]: int
                param.metavar = VALUE_NAMES.get(getattr(kind, "__name__", ""), "VALUE")


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'480x640' (H x W) or '256' -> (H, W)."""
    if text is None:
        return None
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise UsageError(f"size {text!r}: write HxW, e.g. 480x640") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise UsageError(f"size {text!r}: write HxW with positive numbers, e.g. 480x640")
    return parts[0], parts[1]


class _NoProgress:
    def advance(self, n: int = 1, info: str | None = None) -> None:
        pass

    def set(self, completed: int, info: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass


class _RichProgress:
    def __init__(self, progress, task):
        self.progress, self.task = progress, task

    def advance(self, n: int = 1, info: str | None = None) -> None:
        if info is None:
            self.progress.update(self.task, advance=n)
        else:
            self.progress.update(self.task, advance=n, info=info)

    def set(self, completed: int, info: str) -> None:
        self.progress.update(self.task, completed=completed, info=info)

    def note(self, text: str) -> None:
        self.progress.update(self.task, info=text)


@contextmanager
def progress(total: int | None, description: str, quiet: bool = False):
    """A rich progress bar on stderr, shown only when stderr is a terminal and not --quiet."""
    with stages({description: total}, quiet) as bars:
        yield bars[description]


@contextmanager
def stages(totals: dict[str, int | None], quiet: bool = False):
    """One rich progress bar per stage of a long command (``{"invert": N, "defence": M}``), all on one
    display; yields {stage: bar}. Shown only when stderr is a terminal and not --quiet."""
    if quiet or not sys.stderr.isatty():
        yield {name: _NoProgress() for name in totals}
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=err, transient=True) as p:
        yield {name: _RichProgress(p, p.add_task(name, total=total, info="")) for name, total in totals.items()}
