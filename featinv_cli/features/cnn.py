"""What every CNN feature family shares (AlexNet/CaffeNet, SqueezeNet, torchvision models): weights,
the ImageNet input convention, specs.

Weights come from a file (torchvision .pth state dict, read with weights_only=True, or .safetensors),
torch's usual cache path for torchvision's file, or ``random:SEED`` for tests and demos. Nothing is
downloaded. The parameters record which weights (the file's path as given, or the seed) so a model
trained on one network's features refuses another's; two paths count as the same weights when both
files exist and have the same contents (``same_weights``), so a copied or moved file still fits.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import FeatinvError
from .base import Extractor


def cache_dir() -> Path:
    """torch's usual cache folder for downloaded weights (we only ever read from it)."""
    return Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"


def load_state(weights: str, family: str, default: Path | None = None) -> dict[str, torch.Tensor] | None:
    """The state dict named by ``weights``: None for ``random:SEED``; "" -> the file ``default``
    (torchvision's cache path for this network), else a FeatinvError saying where to put one."""
    if weights.startswith("random:"):
        try:
            int(weights.split(":", 1)[1])
        except ValueError:
            raise FeatinvError(f"weights {weights!r}: write random:SEED with an integer seed") from None
        return None
    path = Path(weights) if weights else default
    if not weights and (path is None or not path.exists()):
        raise FeatinvError(f"{family} needs weights: give --weights FILE (a torchvision-style .pth "
                           f"state dict or .safetensors)"
                           + (f", or put torchvision's {path.name} in {path.parent}" if path else "")
                           + "; --weights random:0 gives seeded random weights")
    if not path.exists():
        raise FeatinvError(f"{path}: no such weights file")
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        from ..safetensors_codec import parse_safetensors

        return parse_safetensors(data, str(path))[0]
    import io
    import pickle

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise FeatinvError(f"{path}: not a plain state dict that loads safely "
                           f"({str(e).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FeatinvError(f"{path}: holds {type(state).__name__}, not a state dict of tensors")
    return state


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


_NETS: dict[tuple, nn.Module] = {}


def frozen_network(key: tuple, build: Callable[[], nn.Module], weights: str, family: str, model: str,
                   default: Path | None) -> nn.Module:
    """The network ``build()`` makes, holding ``weights`` (a file, "" for ``default``, or random:SEED),
    frozen (gradients flow to the input only) and in eval mode; built once per ``key`` per process.
    ``family`` names the feature in messages about missing weights, ``model`` the network a file must fit."""
    if key not in _NETS:
        state = load_state(weights, family, default)
        with torch.random.fork_rng():  # seeded weights, and the caller's random state left as it was
            if state is None:
                torch.manual_seed(int(weights.split(":", 1)[1]))
            net = build()
        if state is not None:
            try:
                net.load_state_dict(state)
            except RuntimeError as e:
                first = str(e).splitlines()[0][:160]
                raise FeatinvError(f"{weights}: not {model} weights ({first})") from None
        for p in net.parameters():
            p.requires_grad_(False)
        # channels-last: oneDNN's convolutions and (ceil-mode) max pools run 1.6x faster on the CPU
        # in this layout (SqueezeNet to fire5, 64 images, one thread: 5.0 s -> 3.1 s)
        _NETS[key] = net.eval().to(memory_format=torch.channels_last)
    return _NETS[key]


class CNNLayer(Extractor):
    """The base of every CNN family (a new family's home): one layer's output of a frozen network on
    the image resized to ``input_size``, with ImageNet normalisation. A family gives its layout
    (``build``), where its weights live by default (``default_weights``), its input size, the side of
    its layer's grid (``grid_side``; 0 for vectors) and how to run a network up to the layer (``run``).
    Frozen dataclass fields (layer, weights, ...) are the family's own."""

    is_cnn = True
    fine_tunable = True
    input_resized = True
    guess_by_channels = False  # 512 channels is fire8 and fire9 and more: a bare .npy must say --feature

    @property
    def input_size(self) -> int:
        return int(getattr(self, "size", 224))

    def grid_side(self) -> int:
        raise NotImplementedError

    def build(self) -> nn.Module:
        """A fresh network of this family's layout (random weights)."""
        raise NotImplementedError

    def default_weights(self) -> Path | None:
        """The weights file used when none is given (None: the user must always give one)."""
        return None

    def run(self, net: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """This layer's output of ``net`` (this family's layout; e.g. a fine-tuned copy)."""
        raise NotImplementedError

    def network_key(self) -> tuple:
        return (self.family, self.weights)

    def network(self) -> nn.Module:
        return frozen_network(self.network_key(), self.build, self.weights, self.family, self.family,
                              self.default_weights())

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return imagenet_input(images, self.input_size).contiguous(memory_format=torch.channels_last)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) in [0, 1] -> (N, C, S, S) for maps, (N, D) for vectors."""
        return self.run(self.network().to(images.device), images).contiguous()

    @property
    def is_vector(self) -> bool:
        return self.grid_side() == 0

    @property
    def stride(self) -> int:  # input pixels per output cell (approximate for the odd sizes)
        side = self.grid_side()
        return self.input_size // side if side else self.input_size

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        side = self.grid_side()
        return side, side

    def image_size_from_grid(self, hc: int, wc: int) -> tuple[int, int]:
        return self.input_size, self.input_size

    def min_size(self) -> int:
        return 16
