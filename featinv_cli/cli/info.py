"""featinv info: what a feature, model, statistics or views file holds."""
from __future__ import annotations

import json

import typer

from .common import JSON, out, show_table


def invert_would_take(ff, name: str):
    """A bare array's (extractor, image size) as `featinv invert` guesses them; imports torch, so only
    a .npy pays for it."""
    from ..features import resolve

    return resolve(ff, name)


def info(
    file: str = typer.Argument(..., help="Feature, model, statistics or views file, or - for stdin."),
    as_json: bool = JSON,
):
    """Show what a featinv file holds: extractor, parameters, shapes, training record.

    \b
    Examples:
      featinv info photo.safetensors
      featinv info featinv_cli/assets/hog.safetensors --json
      featinv info views.safetensors
    """
    from rich.table import Table

    from ..formats import describe

    d = describe(file, guess=invert_would_take)
    if as_json:
        out.print_json(json.dumps(d))
        return
    table = Table(show_header=False, box=None)
    for k, v in d.items():
        table.add_row(f"[bold]{k}[/bold]", v if isinstance(v, str) else json.dumps(v))
    show_table(table)
