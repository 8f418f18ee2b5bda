"""Training checkpoints (featinv-formats(5)): ``OUTPUT.ckpt`` beside `featinv train`'s model, holding
the weights, their average, the optimizer's state, the step and the settings, so a run resumes where it
stopped, and only with the settings it was made with."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..errors import FeatinvError
from ..files import atomic_write, map_file
from ..safetensors_codec import encode_safetensors, json_field, parse_safetensors, read_metadata
from ..settings import TrainConfig, same_on_resume
from .base import Kind, header_says

CHECKPOINT_FORMAT = "featinv-checkpoint/1"


# Settings a resumed run must share with its checkpoint, marked on TrainConfig's fields, so that the
# model's record says how it was made (the others, such as --workers, may change; the data may move, but
# must be the same: train compares its fingerprint).
SAME_ON_RESUME = same_on_resume()


# Values of settings added after checkpoints were first written, as those runs had them.
BEFORE = {"upsample": "zeros", "ema": 0.0, "low_res": 0.0, "minutes": 0.0, "init": "", "warmup": 0}


def checkpoint_path(output: str | Path) -> Path:
    return Path(str(output) + ".ckpt")


def save_checkpoint(path: Path, model, averaged, opt, step: int, cfg: TrainConfig, extra: dict) -> None:
    import torch

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
    return checkpoint_fields(read_metadata(path), str(path))


def checkpoint_fields(meta: dict[str, str], name: str) -> dict:
    """``peek``'s record of a checkpoint's metadata, checked (the reader's checks, and `info`'s)."""
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise FeatinvError(f"{name}: not a featinv training checkpoint")
    config, extra = json_field(meta, "config", name), json_field(meta, "extra", name, {})
    if not meta.get("step", "").isdigit() or not isinstance(config, dict) or not isinstance(extra, dict):
        raise FeatinvError(f"{name}: its header lacks the step or the settings; the checkpoint is damaged")
    return {"step": int(meta["step"]), "config": {**BEFORE, **config}, "extra": extra}


def resumable(path: Path, cfg: TrainConfig) -> dict:
    """``peek`` of a checkpoint that a run with ``cfg`` may continue (the settings SAME_ON_RESUME names
    agree), else a FeatinvError naming the first that differs (before anything says it resumes)."""
    head = peek(path)
    for key in SAME_ON_RESUME:
        if head["config"].get(key) != getattr(cfg, key):
            raise FeatinvError(f"{path}: checkpoint was made with {key}={head['config'].get(key)!r}, this run "
                               f"has {getattr(cfg, key)!r}; resume with the same settings")
    return head


def load_checkpoint(path: Path, model, averaged, opt, cfg: TrainConfig) -> tuple[int, dict]:
    """Load weights, average and optimizer state into the given objects; returns (step, extra)."""
    head = resumable(path, cfg)
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


def describe(name, source, entries, meta, header_len) -> dict:
    head = checkpoint_fields(meta, name)
    config = head["config"]
    return {"file": name, "kind": "training checkpoint (featinv train; --resume continues it)",
            "feature": config.get("feature"), "step": head["step"],
            "steps": config.get("steps"), "minutes": config.get("minutes"), "output": config.get("output"),
            "config": config, "tensors": len(entries)}


CHECKPOINT_FILE = Kind("training checkpoint", header_says(CHECKPOINT_FORMAT), CHECKPOINT_FORMAT, describe)
