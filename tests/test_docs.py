"""Man pages and README stay true to --help: every option a command has is documented."""
import re

import pytest
import typer

from conftest import ROOT
from featinv_cli.cli import app

COMMANDS = typer.main.get_command(app).commands


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_man_page_documents_every_option(name):
    page = ROOT / "man" / f"featinv-{name}.1"
    assert page.exists(), f"man page missing for featinv {name}"
    text = page.read_text().replace("\\-", "-")
    for param in COMMANDS[name].params:
        for opt in list(getattr(param, "opts", [])) + list(getattr(param, "secondary_opts", [])):
            if opt.startswith("--") and opt != "--help":
                assert re.search(re.escape(opt) + r"\b", text), f"{page.name} does not document {opt}"


def test_main_page_lists_every_command():
    text = (ROOT / "man" / "featinv.1").read_text()
    for name in COMMANDS:
        assert f"featinv\\-{name}" in text


def test_readme_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    head = text[:1500]
    assert "make demo" in head and "make test" in head


def recorded_figures() -> set[str]:
    """Every number, rounded to 3 decimals, in the files the repository keeps as the source of its
    figures: bench/results.json, docs/figures/*.json and the shipped models' metadata."""
    import json

    from featinv_cli.safetensors_codec import read_metadata

    found: set[str] = set()

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, float):
            found.add(f"{x:.3f}")
        elif isinstance(x, str) and x[:1] in "{[":  # metadata fields hold JSON text
            try:
                walk(json.loads(x))
            except ValueError:
                pass

    for path in [ROOT / "bench" / "results.json", *sorted((ROOT / "docs" / "figures").glob("*.json"))]:
        walk(json.loads(path.read_text()))
    for path in sorted((ROOT / "featinv_cli" / "assets").glob("*.safetensors")):
        walk(read_metadata(path))
    return found


def test_readme_error_figures_have_a_recorded_source():
    """A normalized error (0.xxx) in README's prose must be one the repository records: typed-in
    history drifts (a hand-typed 0.615 against 0.469 had no run behind it). Generated blocks are
    checked against their sources by bench/readme.py --check (tests/test_shipped.py)."""
    text = re.sub(r"<!-- generated: \w+ -->.*?<!-- end generated -->", "", (ROOT / "README.md").read_text(), flags=re.S)
    figures = set(re.findall(r"\b0\.\d{3}\b", text))
    assert figures, "the pattern finds README's figures"
    missing = sorted(figures - recorded_figures())
    assert not missing, f"README figures with no recorded source: {missing}"
