"""The training loop (paper eq. 3): MSE in pixel space, Adam, seeded, checkpointed, resumable.

Top to bottom: the schedule, the network, the loss and the training step (what bench/run.py times), the
run's state, the loop, and ``train``, which sets a run up, loops and writes the model."""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch.nn import functional as F

from . import __version__, ops
from .errors import FeatinvError
from .features import parse_spec
from .formats.checkpoint import checkpoint_path, load_checkpoint, peek, save_checkpoint
from .formats.model import ModelFile, save_model
from .models import for_extractor
from .models.deep import AutoEncoder
from .inverter import shipped_defaults
from .settings import (TrainConfig, bf16_supported, low_res_fraction, of_steps, resolve_device,
                       run_steps)
from .stopping import Diverged, Terminated, in_any_process, sigterm_stops_training, stopped
from .training_data import Data, training_data
from .warmstart import init_defaults, init_model


def cosine_to_one_percent(lr: float, t: float) -> float:
    """The decaying part of the schedule: ``lr`` at t = 0, 1% of it at t = 1."""
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def learning_rate(cfg: TrainConfig, step: int, progress: float | None = None) -> float:
    """A linear warm-up over ``cfg.warmup`` steps (at most a tenth of the run), constant, then a cosine
    decay to 1% over the last ``1 - decay_from`` of training. ``progress`` (0..1) is how far the run is:
    ``step / steps`` unless given (runs with a time budget: the larger of that and the time spent)."""
    progress = step / cfg.steps if progress is None else progress
    warmup = min(cfg.warmup, cfg.steps // 10)
    warm = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if progress < cfg.decay_from:
        return cfg.lr * warm
    return warm * cosine_to_one_percent(cfg.lr, min(1.0, (progress - cfg.decay_from) / (1 - cfg.decay_from)))


def resolved(cfg: TrainConfig, extractor, resumed: dict | None = None) -> TrainConfig:
    """``cfg`` with its automatic settings decided, as `featinv train` decides them and ``train.train``
    again (to the same values) for library callers: steps and --low-res (a resumed run's ``resumed``
    settings first), the network (--init's file's, else the shipped model's for this feature), the
    device, and the precision (bf16 where it pays)."""
    resumed = resumed or {}
    arch, width, upsample = cfg.arch, cfg.width, cfg.upsample
    if cfg.init:
        arch, width, upsample = init_defaults(Path(cfg.init), arch, width, upsample)
    arch, width = shipped_defaults(extractor, arch, width)
    device = resolve_device(cfg.device)
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if bf16_supported(device) else "fp32"
    return dataclasses.replace(cfg, steps=run_steps(cfg.steps, cfg.minutes, resumed), arch=arch, width=width, upsample=upsample,
                   low_res=low_res_fraction(cfg.low_res, cfg.init, resumed), device=device, precision=precision)


def distributed() -> tuple[int, int]:
    """(rank, world size), joining the process group when started by torchrun (WORLD_SIZE > 1):
    gloo on the CPU, nccl on CUDA. A plain `featinv train` is rank 0 of 1."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def feature_scale(data: Data, extractor, finetune: bool) -> float:
    """1 / std of the features of the first batch: CNN activations can run to the hundreds (a
    network trained on 0-255 pixels) and the inverter's first layer expects order one."""
    if not extractor.is_cnn or finetune:
        return 1.0
    feats = data.batches(0, False)[1]
    return float(1.0 / feats.float().std().clamp_min(1e-6)) if feats.numel() else 1.0


def _network(cfg: TrainConfig, extractor, input_scale: float):
    """The inverter (wrapped with a trainable copy of the CNN for --finetune-encoder), its ``arch``
    metadata, and the encoder (None unless fine-tuned)."""
    hyper = {"input_scale": input_scale} if input_scale != 1.0 else {}  # files keep only what differs
    if cfg.upsample != "zeros":
        hyper["upsample"] = cfg.upsample
    model, arch = for_extractor(cfg.arch, extractor, width=cfg.width, **hyper)
    if not cfg.finetune_encoder:
        return model, arch, None
    encoder = copy.deepcopy(extractor.network()).train()
    for p in encoder.parameters():
        p.requires_grad_(True)
    return AutoEncoder(extractor, encoder, model), dict(arch, finetuned_encoder=True), encoder


class WeightAverage(torch.nn.Module):
    """An exponential moving average of a network's weights (what --ema saves). The decay ramps up
    as min(decay, (1 + t) / (10 + t)) over the run's t-th update, so a short run's average is not
    dominated by its first weights."""

    def __init__(self, model: torch.nn.Module, decay: float):
        super().__init__()
        self.net, self.decay, self.updates = copy.deepcopy(model).requires_grad_(False), decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        mine, theirs = list(self.net.state_dict().values()), list(model.state_dict().values())
        floats = [(a, b) for a, b in zip(mine, theirs) if a.is_floating_point()]
        torch._foreach_lerp_([a for a, _ in floats], [b.detach() for _, b in floats], 1.0 - d)


def pixel_loss(reconstruction: torch.Tensor, images: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """The paper's loss (eq. 3): mean squared error in pixel space. ``reconstruction``: (N, 3, h, w)
    float32, the network's image less the training set's ``mean`` (1, 3, 1, 1); ``images``: (N, 3, H, W)
    in 0..1, resized to h x w where they differ (CNN-layer inverters predict a fixed size, §4.1).
    A feature or adversarial loss would go here, beside it."""
    if reconstruction.shape[-2:] != images.shape[-2:]:
        images = F.interpolate(images, size=reconstruction.shape[-2:], mode="bilinear", antialias=True,
                               align_corners=False)
    return F.mse_loss(reconstruction, images - mean)


class Step(NamedTuple):
    """What a training step returns: its loss, and its reconstruction. A caller that holds the last
    step's until the next one's is made (the loop does) runs 5-10% faster on a CPU (HOG, measured): the
    batch's buffers freed at every return went back to the system and were faulted in again."""

    loss: float
    reconstruction: torch.Tensor


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
                  images: torch.Tensor, mean: torch.Tensor, *, net: torch.nn.Module | None = None,
                  bf16: bool = False, clip_grad_norm: float = 0.0, averaged: WeightAverage | None = None,
                  check: Callable[[float], None] | None = None) -> Step:
    """One optimizer step on one batch; returns its loss (before the step). ``inputs``: the features
    (the images for --finetune-encoder); ``net``: what runs them (under torchrun, DDP's wrapper of
    ``model``). ``check(loss)`` may raise to stop before the weights change (divergence, SIGTERM)."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
        reconstruction = (model if net is None else net)(inputs).float()  # the loss and optimizer stay fp32
    loss = pixel_loss(reconstruction, images, mean)
    value = loss.item()
    if check is not None:
        check(value)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad_norm > 0:  # seen without it: HOG and SqueezeNet runs blew up (loss 1e4-1e11)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()
    if averaged is not None:
        averaged.update(model)
    return Step(value, reconstruction.detach())



@dataclasses.dataclass
class Run:
    """A training run's state, as the loop reads and changes it."""

    cfg: TrainConfig  # resolved (settings.resolved)
    model: torch.nn.Module  # the inverter (an AutoEncoder for --finetune-encoder)
    optimizer: torch.optim.Optimizer
    data: Data
    extra: dict  # what the checkpoint keeps beside the weights: mean colour, feature scale, loss, seconds...
    device: torch.device
    averaged: WeightAverage | None = None  # --ema
    net: torch.nn.Module | None = None  # what runs forward: under torchrun DDP's wrapper of the model
    rank: int = 0
    world: int = 1
    autoencoder: bool = False  # the network reads the images (its encoder makes the features)

    def save(self, step: int) -> None:
        save_checkpoint(checkpoint_path(self.cfg.output), self.model, self.averaged, self.optimizer, step,
                        self.cfg, self.extra)


def _set_learning_rate(run: Run, step: int, done: float) -> None:
    """This step's learning rate; at the switch to full resolution (--low-res), a fresh optimizer."""
    cfg, extra = run.cfg, run.extra
    if cfg.low_res and done >= cfg.low_res and "full_res_from" not in extra:
        # Full resolution starts as --init does: a fresh optimizer and the warm-up. Adam's moments of
        # the low-resolution phase sent it 3-6x its rate where gradients had been zero (at a 1x1
        # bottleneck, a 5x5 kernel's outer taps), and a 30-minute HOG run diverged at the switch.
        run.optimizer.state.clear()
        extra["full_res_from"] = step
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate(cfg, step - extra.get("full_res_from", 0), done)


def _loop(run: Run, start: int, on_step=None, sigterm: dict | None = None) -> dict:
    """Steps ``start`` .. ``cfg.steps`` (or to the end of a --minutes budget). Checkpoints every
    ``checkpoint_every`` steps and every ``checkpoint_minutes``; Ctrl-C or SIGTERM saves one and stops."""
    cfg, extra = run.cfg, run.extra
    ckpt = checkpoint_path(cfg.output)
    mean = torch.tensor(extra["mean"], device=run.device).view(1, 3, 1, 1)
    run.model.train()
    step, smooth, seen, loss_avg = start, 0.0, 0, extra.get("loss", float("nan"))
    t0 = saved = time.perf_counter()
    spent = extra.get("seconds", 0.0)  # by the run before a --resume
    budget = 60 * cfg.minutes if cfg.minutes else math.inf

    def progress() -> float:
        extra["seconds"] = spent + time.perf_counter() - t0
        return max(step / cfg.steps, extra["seconds"] / budget)

    def stop_if_asked(loss: float) -> None:  # before the step: the weights (and the last checkpoint) stay finite
        term, diverged = in_any_process([sigterm is not None and sigterm["stop"], not math.isfinite(loss)],
                                        run.world, run.device)
        if diverged:
            raise Diverged(step, loss, cfg, ckpt)
        if term:  # before this step's backward, not after another step: a scheduler's grace may be short
            raise Terminated

    try:
        while (done := progress()) < 1:
            _set_learning_rate(run, step, done)
            images, feats = run.data.batches(step, done < cfg.low_res)
            last = training_step(run.model, run.optimizer, images if run.autoencoder else feats, images, mean,
                                  net=run.net, bf16=cfg.precision == "bf16", clip_grad_norm=cfg.clip_grad_norm,
                                  averaged=run.averaged, check=stop_if_asked)
            step, seen = step + 1, seen + images.shape[0]
            smooth = 0.95 * smooth + 0.05 * last.loss  # bias-corrected below, as in Adam
            loss_avg = extra["loss"] = smooth / (1 - 0.95 ** (step - start))
            if on_step and run.rank == 0:
                on_step(step, cfg.steps, loss_avg, run.world * seen / (time.perf_counter() - t0))
            due = step % cfg.checkpoint_every == 0 or time.perf_counter() - saved > 60 * cfg.checkpoint_minutes
            if run.rank == 0 and (progress() < 1 and due or progress() >= 1 and cfg.keep_checkpoint):
                run.save(step)
                saved = time.perf_counter()
    except (KeyboardInterrupt, Terminated) as e:
        if run.rank == 0 and step > start:
            run.save(step)
        raise stopped(e, step, cfg.steps, ckpt) from None
    elapsed = time.perf_counter() - t0
    return {"step": step, "loss": loss_avg, "seconds": round(spent + elapsed, 1),
            "rate": round(run.world * seen / elapsed, 1) if seen else None,
            "batch_per_process": seen // (step - start) if step > start else None}  # what each process trained on


def _check_checkpoint(cfg: TrainConfig, resume: bool, ckpt: Path) -> None:
    """A new run may not drop an earlier run's checkpoint; --resume needs one."""
    if not resume and ckpt.exists():  # starting again would drop the earlier run's steps at the first save
        if Path(cfg.output).exists():
            raise FeatinvError(f"{ckpt}: kept by the finished run that wrote {cfg.output} (--keep-checkpoint); "
                               f"delete it, or choose another -o, to start a new run")
        raise FeatinvError(f"{ckpt}: a checkpoint of an earlier run to {cfg.output} is there; add --resume to "
                           f"continue it, or delete it (or choose another -o) to start again")
    if resume and not ckpt.exists():
        if Path(cfg.output).exists():
            raise FeatinvError(f"{ckpt}: no checkpoint; the run finished and wrote its model, {cfg.output}")
        raise FeatinvError(f"{ckpt}: no checkpoint to resume from")


def _device(cfg: TrainConfig, world: int) -> torch.device:
    device = torch.device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _model(cfg: TrainConfig, extractor, data: Data, extra: dict, resume: bool):
    """The network to train, its ``arch`` metadata, whether it holds the encoder, and the ``extra``
    record: --init's file's network, else a new one (at a resumed run's feature scale)."""
    if cfg.init and not resume:
        model, arch, extra = init_model(cfg, extractor, lambda: feature_scale(data, extractor, False))
        return model, arch, False, extra
    if "input_scale" not in extra:
        extra["input_scale"] = feature_scale(data, extractor, cfg.finetune_encoder)
    model, arch, encoder = _network(cfg, extractor, extra["input_scale"])
    return model, arch, encoder is not None, extra


def _resume(run: Run, ckpt: Path) -> int:
    """Load the checkpoint into ``run`` (weights, average, optimizer, extra); returns its step."""
    cfg, data = run.cfg, run.data
    start, run.extra = load_checkpoint(ckpt, run.model, run.averaged, run.optimizer, cfg)
    if run.extra.get("data_fingerprint", data.fingerprint) != data.fingerprint:
        raise FeatinvError(f"{ckpt}: checkpoint was trained on other data ({run.extra.get('data_images', '?')} "
                           f"images, not these {data.images}); resume with the same photos or views file")
    if start >= cfg.steps and Path(cfg.output).exists():
        raise FeatinvError(f"{ckpt}: this run already finished ({start}{of_steps(cfg.steps, ' of ')} steps) and wrote "
                           f"{cfg.output}; nothing to resume")
    return start


def _set_up(cfg: TrainConfig, extractor, resume: bool, ckpt: Path, rank: int, world: int, on_decode) -> tuple:
    """(the run, its first step, the network's ``arch``): data, network, optimizer, the checkpoint."""
    device = _device(cfg, world)
    if extractor.uses_operators:
        ops.build()  # compile or load the operators now, not inside the first (timed) step
    data = training_data(cfg, extractor, device, rank, world, on_decode)
    # Stored keypoints or features have one resolution; a CNN resizes every crop to its input size, so
    # half-resolution crops cost it as much and only blur the targets.
    if cfg.low_res and (not data.resizable or extractor.is_cnn):
        cfg = dataclasses.replace(cfg, low_res=0.0)
    model, arch, autoencoder, extra = _model(cfg, extractor, data, peek(ckpt)["extra"] if resume else {}, resume)
    model.to(device)
    averaged = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    run = Run(cfg, model, optimizer, data, extra, device, averaged, rank=rank, world=world, autoencoder=autoencoder)
    start = _resume(run, ckpt) if resume else 0
    if "mean" not in run.extra:
        run.extra["mean"] = data.mean()
    run.extra["data_fingerprint"], run.extra["data_images"] = data.fingerprint, data.images
    run.net = model if world == 1 else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    return run, start, arch


def train(cfg: TrainConfig, resume: bool = False, on_step: Callable[[int, int, float, float], None] | None = None,
          on_decode: Callable[[int], None] | None = None) -> dict:
    """Train an inverter and write it to ``cfg.output``. Returns the ``train`` metadata.

    Under torchrun each process computes 1/K of every global batch of ``cfg.batch`` images and
    DistributedDataParallel averages the gradients, so the run follows a single-process run with the
    same batch; rank 0 alone writes checkpoints, the model and progress.
    """
    rank, world = distributed()
    torch.manual_seed(cfg.seed)
    extractor = parse_spec(cfg.feature)
    if cfg.finetune_encoder and (not extractor.fine_tunable or cfg.features):  # before any slow set-up
        raise FeatinvError("--finetune-encoder trains a CNN encoder (alexnet, caffenet, squeezenet) from images, "
                           f"not {extractor.spec}" + (" from stored features" if cfg.features else ""))
    ckpt = checkpoint_path(cfg.output)
    _check_checkpoint(cfg, resume, ckpt)
    cfg = resolved(cfg, extractor, peek(ckpt)["config"] if resume else {})  # as `featinv train` has it
    run, start, arch = _set_up(cfg, extractor, resume, ckpt, rank, world, on_decode)
    with sigterm_stops_training() as sigterm:
        stats = _loop(run, start, on_step, sigterm)
    meta = _record(run, stats)
    if rank == 0:
        _save_model(run, extractor, arch, meta)
        if not run.cfg.keep_checkpoint:
            ckpt.unlink(missing_ok=True)  # the model holds everything a finished run needs
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # nobody reports success before rank 0 has written the model
    return meta


def _record(run: Run, stats: dict) -> dict:
    """The model file's ``train`` metadata: the settings, and how the run went."""
    cfg, data, device = run.cfg, run.data, run.device
    meta = {"config": cfg.recorded(), "steps_done": stats["step"], "final_loss": stats["loss"],
            "processes": run.world, "batch_per_process": stats["batch_per_process"],
            "images_seen": stats["step"] * cfg.batch, "epochs": round(stats["step"] * cfg.batch / data.images, 2),
            "seconds": stats["seconds"], "device": _device_name(device), "data_images": data.images,
            "data_fingerprint": data.fingerprint, "images_per_second": stats["rate"],
            "weights": f"moving average, decay {cfg.ema}" if run.averaged else "last",
            "threads": torch.get_num_threads() if device.type == "cpu" else None}  # per process, on a CPU
    if "init" in run.extra:
        meta["init"] = run.extra["init"]
    return meta


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _save_model(run: Run, extractor, arch: dict, meta: dict) -> None:
    # An autoencoder's file holds the decoder under the usual names and the encoder as "encoder.*".
    model = run.averaged.net if run.averaged is not None else run.model
    state = model.decoder.state_dict() if run.autoencoder else model.state_dict()
    state = {k: v.detach().cpu() for k, v in state.items()}
    if run.autoencoder:
        state.update({f"encoder.{k}": v.detach().cpu() for k, v in model.encoder.state_dict().items()})
    save_model(run.cfg.output, ModelFile(
        state=state, feature=extractor.spec, params=extractor.params, arch=arch, image_size=[run.data.crop] * 2,
        normalization={"mean": run.extra["mean"]}, train=meta, version=__version__),
        dtype=getattr(torch, run.cfg.dtype))
