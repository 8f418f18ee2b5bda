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


ERROR_KEYS = re.compile(r"error|mirror_average|learned|optimi[sz]e")  # the error figures a record holds


def recorded_errors() -> set[str]:
    """Every error figure, rounded to 3 decimals, in the files the repository keeps as the source of
    its figures: docs/figures/*.json and the shipped models' metadata (normalized errors, the mean-image
    baseline, Figure 7's learned and optimisation columns). PSNR, SSIM, widths and rates do not count."""
    import json

    from featinv_cli.safetensors_codec import read_metadata

    found: set[str] = set()

    def walk(x, key=""):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, k)
        elif isinstance(x, list):
            for v in x:
                walk(v, key)
        elif isinstance(x, float) and ERROR_KEYS.search(key):
            found.add(f"{x:.3f}")
        elif isinstance(x, str) and x[:1] in "{[":  # metadata fields hold JSON text
            try:
                walk(json.loads(x), key)
            except ValueError:
                pass

    for path in sorted((ROOT / "docs" / "figures").glob("*.json")):
        walk(json.loads(path.read_text()))
    for path in sorted((ROOT / "featinv_cli" / "assets").glob("*.safetensors")):
        walk(read_metadata(path))
    return found


def settings() -> set[str]:
    """Numbers that are settings, not errors: the commands' default values and the shipped models'
    widths (docs quote both)."""
    import json

    from featinv_cli.safetensors_codec import read_metadata

    values = {p.default for c in COMMANDS.values() for p in c.params if isinstance(p.default, float)}
    for path in (ROOT / "featinv_cli" / "assets").glob("*.safetensors"):
        arch = read_metadata(path).get("arch")
        if arch:
            values.add(float(json.loads(arch).get("width", 1.0)))
    return {f"{v:.3f}" for v in values}


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "man").glob("*.[15]"))])
def test_error_figures_have_a_recorded_source(doc):
    """A normalized error (0.xxx) in README's prose or a man page must be one the repository records:
    typed-in history drifts (a hand-typed 0.615 against 0.469 had no run behind it). Generated blocks
    are checked against their sources by bench/readme.py --check (tests/test_shipped.py)."""
    text = re.sub(r"<!-- generated: \w+ -->.*?<!-- end generated -->", "", (ROOT / doc).read_text(), flags=re.S)
    text = re.sub(r"(Adam|EMA|--ema|\\-\\-ema|0\.9,|0\.9/)\s*\(?0\.999\)?", "", text)  # a decay, not an error
    missing = sorted(set(re.findall(r"\b0\.\d{3}\b", text)) - recorded_errors() - settings())
    assert not missing, f"{doc}: error figures with no recorded source: {missing}"


def test_readme_squeezenet_table_says_which_layers_have_a_shipped_inverter():
    """The layer table's last column (and the count above it) against the files in featinv_cli/assets."""
    from featinv_cli.features import squeezenet
    from featinv_cli.inverter import ASSETS

    text = (ROOT / "README.md").read_text()
    shipped = {layer for layer in squeezenet.LAYERS if (ASSETS / f"squeezenet-{layer}.safetensors").exists()}
    said = set()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"(conv|fire|pool)\d+(, (conv|fire|pool)\d+)?", cells[0]):
            said |= {layer for layer in cells[0].split(", ")} if cells[3] == "yes" else set()
    assert said == shipped
    words = {3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten", 11: "eleven"}
    assert f"inverters for {words[len(shipped)]} of its layers ship" in text.replace("\n", " ")


def test_a_deleted_block_marker_is_noticed():
    """bench/readme.py --check re-renders the blocks it finds; a marker deleted by an edit would leave
    hand-typed figures behind unchecked, so every block must be found, and BENCHMARKS.md must hold a
    recorded table for every section of bench/results.json."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme", ROOT / "bench" / "readme.py")
    readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme)
    text, bench = (ROOT / "README.md").read_text(), (ROOT / "BENCHMARKS.md").read_text()
    assert readme.missing_blocks(text, bench) == []
    assert readme.missing_blocks(text.replace("<!-- generated: fig7 -->", ""), bench) == ["fig7"]
    assert readme.missing_blocks(text, bench.replace("<!-- generated: results:memory -->", "")) == ["results:memory"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_a_man_page_defines_exists(name):
    """The other direction: an option a man page defines (a ``.TP`` entry that starts with one) is one
    the command takes, so a renamed or removed flag cannot live on in its page."""
    text = (ROOT / "man" / f"featinv-{name}.1").read_text()
    have = {o for p in COMMANDS[name].params for o in list(getattr(p, "opts", [])) + list(getattr(p, "secondary_opts", []))}
    defined = set()
    for entry in re.findall(r"^\.TP\n\.B (\\-.*)$", text, flags=re.M):
        defined |= set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", entry.replace("\\-", "-")))
    assert defined and not defined - have, f"man/featinv-{name}.1 defines {sorted(defined - have)}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_names_values_in_words(cli, name):
    """Usage and options say FEATURE, IMAGES..., -o TEXT, --side N, not Python's {feature}, <list[str]>."""
    r = cli(name, "--help")
    assert r.code == 0
    assert not re.search(r"<(str|int|float|path|list)|\{[a-z]", r.text), r.text
