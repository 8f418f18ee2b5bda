"""SqueezeNet v1.0 layers as features, with real ImageNet weights shipped in the package.

The network is torchvision's ``squeezenet1_0`` layout in plain torch (its state dict loads with
strict key matching; torchvision is not needed). A layer's output is taken after its ReLU and after
the max-pool that follows it, where one does (the convention of the AlexNet layers): conv1 and fire4
and fire8 include the pool behind them; pool10 is the network's output (global average pool of the
1000 class maps). Input: RGB in [0, 1] resized to ``size`` x ``size`` (224 by default; an image
already that size is not resampled) with ImageNet normalisation.

Weights: the shipped file (``assets/squeezenet1_0-imagenet.safetensors``, BSD licence beside it) when
``weights`` is empty, else a file or ``random:SEED`` exactly as for AlexNet.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import FeatinvError
from .cnn import CNNLayer, check_input_size, cnn_spec

WEIGHTS_FILE = Path(__file__).resolve().parent.parent / "assets" / "squeezenet1_0-imagenet.safetensors"

LAYERS = ("conv1", "fire2", "fire3", "fire4", "fire5", "fire6", "fire7", "fire8", "fire9", "conv10", "pool10")
# How many modules of ``features`` each layer runs (torchvision indices); conv10/pool10 run them all
# and then the classifier up to its ReLU (conv10) or through the average pool (pool10).
FEATURE_MODULES = {"conv1": 3, "fire2": 4, "fire3": 5, "fire4": 7, "fire5": 8, "fire6": 9, "fire7": 10,
                   "fire8": 12, "fire9": 13, "conv10": 13, "pool10": 13}
CHANNELS = {"conv1": 96, "fire2": 128, "fire3": 128, "fire4": 256, "fire5": 256, "fire6": 384, "fire7": 384,
            "fire8": 512, "fire9": 512, "conv10": 1000, "pool10": 1000}
POOLS_BEFORE = {"conv1": 1, "fire2": 1, "fire3": 1, "fire4": 2, "fire5": 2, "fire6": 2, "fire7": 2,
                "fire8": 3, "fire9": 3, "conv10": 3}


class Fire(nn.Module):
    """torchvision's Fire module: 1x1 squeeze, then 1x1 and 3x3 expands side by side, each ReLU'd."""

    def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1x1(x)), torch.relu(self.expand3x3(x))], 1)


def squeezenet1_0() -> nn.Module:
    """torchvision's ``squeezenet1_0`` with the same module names, so its state dict loads strictly."""
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    net = nn.Module()
    net.features = nn.Sequential(
        nn.Conv2d(3, 96, 7, stride=2), nn.ReLU(inplace=True), pool(),
        Fire(96, 16, 64, 64), Fire(128, 16, 64, 64), Fire(128, 32, 128, 128), pool(),
        Fire(256, 32, 128, 128), Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256),
        pool(), Fire(512, 64, 256, 256))
    net.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(512, 1000, 1), nn.ReLU(inplace=True),
                                   nn.AdaptiveAvgPool2d((1, 1)))
    return net


def grid_side(size: int, layer: str) -> int:
    """Side of a layer's output map for a size x size input (0 for the pool10 vector)."""
    if layer == "pool10":
        return 0
    side = (size - 7) // 2 + 1  # conv1, 7x7 stride 2, no padding
    for _ in range(POOLS_BEFORE[layer]):
        side = -(-(side - 3) // 2) + 1  # max pool 3/2 in ceil mode
    return side


@dataclass(frozen=True)
class SqueezeNetLayer(CNNLayer):
    """One layer's output of SqueezeNet v1.0 (ImageNet weights shipped) on the image resized to
    size x size: (N, C, S, S), or (N, 1000) for pool10."""

    layer: str = "fire9"
    weights: str = ""  # "" = the shipped ImageNet weights; a file; or random:SEED
    size: int = 224
    name = "squeezenet"
    family = "squeezenet"

    def __post_init__(self):
        if self.layer not in LAYERS:
            raise FeatinvError(f"{self.name}: unknown layer {self.layer!r}; choose one of {', '.join(LAYERS)}")
        check_input_size(self.name, self.size)

    @property
    def spec(self) -> str:
        return cnn_spec(self.name, [self.layer], self.weights, self.size)

    @property
    def shipped_name(self) -> str:
        return f"{self.name}-{self.layer}"

    @property
    def channels(self) -> int:
        return CHANNELS[self.layer]

    def grid_side(self) -> int:
        return grid_side(self.size, self.layer)

    def build(self) -> nn.Module:
        return squeezenet1_0()

    def default_weights(self) -> Path:
        return WEIGHTS_FILE

    def run(self, net: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """This layer's output of ``net`` (the squeezenet1_0 layout; e.g. a fine-tuned copy)."""
        x = net.features[:FEATURE_MODULES[self.layer]](self.preprocess(images))
        if self.layer == "conv10":
            return net.classifier[:3](x)
        if self.layer == "pool10":
            return torch.flatten(net.classifier(x), 1)
        return x
