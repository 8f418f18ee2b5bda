"""The training loop (paper eq. 3): MSE in pixel space, Adam, seeded, checkpointed, resumable."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Callable

import torch
from torch.nn import functional as F

from . import __version__, ops
from .data import CropDataset, EpochBatches, FeatureRowsDataset, fingerprint, worker_init
from .errors import FeatinvError
from .features import from_metadata, parse_spec
from .io import ModelFile, atomic_write, encode_safetensors, list_images, parse_safetensors, read_bytes, save_model
from .models import for_extractor
from .models.deep import AutoEncoder
from .settings import TrainConfig


def cosine_to_one_percent(lr: float, t: float) -> float:
    """The decaying part of the schedule: ``lr`` at t = 0, 1% of it at t = 1."""
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Constant, then a cosine decay to 1% over the last ``1 - decay_from`` of training."""
    start = int(cfg.decay_from * cfg.steps)
    if step < start:
        return cfg.lr
    return cosine_to_one_percent(cfg.lr, (step - start) / max(1, cfg.steps - start))


def bf16_supported(device: str) -> bool:
    """Whether bf16 autocast pays here: a CUDA GPU with bf16, or a CPU with AMX (Sapphire Rapids on)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def checkpoint_path(output: str | Path) -> Path:
    return Path(str(output) + ".ckpt")


def mean_color(files, at_most: int = 1000) -> list[float]:
    """Mean RGB of the training images (of at most ``at_most`` of them, evenly spaced)."""
    from .io import read_image

    files = files[:: max(1, len(files) // at_most)]
    total = torch.zeros(3, dtype=torch.float64)
    for f in files:
        total += read_image(f).double().mean(dim=(1, 2))
    return (total / len(files)).tolist()


def _save_checkpoint(path: Path, model, opt, step: int, cfg: TrainConfig, extra: dict) -> None:
    tensors = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    for i, state in opt.state_dict()["state"].items():
        for k, v in state.items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu()
    meta = {"format": "featinv-checkpoint/1", "step": str(step),
            "config": json.dumps(dataclasses.asdict(cfg)), "extra": json.dumps(extra)}
    atomic_write(path, encode_safetensors(tensors, meta))


def _peek_extra(path: Path) -> dict:
    """The ``extra`` record of a checkpoint (mean colour, feature scale) without loading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return json.loads((f.metadata() or {}).get("extra", "{}"))
    except Exception:
        return {}  # _load_checkpoint gives the precise complaint


def _load_checkpoint(path: Path, model, opt, cfg: TrainConfig) -> tuple[int, dict]:
    tensors, meta = parse_safetensors(read_bytes(path), str(path))
    if meta.get("format") != "featinv-checkpoint/1":
        raise FeatinvError(f"{path}: not a featinv training checkpoint")
    saved = {"upsample": "zeros", **json.loads(meta["config"])}  # checkpoints from before --upsample
    for key in ("feature", "arch", "width", "upsample", "crop", "batch", "seed", "steps", "max_zoom", "features",
                "finetune_encoder"):
        if saved.get(key) != getattr(cfg, key):
            raise FeatinvError(f"{path}: checkpoint was made with {key}={saved.get(key)!r}, this run has "
                               f"{getattr(cfg, key)!r}; resume with the same settings")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state = opt.state_dict()
    for i in range(len(state["param_groups"][0]["params"])):
        if f"opt.{i}.exp_avg" in tensors:
            state["state"][i] = {k: tensors[f"opt.{i}.{k}"] for k in ("step", "exp_avg", "exp_avg_sq")}
    opt.load_state_dict(state)
    return int(meta["step"]), json.loads(meta.get("extra", "{}"))


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


class _Data:
    """What the loop trains on: a dataset of (image, features) pairs, its files, and the crop size."""

    def __init__(self, cfg: TrainConfig, extractor, world: int):
        self.extractor = extractor
        if cfg.features:
            if len(cfg.data) != 1:
                raise FeatinvError("training from --features reads their images from one --data folder")
            self.dataset = FeatureRowsDataset([Path(f) for f in cfg.features], Path(cfg.data[0]))
            stored = from_metadata(self.dataset.meta["feature"], self.dataset.meta["params"])
            if stored.spec != extractor.spec:
                raise FeatinvError(f"the feature files hold {stored.spec} features, not {extractor.spec}")
            size = self.dataset.image_size
            # A hand-made feature's grid must tile the image; a CNN layer's grid is fixed by the network.
            if not extractor.is_cnn and tuple(g * extractor.stride for g in extractor.grid_size(*size)) != tuple(size):
                raise FeatinvError(f"the feature files come from {size[0]}x{size[1]} images; training from "
                                   f"stored features needs a size that is a multiple of {extractor.stride} (--crop N)")
            self.crop = size[0]
            self.files = [Path(cfg.data[0]) / name for _, _, name in self.dataset.index]
        else:
            self.files = list_images(*cfg.data)
            if cfg.crop % 64:
                raise FeatinvError(f"--crop {cfg.crop} must be a multiple of 64 (the network's 1/64 bottleneck)")
            self.crop = cfg.crop
            self.dataset = CropDataset(self.files, None if cfg.finetune_encoder else extractor, cfg.crop,
                                       cfg.seed, cfg.max_zoom)
        if len(self.files) < cfg.batch:
            raise FeatinvError(f"{', '.join(cfg.data)}: {len(self.files)} images cannot fill a batch of "
                               f"{cfg.batch}; lower --batch")
        if cfg.batch % world:
            raise FeatinvError(f"--batch {cfg.batch} does not split evenly over {world} processes")

    def feature_scale(self, extractor, finetune: bool) -> float:
        """1 / std of the features of the first images: CNN activations can run to the hundreds (a
        network trained on 0-255 pixels) and the inverter's first layer expects order one."""
        if not extractor.is_cnn or finetune:
            return 1.0
        feats = torch.stack([self.dataset[(0, i)][1] for i in range(min(16, len(self.files)))])
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
    if not extractor.fine_tunable or cfg.features:
        raise FeatinvError("--finetune-encoder trains a CNN encoder (alexnet, caffenet, squeezenet) from images, "
                           f"not {extractor.spec}" + (" from stored features" if cfg.features else ""))
    encoder = copy.deepcopy(extractor.network()).train()
    for p in encoder.parameters():
        p.requires_grad_(True)
    return AutoEncoder(extractor, encoder, model), dict(arch, finetuned_encoder=True), encoder


class Interrupted(FeatinvError):
    """Ctrl-C (SIGINT) during training, after the checkpoint was saved. Exit code 130, as shells expect."""

    exit_code = 130


def train(cfg: TrainConfig, resume: bool = False,
          on_step: Callable[[int, int, float, float], None] | None = None) -> dict:
    """Train an inverter and write it to ``cfg.output``. Returns the ``train`` metadata.

    Under torchrun each process computes 1/K of every global batch of ``cfg.batch`` images and
    DistributedDataParallel averages the gradients, so the run follows a single-process run with the
    same batch; rank 0 alone writes checkpoints, the model and progress.
    """
    rank, world = distributed()
    torch.manual_seed(cfg.seed)
    extractor = parse_spec(cfg.feature)
    data = _Data(cfg, extractor, world)
    device = torch.device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    ckpt = checkpoint_path(cfg.output)
    if resume and not ckpt.exists():
        raise FeatinvError(f"{ckpt}: no checkpoint to resume from")
    extra = _peek_extra(ckpt) if resume else {}
    if "input_scale" not in extra:
        extra["input_scale"] = data.feature_scale(extractor, cfg.finetune_encoder)
    model, arch, encoder = _network(cfg, extractor, extra["input_scale"])
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    start = 0
    if resume:
        start, extra = _load_checkpoint(ckpt, model, opt, cfg)
        if start >= cfg.steps and Path(cfg.output).exists():
            raise FeatinvError(f"{ckpt}: this run already finished ({start} of {cfg.steps} steps) and wrote "
                               f"{cfg.output}; nothing to resume")
    if "mean" not in extra:
        extra["mean"] = mean_color(data.files)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    stats = _loop(cfg, net, model, opt, data, extra, start, device, rank, world, encoder is not None, on_step)
    meta = {"config": dataclasses.asdict(cfg), "steps_done": stats["step"], "final_loss": stats["loss"],
            "processes": world, "epochs": round(stats["step"] * cfg.batch / len(data.files), 2),
            "data_images": len(data.files), "data_fingerprint": fingerprint(data.files),
            "images_per_second": stats["rate"], "data_wait_fraction": stats["wait"]}
    if rank == 0:
        _save_model(cfg, model, encoder, extractor, arch, data.crop, extra, meta)
        if not cfg.keep_checkpoint:
            ckpt.unlink(missing_ok=True)  # the model holds everything a finished run needs
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # nobody reports success before rank 0 has written the model
    return meta


def _loop(cfg, net, model, opt, data: _Data, extra: dict, start: int, device, rank: int, world: int,
          autoencoder: bool, on_step) -> dict:
    """Steps ``start`` .. ``cfg.steps``: the paper's MSE in pixel space. Checkpoints every
    ``checkpoint_every`` steps and every ``checkpoint_minutes``; Ctrl-C saves one and stops."""
    ckpt = checkpoint_path(cfg.output)
    sampler = EpochBatches(len(data.files), cfg.batch, cfg.seed, start, cfg.steps, rank, world)
    if data.extractor.uses_operators and cfg.workers:
        ops.build()  # compile or load the operators here, once, not in every worker at the same time
    loader = torch.utils.data.DataLoader(
        data.dataset, batch_sampler=sampler, num_workers=cfg.workers, worker_init_fn=worker_init,
        persistent_workers=False, prefetch_factor=4 if cfg.workers else None)
    mean = torch.tensor(extra["mean"], device=device).view(1, 3, 1, 1)
    bf16 = cfg.precision == "bf16"
    model.train()
    step, ema, seen, waited, loss_avg = start, 0.0, 0, 0.0, extra.get("loss", float("nan"))
    t0 = saved = ready = time.perf_counter()
    try:
        for images, feats in loader:
            waited += time.perf_counter() - ready  # time the network sat waiting for this batch
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step)
            images, feats = images.to(device, non_blocking=True), feats.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                pred = net(images if autoencoder else feats).float()
            if pred.shape[-2:] != images.shape[-2:]:  # CNN-layer inverters predict a fixed size (§4.1)
                images = F.interpolate(images, size=pred.shape[-2:], mode="bilinear", antialias=True,
                                       align_corners=False)
            loss = F.mse_loss(pred, images - mean)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad_norm > 0:  # seen without it: HOG and SqueezeNet runs blew up (loss 1e4-1e11)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            opt.step()
            step, seen = step + 1, seen + images.shape[0]
            ema = 0.95 * ema + 0.05 * loss.item()  # bias-corrected below, as in Adam
            loss_avg = extra["loss"] = ema / (1 - 0.95 ** (step - start))
            if on_step and rank == 0:
                on_step(step, cfg.steps, loss_avg, world * seen / (time.perf_counter() - t0))
            due = step % cfg.checkpoint_every == 0 or time.perf_counter() - saved > 60 * cfg.checkpoint_minutes
            if rank == 0 and step < cfg.steps and due or step == cfg.steps and cfg.keep_checkpoint:
                _save_checkpoint(ckpt, model, opt, step, cfg, extra)
                saved = time.perf_counter()
            ready = time.perf_counter()
    except KeyboardInterrupt:
        if rank == 0 and step > start:
            _save_checkpoint(ckpt, model, opt, step, cfg, extra)
        kept = f"; checkpoint {ckpt} saved, add --resume to the same command to continue" \
            if ckpt.exists() else "; no checkpoint yet"
        raise Interrupted(f"training interrupted at step {step}/{cfg.steps}{kept}") from None
    elapsed = time.perf_counter() - t0
    return {"step": step, "loss": loss_avg, "rate": round(world * seen / elapsed, 1) if seen else None,
            "wait": round(waited / elapsed, 3) if seen else None}


def _save_model(cfg, model, encoder, extractor, arch, crop: int, extra: dict, meta: dict) -> None:
    # An autoencoder's file holds the decoder under the usual names and the encoder as "encoder.*".
    state = model.decoder.state_dict() if encoder is not None else model.state_dict()
    state = {k: v.detach().cpu() for k, v in state.items()}
    if encoder is not None:
        state.update({f"encoder.{k}": v.detach().cpu() for k, v in encoder.state_dict().items()})
    save_model(cfg.output, ModelFile(
        state=state, feature=extractor.spec, params=extractor.params, arch=arch, image_size=[crop, crop],
        normalization={"mean": extra["mean"], "scale": 1.0}, train=meta, version=__version__),
        dtype=getattr(torch, cfg.dtype))


