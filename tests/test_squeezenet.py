"""``squeezenet:LAYER``: SqueezeNet v1.0 with its ImageNet weights shipped, and the rule that no CNN
family falls back to random weights unasked. (Equality with torchvision's own squeezenet1_0, layer by
layer, is in test_torchvision.py: it needs torchvision.)"""
import pytest
import torch

from conftest import one_line_error
from featinv_cli.errors import FeatinvError
from featinv_cli.features import parse_spec
from featinv_cli.features.squeezenet import LAYERS, WEIGHTS_FILE, squeezenet1_0

# The table: torchvision squeezenet1_0 shapes for a 224 x 224 input.
SHAPES = {"conv1": (96, 54, 54), "fire2": (128, 54, 54), "fire3": (128, 54, 54), "fire4": (256, 27, 27),
          "fire5": (256, 27, 27), "fire6": (384, 27, 27), "fire7": (384, 27, 27), "fire8": (512, 13, 13),
          "fire9": (512, 13, 13), "conv10": (1000, 13, 13), "pool10": (1000,)}


def test_every_layer_has_the_table_shape_with_the_shipped_weights():
    assert WEIGHTS_FILE.exists() and set(LAYERS) == set(SHAPES)
    images = torch.rand(2, 3, 224, 224)
    for layer, shape in SHAPES.items():
        e = parse_spec(f"squeezenet:{layer}")
        with torch.no_grad():
            f = e(images)
        assert tuple(f.shape) == (2, *shape), layer
        assert e.channels == shape[0] and e.is_vector == (len(shape) == 1)
        if len(shape) == 3:
            assert e.grid_size(224, 224) == shape[1:]
        assert (f >= 0).all()  # every layer is taken after a ReLU


def test_shipped_weights_recognise_a_photo(photos):
    from featinv_cli.images import read_image

    scores = parse_spec("squeezenet:pool10")(read_image(photos["coffee"])[None])
    assert int(scores.argmax()) in (967, 968)  # ImageNet's espresso, cup


def test_state_dict_loads_strictly_and_random_weights_only_when_asked(tmp_path):
    net = squeezenet1_0()
    torch.manual_seed(3)
    state = {k: torch.randn_like(v) * 0.05 for k, v in net.state_dict().items()}
    torch.save(state, tmp_path / "sq.pth")
    images = torch.rand(1, 3, 96, 96)
    e = parse_spec(f"squeezenet:fire9,weights={tmp_path / 'sq.pth'},size=96")
    net.load_state_dict(state)
    x = e.preprocess(images)
    assert torch.equal(e(images), net.features(x))
    r0, r1 = parse_spec("squeezenet:fire2,weights=random:0"), parse_spec("squeezenet:fire2,weights=random:1")
    assert not torch.equal(r0(images), r1(images))
    assert torch.equal(r0(images), parse_spec("squeezenet:fire2,weights=random:0")(images))
    del state["features.12.squeeze.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(FeatinvError, match="not squeezenet weights"):
        parse_spec(f"squeezenet:fire9,weights={tmp_path / 'partial.pth'}")(images)


def test_an_image_at_the_input_size_is_not_resampled():
    e = parse_spec("squeezenet:conv1,size=64")
    images = torch.rand(1, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.equal(e.preprocess(images), (images - mean) / std)


def test_bad_layer_and_missing_weights_are_one_line(cli, photos, tmp_path):
    out = tmp_path / "f.safetensors"
    msg = one_line_error(cli("extract", "squeezenet:fire12", photos["astronaut"], "-o", out))
    assert "unknown layer 'fire12'" in msg and "fire9" in msg
    msg = one_line_error(cli("extract", "squeezenet:fire9", photos["astronaut"], "--weights", tmp_path / "no.pth",
                             "-o", out))
    assert "no such weights file" in msg
    assert not out.exists()


@pytest.mark.parametrize("spec", ["alexnet:conv3", "caffenet:conv3", "torchvision:resnet18:layer3"])
def test_no_family_uses_random_weights_unasked(cli, photos, tmp_path, monkeypatch, spec):
    """Without --weights and without the cached file: one line naming the choices, no output."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    out = tmp_path / "f.safetensors"
    msg = one_line_error(cli("extract", spec, photos["astronaut"], "-o", out))
    assert not out.exists()
    if spec.startswith("torchvision") and "need torchvision" in msg:
        pytest.skip("torchvision does not import here; the weights rule is checked by make test-torchvision")
    assert "--weights" in msg and "random:0" in msg


def test_extract_pipe_invert_works_out_of_the_box(cli, photos, tmp_path):
    """`featinv extract squeezenet:fire9 photo.jpg -o - | featinv invert - -o r.png`: shipped weights and
    shipped inverter, nothing to download; the reconstruction is nearer the photo than another photo is."""
    import imageio.v3 as iio

    from featinv_cli import metrics
    from featinv_cli.data import eval_view
    from featinv_cli.images import image_from_array, read_image

    feats = tmp_path / "f.safetensors"
    assert cli("extract", "squeezenet:fire9", photos["coffee"], "-o", feats).code == 0
    r = cli("invert", feats, "-o", tmp_path / "r.png")
    assert r.code == 0, r.err
    recon = image_from_array(iio.imread(tmp_path / "r.png"))[None]
    ref = read_image(photos["coffee"])[None]
    other = read_image(photos["astronaut"])[None]
    assert recon.shape == ref.shape
    views = torch.cat([eval_view(x[0], 128)[None] for x in (ref, other)])
    rv = eval_view(recon[0], 128)[None]
    assert metrics.psnr(rv, views[:1]) > metrics.psnr(views[1:], views[:1]) + 3
