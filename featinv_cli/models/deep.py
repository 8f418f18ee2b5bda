"""Inverters for AlexNet layers (paper §2.2, Table 1).

Conv layers: three 5x5 convolutions at the layer's resolution, then as many up-convolutions as the
layer's stride needs (27x27 conv1 -> 3 -> 216 px; 13x13 conv2-4 -> 4 -> 208 px; 6x6 conv5 -> 5 -> 192 px).
FC layers: exactly Table 1: three fully connected layers of 4096, reshape to 4x4x256, five
up-convolutions to 128x128x3. Targets are downsampled to the output size for training; outputs are
upsampled bilinearly to the image size for evaluation (paper §4.1).
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import SLOPE, conv, init_weights, upconv


class ConvLayerInverter(nn.Module):
    """(N, C, S, S) -> (N, 3, S * 2**ups, S * 2**ups).

    ``input_scale`` multiplies the features first: CNN activations can sit in the hundreds (a network
    trained on 0-255 pixels), and the paper-initialised layers expect inputs of order one.
    """

    def __init__(self, in_channels: int, ups: int, width: float = 1.0, input_scale: float = 1.0):
        super().__init__()
        self.in_channels, self.input_scale = in_channels, input_scale
        ch = lambda c: max(8, int(round(c * width)))  # noqa: E731
        layers: list[nn.Module] = [conv(in_channels, ch(256)), conv(ch(256), ch(256)), conv(ch(256), ch(256))]
        cin = ch(256)
        for i in range(ups - 1):
            cout = ch(max(32, 256 >> (i + 1)))
            layers.append(upconv(cin, cout))
            cin = cout
        layers.append(upconv(cin, 3, act=False))
        self.net = nn.Sequential(*layers)
        init_weights(self, output=layers[-1])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features * self.input_scale)


class FCLayerInverter(nn.Module):
    """Table 1: (N, D) -> fc 4096 x3 -> 4x4x256 -> five up-convolutions -> (N, 3, 128, 128).
    ``input_scale`` as for ConvLayerInverter."""

    def __init__(self, in_features: int, width: float = 1.0, input_scale: float = 1.0):
        super().__init__()
        self.in_channels, self.input_scale = in_features, input_scale
        ch = lambda c: max(8, int(round(c * width)))  # noqa: E731
        hidden = ch(4096)
        self.base = ch(256)
        self.fc = nn.Sequential(
            nn.Linear(in_features, hidden), nn.LeakyReLU(SLOPE, inplace=True),
            nn.Linear(hidden, hidden), nn.LeakyReLU(SLOPE, inplace=True),
            nn.Linear(hidden, 16 * self.base), nn.LeakyReLU(SLOPE, inplace=True))
        ups = [upconv(self.base, ch(256)), upconv(ch(256), ch(128)), upconv(ch(128), ch(64)),
               upconv(ch(64), ch(32)), upconv(ch(32), 3, act=False)]
        self.up = nn.Sequential(*ups)
        init_weights(self, output=ups[-1])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(features * self.input_scale).view(-1, self.base, 4, 4))


class AutoEncoder(nn.Module):
    """Paper §4.2: a CNN layer's encoder trained together with its inverter (the upper bound on what
    an inverter of that layer can do). images -> encoder layer output -> decoder -> images."""

    def __init__(self, extractor, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.extractor, self.encoder, self.decoder = extractor, encoder, decoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.extractor.run(self.encoder, images))
