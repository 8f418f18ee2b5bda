"""The two layers every inverter is made of (paper §2.2, DESIGN §4)."""
from __future__ import annotations

from torch import nn

SLOPE = 0.2  # leaky ReLU slope of the paper


def conv(cin: int, cout: int, stride: int = 1, kernel: int = 5, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)]
    if act:
        layers.append(nn.LeakyReLU(SLOPE, inplace=True))
    return nn.Sequential(*layers)


def upconv(cin: int, cout: int, act: bool = True) -> nn.Sequential:
    """The paper's up-convolution: insert zeros to double the size, then a 5x5 convolution.

    That is exactly ConvTranspose2d(k=5, s=2, p=2, output_padding=1): output = 2 x input.
    """
    layers: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)]
    if act:
        layers.append(nn.LeakyReLU(SLOPE, inplace=True))
    return nn.Sequential(*layers)


def init_weights(module: nn.Module) -> None:
    """He initialisation for leaky ReLU; zero biases. Trains faster than PyTorch's default here."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=SLOPE, nonlinearity="leaky_relu",
                                    mode="fan_in" if not isinstance(m, nn.ConvTranspose2d) else "fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
