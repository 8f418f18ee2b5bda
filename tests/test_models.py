"""Inverter networks: the paper's up-convolution and fully convolutional shapes."""
import pytest
import torch

from featinv_cli.features import parse_spec
from featinv_cli.models import build, for_extractor
from featinv_cli.models.blocks import upconv


def test_upconv_doubles_size():
    assert upconv(4, 2)(torch.zeros(1, 4, 3, 5)).shape == (1, 2, 6, 10)


@pytest.mark.parametrize("hc,wc", [(16, 16), (5, 7), (38, 56), (1, 1)])
def test_any_grid_size_gives_cells_times_stride(hc, wc):
    net, arch = for_extractor("paper", parse_spec("hog"), width=0.125)
    assert net(torch.zeros(2, 31, hc, wc)).shape == (2, 3, hc * 8, wc * 8)


def test_arch_metadata_rebuilds_same_network():
    net, arch = for_extractor("paper", parse_spec("hog"), width=0.125)
    again = build(arch)
    again.load_state_dict(net.state_dict())
    x = torch.rand(1, 31, 4, 4)
    assert torch.equal(net(x), again(x))


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


def test_untrained_network_predicts_the_mean():
    """Zero output layer: before training the inverter outputs 0 (= the mean image after de-normalising)."""
    net, _ = for_extractor("paper", parse_spec("hog"), width=0.125)
    assert net(torch.rand(2, 31, 4, 4)).abs().max() == 0
