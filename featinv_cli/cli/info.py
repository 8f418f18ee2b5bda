"""featinv info: what a feature, model, statistics or views file holds."""
from __future__ import annotations

import json

import typer

from .common import JSON, out, show_table


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

    from ..features import resolve
    from ..formats import describe

    d = describe(file, guess=resolve)  # a bare array: what invert would take it for
    if as_json:
        out.print_json(json.dumps(d))
        return
    table = Table(show_header=False, box=None)
    for k, v in d.items():
        table.add_row(f"[bold]{k}[/bold]", v if isinstance(v, str) else json.dumps(v))
    show_table(table)
