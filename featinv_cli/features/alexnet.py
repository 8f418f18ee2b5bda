"""AlexNet layers as features (paper §2.1): torchvision's AlexNet and the paper's CaffeNet.

"Output of a layer" is the output of its last processing step: after ReLU, pooling and local
response normalisation for conv layers, after ReLU for fc6/fc7, before softmax for fc8. Weights,
input convention and specs: cnn.py, shared with SqueezeNet and torchvision models.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import FeatinvError
from .cnn import CNNLayer, cache_dir, cnn_spec

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
TORCHVISION_FILE = "alexnet-owt-7be5be79.pth"  # the name torchvision's weights are cached under


def torchvision_alexnet() -> nn.Module:
    """torchvision's AlexNet layout (64-192-384-256-256), same module names so its state dict loads."""
    features = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
    classifier = nn.Sequential(
        nn.Dropout(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
        nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 1000))
    net = nn.Module()
    net.features, net.avgpool, net.classifier = features, nn.AdaptiveAvgPool2d((6, 6)), classifier
    return net


def caffenet() -> nn.Module:
    """The paper's CaffeNet: 96-256-384-384-256, grouped conv2/4/5, pooling then LRN, ceil-mode pools."""
    lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)  # noqa: E731
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    features = nn.Sequential(
        nn.Conv2d(3, 96, 11, 4), nn.ReLU(inplace=True), pool(), lrn(),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True), pool(), lrn(),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True), pool())
    classifier = nn.Sequential(
        nn.Dropout(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
        nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 1000))
    net = nn.Module()
    net.features, net.avgpool, net.classifier = features, nn.Identity(), classifier
    return net


# Where each layer's output is taken: (part, index of the last module of that layer).
CUTS = {
    "alexnet": {"conv1": ("features", 2), "conv2": ("features", 5), "conv3": ("features", 7),
                "conv4": ("features", 9), "conv5": ("features", 12), "fc6": ("classifier", 2),
                "fc7": ("classifier", 5), "fc8": ("classifier", 6)},
    "caffenet": {"conv1": ("features", 3), "conv2": ("features", 7), "conv3": ("features", 9),
                 "conv4": ("features", 11), "conv5": ("features", 14), "fc6": ("classifier", 2),
                 "fc7": ("classifier", 5), "fc8": ("classifier", 6)},
}
# (channels or width, grid side) of each layer's output at the network's input size.
SHAPES = {
    "alexnet": {"conv1": (64, 27), "conv2": (192, 13), "conv3": (384, 13), "conv4": (256, 13),
                "conv5": (256, 6), "fc6": (4096, 0), "fc7": (4096, 0), "fc8": (1000, 0)},
    "caffenet": {"conv1": (96, 27), "conv2": (256, 13), "conv3": (384, 13), "conv4": (384, 13),
                 "conv5": (256, 6), "fc6": (4096, 0), "fc7": (4096, 0), "fc8": (1000, 0)},
}
INPUT = {"alexnet": 224, "caffenet": 227}


@dataclass(frozen=True)
class AlexNetLayer(CNNLayer):
    """One layer's output of torchvision's AlexNet on the image resized to 224x224 (RGB, ImageNet
    normalisation)."""

    layer: str = "fc6"
    weights: str = ""  # a file, "" for the default file (torch's cache path), or random:SEED
    name = "alexnet"
    family = "alexnet"

    def __post_init__(self):
        if self.layer not in LAYERS:
            raise FeatinvError(f"{self.name}: unknown layer {self.layer!r}; choose one of {', '.join(LAYERS)}")

    @property
    def spec(self) -> str:
        return cnn_spec(self.name, [self.layer], self.weights)

    @property
    def shipped_name(self) -> str:
        return f"{self.name}-{self.layer}"

    @property
    def channels(self) -> int:
        return SHAPES[self.family][self.layer][0]

    @property
    def input_size(self) -> int:
        return INPUT[self.family]

    def grid_side(self) -> int:
        return SHAPES[self.family][self.layer][1]

    def build(self) -> nn.Module:
        return torchvision_alexnet()

    def default_weights(self) -> Path | None:
        return cache_dir() / TORCHVISION_FILE

    def run(self, net: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """This layer's output of ``net`` (this family's layout; e.g. a fine-tuned copy)."""
        part, last = CUTS[self.family][self.layer]
        x = self.preprocess(images)
        for i, m in enumerate(net.features):
            x = m(x)
            if part == "features" and i == last:
                return x
        x = torch.flatten(net.avgpool(x), 1)
        for i, m in enumerate(net.classifier):
            x = m(x)
            if i == last:
                return x
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class CaffeNetLayer(AlexNetLayer):
    """One layer's output of the paper's CaffeNet on the image resized to 227x227 (BGR, 0-255, mean
    subtracted), after ReLU, pooling and normalisation."""

    name = "caffenet"
    family = "caffenet"

    def build(self) -> nn.Module:
        return caffenet()

    def default_weights(self) -> Path | None:
        return None

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=(227, 227), mode="bilinear", align_corners=False, antialias=True)
        bgr = x.flip(1) * 255.0
        return bgr - torch.tensor([104.0, 117.0, 123.0], device=x.device).view(1, 3, 1, 1)
