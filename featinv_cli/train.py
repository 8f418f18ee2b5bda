"""The training loop (paper eq. 3): MSE in pixel space, Adam, seeded, checkpointed, resumable."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import torch
from torch.nn import functional as F

from . import __version__, ops
from .batches import FeatureRowBatches, ViewBatches
from .formats import checkpoint_path, load_checkpoint, peek, save_checkpoint
from .data import FeatureRowsDataset, fingerprint
from .errors import FeatinvError, UsageError, counted
from .features import from_metadata, parse_spec
from .formats import ModelFile, save_model
from .models import for_extractor
from .models.deep import AutoEncoder
from .settings import TrainConfig, of_steps
from .warmstart import init_model


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


def bf16_supported(device: str) -> bool:
    """Whether bf16 autocast pays here: a CUDA GPU with bf16, or a CPU with AMX (Sapphire Rapids on)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


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



def mean_color(files, at_most: int = 1000) -> list[float]:
    """Mean RGB of the training images (of at most ``at_most`` of them, evenly spaced)."""
    from .images import read_image

    files = files[:: max(1, len(files) // at_most)]
    total = torch.zeros(3, dtype=torch.float64)
    for f in files:
        total += read_image(f).double().mean(dim=(1, 2))
    return (total / len(files)).tolist()


@dataclasses.dataclass
class Data:
    """What the loop trains on: ``batches(step, low_res)`` -> (images, features) on the device."""

    batches: Callable[[int, bool], tuple[torch.Tensor, torch.Tensor]]
    images: int  # photos in the set
    fingerprint: str
    mean: Callable[[], list[float]]  # mean RGB of the set
    crop: int  # training image size (the model file's image_size)
    resizable: bool = True  # batches can be made at half resolution (--low-res)


def view_side(cfg: TrainConfig) -> int:
    """The size folders are decoded to: room for the largest zoom of a crop (160 for 128-px crops)."""
    return max(cfg.crop, round(cfg.crop * cfg.max_zoom))


def training_data(cfg: TrainConfig, extractor, device: torch.device, rank: int, world: int, on_decode=None) -> Data:
    """Views (a `featinv pack` file, or folders decoded once into views in memory) or stored features."""
    from .images import list_images
    from .views import is_views_file, load_views, pack

    if cfg.batch % world:
        raise UsageError(f"--batch {cfg.batch} does not split evenly over {world} processes")
    if cfg.features:
        return _stored_features(cfg, extractor, device, rank, world)
    if cfg.crop < 64 or cfg.crop % 64:
        raise UsageError(f"--crop {cfg.crop} must be a multiple of 64 (the network's 1/64 bottleneck)")
    packed = [d for d in cfg.data if is_views_file(d)]
    if packed and len(cfg.data) > 1:
        raise UsageError("train from one views file (featinv pack) or from folders, not both")
    if packed:
        vs = load_views(packed[0])
    else:
        files = list_images(*cfg.data)
        if len(files) < cfg.batch:
            raise FeatinvError(f"{', '.join(cfg.data)}: {counted(len(files), 'image')} cannot fill a batch of {cfg.batch}; "
                               f"lower --batch")
        sift = extractor if extractor.keypoint_grid else None
        vs = pack(files, [f.name for f in files], view_side(cfg), sift, cfg.workers, on_decode)
    feats = None if cfg.finetune_encoder else extractor
    batches = ViewBatches(vs, feats, cfg.crop, cfg.batch, cfg.seed, cfg.max_zoom, device, rank, world)
    return Data(batches, len(vs), vs.fingerprint, vs.mean_color, cfg.crop, resizable=not batches.sift)


def _stored_features(cfg: TrainConfig, extractor, device, rank: int, world: int) -> Data:
    if len(cfg.data) != 1:
        raise FeatinvError("training from --features reads their images from one --data folder")
    dataset = FeatureRowsDataset([Path(f) for f in cfg.features], Path(cfg.data[0]))
    stored = from_metadata(dataset.meta["feature"], dataset.meta["params"])
    if stored.spec != extractor.spec:
        raise FeatinvError(f"the feature files hold {stored.spec} features, not {extractor.spec}")
    size = dataset.image_size
    # A hand-made feature's grid must tile the image; a CNN layer's grid is fixed by the network.
    if not extractor.is_cnn and tuple(g * extractor.stride for g in extractor.grid_size(*size)) != tuple(size):
        raise FeatinvError(f"the feature files come from {size[0]}x{size[1]} images; training from "
                           f"stored features needs a size that is a multiple of {extractor.stride} (--crop N)")
    files = [Path(cfg.data[0]) / name for _, _, name in dataset.index]
    if len(files) < cfg.batch:
        raise FeatinvError(f"the feature files' {counted(len(files), 'row')} cannot fill a batch of {cfg.batch}; lower --batch")
    batches = FeatureRowBatches(dataset, cfg.batch, cfg.seed, cfg.workers, device, rank, world)
    return Data(batches, len(files), fingerprint(files), lambda: mean_color(files), size[0], resizable=False)


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


class Interrupted(FeatinvError):
    """Ctrl-C (SIGINT) during training, after the checkpoint was saved. Exit code 130, as shells expect;
    143 for SIGTERM."""

    exit_code = 130


class Diverged(FeatinvError):
    def __init__(self, step: int, loss: float, cfg, ckpt: Path):
        what = f"the loss is {loss}" if not math.isfinite(loss) else "the loss turned non-finite in another process"
        again = (f"delete {ckpt} (its step {peek(ckpt)['step']}, before this; --resume keeps the rate) and start "
                 f"again" if ckpt.exists() else "start again")
        super().__init__(f"training diverged at step {step + 1}: {what} (learning rate {cfg.lr:g}, warm-up "
                         f"{cfg.warmup} steps); no model written; {again} with a lower --lr or a longer --warmup")


class Terminated(Exception):
    """SIGTERM during training (`kill`, a batch scheduler's time limit): stops the run as Ctrl-C does."""


@contextlib.contextmanager
def sigterm_stops_training():
    """SIGTERM only raises a flag (``flag["stop"]``) that the loop reads after each step, so the run
    stops between steps, all processes at the same one, and saves its checkpoint. Left alone where
    Python cannot handle it (another thread) or the parent ignores SIGTERM."""
    flag = {"stop": False}
    before = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or before is signal.SIG_IGN:
        yield flag
        return
    signal.signal(signal.SIGTERM, lambda signum, frame: flag.__setitem__("stop", True))
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)


def _in_any_process(flags: list[bool], world: int, device: torch.device) -> list[bool]:
    """Each flag, true if it is in any process: under torchrun each process gets its own SIGTERM (not
    always before the same step) and its own loss, and all must stop at the same step or the others
    wait for them forever."""
    if world == 1:
        return flags
    import torch.distributed as dist

    anyone = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(anyone, op=dist.ReduceOp.MAX)
    return [bool(v) for v in anyone.tolist()]


def _device(cfg: TrainConfig, world: int) -> torch.device:
    device = torch.device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


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
    device = _device(cfg, world)
    ckpt = checkpoint_path(cfg.output)
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
    if extractor.uses_operators:
        ops.build()  # compile or load the operators now, not inside the first (timed) step
    data = training_data(cfg, extractor, device, rank, world, on_decode)
    # Stored keypoints or features have one resolution; a CNN resizes every crop to its input size, so
    # half-resolution crops cost it as much and only blur the targets.
    if cfg.low_res and (not data.resizable or extractor.is_cnn):
        cfg = dataclasses.replace(cfg, low_res=0.0)
    extra = peek(ckpt)["extra"] if resume else {}
    if cfg.init and not resume:
        model, arch, extra = init_model(cfg, extractor, lambda: feature_scale(data, extractor, False))
        encoder = None
    else:
        if "input_scale" not in extra:
            extra["input_scale"] = feature_scale(data, extractor, cfg.finetune_encoder)
        model, arch, encoder = _network(cfg, extractor, extra["input_scale"])
    model.to(device)
    averaged = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    start = 0
    if resume:
        start, extra = load_checkpoint(ckpt, model, averaged, opt, cfg)
        if extra.get("data_fingerprint", data.fingerprint) != data.fingerprint:
            raise FeatinvError(f"{ckpt}: checkpoint was trained on other data ({extra.get('data_images', '?')} "
                               f"images, not these {data.images}); resume with the same photos or views file")
        if start >= cfg.steps and Path(cfg.output).exists():
            raise FeatinvError(f"{ckpt}: this run already finished ({start}{of_steps(cfg.steps, ' of ')} steps) and wrote "
                               f"{cfg.output}; nothing to resume")
    if "mean" not in extra:
        extra["mean"] = data.mean()
    extra["data_fingerprint"], extra["data_images"] = data.fingerprint, data.images
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    with sigterm_stops_training() as sigterm:
        stats = _loop(cfg, net, model, averaged, opt, data, extra, start, device, rank, world, encoder is not None,
                      on_step, sigterm)
    meta = {"config": cfg.recorded(), "steps_done": stats["step"], "final_loss": stats["loss"],
            "processes": world, "batch_per_process": stats["batch_per_process"], "images_seen": stats["step"] * cfg.batch,
            "epochs": round(stats["step"] * cfg.batch / data.images, 2), "seconds": stats["seconds"],
            "device": _device_name(device), "data_images": data.images, "data_fingerprint": data.fingerprint,
            "images_per_second": stats["rate"], "weights": f"moving average, decay {cfg.ema}" if averaged else "last",
            "threads": torch.get_num_threads() if device.type == "cpu" else None}  # per process, on a CPU
    if "init" in extra:
        meta["init"] = extra["init"]
    if rank == 0:
        _save_model(cfg, averaged.net if averaged is not None else model, encoder is not None, extractor, arch,
                    data.crop, extra, meta)
        if not cfg.keep_checkpoint:
            ckpt.unlink(missing_ok=True)  # the model holds everything a finished run needs
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # nobody reports success before rank 0 has written the model
    return meta


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _loop(cfg, net, model, averaged, opt, data: Data, extra: dict, start: int, device, rank: int, world: int,
          autoencoder: bool, on_step, sigterm: dict | None = None) -> dict:
    """Steps ``start`` .. ``cfg.steps``: the paper's MSE in pixel space. Checkpoints every
    ``checkpoint_every`` steps and every ``checkpoint_minutes``; Ctrl-C saves one and stops."""
    ckpt = checkpoint_path(cfg.output)
    mean = torch.tensor(extra["mean"], device=device).view(1, 3, 1, 1)
    bf16 = cfg.precision == "bf16"
    model.train()
    step, smooth, seen, loss_avg = start, 0.0, 0, extra.get("loss", float("nan"))
    t0 = saved = time.perf_counter()
    spent = extra.get("seconds", 0.0)  # by the run before a --resume
    budget = 60 * cfg.minutes if cfg.minutes else math.inf
    save = lambda: save_checkpoint(ckpt, model, averaged, opt, step, cfg, extra)  # noqa: E731

    def progress() -> float:
        extra["seconds"] = spent + time.perf_counter() - t0
        return max(step / cfg.steps, extra["seconds"] / budget)

    try:
        while (done := progress()) < 1:
            if cfg.low_res and done >= cfg.low_res and "full_res_from" not in extra:
                # Full resolution starts as --init does: a fresh optimizer and the warm-up. Adam's moments of
                # the low-resolution phase sent it 3-6x its rate where gradients had been zero (at a 1x1
                # bottleneck, a 5x5 kernel's outer taps), and a 30-minute HOG run diverged at the switch.
                opt.state.clear()
                extra["full_res_from"] = step
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step - extra.get("full_res_from", 0), done)
            images, feats = data.batches(step, done < cfg.low_res)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                pred = net(images if autoencoder else feats).float()
            if pred.shape[-2:] != images.shape[-2:]:  # CNN-layer inverters predict a fixed size (§4.1)
                images = F.interpolate(images, size=pred.shape[-2:], mode="bilinear", antialias=True,
                                       align_corners=False)
            loss = F.mse_loss(pred, images - mean)
            value = loss.item()
            term, diverged = _in_any_process([sigterm is not None and sigterm["stop"], not math.isfinite(value)],
                                             world, device)
            if diverged:  # before the step: the weights (and the last checkpoint) stay finite
                raise Diverged(step, value, cfg, ckpt)
            if term:  # before this step's backward, not after another step: a scheduler's grace may be short
                raise Terminated
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad_norm > 0:  # seen without it: HOG and SqueezeNet runs blew up (loss 1e4-1e11)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            opt.step()
            if averaged is not None:
                averaged.update(model)
            step, seen = step + 1, seen + images.shape[0]
            smooth = 0.95 * smooth + 0.05 * value  # bias-corrected below, as in Adam
            loss_avg = extra["loss"] = smooth / (1 - 0.95 ** (step - start))
            if on_step and rank == 0:
                on_step(step, cfg.steps, loss_avg, world * seen / (time.perf_counter() - t0))
            due = step % cfg.checkpoint_every == 0 or time.perf_counter() - saved > 60 * cfg.checkpoint_minutes
            if rank == 0 and (progress() < 1 and due or progress() >= 1 and cfg.keep_checkpoint):
                save()
                saved = time.perf_counter()
    except (KeyboardInterrupt, Terminated) as e:
        if rank == 0 and step > start:
            save()
        kept = f"; checkpoint {ckpt} saved, add --resume to the same command to continue" \
            if ckpt.exists() else "; no checkpoint yet"
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        stopped = Interrupted(f"training {how} at step {step}{of_steps(cfg.steps)}{kept}")
        stopped.exit_code = 143 if isinstance(e, Terminated) else 130
        raise stopped from None
    elapsed = time.perf_counter() - t0
    return {"step": step, "loss": loss_avg, "seconds": round(spent + elapsed, 1),
            "rate": round(world * seen / elapsed, 1) if seen else None,
            "batch_per_process": seen // (step - start) if step > start else None}  # what each process trained on


def _save_model(cfg, model, autoencoder: bool, extractor, arch, crop: int, extra: dict, meta: dict) -> None:
    # An autoencoder's file holds the decoder under the usual names and the encoder as "encoder.*".
    state = model.decoder.state_dict() if autoencoder else model.state_dict()
    state = {k: v.detach().cpu() for k, v in state.items()}
    if autoencoder:
        state.update({f"encoder.{k}": v.detach().cpu() for k, v in model.encoder.state_dict().items()})
    save_model(cfg.output, ModelFile(
        state=state, feature=extractor.spec, params=extractor.params, arch=arch, image_size=[crop, crop],
        normalization={"mean": extra["mean"]}, train=meta, version=__version__),
        dtype=getattr(torch, cfg.dtype))
