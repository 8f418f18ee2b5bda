"""Training settings and their defaults, in one place: `featinv train` takes its option defaults
from here, and importing this needs no torch (so `featinv train --help` stays fast)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_workers() -> int:
    """Feature processes beside the training process: cores - 1, at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


NO_STEP_LIMIT = 10 ** 9  # `train --minutes` without --steps: the time budget ends the run


def of_steps(total: int, joint: str = "/") -> str:
    """'/5000' (or ' of 5000') after a step number, nothing for a run that the clock ends."""
    return "" if total >= NO_STEP_LIMIT else f"{joint}{total}"


@dataclass
class TrainConfig:
    feature: str
    data: list[str]  # folders of training images, walked recursively
    output: str
    arch: str = "paper"
    width: float = 1.0
    upsample: str = "zeros"  # skip architecture: "resize" doubles by repeating pixels (no checkerboard)
    crop: int = 128
    batch: int = 64
    steps: int = 2000
    lr: float = 1e-3
    clip_grad_norm: float = 1.0  # 0: off
    decay_from: float = 0.6  # fraction of steps after which the learning rate decays (cosine to 1%)
    seed: int = 0
    workers: int = -1  # feature processes; -1: default_workers()
    max_zoom: float = 1.25  # each step the views are resized to shorter side in [crop, max_zoom*crop]
    init: str = ""  # a model file to start from (its weights; a fresh optimizer, with warm-up)
    warmup: int = 100  # steps of linear learning-rate warm-up
    ema: float = 0.0  # decay of the exponential moving average of the weights that is saved (0: off)
    # Fraction of the run, at the start, trained on crops at half resolution (where the data can be
    # resized: not sift's stored keypoints or --features). 0.7 won BENCHMARKS' equal-wall-time study.
    low_res: float = 0.7
    minutes: float = 0.0  # a wall-time budget: the run ends at `steps` or after this long (0: no budget)
    checkpoint_every: int = 250
    checkpoint_minutes: float = 5.0  # also checkpoint this often, so a short run is never lost either
    keep_checkpoint: bool = False  # keep OUTPUT.ckpt after a finished run (it holds the optimizer state)
    device: str = "cpu"
    precision: str = "fp32"  # "bf16": the network runs under bf16 autocast; loss and optimizer stay fp32
    dtype: str = "float16"  # of the final model file; checkpoints are float32
    features: list[str] = field(default_factory=list)  # train from these feature files instead of crops
    finetune_encoder: bool = False  # paper §4.2: train the CNN encoder too (autoencoder upper bound)

    def __post_init__(self):
        if isinstance(self.data, (str, Path)):  # one folder may be given as it is
            self.data = [str(self.data)]
        if self.workers < 0:
            self.workers = default_workers()

    def recorded(self) -> dict:
        """The settings as a model file records them: every path as ``recorded_name`` gives it, so a
        model shipped to others names its sources without the trainer's folders."""
        from dataclasses import asdict

        out = asdict(self)
        out.update(data=[recorded_name(d) for d in self.data], output=recorded_name(self.output),
                   init=recorded_name(self.init), features=[recorded_name(f) for f in self.features])
        return out


def recorded_name(path: str) -> str:
    """A path as a file made for others records it: as given when it is relative and stays below the
    folder it was given in (what the user typed: ``photos/``), else its name alone (``/home/ann/data/v.
    safetensors`` is ``v.safetensors``: an absolute path, or one climbing out with ``..``, tells about the
    machine that ran the command, not about the data)."""
    if not path:
        return path
    p = Path(path)
    return p.name if p.is_absolute() or ".." in p.parts or path.startswith("~") else p.as_posix()
