"""Inverter networks: the paper's up-convolution and fully convolutional shapes."""
import pytest
import torch

from featinv_cli.errors import FeatinvError
from featinv_cli.features import parse_spec
from featinv_cli.models import build, for_extractor
from featinv_cli.models.blocks import upconv


def test_upconv_doubles_size():
    assert upconv(4, 2)(torch.zeros(1, 4, 3, 5)).shape == (1, 2, 6, 10)


ARCHS = ["paper", "skip"]
SHALLOW = [("hog", 31, 8), ("lbp", 58, 16), ("sift", 133, 4)]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("feature,channels,stride", SHALLOW)
@pytest.mark.parametrize("hc,wc", [(16, 16), (5, 7), (1, 1)])
def test_any_grid_size_gives_cells_times_stride(arch, feature, channels, stride, hc, wc):
    net, _ = for_extractor(arch, parse_spec(feature), width=0.0625)
    assert net(torch.zeros(2, channels, hc, wc)).shape == (2, 3, hc * stride, wc * stride)


@pytest.mark.parametrize("arch", ARCHS)
def test_arch_metadata_rebuilds_same_network(arch):
    net, meta = for_extractor(arch, parse_spec("hog"), width=0.125)
    torch.nn.init.normal_(list(net.parameters())[-2])  # the zero output layer would hide a mismatch
    again = build(meta)
    again.load_state_dict(net.state_dict())
    x = torch.rand(1, 31, 4, 4)
    assert torch.equal(net(x), again(x)) and net(x).abs().max() > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_cells_below_four_pixels_are_refused_clearly(arch):
    with pytest.raises(Exception, match="stride 2 must be a power of two from 4 to 64"):
        for_extractor(arch, parse_spec("hog:cell=2"))


def test_skip_is_only_for_hand_made_features():
    with pytest.raises(Exception, match="--arch skip is for dense hand-made features"):
        for_extractor("skip", parse_spec("alexnet:conv3"))


def test_skip_passes_cell_detail_past_the_bottleneck():
    """With skips, a cell's own output block depends on it far more than on a cell 4 blocks away."""
    torch.manual_seed(0)
    net, _ = for_extractor("skip", parse_spec("hog"), width=0.125)
    torch.nn.init.normal_(net.tail[-1][0].weight, std=0.1)
    x = torch.rand(1, 31, 8, 8)
    x2 = x.clone()
    x2[0, :, 1, 1] += 1
    changed = (net(x2) - net(x)).abs().sum(1)[0]
    assert changed[8:16, 8:16].mean() > 3 * changed[40:48, 40:48].mean() > 0


def test_contracts_to_one_sixty_fourth():
    """A change anywhere in a 64x64 image block changes the whole block's output (1/64 bottleneck)."""
    net, _ = for_extractor("paper", parse_spec("hog"), width=0.125)
    torch.nn.init.normal_(net.net[-1][0].weight)  # the output layer starts at zero; wake it up
    x = torch.rand(1, 31, 8, 8)
    y0 = net(x)
    x2 = x.clone()
    x2[0, :, 0, 0] += 1
    changed = (net(x2) - y0).abs().sum(1)[0]
    assert changed[60:, 60:].max() > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_untrained_network_predicts_the_mean(arch):
    """Zero output layer: before training the inverter outputs 0 (= the mean image after de-normalising)."""
    net, _ = for_extractor(arch, parse_spec("hog"), width=0.125)
    assert net(torch.rand(2, 31, 4, 4)).abs().max() == 0


@pytest.mark.parametrize("spec", ["hog", "lbp"])
def test_mirror_channels_are_the_features_of_the_mirrored_image(photos, spec):
    """The permutation is derived from the feature's definition; check it against the extractor."""
    from featinv_cli.images import read_image

    e = parse_spec(spec)
    image = read_image(photos["astronaut"])[None, :, :256, :256]
    mirrored = e(image.flip(-1))
    permuted = e(image).flip(-1)[:, list(e.mirror_channels)]
    assert sorted(e.mirror_channels) == list(range(e.channels))
    # Exact for LBP; for HOG up to VLFeat's cell grid, which is not quite symmetric (measured on this
    # image: mean difference 0.0006 against 0.09 without the permutation and 0.14 mean feature).
    if spec == "lbp":
        assert torch.equal(mirrored, permuted)
    assert (mirrored - permuted).abs().mean() < 0.01 * mirrored.abs().mean()
    assert (mirrored - e(image).flip(-1)).abs().mean() > 0.2 * mirrored.abs().mean()  # the permutation matters


def test_one_registry_names_typed_are_names_stored():
    """`train --arch NAME` stores NAME; files from before (paper-conv, paper-fc) still rebuild."""
    from featinv_cli.models.registry import ARCHITECTURES, build, for_extractor

    cases = {"hog": ("paper", "skip"), "squeezenet:fire9": ("paper",), "squeezenet:pool10": ("paper",)}
    for spec, archs in cases.items():
        for name in archs:
            net, arch = for_extractor(name, parse_spec(spec), width=0.125)
            assert arch["name"] == name in ARCHITECTURES
            assert type(build(arch)) is type(net)
    _, conv = for_extractor("paper", parse_spec("squeezenet:fire9"), width=0.125)
    old = {k: v for k, v in conv.items() if k != "form"} | {"name": "paper-conv"}
    assert type(build(old)) is type(build(conv)) and conv["form"] == "conv"
    with pytest.raises(FeatinvError, match="unknown architecture 'unet'"):
        build({"name": "unet"})


@pytest.mark.parametrize("arch, feature", [("skip", "hog"), ("paper", "lbp"), ("paper", "squeezenet:fire5")])
def test_widened_network_computes_what_the_narrow_one_did(arch, feature):
    """train --init --width: the wider network's output equals the narrow one's before any step (the
    skip network's merges read concatenations, whose old channels sit at the start of each half)."""
    from featinv_cli.models.widen import widen

    torch.manual_seed(0)
    ext = parse_spec(feature)
    narrow, _ = for_extractor(arch, ext, width=0.0625)
    for p in narrow.parameters():  # trained weights: no zero output layer to hide a wrong copy behind
        torch.nn.init.normal_(p, 0.0, 0.05)
    wide, _ = for_extractor(arch, ext, width=0.1)
    x = torch.randn(2, ext.channels, 8, 8)
    assert not torch.allclose(narrow(x), wide(x), atol=1e-4)
    widen(narrow, wide)
    assert torch.allclose(narrow(x), wide(x), atol=1e-6)
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in narrow.parameters())


def test_widening_refuses_narrowing_and_fc_networks_and_check_catches_a_wrong_copy(monkeypatch):
    from featinv_cli.models.dense import SkipInverter
    from featinv_cli.models.widen import widen

    ext = parse_spec("hog")
    with pytest.raises(ValueError, match="cannot widen"):
        widen(for_extractor("skip", ext, width=0.25)[0], for_extractor("skip", ext, width=0.125)[0])
    fc = parse_spec("squeezenet:pool10")
    with pytest.raises(ValueError, match="fully connected"):
        widen(for_extractor("paper", fc, width=0.01)[0], for_extractor("paper", fc, width=0.02)[0])
    # A concatenation the network does not declare is copied as one block, wrongly: check=True says so.
    monkeypatch.setattr(SkipInverter, "CONCATENATED_INPUTS", {})
    narrow = for_extractor("skip", ext, width=0.0625)[0]
    for p in narrow.parameters():
        torch.nn.init.normal_(p, 0.0, 0.05)
    with pytest.raises(ValueError, match="does not compute what the narrow one did"):
        widen(narrow, for_extractor("skip", ext, width=0.1)[0], check=True)
