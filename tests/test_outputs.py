"""-o resolved and checked once, before any work (outputs.Output): a folder that cannot be made, a file
below a file, a place nothing can be written are one line and exit 1, and nothing is computed first."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import one_line_error


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder no file can be made in: a read-only one where permissions bind, else /sys (root)."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o555)
        return folder
    if not Path("/sys").is_dir():
        pytest.skip("running as root without /sys: no folder here refuses root's writes")
    return Path("/sys")


@pytest.fixture
def hog_features(cli, photos, tmp_path) -> Path:
    out = tmp_path / "h.safetensors"
    assert cli("extract", "hog", photos["astronaut"], "--resize", "64", "-o", out).code == 0
    return out


@pytest.mark.parametrize("name", ["x.safetensors", "sub/"])
def test_extract_below_a_regular_file_is_one_line(cli, photos, tmp_path, name):
    msg = one_line_error(cli("extract", "hog", photos["astronaut"], "-o", f"{photos['coffee']}/{name}"))
    assert f"{photos['coffee']}" in msg and "is a file" in msg


@pytest.mark.parametrize("name", ["x.png", "sub/"])
def test_invert_below_a_regular_file_is_one_line(cli, hog_features, photos, name):
    msg = one_line_error(cli("invert", hog_features, "-o", f"{photos['coffee']}/{name}"))
    assert "is a file" in msg


@pytest.mark.parametrize("command", ["extract", "invert"])
@pytest.mark.parametrize("name", ["x", "sub/"])
def test_a_folder_that_cannot_be_written_is_one_line(cli, photos, hog_features, tmp_path, command, name):
    where = unwritable_folder(tmp_path)
    target = f"{where}/featinv-{name}" + (".safetensors" if command == "extract" and name == "x" else
                                          ".png" if name == "x" else "")
    args = ("extract", "hog", photos["astronaut"]) if command == "extract" else ("invert", hog_features)
    msg = one_line_error(cli(*args, "-o", target))
    assert f"{where}" in msg and ("cannot create folder" in msg or "cannot write in folder" in msg)
    assert not Path(target.rstrip("/")).exists()


def test_demo_into_a_folder_that_cannot_be_written_stops_before_the_models_run(cli, tmp_path):
    where = unwritable_folder(tmp_path)
    start = time.perf_counter()
    msg = one_line_error(cli("demo", "-o", f"{where}/demo.png"))
    assert time.perf_counter() - start < 5
    assert "cannot write in folder" in msg


def test_a_folder_is_made_only_when_the_first_file_is_written(cli, hog_features, tmp_path):
    """A run that fails before its first write leaves no folder behind; one that writes makes it."""
    out = tmp_path / "new" / "deeper"
    assert cli("invert", hog_features, "-o", f"{out}/").code == 0
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png"]
    missing = tmp_path / "none.safetensors"
    assert cli("invert", missing, "-o", f"{tmp_path}/other/").code != 0
    assert not (tmp_path / "other").exists()


def test_a_file_in_the_way_of_a_row_s_folder_is_one_line(cli, photos, tmp_path):
    """extract -o DIR/ keeps the photos' sub-folders; a file where one of them must go stops the run."""
    photos_dir = tmp_path / "photos"
    (photos_dir / "a").mkdir(parents=True)
    Path(photos["astronaut"]).rename(photos_dir / "a" / "x.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a").write_text("not a folder")
    msg = one_line_error(cli("extract", "hog", photos_dir, "--resize", "64", "-o", f"{out}/"))
    assert "cannot create folder" in msg and "a" in msg
