"""Training settings and their defaults, in one place: `featinv train` takes its option defaults
from here, and ``train.resolved`` decides the automatic ones for the command and the library alike.
Importing this needs no torch (so `featinv train --help` stays fast)."""
from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from .errors import FeatinvError, UsageError


def default_workers() -> int:
    """Feature processes beside the training process: cores - 1, at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


NO_STEP_LIMIT = 10 ** 9  # `train --minutes` without --steps: the time budget ends the run


def of_steps(total: int, joint: str = "/") -> str:
    """'/5000' (or ' of 5000') after a step number, nothing for a run that the clock ends."""
    return "" if total >= NO_STEP_LIMIT else f"{joint}{total}"


STEPS = 2000  # a run's optimizer steps when neither --steps nor a --minutes budget says
# Fraction of the run, at the start, trained on crops at half resolution (where the data can be
# resized: not sift's stored keypoints or --features). 0.7 won BENCHMARKS' equal-wall-time study.
LOW_RES = 0.7


def kept_on_resume(default=MISSING, default_factory=MISSING):
    """A setting a resumed run must share with its checkpoint, so that the model's record says how it
    was made (the others, such as --workers, may change)."""
    return field(default=default, default_factory=default_factory, metadata={"same_on_resume": True})


@dataclass
class TrainConfig:
    """A training run's settings. The defaults are `featinv train`'s; "auto" and None are decided by
    ``train.resolved`` (which ``train.train`` calls), so a library caller trains what the command trains."""

    feature: str = kept_on_resume()
    data: list[str]  # folders of training images, walked recursively
    output: str
    arch: str = kept_on_resume("auto")  # auto: skip for hand-made features, paper for CNN layers
    width: float | None = kept_on_resume(None)  # None: the shipped model's for this feature, else 1.0
    upsample: str = kept_on_resume("zeros")  # skip architecture: "resize" doubles by repeating pixels (no checkerboard)
    crop: int = kept_on_resume(128)
    batch: int = kept_on_resume(64)
    steps: int | None = kept_on_resume(None)  # None: STEPS, or no step limit under a --minutes budget
    lr: float = kept_on_resume(1e-3)
    clip_grad_norm: float = 1.0  # 0: off
    decay_from: float = 0.6  # fraction of steps after which the learning rate decays (cosine to 1%)
    seed: int = kept_on_resume(0)
    workers: int = -1  # feature processes; -1: default_workers()
    max_zoom: float = kept_on_resume(1.25)  # each step the views are resized to shorter side in [crop, max_zoom*crop]
    init: str = kept_on_resume("")  # a model file to start from (its weights; a fresh optimizer, with warm-up)
    warmup: int = kept_on_resume(100)  # steps of linear learning-rate warm-up
    ema: float = kept_on_resume(0.0)  # decay of the exponential moving average of the weights that is saved (0: off)
    low_res: float | None = kept_on_resume(None)  # None: LOW_RES, 0 with --init (see low_res_fraction)
    minutes: float = kept_on_resume(0.0)  # a wall-time budget: the run ends at `steps` or after this long (0: no budget)
    checkpoint_every: int = 250
    checkpoint_minutes: float = 5.0  # also checkpoint this often, so a short run is never lost either
    keep_checkpoint: bool = False  # keep OUTPUT.ckpt after a finished run (it holds the optimizer state)
    device: str = "auto"  # auto: cuda when torch has one, else cpu
    precision: str = "auto"  # "bf16": the network runs under bf16 autocast; loss and optimizer stay fp32
    dtype: str = "float16"  # of the final model file; checkpoints are float32
    features: list[str] = kept_on_resume(default_factory=list)  # train from these feature files instead of crops
    finetune_encoder: bool = kept_on_resume(False)  # paper §4.2: train the CNN encoder too (autoencoder upper bound)

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


def same_on_resume() -> tuple[str, ...]:
    """The settings a resumed run must share with its checkpoint (``kept_on_resume``), in field order."""
    return tuple(f.name for f in fields(TrainConfig) if f.metadata.get("same_on_resume"))


def check_crop(crop: int) -> None:
    """--crop: the network halves the image six times, so a crop must be a positive multiple of 64."""
    if crop < 64 or crop % 64:
        raise UsageError(f"--crop {crop}: must be a positive multiple of 64 (the network's 1/64 bottleneck)")


def run_steps(steps: int | None, minutes: float, resumed: dict) -> int:
    """--steps; unset, a resumed run's own (an older version's default may differ from today's), else
    no step limit under a --minutes budget, else STEPS."""
    if steps is not None:
        return steps
    return resumed.get("steps") or (NO_STEP_LIMIT if minutes > 0 else STEPS)


def low_res_fraction(low_res: float | None, init, resumed: dict) -> float:
    """--low-res; unset, a resumed run's own, else 0 with --init (the file's network already reads
    full-resolution crops), else LOW_RES."""
    if low_res is not None:
        return low_res
    return resumed.get("low_res", 0.0 if init else LOW_RES)


def bf16_supported(device: str) -> bool:
    """Whether bf16 autocast pays here: a CUDA GPU with bf16, or a CPU with AMX (Sapphire Rapids on)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def resolve_device(name: str) -> str:
    """--device of every command: auto is cuda when torch has a usable CUDA device, else cpu."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise FeatinvError("--device cuda: this torch has no usable CUDA device; use --device cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UsageError(f"--device {name!r}: choose auto, cpu or cuda")
    return name


def recorded_name(path: str) -> str:
    """A path as a file made for others records it: as given when it is relative and stays below the
    folder it was given in (what the user typed: ``photos/``), else its name alone (``/home/ann/data/v.
    safetensors`` is ``v.safetensors``: an absolute path, or one climbing out with ``..``, tells about the
    machine that ran the command, not about the data)."""
    if not path:
        return path
    p = Path(path)
    return p.name if p.is_absolute() or ".." in p.parts or path.startswith("~") else p.as_posix()
