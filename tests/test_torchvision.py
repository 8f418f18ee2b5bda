"""``torchvision:MODEL:MODULE`` features, and our AlexNet against torchvision's own.

torchvision is a test-only dependency and the PyPI build does not import beside the CPU torch this
project pins (it is built for another torch), so the tests that need it skip here and run with
``make test-torchvision`` (a second virtual environment with a matching torch + torchvision pair).
The spec and error tests need no torchvision.
"""
import sys

import numpy as np
import pytest
import torch

from conftest import one_line_error
from featinv_cli.errors import FeatinvError
from featinv_cli.features import parse_spec
from featinv_cli.features.alexnet import torchvision_alexnet


def _torchvision_or_none():
    try:
        import torchvision.models

        return torchvision.models
    except Exception:  # ImportError, or RuntimeError from a torchvision built for another torch
        return None


tv = _torchvision_or_none()
needs_torchvision = pytest.mark.skipif(tv is None, reason="torchvision does not import here; "
                                       "run `make test-torchvision`")


def test_spec_takes_model_and_module_by_position():
    e = parse_spec("torchvision:resnet18:layer3,weights=random:1,size=160")
    assert (e.model, e.module, e.weights, e.size) == ("resnet18", "layer3", "random:1", 160)
    assert e.spec == "torchvision:resnet18:layer3,weights=random:1,size=160"
    assert parse_spec(e.spec) == e
    assert parse_spec("torchvision:vgg11:features.4").module == "features.4"
    assert parse_spec("alexnet:fc6,weights=random:3").weights == "random:3"  # the colon in random:3 stays
    with pytest.raises(FeatinvError, match="bad parameter"):
        parse_spec("torchvision:resnet18:layer3:extra:more:too")


def test_without_torchvision_the_error_is_one_line(cli, photos, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision -> ImportError
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    msg = one_line_error(cli("extract", "torchvision:resnet18:layer3", photos["astronaut"], "-o",
                             tmp_path / "f.safetensors"))
    assert "need torchvision" in msg


def _state_file(tmp_path, net, seed=5):
    torch.manual_seed(seed)
    state = {k: (torch.randn_like(v) * 0.05 if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    return state, path


@needs_torchvision
def test_our_alexnet_matches_torchvision(tmp_path):
    state, path = _state_file(tmp_path, torchvision_alexnet())
    theirs = tv.alexnet()
    theirs.load_state_dict(state)
    theirs.eval()
    images = torch.rand(2, 3, 224, 224)
    conv5 = parse_spec(f"alexnet:conv5,weights={path}")
    x = conv5.preprocess(images)
    with torch.no_grad():
        assert torch.allclose(conv5(images), theirs.features(x), atol=1e-5)
        assert torch.allclose(parse_spec(f"alexnet:fc8,weights={path}")(images), theirs(x), atol=1e-4)
        # and the generic extractor, on the same network and file, gives the same features
        assert torch.allclose(parse_spec(f"torchvision:alexnet:features,weights={path}")(images), theirs.features(x),
                              atol=1e-5)


@needs_torchvision
def test_any_module_of_any_model(tmp_path):
    from torchvision.models.feature_extraction import create_feature_extractor

    e = parse_spec("torchvision:resnet18:layer3,weights=random:0")
    assert (e.channels, e.grid_size(224, 224), e.stride, e.is_vector) == (256, (14, 14), 16, False)
    images = torch.rand(2, 3, 100, 150)
    with torch.no_grad():
        ours = e(images)
        ref = create_feature_extractor(e.network(), ["layer3"])(e.preprocess(images))["layer3"]
    assert torch.equal(ours, ref)
    assert torch.equal(parse_spec("torchvision:resnet18:layer3,weights=random:0")(images), ours)  # seeded
    fc = parse_spec("torchvision:resnet18:fc,weights=random:0")
    assert fc.is_vector and fc.channels == 1000


@needs_torchvision
def test_bad_names_give_one_line(cli, photos, tmp_path):
    out = tmp_path / "f.safetensors"
    msg = one_line_error(cli("extract", "torchvision:resnet18:layer9", photos["astronaut"], "--weights", "random:0",
                             "-o", out))
    assert "no module 'layer9'" in msg and "layer3" in msg
    msg = one_line_error(cli("extract", "torchvision:notanet:x", photos["astronaut"], "--weights", "random:0",
                             "-o", out))
    assert "no classification model 'notanet'" in msg
    _, alex = _state_file(tmp_path, torchvision_alexnet())
    msg = one_line_error(cli("extract", "torchvision:resnet18:layer3", photos["astronaut"], "--weights", alex,
                             "-o", out))
    assert "not resnet18 weights" in msg


@needs_torchvision
@pytest.mark.parametrize("module", ["layer2", "fc"])
def test_train_and_invert_a_module(cli, image_dir, photos, tmp_path, module):
    spec = f"torchvision:resnet18:{module}"
    model, feats, out = tmp_path / "m.safetensors", tmp_path / "f.safetensors", tmp_path / "r.png"
    r = cli("train", spec, "--weights", "random:0", "--data", image_dir, "-o", model, "--steps", "2",
            "--batch", "4", "--width", "0.0625", "--workers", "0")
    assert r.code == 0, r.err
    assert cli("extract", spec, photos["astronaut"], "--weights", "random:0", "-o", feats).code == 0
    r = cli("invert", feats, "-m", model, "-o", out)
    assert r.code == 0, r.err
    import imageio.v3 as iio

    from featinv_cli.formats.features import load_features

    png = iio.imread(out)  # an 8-bit RGB image at the size of the photo the features came from
    assert png.dtype == np.uint8 and png.shape == (*load_features(feats).image_size, 3)


@needs_torchvision
def test_every_squeezenet_layer_equals_torchvision():
    """Our plain-torch squeezenet:LAYER against torchvision's squeezenet1_0 on the shipped weights."""
    from safetensors.torch import load_file

    from featinv_cli.features.squeezenet import FEATURE_MODULES, WEIGHTS_FILE

    theirs = tv.squeezenet1_0(weights=None)
    theirs.load_state_dict(load_file(WEIGHTS_FILE))
    theirs.eval()
    images = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        x = parse_spec("squeezenet:conv1").preprocess(images)
        for layer, n in FEATURE_MODULES.items():
            if layer == "pool10":
                expected = theirs(x)
            elif layer == "conv10":
                expected = theirs.classifier[1:3](theirs.features(x))
            else:
                expected = theirs.features[:n](x)
            assert torch.equal(parse_spec(f"squeezenet:{layer}")(images), expected), layer
