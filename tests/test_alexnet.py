"""AlexNet / CaffeNet layers as features: shapes, weight loading, refusal of bad weights, and the
whole train -> invert path on seeded random weights (no pretrained weights can be fetched here)."""
import pytest
import torch
from torch.nn import functional as F

from conftest import one_line_error
from featinv_cli.errors import FeatinvError
from featinv_cli.features import parse_spec
from featinv_cli.features.alexnet import LAYERS, SHAPES, caffenet, torchvision_alexnet

EXPECTED = {fam: {layer: ((c, s, s) if s else (c,)) for layer, (c, s) in SHAPES[fam].items()} for fam in SHAPES}
# Written out once more by hand, so a slip in SHAPES cannot hide: torchvision's AlexNet and CaffeNet.
assert EXPECTED["alexnet"]["conv1"] == (64, 27, 27) and EXPECTED["caffenet"]["conv4"] == (384, 13, 13)
assert EXPECTED["alexnet"]["conv5"] == (256, 6, 6) and EXPECTED["caffenet"]["fc8"] == (1000,)


@pytest.mark.parametrize("family", ["alexnet", "caffenet"])
@pytest.mark.parametrize("layer", LAYERS)
def test_every_layer_has_the_right_shape(family, layer):
    e = parse_spec(f"{family}:{layer},weights=random:0")
    y = e(torch.rand(2, 3, 90, 130))
    assert tuple(y.shape[1:]) == EXPECTED[family][layer]
    if layer != "fc8":
        assert (y >= 0).all()  # after ReLU (and pooling / LRN); fc8 is before softmax


def reference_alexnet_features(state, x):
    """torchvision's AlexNet.features written with functional ops straight from the state dict."""
    w = lambda i: (state[f"features.{i}.weight"], state[f"features.{i}.bias"])  # noqa: E731
    x = F.max_pool2d(F.relu(F.conv2d(x, *w(0), stride=4, padding=2)), 3, 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, *w(3), padding=2)), 3, 2)
    x = F.relu(F.conv2d(x, *w(6), padding=1))
    x = F.relu(F.conv2d(x, *w(8), padding=1))
    return F.max_pool2d(F.relu(F.conv2d(x, *w(10), padding=1)), 3, 2)


def test_torchvision_state_dict_loads_and_matches(tmp_path):
    torch.manual_seed(5)
    state = {k: torch.randn_like(v) * 0.05 for k, v in torchvision_alexnet().state_dict().items()}
    path = tmp_path / "alexnet.pth"
    torch.save(state, path)
    e = parse_spec(f"alexnet:conv5,weights={path}")
    images = torch.rand(2, 3, 224, 224)
    ours = e(images)
    ref = reference_alexnet_features(state, e.preprocess(images))
    assert torch.allclose(ours, ref, atol=1e-5)
    assert e.params["weights"] == str(path)


def test_bad_weights_each_give_one_line(cli, photos, tmp_path):
    out = tmp_path / "f.safetensors"
    msg = one_line_error(cli("extract", "alexnet:fc6", photos["astronaut"], "--weights", tmp_path / "no.pth",
                             "-o", out))
    assert "no such weights file" in msg
    caffe = tmp_path / "caffenet.pth"
    torch.save(caffenet().state_dict(), caffe)
    msg = one_line_error(cli("extract", "alexnet:fc6", photos["astronaut"], "--weights", caffe, "-o", out))
    assert "not alexnet weights" in msg
    pickled = tmp_path / "module.pth"
    torch.save(torchvision_alexnet(), pickled)  # a whole pickled module, not a plain state dict
    msg = one_line_error(cli("extract", "alexnet:fc6", photos["astronaut"], "--weights", pickled, "-o", out))
    assert "state dict" in msg
    assert not out.exists()


def test_no_weights_says_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FeatinvError, match="alexnet-owt-7be5be79.pth"):
        parse_spec("alexnet:fc6,weights=")(torch.rand(1, 3, 64, 64))
    with pytest.raises(FeatinvError, match="--weights"):
        parse_spec("caffenet:fc6,weights=")(torch.rand(1, 3, 64, 64))


@pytest.mark.parametrize("family", ["alexnet", "caffenet"])
@pytest.mark.parametrize("layer", LAYERS)
def test_train_and_invert_a_layer(cli, image_dir, photos, tmp_path, family, layer):
    model = tmp_path / "m.safetensors"
    r = cli("train", f"{family}:{layer}", "--weights", "random:0", "-d", image_dir, "--width", "0.0625",
            "--crop", "64", "--batch", "4", "--steps", "2", "--workers", "0", "-o", model, "-q")
    assert r.code == 0, r.err
    feats = tmp_path / "f.safetensors"
    assert cli("extract", f"{family}:{layer}", photos["chelsea"], "--weights", "random:0", "-o", feats).code == 0
    r = cli("invert", feats, "-m", model, "-o", tmp_path / "r.png")
    assert r.code == 0, r.err
    import imageio.v3 as iio

    assert iio.imread(tmp_path / "r.png").shape == (300, 451, 3)
    # features of other weights are refused by this model
    cli("extract", f"{family}:{layer}", photos["chelsea"], "--weights", "random:1", "-o", feats)
    assert "differ" in one_line_error(cli("invert", feats, "-m", model, "-o", tmp_path / "r2.png"))


def test_optimize_baseline_cuts_feature_loss_tenfold():
    from featinv_cli.optimize import OptimizeConfig, invert_by_optimization
    from featinv_cli.data import eval_view
    from featinv_cli.images import image_from_array
    from conftest import photo

    e = parse_spec("caffenet:conv3,weights=random:0")
    image = eval_view(image_from_array(photo("astronaut")), 64)[None]
    _, history = invert_by_optimization(e, e(image), (64, 64), OptimizeConfig(steps=120))
    assert history[-1] * 10 <= history[0], (history[0], history[-1])


@pytest.mark.slow
def test_optimize_on_the_command_line_and_refusals(cli, photos, tmp_path):
    feats = tmp_path / "f.safetensors"
    assert cli("extract", "alexnet:conv5", photos["chelsea"], "--weights", "random:0", "--resize", "64",
               "--crop", "64", "-o", feats).code == 0
    r = cli("invert", feats, "--method", "optimize", "--optimize-steps", "5", "-o", tmp_path / "r.png")
    assert r.code == 0, r.err
    for feature in ("lbp", "sift"):
        f = tmp_path / f"{feature}.safetensors"
        cli("extract", feature, photos["chelsea"], "-o", f)
        msg = one_line_error(cli("invert", f, "--method", "optimize", "-o", tmp_path / "x.png"))
        assert "gradients" in msg and "learned inverter" in msg
    assert one_line_error(cli("invert", feats, "--method", "magic", "-o", tmp_path / "x.png"))


@pytest.mark.slow
def test_layer_sweep_smoke_run(tmp_path):
    """examples/layer_sweep.py end to end on random weights, tiny schedule: table, JSON and plot."""
    import json
    import subprocess
    import sys

    from conftest import DATA, ROOT

    if not (DATA / "val").is_dir():
        pytest.skip("../shared/data not present")
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "layer_sweep.py"), "--weights", "random:0",
                        "--data", str(DATA), "--layers", "conv5,fc6", "--steps", "2", "--batch", "8",
                        "--width", "0.0625", "--optimize-images", "1", "--optimize-steps", "3",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((tmp_path / "sweep.json").read_text())["rows"]
    assert [row["layer"] for row in rows] == ["conv5", "fc6"]
    assert all(0 < row["learned"] < 2 and 0 < row["optimize"] < 2 for row in rows)
    import imageio.v3 as iio

    assert iio.imread(tmp_path / "sweep.png").shape == (420, 720, 3)


def test_finetune_encoder_trains_an_autoencoder(cli, image_dir, photos, tmp_path):
    from featinv_cli.evaluate import evaluate
    from featinv_cli.formats.model import load_model

    out = tmp_path / "ae.safetensors"
    r = cli("train", "caffenet:fc6", "--weights", "random:0", "--finetune-encoder", "-d", image_dir, "--width",
            "0.0625", "--crop", "64", "--batch", "4", "--steps", "2", "--workers", "0", "--full", "-o", out, "-q")
    assert r.code == 0, r.err
    m = load_model(out)
    assert m.arch["finetuned_encoder"] is True
    original = caffenet_state()
    tuned = {k[8:]: v for k, v in m.state.items() if k.startswith("encoder.")}
    assert set(tuned) == set(original)
    assert not torch.equal(tuned["features.0.weight"], original["features.0.weight"])  # it did train
    assert 0 < evaluate(out, image_dir, size=64)["normalized_error"] < 2
    feats = tmp_path / "f.safetensors"
    cli("extract", "caffenet:fc6", photos["chelsea"], "--weights", "random:0", "-o", feats)
    assert "autoencoder" in one_line_error(cli("invert", feats, "-m", out, "-o", tmp_path / "r.png"))
    r = cli("train", "hog", "--finetune-encoder", "-d", image_dir, "--batch", "4", "-o", tmp_path / "x.safetensors")
    assert "CNN encoder" in one_line_error(r)


def caffenet_state():
    return {k: v.clone() for k, v in parse_spec("caffenet:fc6,weights=random:0").network().state_dict().items()}


def test_same_weights_under_another_path_fit_the_model(cli, image_dir, photos, tmp_path):
    """A model records the weights path it was trained with; a copy of that file elsewhere is the same
    weights (compared by contents), a different file is not."""
    import shutil

    first = tmp_path / "a" / "caffenet.pth"
    first.parent.mkdir()
    torch.manual_seed(1)
    torch.save(caffenet().state_dict(), first)
    copy = tmp_path / "b.pth"
    shutil.copy(first, copy)
    other = tmp_path / "c.pth"
    torch.save(caffenet().state_dict(), other)  # fresh random weights
    model = tmp_path / "m.safetensors"
    r = cli("train", "caffenet:conv5", "--weights", first, "-d", image_dir, "--width", "0.0625", "--crop", "64",
            "--batch", "4", "--steps", "1", "--workers", "0", "-o", model, "-q")
    assert r.code == 0, r.err
    feats = tmp_path / "f.safetensors"
    for weights, fits in ((copy, True), (other, False)):
        assert cli("extract", "caffenet:conv5", photos["chelsea"], "--weights", weights, "-o", feats).code == 0
        r = cli("invert", feats, "-m", model, "-o", tmp_path / "r.png")
        if fits:
            assert r.code == 0, r.err
        else:
            assert "differ" in one_line_error(r)
