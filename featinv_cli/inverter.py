"""A trained inverter loaded from a model file: features in, images out."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch.nn import functional as F

from .errors import FeatinvError
from .features import Extractor, from_metadata
from .features.alexnet import same_weights
from .io import ModelFile, load_model
from .models import build

ASSETS = Path(__file__).parent / "assets"


def shipped_model(extractor: Extractor) -> Path:
    """The model that ships for this kind of feature, or a FeatinvError saying how to get one."""
    path = ASSETS / f"{extractor.shipped_name}.safetensors"
    if not path.exists():
        raise FeatinvError(f"no shipped model for {extractor.spec} features; train one with "
                           f"'featinv train {extractor.spec} --data DIR -o model.safetensors' and pass -m")
    return path


def same_settings(a: dict, b: dict) -> bool:
    """Extractor settings that make the same features: equal, except that CNN weights given as two
    paths of one file's contents are the same weights."""
    if a.keys() != b.keys() or any(a[k] != b[k] for k in a if k != "weights"):
        return False
    return "weights" not in a or same_weights(str(a["weights"]), str(b["weights"]))


class Inverter:
    """Rebuilds the network of a model file; ``__call__`` maps features to images in [0, 1]."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        self.path = Path(path)
        self.file: ModelFile = load_model(path)
        self.extractor = from_metadata(self.file.feature, json.dumps(self.file.params) if self.file.params else None)
        self.net = build(self.file.arch)
        encoder = {k[8:]: v for k, v in self.file.state.items() if k.startswith("encoder.")}
        decoder = {k: v for k, v in self.file.state.items() if not k.startswith("encoder.")}
        self.encoder = None
        if self.file.arch.get("finetuned_encoder"):
            # An autoencoder (train --finetune-encoder): its own copy of the CNN makes the features.
            self.encoder = copy.deepcopy(self.extractor.network())
            try:
                self.encoder.load_state_dict(encoder)
            except RuntimeError:
                raise FeatinvError(f"{path}: its fine-tuned encoder does not fit {self.extractor.spec}") from None
            self.encoder.eval()
        try:
            self.net.load_state_dict(decoder)
        except RuntimeError:
            raise FeatinvError(f"{path}: weights do not fit the architecture in its metadata; "
                               f"the file is damaged or was edited") from None
        self.device = torch.device(device)
        self.net.to(self.device).eval()
        self.mean = torch.tensor(self.file.normalization.get("mean", [0.0] * 3),
                                 dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Features of images as this model expects them (its fine-tuned encoder, if it has one)."""
        with torch.no_grad():
            if self.encoder is not None:
                return self.extractor.run(self.encoder, images)
            return self.extractor(images)

    def check(self, extractor: Extractor, channels: int, name: str) -> None:
        """Refuse features this model was not trained on, saying what differs."""
        if self.encoder is not None:
            raise FeatinvError(f"{self.path.name} is an autoencoder (train --finetune-encoder): its encoder was "
                               f"trained too, so features from `featinv extract` do not fit it; score it on "
                               f"images with `featinv train ... --val DIR` or featinv_cli.evaluate")
        if extractor.name != self.extractor.name:
            raise FeatinvError(f"{name}: holds {extractor.spec} features but model {self.path.name} "
                               f"inverts {self.extractor.spec}")
        if not same_settings(extractor.params, self.extractor.params):
            raise FeatinvError(f"{name}: extractor settings {extractor.params} differ from the model's "
                               f"{self.extractor.params}")
        if channels != self.file.arch.get("in_channels", channels):
            raise FeatinvError(f"{name}: features have {channels} channels, model {self.path.name} "
                               f"expects {self.file.arch['in_channels']}")

    @property
    def can_mirror(self) -> bool:
        return self.extractor.mirror_channels is not None and self.encoder is None

    @torch.no_grad()
    def __call__(self, features: torch.Tensor, image_size: tuple[int, int] | None = None,
                 batch: int = 16, mirror_average: bool = False) -> torch.Tensor:
        """features: (N, C, Hc, Wc) -> images (N, 3, H, W) in [0, 1].

        The network predicts an image of ``Hc*stride x Wc*stride``; it is resized bilinearly to
        ``image_size`` (the size the features came from) when given. ``mirror_average`` also inverts
        the features of the mirrored image (a channel permutation, Extractor.mirror_channels),
        mirrors that reconstruction back and averages the two: two estimates of the same expected
        pre-image whose errors partly cancel (HOG, LBP; ignored for other features).
        """
        mirror = list(self.extractor.mirror_channels) if mirror_average and self.can_mirror else None
        out = []
        for chunk in features.split(batch):
            x = chunk.to(self.device, torch.float32)
            y = self.net(x)
            if mirror is not None:
                y = 0.5 * (y + self.net(x.flip(-1)[:, mirror]).flip(-1))
            y = y + self.mean
            if image_size is not None and tuple(y.shape[-2:]) != tuple(image_size):
                y = F.interpolate(y, size=tuple(image_size), mode="bilinear", align_corners=False)
            out.append(y.clamp(0, 1).cpu())
        return torch.cat(out)
