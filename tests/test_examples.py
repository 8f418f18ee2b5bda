"""examples/gpu_models.py, the recipe behind the shipped GPU models: its --quick form on the CPU."""
import json
import subprocess
import sys

from conftest import ROOT
from featinv_cli.formats.model import load_model

SCRIPT = ROOT / "examples" / "gpu_models.py"


def test_gpu_recipe_quick_form_runs_end_to_end(image_dir, tmp_path):
    pack = tmp_path / "pack"
    r = subprocess.run([sys.executable, str(SCRIPT), "pack", "-d", str(image_dir), "--val", str(image_dir),
                        "-o", str(pack), "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "models"
    r = subprocess.run([sys.executable, str(SCRIPT), "train", "--pack", str(pack), "--out", str(out), "--quick",
                        "--only", "hog", "squeezenet-pool10", "sift"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (pack / "train-sift.safetensors").exists()  # the carried pack has no keypoints: detected there
    for name, feature in (("hog", "hog"), ("squeezenet-pool10", "squeezenet:pool10"), ("sift", "sift")):
        assert summary[name]["steps"] > 0 and 0 < summary[name]["normalized_error"] < 2
        model = load_model(out / f"{name}.safetensors")  # featinv's own format: `featinv invert -m` reads it
        assert model.feature == feature and model.train["data_fingerprint"]
    assert load_model(out / "hog.safetensors").train["init"]["file"] == "hog.safetensors"  # continued the shipped


def test_gpu_recipe_grows_the_shipped_network_to_a_larger_width_and_starts_a_smaller_from_scratch(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import gpu_models
    finally:
        sys.path.pop(0)
    wide = gpu_models.train_command("hog", tmp_path, tmp_path, 60, "cpu", 64, width=0.38)
    narrow = gpu_models.train_command("hog", tmp_path, tmp_path, 60, "cpu", 64, width=0.2)
    assert wide[wide.index("--init") + 1] == "shipped" and wide[wide.index("--width") + 1] == "0.38"
    assert "--init" not in narrow and narrow[narrow.index("--arch") + 1] == "skip"
    fc = gpu_models.train_command("squeezenet-pool10", tmp_path, tmp_path, 60, "cpu", 64, width=0.4)
    assert "--init" not in fc  # a fully connected network cannot be grown
    assert gpu_models.megabytes("hog", 0.38) < 16 < gpu_models.megabytes("hog", 0.5)
    sizes = [gpu_models.megabytes(name, width) for name, (_, _, width) in gpu_models.MODELS.items()]
    assert max(sizes) < 16 and sum(sizes) < 63  # what a lent machine hands back: 16 MiB a file, 64 together
    r = subprocess.run([sys.executable, str(SCRIPT), "train", "--pack", str(tmp_path), "--out", str(tmp_path),
                        "--width", "hog=0.5"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "27.0 MB model file" in r.stderr



def test_layer_sweep_update_replaces_only_the_swept_layers_rows(tmp_path):
    """layer_sweep.py --update: a new layer's row goes into the earlier sweep in its place, the others stay,
    the plot is redrawn; a layer the earlier sweep lacks is refused."""
    import imageio.v3 as iio
    import pytest

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import layer_sweep
    finally:
        sys.path.pop(0)
    earlier = tmp_path / "fig7.json"
    rows = [{"layer": name, "learned": None, "learned_same_images": None, "optimize": 0.1 * (i + 1)}
            for i, name in enumerate(("conv1", "fire2", "fire3"))]
    earlier.write_text(json.dumps({"weights": "", "steps": 0, "rows": rows}))
    new = {"layer": "fire2", "learned": 0.25, "learned_same_images": 0.2, "optimize": 0.21}
    layer_sweep.update(earlier, [new])
    assert json.loads(earlier.read_text())["rows"] == [rows[0], new, rows[2]]
    assert iio.imread(tmp_path / "fig7.png").shape == (420, 720, 3)
    with pytest.raises(SystemExit, match="no row for fire9"):
        layer_sweep.update(earlier, [dict(new, layer="fire9")])
    with pytest.raises(SystemExit, match="made with --weights"):
        layer_sweep.update(earlier, [new], steps=1000)


def test_ship_if_better_ships_a_first_model_then_only_a_lower_error(tiny_model, tmp_path, monkeypatch, capsys):
    """examples/ship_if_better.py: a feature with no shipped model takes the new one (it still needs an
    evaluation); after that a model replaces the shipped one only with a lower stored validation error."""
    import shutil

    import featinv_cli.inverter
    from featinv_cli.formats.model import store_evaluation

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import ship_if_better
    finally:
        sys.path.pop(0)
    assets = tmp_path / "assets"
    assets.mkdir()
    monkeypatch.setattr(featinv_cli.inverter, "ASSETS", assets)
    models = {}
    for name, error in (("none", None), ("worse", 0.5), ("better", 0.4)):
        models[name] = tmp_path / f"{name}.safetensors"
        shutil.copyfile(tiny_model, models[name])
        if error is not None:
            store_evaluation(models[name], {"on": "val", "images": 100, "protocol": "shorter side 128, centre crop 128",
                                            "normalized_error": error})

    def ship(name: str) -> str:
        monkeypatch.setattr(sys, "argv", ["ship_if_better.py", str(models[name])])
        try:
            ship_if_better.main()
        except SystemExit as e:
            assert e.code == 2
        return capsys.readouterr().out

    assert "no evaluation" in ship("none") and not (assets / "hog.safetensors").exists()
    assert "the first model for hog" in ship("worse") and (assets / "hog.safetensors").read_bytes() == models["worse"].read_bytes()
    assert "shipped" in ship("better") and (assets / "hog.safetensors").read_bytes() == models["better"].read_bytes()
    assert "kept" in ship("worse") and (assets / "hog.safetensors").read_bytes() == models["better"].read_bytes()
