"""A trained inverter loaded from a model file: features in, images out."""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch.nn import functional as F

from .errors import FeatinvError
from .features import Extractor, from_metadata
from .features.cnn import same_weights
from .formats.features import all_finite
from .formats.model import ModelFile, load_model
from .models import build_holding

ASSETS = Path(__file__).parent / "assets"


def shipped_path(extractor: Extractor) -> Path:
    """Where the model that ships for this kind of feature lives (whether or not one ships yet)."""
    return ASSETS / f"{extractor.shipped_name}.safetensors"


def shipped_model(extractor: Extractor, how: str = "") -> Path:
    """The model that ships for this kind of feature, or a FeatinvError saying how to get one (``how``:
    what to do instead, where the default, train one and pass -m, does not fit)."""
    from .safetensors_codec import json_field, read_metadata

    path = shipped_path(extractor)
    how = how or f"train one with 'featinv train {extractor.spec} --data DIR -o model.safetensors' and pass -m"
    if not path.exists():
        raise FeatinvError(f"no shipped model for {extractor.spec} features; {how}")
    theirs = json_field(read_metadata(path), "params", str(path), {})
    if not same_settings(theirs, extractor.params):  # e.g. hog:cell=4: the shipped hog reads cell 8
        shown = {k: v for k, v in theirs.items() if extractor.params.get(k) != v}
        raise FeatinvError(f"no shipped model for {extractor.spec} features (the shipped {extractor.name} model "
                           f"reads {shown}); {how}")
    return path


def shipped_defaults(extractor: Extractor, arch: str, width: float | None) -> tuple[str, float]:
    """Arch auto and no width: what the shipped model for this feature uses (skip for hand-made features,
    paper for CNN layers; the shipped file's width when it is that network, else 1.0)."""
    from .formats.model import canonical_arch
    from .safetensors_codec import json_field, read_metadata

    if arch == "auto":
        arch = "paper" if extractor.is_cnn else "skip"
    if width is None:
        shipped = shipped_path(extractor)
        shipped_arch = canonical_arch(json_field(read_metadata(shipped), "arch", str(shipped), {})) if shipped.exists() else {}
        width = float(shipped_arch.get("width", 1.0)) if shipped_arch.get("name") == arch else 1.0
    return arch, width


def inverter_for(cache: dict, model, extractor: Extractor, channels: int, name: str, device: str = "cpu") -> "Inverter":
    """The inverter for features of ``extractor`` (``model``, else the shipped one), loaded once into
    ``cache`` (a run's {path: Inverter}) and checked against these features."""
    path = Path(model) if model else shipped_model(extractor)
    if path not in cache:
        cache[path] = Inverter(path, device)
    cache[path].check(extractor, channels, name)
    return cache[path]


def same_settings(a: dict, b: dict) -> bool:
    """Extractor settings that make the same features: equal, except that CNN weights given as two
    paths of one file's contents are the same weights."""
    if a.keys() != b.keys() or any(a[k] != b[k] for k in a if k != "weights"):
        return False
    return "weights" not in a or same_weights(str(a["weights"]), str(b["weights"]))


# Feature maps whose image is over TILE_PIXELS a side are inverted in tiles of that size: the
# network's activations for a 6000x6000 photo would otherwise take gigabytes. Each tile carries
# MARGIN_PIXELS of context on every side that is computed and thrown away. The inverters' receptive
# field reaches ~1/64 of the image size steps several times, so the margin is in pixels (the same for
# every feature stride); 384 px gives the untiled result to float rounding (max abs difference 1.2e-6
# for HOG, LBP and SIFT, tests/test_big_images.py); 320 px for HOG already leaves 0.02. Both are
# multiples of 64 px, so every tile starts on the network's coarsest grid, as the whole map does.
TILE_PIXELS = 2048
MARGIN_PIXELS = 384


def tiled(net, x: torch.Tensor, tile: int, margin: int) -> torch.Tensor:
    """net applied to the (1, C, Hc, Wc) map x in tiles of ``tile`` x ``tile`` cells plus ``margin``
    cells of context on each side; returns what net(x) returns, pasted together."""
    hc, wc = x.shape[-2:]
    out = None
    for r0 in range(0, hc, tile):
        for c0 in range(0, wc, tile):
            r1, c1 = min(r0 + tile, hc), min(c0 + tile, wc)
            a0, b0 = max(r0 - margin, 0), max(c0 - margin, 0)
            a1, b1 = min(r1 + margin, hc), min(c1 + margin, wc)
            y = net(x[..., a0:a1, b0:b1])
            s = y.shape[-2] // (a1 - a0)  # pixels per cell
            if out is None:
                out = y.new_empty(*y.shape[:2], hc * s, wc * s)
            out[..., r0 * s:r1 * s, c0 * s:c1 * s] = y[..., (r0 - a0) * s:(r1 - a0) * s, (c0 - b0) * s:(c1 - b0) * s]
    return out


class Inverter:
    """Rebuilds the network of a model file; ``__call__`` maps features to images in [0, 1]."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        self.path = Path(path)
        self.file: ModelFile = load_model(path)
        broken = [k for k, v in self.file.state.items() if v.is_floating_point() and not all_finite(v)]
        if broken:  # an older featinv wrote the weights of a diverged run; they invert everything to black
            raise FeatinvError(f"{path}: {len(broken)} weight tensors hold NaN or Inf (e.g. {broken[0]}): the "
                               f"model of a training run that diverged; train it again with a lower --lr")
        self.extractor = from_metadata(self.file.feature, self.file.params)
        encoder = {k[8:]: v for k, v in self.file.state.items() if k.startswith("encoder.")}
        decoder = {k: v for k, v in self.file.state.items() if not k.startswith("encoder.")}
        self.net = build_holding(self.file.arch, decoder, str(path))
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
        # Pixels per feature cell of the dense-feature networks (models/dense.py), which can tile.
        self.stride = int(self.file.arch["stride"]) if "stride" in self.file.arch else None
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
                 batch: int = 16, mirror_average: bool = False, tile: int = TILE_PIXELS) -> torch.Tensor:
        """features: (N, C, Hc, Wc) -> images (N, 3, H, W) in [0, 1].

        The network predicts an image of ``Hc*stride x Wc*stride``; it is resized bilinearly to
        ``image_size`` (the size the features came from) when given. ``mirror_average`` also inverts
        the features of the mirrored image (a channel permutation, Extractor.mirror_channels),
        mirrors that reconstruction back and averages the two: two estimates of the same expected
        pre-image whose errors partly cancel (HOG, LBP; ignored for other features). Maps of the
        paper's dense-feature networks whose image is over ``tile`` pixels a side are inverted in
        overlapping tiles (``tiled``), with the same result to float rounding.
        """
        mirror = list(self.extractor.mirror_channels) if mirror_average and self.can_mirror else None

        def net(x: torch.Tensor) -> torch.Tensor:
            y = self.net(x)
            if mirror is not None:
                y = 0.5 * (y + self.net(x.flip(-1)[:, mirror]).flip(-1))
            return y

        out = []
        for chunk in features.split(batch):
            x = chunk.to(self.device, torch.float32)
            if self.stride and x.ndim == 4 and max(x.shape[-2:]) * self.stride > tile:
                ys = [tiled(net, xi[None], tile // self.stride, MARGIN_PIXELS // self.stride) for xi in x]
                y = ys[0] if len(ys) == 1 else torch.cat(ys)  # one big image: no copy of it
            else:
                y = net(x)
            y += self.mean  # in place, as the clamp: a 6000x6000 image is 432 MB a copy
            if image_size is not None and tuple(y.shape[-2:]) != tuple(image_size):
                y = F.interpolate(y, size=tuple(image_size), mode="bilinear", align_corners=False)
            out.append(y.clamp_(0, 1).cpu())
        return out[0] if len(out) == 1 else torch.cat(out)

