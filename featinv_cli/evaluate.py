"""The evaluation protocol in one call: a model's normalized error on a folder of images.

Protocol (README): each image bilinear-resized so the shorter side is ``size``, the centre
``size`` x ``size`` square kept; features extracted from that; the reconstruction compared with it.
The same numbers come out of the shell pipeline in examples/Makefile (extract -> invert -> score).
"""
from __future__ import annotations

from pathlib import Path

import torch

from . import metrics
from .data import eval_view, evenly_spaced
from .errors import FeatinvError
from .inverter import Inverter
from .arguments import list_images
from .images import read_image


def mean_image(files: list, size: tuple[int, int], prepare) -> torch.Tensor:
    """The mean of images prepared by ``prepare(image, name)`` and resized to ``size``: the trivial
    predictor the normalized error is compared with. Accumulated one image at a time."""
    total = torch.zeros(3, *size, dtype=torch.float64)
    for f in files:
        total += metrics.match_size(prepare(read_image(f), str(f))[None], size)[0].double()
    return (total / len(files)).float()


def baseline_mean(data, size: int) -> torch.Tensor:
    """The mean evaluation view of the training data: folders, or a views file (`featinv pack`)."""
    from .formats.views import is_views_file, load_views

    dirs = [str(d) for d in (data if isinstance(data, (list, tuple)) else [data])]
    if len(dirs) == 1 and is_views_file(dirs[0]):
        views = load_views(dirs[0]).views
        rows = evenly_spaced(views, 2000).double().mean(0, keepdim=True) / 255.0
        return metrics.match_size(rows.float(), (size, size))[0]
    return mean_image(list_images(*dirs), (size, size), lambda img, _: eval_view(img, size))


def evaluation_views(directory: str | Path | list, size: int) -> torch.Tensor:
    """(N, 3, size, size) evaluation views of one or more folders' images, in sorted name order, or
    of a views file (`featinv pack --side SIZE`: the same views, decoded beforehand)."""
    from .formats.views import is_views_file, load_views

    dirs = directory if isinstance(directory, (list, tuple)) else [directory]
    if len(dirs) == 1 and is_views_file(dirs[0]):
        views = load_views(dirs[0]).views
        if views.shape[-1] != size:  # resampling views again would score other pixels than the protocol's
            raise FeatinvError(f"{dirs[0]}: its views are {views.shape[-1]} px, the evaluation's are {size}: pack "
                               f"the photos with --side {size}, or give their folder")
        return views.float() / 255.0
    return torch.stack([eval_view(read_image(f), size) for f in list_images(*dirs)])


def evaluate(model: str | Path, directory: str | Path, size: int = 128, batch: int = 25,
             device: str = "cpu", baseline: str | Path | None = None, mirror_average: bool = False) -> dict:
    """Mean normalized error, PSNR and SSIM of ``model`` on ``directory``; with ``baseline`` (a folder,
    e.g. the training set) also the error of always predicting that folder's mean image."""
    inverter = Inverter(model, device)
    images = evaluation_views(directory, size)
    recon = torch.cat([inverter(inverter.encode(chunk), (size, size), mirror_average=mirror_average)
                       for chunk in images.split(batch)])
    result = dict(metrics.score(recon, images)["mean"], images=len(images))
    if baseline is not None:
        mean = baseline_mean(baseline, size)
        result["baseline_mean_error"] = float(metrics.normalized_errors(mean.expand_as(images), images).mean())
    return result


def evaluation_record(model: str | Path, directory: str | Path, mean: torch.Tensor | None = None,
                      device: str = "cpu") -> dict:
    """What a model file stores as its ``evaluation`` (and README's model table shows): the protocol's
    scores on ``directory``, with --mirror-average where the feature has it, and the error of
    predicting ``mean`` (the mean training view) when given."""
    r = evaluate(model, directory, device=device)
    # "on" names the photos: a folder's name, or a views file's stem (`pack val/ --side 128 -o val.safetensors`
    # holds the protocol's views of val/, so the two evaluations compare: ship_if_better checks it).
    out = {"on": Path(directory).name if Path(directory).is_dir() else Path(directory).stem, "images": r["images"],
           "protocol": "shorter side 128, centre crop 128",
           **{k: round(r[k], 4) for k in ("normalized_error", "thumbnail_error", "psnr", "ssim")}}
    if Inverter(model).can_mirror:
        out["mirror_average"] = round(evaluate(model, directory, device=device, mirror_average=True)["normalized_error"], 4)
    if mean is not None:
        images = evaluation_views(directory, 128)
        out["baseline_mean_error"] = round(float(metrics.normalized_errors(mean.expand_as(images), images).mean()), 4)
    return out
