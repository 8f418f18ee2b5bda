"""Any named module of any torchvision classification model as a feature (``torchvision:MODEL:MODULE``).

"Invert my own network" is the most asked-for use of the older tools. The output of MODULE (a name
from ``model.named_modules()``, e.g. ``layer3`` of resnet18 or ``features.7`` of vgg16) on the image
resized to SIZE x SIZE with ImageNet normalisation. The forward pass stops at that module, so a
low layer costs only its part of the network. Weights as for AlexNet (a file, torch's cache path for
torchvision's own file, or ``random:SEED``); nothing is downloaded. torchvision itself is needed only
for this extractor and is imported on first use.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import torch
from torch import nn

from ..errors import FeatinvError
from .cnn import CNNLayer, cache_dir, check_input_size, cnn_spec, frozen_network



class _Reached(Exception):
    """Raised by the forward hook to stop the network once the wanted module has run."""

    def __init__(self, output):
        self.output = output


def _torchvision():
    try:
        import torchvision.models
    except Exception as e:  # ImportError, or a torchvision built for another torch (RuntimeError)
        first = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise FeatinvError(f"torchvision features need torchvision, which does not import here ({first}); "
                           f"install a torchvision built for torch {torch.__version__.split('+')[0]}") from None
    return torchvision.models


@lru_cache(maxsize=1)
def _classifiers() -> list[str]:
    models = _torchvision()
    return models.list_models(module=models)


@dataclass(frozen=True)
class TorchvisionLayer(CNNLayer):
    """The output of module ``module`` of torchvision model ``model`` (N, C, S, S) or (N, D)."""

    model: str = "alexnet"
    module: str = "features"
    weights: str = ""  # a file, "" for torchvision's own file in torch's cache, or random:SEED
    size: int = 224
    name = "torchvision"
    family = "torchvision"
    fine_tunable = False  # any model's layout: run() cannot take a trainable copy of it
    positional = ("model", "module")  # torchvision:MODEL:MODULE
    guess_by_channels = False  # its channel count needs the network: never guessed for a bare .npy

    def __post_init__(self):
        check_input_size(self.name, self.size)

    @property
    def spec(self) -> str:
        return cnn_spec(self.name, [self.model, self.module], self.weights, self.size)

    @cached_property
    def _shape(self) -> tuple[int, ...]:
        """Output shape for one image, found by running the network once on zeros (shapes only)."""
        with torch.no_grad():
            return tuple(self(torch.zeros(1, 3, self.size, self.size)).shape[1:])

    @property
    def channels(self) -> int:
        return self._shape[0]

    @property
    def is_vector(self) -> bool:
        return len(self._shape) == 1

    @property
    def stride(self) -> int:
        return self.size if self.is_vector else max(1, self.size // self._shape[-1])

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        return tuple(self._shape[1:]) if not self.is_vector else (0, 0)

    def network(self) -> nn.Module:
        models = _torchvision()
        if self.model not in _classifiers():
            raise FeatinvError(f"torchvision has no classification model {self.model!r}; "
                               f"some it has: {', '.join(_classifiers()[:8])}, ...")
        return frozen_network((self.name, self.model, self.weights), lambda: models.get_model(self.model, weights=None),
                              self.weights, self.family, self.model, self._cached_file(models))

    def _cached_file(self, models) -> Path | None:
        """Where torchvision would have cached this model's default weights (never fetched here)."""
        try:
            url = models.get_model_weights(self.model).DEFAULT.url
        except Exception:  # models without published weights
            return None
        return cache_dir() / url.rsplit("/", 1)[-1]

    def run(self, net: nn.Module, images: torch.Tensor) -> torch.Tensor:
        def stop(_module, _inputs, output):
            raise _Reached(output)

        names = dict(net.named_modules())
        if self.module not in names or not self.module:
            near = [n for n in names if n and "." not in n]
            raise FeatinvError(f"{self.model} has no module {self.module!r}; its top-level modules: "
                               f"{', '.join(near)} (dotted names reach inside, e.g. {near[0]}.0)")
        handle = names[self.module].register_forward_hook(stop)
        try:
            net(self.preprocess(images))
        except _Reached as reached:
            out = reached.output
        else:
            raise FeatinvError(f"{self.model}.{self.module} is never run by the model's forward pass (e.g. an "
                               f"auxiliary head used only in training); pick a module on the main path")
        finally:
            handle.remove()
        if not isinstance(out, torch.Tensor) or out.dim() not in (2, 4):
            kind = type(out).__name__ if not isinstance(out, torch.Tensor) else f"a {out.dim()}-D tensor"
            raise FeatinvError(f"{self.model}.{self.module} gives {kind}; pick a module whose output is a "
                               f"feature map (N, C, H, W) or a vector (N, D)")
        return out
