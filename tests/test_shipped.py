"""The shipped models and the demo: what `make demo` and a user without a model of their own get."""
import json

import imageio.v3 as iio
import pytest

from conftest import DATA
from featinv_cli.inverter import ASSETS

WEIGHTS = "squeezenet1_0-imagenet"  # the CNN weights that ship beside the models
SHIPPED = sorted(p.stem for p in ASSETS.glob("*.safetensors") if p.stem != WEIGHTS)


def test_hog_and_squeezenet_models_ship():
    assert {"hog", "lbp", "sift", "colmap-sift", "squeezenet-conv1", "squeezenet-fire5", "squeezenet-fire9",
            "squeezenet-pool10"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_is_small_fp16_and_described(cli, name):
    from featinv_cli.safetensors_codec import read_header

    path = ASSETS / f"{name}.safetensors"
    assert path.stat().st_size < 20 * 2**20
    entries = read_header(path)[0]
    assert entries and {e["dtype"] for e in entries.values()} == {"F16"}  # every tensor float16
    d = json.loads(cli("info", path, "--json").out)
    assert d["kind"] == "model" and d["feature"].replace(":", "-") == name
    train = d["train"]
    assert train["data_fingerprint"] and train["steps_done"] > 0
    # Trained by `featinv train` (every step it was asked for, or until its --minutes budget ran out) or
    # by the old GPU recipe (a time budget).
    assert train.get("recipe") == "examples/gpu_models.py" or train["steps_done"] == train["config"]["steps"] \
        or train["config"].get("minutes", 0) > 0 and train["seconds"] >= 60 * train["config"]["minutes"] - 1


def test_all_assets_fit_a_package_index():
    assert sum(p.stat().st_size for p in ASSETS.iterdir()) < 100 * 2**20


def test_demo_writes_labelled_grid_and_scores(cli, tmp_path):
    out = tmp_path / "demo.png"
    r = cli("demo", "-o", out, "--size", "128")
    assert r.code == 0, r.err
    grid = iio.imread(out)
    assert grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[1] > 2 * 128 and grid.shape[0] > 6 * 128  # 6 photographs x (input | hog ...), 128-px tiles
    assert "hog" in r.text and "normalized error" in r.text


def test_readme_model_table_is_generated_from_the_model_files():
    """README's model table is bench/readme.py's rendering of the shipped files' metadata (their
    training record and the evaluation stored in them): it cannot drift from what ships."""
    import subprocess
    import sys

    from conftest import ROOT

    r = subprocess.run([sys.executable, str(ROOT / "bench" / "readme.py"), "--check"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not (DATA / "val").is_dir(), reason="../shared/data not present (the validation photos)")
@pytest.mark.parametrize("name", [n for n in SHIPPED if n in ("hog", "lbp", "sift", "colmap-sift")
                                  or n.startswith("squeezenet")])
def test_stored_evaluation_is_what_the_model_scores(name):
    """The evaluation a shipped file carries (and README shows) is what the file scores today under the
    protocol: val photos, shorter side 128, centre crop 128."""
    from featinv_cli.evaluate import evaluate
    from featinv_cli.safetensors_codec import json_field, read_metadata

    if name == "colmap-sift":
        pytest.importorskip("pycolmap", reason="colmap-sift of the val photos needs pycolmap (make test-colmap)")

    path = ASSETS / f"{name}.safetensors"
    stored = json_field(read_metadata(path), "evaluation", str(path))
    assert stored and stored["images"] == 100
    result = evaluate(path, DATA / "val", size=128)
    assert result["normalized_error"] == pytest.approx(stored["normalized_error"], abs=1e-3), result
    if "mirror_average" in stored:
        mirrored = evaluate(path, DATA / "val", size=128, mirror_average=True)["normalized_error"]
        assert mirrored == pytest.approx(stored["mirror_average"], abs=1e-3)
        assert mirrored < stored["normalized_error"]


def _strings(value):
    """Every string in a metadata value, JSON inside it included."""
    if isinstance(value, str):
        try:
            inner = json.loads(value)
        except json.JSONDecodeError:
            yield value
            return
        yield from _strings(inner) if isinstance(inner, (dict, list)) else [value]
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize("name", SHIPPED + [WEIGHTS])
def test_no_shipped_file_names_a_path_of_the_machine_that_made_it(name):
    """The files a user installs record their sources by name: the trainer's folders (/work/cache/...,
    a worktree's assets) were in every model's training record."""
    from pathlib import PurePosixPath, PureWindowsPath

    from featinv_cli.safetensors_codec import read_metadata

    absolute = [s for s in _strings(read_metadata(ASSETS / f"{name}.safetensors"))
                if PurePosixPath(s).is_absolute() or PureWindowsPath(s).drive or s.startswith("~")]
    assert not absolute, absolute
