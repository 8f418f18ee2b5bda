"""The shipped models and the demo: what `make demo` and a user without a model of their own get."""
import json

import imageio.v3 as iio
import pytest

from conftest import DATA
from featinv_cli.inverter import ASSETS

WEIGHTS = "squeezenet1_0-imagenet"  # the CNN weights that ship beside the models
SHIPPED = sorted(p.stem for p in ASSETS.glob("*.safetensors") if p.stem != WEIGHTS)


def test_hog_and_squeezenet_models_ship():
    assert {"hog", "lbp", "sift", "squeezenet-conv1", "squeezenet-fire9", "squeezenet-pool10"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_is_small_fp16_and_described(cli, name):
    path = ASSETS / f"{name}.safetensors"
    assert path.stat().st_size < 20 * 2**20
    d = json.loads(cli("info", path, "--json").out)
    assert d["kind"] == "model" and d["feature"].replace(":", "-") == name
    train = d["train"]
    assert train["data_fingerprint"] and train["steps_done"] > 0
    # Trained by `featinv train` (every step it was asked for) or by the GPU recipe (a time budget).
    assert train.get("recipe") == "examples/gpu_models.py" or train["steps_done"] == train["config"]["steps"]


def test_all_assets_fit_a_package_index():
    assert sum(p.stat().st_size for p in ASSETS.iterdir()) < 100 * 2**20


def test_demo_writes_labelled_grid_and_scores(cli, tmp_path):
    out = tmp_path / "demo.png"
    r = cli("demo", "-o", out, "--size", "128")
    assert r.code == 0, r.err
    grid = iio.imread(out)
    assert grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[1] > 2 * 192 and grid.shape[0] > 6 * 192  # 6 photographs x (input | hog ...)
    assert "hog" in r.text and "normalized error" in r.text


# The errors README reports (validation protocol; plain single pass and with --mirror-average). They
# guard against shipping anything other than what README claims.
README_ERRORS = {"hog": 0.393, "sift": 0.449, "lbp": 0.541, "squeezenet-conv1": 0.166,
                 "squeezenet-fire9": 0.331, "squeezenet-pool10": 0.562}
README_MIRROR_ERRORS = {"hog": 0.383, "lbp": 0.533}
MEAN_IMAGE_ERROR = 0.701


@pytest.mark.skipif(not (DATA / "val").is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("name", sorted(README_ERRORS))
def test_validation_error_is_what_readme_says(name):
    """The evaluation protocol of README: val images, shorter side 128, centre crop 128."""
    if name not in SHIPPED:
        pytest.skip(f"no shipped {name} model")
    from featinv_cli.evaluate import evaluate

    baseline = DATA / "train" if name == "hog" else None  # 800 images to read: once is enough
    result = evaluate(ASSETS / f"{name}.safetensors", DATA / "val", size=128, baseline=baseline)
    if baseline:
        assert result["baseline_mean_error"] == pytest.approx(MEAN_IMAGE_ERROR, abs=0.001)
    assert result["normalized_error"] == pytest.approx(README_ERRORS[name], abs=0.002), result


@pytest.mark.skipif(not (DATA / "val").is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("name", sorted(README_MIRROR_ERRORS))
def test_mirror_average_error_is_what_readme_says(name):
    from featinv_cli.evaluate import evaluate

    result = evaluate(ASSETS / f"{name}.safetensors", DATA / "val", size=128, mirror_average=True)
    assert result["normalized_error"] == pytest.approx(README_MIRROR_ERRORS[name], abs=0.002), result
    assert result["normalized_error"] < README_ERRORS[name]
