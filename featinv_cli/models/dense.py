"""Inverters for dense hand-made features (HOG, LBP, gridded SIFT): paper §2.2.

A contracting part of stride-2 5x5 convolutions takes the feature map (at 1/stride of the image) down
to 1/64 of the image size, so the network can judge absolute brightness over large regions; six
up-convolutions bring it back to full resolution. Fully convolutional: features of any size are
padded to a multiple of the 1/64 grid and the output is cropped back.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import conv, init_weights, upconv

BOTTLENECK = 64  # the contracting part ends at 1/64 of the image size (paper §2.2)
UP_CHANNELS = (512, 256, 128, 64, 32)  # after the bottleneck, as in the paper's networks
DOWN_CHANNELS = (256, 512, 1024, 1024)


def contractions(stride: int) -> int:
    """How many stride-2 steps take a feature map at 1/stride of the image to 1/BOTTLENECK."""
    smallest = BOTTLENECK >> len(DOWN_CHANNELS)  # one contracting width per step
    if BOTTLENECK % stride or stride & (stride - 1) or stride < smallest:
        raise ValueError(f"feature stride {stride} must be a power of two from {smallest} to {BOTTLENECK}")
    return int(math.log2(BOTTLENECK // stride))


def pad_cells(features: torch.Tensor, in_channels: int, stride: int) -> torch.Tensor:
    """Check the channel count and pad the grid (right, bottom) to a multiple of the 1/64 grid."""
    n, c, hc, wc = features.shape
    if c != in_channels:
        raise ValueError(f"expected {in_channels} channels, got {c}")
    m = BOTTLENECK // stride
    ph, pw = (-hc) % m, (-wc) % m
    return F.pad(features, (0, pw, 0, ph)) if ph or pw else features


def expanding(cin: int, widths: list[int], up=upconv) -> list[nn.Module]:
    """Up-convolutions through ``widths``, each doubling the size, then one more to RGB without an
    activation: the output layer, which init_weights starts at zero."""
    layers = []
    for c in widths:
        layers.append(up(cin, c))
        cin = c
    return layers + [up(cin, 3, act=False)]


class DenseInverter(nn.Module):
    """features: (N, in_channels, Hc, Wc) -> images (N, 3, Hc*stride, Wc*stride), mean-subtracted."""

    def __init__(self, in_channels: int, stride: int, width: float = 1.0):
        super().__init__()
        self.in_channels, self.stride = in_channels, stride
        downs = contractions(stride)
        ch = lambda c: max(8, int(round(c * width)))  # noqa: E731
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(downs):
            layers.append(conv(cin, ch(DOWN_CHANNELS[i]), stride=2))
            cin = ch(DOWN_CHANNELS[i])
        layers += expanding(cin, [ch(c) for c in UP_CHANNELS])
        self.net = nn.Sequential(*layers)
        init_weights(self, output=layers[-1])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hc, wc = features.shape[-2:]
        y = self.net(pad_cells(features, self.in_channels, self.stride))
        return y[..., : hc * self.stride, : wc * self.stride]


class SkipInverter(nn.Module):
    """The paper's network with U-Net skip connections (``--arch skip``, a named variant).

    Why: at a 128 px crop the paper's contracting part squeezes a 16x16x31 HOG map through a 2x2
    bottleneck, so everything the expanding part knows about local structure must fit in 2x2xC numbers.
    Here every contracting level also hands its map to the expanding level of the same size, which
    keeps the 1/64 context for brightness (paper §2.2) and the cell-level detail. Each level has one
    extra 3x3 convolution; the up-convolutions below the cell size are the paper's.
    """

    CONCATENATED_INPUTS = {"merge": 2}  # each merge reads cat(up-sampled, skip): what widen() must know

    def __init__(self, in_channels: int, stride: int, width: float = 1.0, upsample: str = "zeros"):
        super().__init__()
        self.in_channels, self.stride = in_channels, stride
        downs = contractions(stride)
        ch = lambda c: max(8, int(round(c * width)))  # noqa: E731
        up = lambda cin, cout, act=True: upconv(cin, cout, act, upsample)  # noqa: E731
        widths = [ch(c) for c in (256, *DOWN_CHANNELS[:downs])]
        self.stem = nn.Sequential(conv(in_channels, widths[0], kernel=3), conv(widths[0], widths[0], kernel=3))
        self.down = nn.ModuleList(
            nn.Sequential(conv(widths[i], widths[i + 1], stride=2), conv(widths[i + 1], widths[i + 1], kernel=3))
            for i in range(downs))
        self.up = nn.ModuleList(up(widths[i + 1], widths[i]) for i in reversed(range(downs)))
        self.merge = nn.ModuleList(conv(2 * widths[i], widths[i], kernel=3) for i in reversed(range(downs)))
        tail = expanding(widths[0], [ch(c) for c in UP_CHANNELS[len(UP_CHANNELS) - int(math.log2(stride)) + 1:]], up)
        self.tail = nn.Sequential(*tail)
        init_weights(self, output=tail[-1])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hc, wc = features.shape[-2:]
        x = self.stem(pad_cells(features, self.in_channels, self.stride))
        skips = []
        for down in self.down:
            skips.append(x)
            x = down(x)
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        y = self.tail(x)
        return y[..., : hc * self.stride, : wc * self.stride]
