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
