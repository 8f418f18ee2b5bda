"""The shipped models and the demo: what `make demo` and a user without a model of their own get."""
import json

import imageio.v3 as iio
import pytest

from conftest import DATA
from featinv_cli.inverter import ASSETS

SHIPPED = sorted(p.stem for p in ASSETS.glob("*.safetensors"))


def test_hog_model_ships():
    assert "hog" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_is_small_fp16_and_described(cli, name):
    path = ASSETS / f"{name}.safetensors"
    assert path.stat().st_size < 12 * 2**20
    d = json.loads(cli("info", path, "--json").out)
    assert d["kind"] == "model" and d["feature"].split(":")[0] == name
    assert d["train"]["data_fingerprint"] and d["train"]["steps_done"] == d["train"]["config"]["steps"]


def test_demo_writes_labelled_grid_and_scores(cli, tmp_path):
    out = tmp_path / "demo.png"
    r = cli("demo", "-o", out, "--size", "128")
    assert r.code == 0, r.err
    grid = iio.imread(out)
    assert grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[1] > 2 * 192 and grid.shape[0] > 6 * 192  # 6 photographs x (input | hog ...)
    assert "hog" in r.text and "normalized error" in r.text


@pytest.mark.skipif(not (DATA / "val").is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("name,limit", [("hog", 0.40), ("lbp", 0.50), ("sift", 0.45)])
def test_validation_error_within_issue_limits(name, limit):
    """The evaluation protocol of README: val images, shorter side 128, centre crop 128."""
    if name not in SHIPPED:
        pytest.skip(f"no shipped {name} model")
    from featinv_cli.evaluate import evaluate

    result = evaluate(ASSETS / f"{name}.safetensors", DATA / "val", size=128)
    assert result["normalized_error"] <= limit, result
