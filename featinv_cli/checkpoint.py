"""Training checkpoints (``OUTPUT.ckpt``, format ``featinv-checkpoint/1``): the weights, their moving
average, Adam's state, the step, and the run's settings, so `train --resume` continues exactly."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from .errors import FeatinvError
from .io import atomic_write, encode_safetensors, map_file, parse_safetensors, read_metadata
from .settings import TrainConfig

CHECKPOINT_FORMAT = "featinv-checkpoint/1"
# Settings a resumed run must share with its checkpoint (the others, such as --workers, may change).
SAME_ON_RESUME = ("feature", "arch", "width", "upsample", "crop", "batch", "seed", "steps", "max_zoom", "features",
                  "finetune_encoder", "ema", "low_res", "minutes")
# Values of settings added after checkpoints were first written, as those runs had them.
BEFORE = {"upsample": "zeros", "ema": 0.0, "low_res": 0.0, "minutes": 0.0}


def checkpoint_path(output: str | Path) -> Path:
    return Path(str(output) + ".ckpt")


def save_checkpoint(path: Path, model, averaged, opt, step: int, cfg: TrainConfig, extra: dict) -> None:
    tensors = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    if averaged is not None:
        tensors.update({f"ema.{k}": v.detach().cpu() for k, v in averaged.state_dict().items()})
    for i, state in opt.state_dict()["state"].items():
        for k, v in state.items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu()
    meta = {"format": CHECKPOINT_FORMAT, "step": str(step),
            "config": json.dumps(dataclasses.asdict(cfg)), "extra": json.dumps(extra)}
    atomic_write(path, encode_safetensors(tensors, meta))


def peek(path: Path) -> dict:
    """The step, settings and ``extra`` record (mean colour, feature scale) of a checkpoint, reading
    only its header."""
    meta = read_metadata(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise FeatinvError(f"{path}: not a featinv training checkpoint")
    return {"step": int(meta["step"]), "config": {**BEFORE, **json.loads(meta["config"])},
            "extra": json.loads(meta.get("extra", "{}"))}


def load_checkpoint(path: Path, model, averaged, opt, cfg: TrainConfig) -> tuple[int, dict]:
    """Load weights, average and optimizer state into the given objects; returns (step, extra)."""
    head = peek(path)
    for key in SAME_ON_RESUME:
        if head["config"].get(key) != getattr(cfg, key):
            raise FeatinvError(f"{path}: checkpoint was made with {key}={head['config'].get(key)!r}, this run "
                               f"has {getattr(cfg, key)!r}; resume with the same settings")
    tensors, _ = parse_safetensors(map_file(path), str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if averaged is not None:
        averaged.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state = opt.state_dict()
    for i in range(len(state["param_groups"][0]["params"])):
        if f"opt.{i}.exp_avg" in tensors:
            state["state"][i] = {k: tensors[f"opt.{i}.{k}"].clone() for k in ("step", "exp_avg", "exp_avg_sq")}
    opt.load_state_dict(state)
    return head["step"], head["extra"]
