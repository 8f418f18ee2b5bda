"""AlexNet layers as features (paper §2.1): torchvision's AlexNet and the paper's CaffeNet.

"Output of a layer" is the output of its last processing step: after ReLU, pooling and local
response normalisation for conv layers, after ReLU for fc6/fc7, before softmax for fc8.
Weights come from a file (torchvision .pth state dict, read with weights_only=True, or .safetensors),
torch's usual cache path for torchvision's file, or ``random:SEED`` for tests and demos. Nothing is
downloaded. The parameters record which weights (the file's path as given, or the seed) so a model
trained on one network's features refuses another's; two paths count as the same weights when both
files exist and have the same contents (``same_weights``), so a copied or moved file still fits.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import FeatinvError
from .base import Extractor

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


def cache_dir() -> Path:
    """torch's usual cache folder for downloaded weights (we only ever read from it)."""
    return Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"


def load_state(weights: str, family: str, default: Path | None = None
               ) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The state dict named by ``weights`` and what to record about it.

    ``random:SEED`` -> (None, "random:SEED"); a file -> (state, "sha256:..."); "" -> the file
    ``default`` (torchvision's cache path for this network), else a FeatinvError saying where to put one.
    """
    if weights.startswith("random:"):
        try:
            int(weights.split(":", 1)[1])
        except ValueError:
            raise FeatinvError(f"weights {weights!r}: write random:SEED with an integer seed") from None
        return None, weights
    path = Path(weights) if weights else default
    if not weights and (path is None or not path.exists()):
        raise FeatinvError(f"{family} needs weights: give --weights FILE (a torchvision-style .pth "
                           f"state dict or .safetensors)"
                           + (f", or put torchvision's {path.name} in {path.parent}" if path else "")
                           + "; --weights random:0 gives seeded random weights")
    if not path.exists():
        raise FeatinvError(f"{path}: no such weights file")
    data = path.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()[:16]
    if path.suffix == ".safetensors":
        from ..io import parse_safetensors

        state, _ = parse_safetensors(data, str(path))
        return state, digest
    import io
    import pickle

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise FeatinvError(f"{path}: not a plain state dict that loads safely "
                           f"({str(e).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FeatinvError(f"{path}: holds {type(state).__name__}, not a state dict of tensors")
    return state, digest


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def same_weights(a: str, b: str) -> bool:
    """Whether two ``weights`` settings name the same weights: equal strings, or two existing files
    with equal contents (the same file under two paths)."""
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    if a.startswith("random:") or b.startswith("random:") or not (pa.is_file() and pb.is_file()):
        return False
    return pa.stat().st_size == pb.stat().st_size and _file_digest(pa) == _file_digest(pb)


def imagenet_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision's input convention: RGB in [0, 1] resized to size x size, ImageNet mean and std."""
    x = images.float()
    if x.shape[-2:] != (size, size):  # an image already at the input size is used as it is
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def cnn_spec(name: str, positional: list[str], weights: str, size: int = 224) -> str:
    """The spec of a CNN feature: ``name:POS[:POS]`` plus the weights and input size where they differ
    from the defaults (the default file, 224)."""
    extra = f",weights={weights}" if weights else ""
    extra += "" if size == 224 else f",size={size}"
    return ":".join([name, *positional]) + extra


def check_input_size(name: str, size: int) -> None:
    if size < 32:
        raise FeatinvError(f"{name}: size={size} is too small (at least 32)")


_NETS: dict[tuple[str, str], nn.Module] = {}


@dataclass(frozen=True)
class AlexNetLayer(Extractor):
    """One layer's output of torchvision's AlexNet on the image resized to 224x224 (RGB, ImageNet
    normalisation)."""

    layer: str = "fc6"
    weights: str = ""  # a file, "" for the default file (torch's cache path), or random:SEED
    name = "alexnet"
    family = "alexnet"
    is_cnn = True
    fine_tunable = True

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
    def is_vector(self) -> bool:
        return self.layer.startswith("fc")

    @property
    def stride(self) -> int:  # input pixels per output cell (approximate for the odd sizes)
        side = SHAPES[self.family][self.layer][1]
        return INPUT[self.family] // side if side else INPUT[self.family]

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        side = SHAPES[self.family][self.layer][1]
        return (side, side)

    def image_size_from_grid(self, hc: int, wc: int) -> tuple[int, int]:
        return INPUT[self.family], INPUT[self.family]

    def min_size(self) -> int:
        return 16

    def build(self) -> nn.Module:
        """A fresh network of this family's layout (random weights)."""
        return torchvision_alexnet()

    def default_weights(self) -> Path | None:
        """The weights file used when none is given (None: the user must always give one)."""
        return cache_dir() / TORCHVISION_FILE

    def network(self) -> nn.Module:
        key = (self.family, self.weights)
        if key not in _NETS:
            state, _ = load_state(self.weights, self.family, self.default_weights())
            if state is None:
                with torch.random.fork_rng():  # seeded weights without disturbing the caller's RNG
                    torch.manual_seed(int(self.weights.split(":", 1)[1]))
                    net = self.build()
            else:
                net = self.build()
                try:
                    net.load_state_dict(state)
                except RuntimeError as e:
                    first = str(e).splitlines()[0][:160]
                    raise FeatinvError(f"{self.weights}: not {self.family} weights ({first})") from None
            for p in net.parameters():  # a fixed encoder; gradients flow to the input only
                p.requires_grad_(False)
            _NETS[key] = net.eval()
        return _NETS[key]

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return imagenet_input(images, INPUT[self.family])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) in [0, 1] -> (N, C, S, S) for conv layers, (N, D) for fc layers."""
        return self.run(self.network().to(images.device), images)

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
