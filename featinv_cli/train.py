"""The training loop (paper eq. 3): MSE in pixel space, Adam, seeded, checkpointed, resumable."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.nn import functional as F

from . import __version__
from .data import CropDataset, EpochBatches, FeatureRowsDataset, fingerprint, worker_init
from .errors import FeatinvError
from .features import from_metadata, parse_spec
from .io import ModelFile, atomic_write, encode_safetensors, list_images, parse_safetensors, read_bytes, save_model
from .models import for_extractor
from .models.deep import AutoEncoder


@dataclass
class TrainConfig:
    feature: str
    data: list[str]  # folders of training images, walked recursively
    output: str
    arch: str = "paper"
    width: float = 1.0
    crop: int = 128
    batch: int = 64
    steps: int = 2000
    lr: float = 1e-3
    decay_from: float = 0.6  # fraction of steps after which the learning rate decays (cosine to 1%)
    seed: int = 0
    workers: int = 1
    max_zoom: float = 2.0  # training crops come from images resized to shorter side in [crop, max_zoom*crop]
    checkpoint_every: int = 200
    device: str = "cpu"
    precision: str = "fp32"  # "bf16": the network runs under bf16 autocast; loss and optimizer stay fp32
    dtype: str = "float16"  # of the final model file; checkpoints are float32
    features: list[str] = field(default_factory=list)  # train from these feature files instead of crops
    finetune_encoder: bool = False  # paper §4.2: train the CNN encoder too (autoencoder upper bound)

    def __post_init__(self):
        if isinstance(self.data, (str, Path)):  # one folder may be given as it is
            self.data = [str(self.data)]


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Constant, then a cosine decay to 1% over the last ``1 - decay_from`` of training."""
    start = int(cfg.decay_from * cfg.steps)
    if step < start:
        return cfg.lr
    t = (step - start) / max(1, cfg.steps - start)
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


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


def _load_checkpoint(path: Path, model, opt, cfg: TrainConfig) -> tuple[int, dict]:
    tensors, meta = parse_safetensors(read_bytes(path), str(path))
    if meta.get("format") != "featinv-checkpoint/1":
        raise FeatinvError(f"{path}: not a featinv training checkpoint")
    saved = json.loads(meta["config"])
    for key in ("feature", "arch", "width", "crop", "batch", "seed", "steps", "max_zoom", "features",
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
    if cfg.features:
        if len(cfg.data) != 1:
            raise FeatinvError("training from --features reads their images from one --data folder")
        dataset = FeatureRowsDataset([Path(f) for f in cfg.features], Path(cfg.data[0]))
        stored = from_metadata(dataset.meta["feature"], dataset.meta["params"])
        if stored.spec != extractor.spec:
            raise FeatinvError(f"the feature files hold {stored.spec} features, not {extractor.spec}")
        size = dataset.image_size
        if tuple(g * extractor.stride for g in extractor.grid_size(*size)) != tuple(size):
            raise FeatinvError(f"the feature files come from {size[0]}x{size[1]} images; training from stored "
                               f"features needs a size that is a multiple of {extractor.stride} (--crop N)")
        cfg.crop = size[0]
        files = [Path(cfg.data[0]) / name for _, _, name in dataset.index]
    else:
        files = list_images(*cfg.data)
        if cfg.crop % 64:
            raise FeatinvError(f"--crop {cfg.crop} must be a multiple of 64 (the network's 1/64 bottleneck)")
        dataset = CropDataset(files, None if cfg.finetune_encoder else extractor, cfg.crop, cfg.seed,
                              cfg.max_zoom)
    if len(files) < cfg.batch:
        raise FeatinvError(f"{', '.join(cfg.data)}: {len(files)} images cannot fill a batch of {cfg.batch}; "
                           f"lower --batch")
    if cfg.batch % world:
        raise FeatinvError(f"--batch {cfg.batch} does not split evenly over {world} processes")
    device = torch.device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    model, arch = for_extractor(cfg.arch, extractor, width=cfg.width)
    encoder = None
    if cfg.finetune_encoder:
        if not hasattr(extractor, "run") or cfg.features:
            raise FeatinvError("--finetune-encoder trains a CNN encoder (alexnet, caffenet) from images, "
                               f"not {extractor.spec}" + (" from stored features" if cfg.features else ""))
        encoder = copy.deepcopy(extractor.network()).train()
        for p in encoder.parameters():
            p.requires_grad_(True)
        model = AutoEncoder(extractor, encoder, model)
        arch = dict(arch, finetuned_encoder=True)
    bf16 = cfg.precision == "bf16"
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    ckpt = checkpoint_path(cfg.output)
    start, extra = 0, {}
    if resume:
        if not ckpt.exists():
            raise FeatinvError(f"{ckpt}: no checkpoint to resume from")
        start, extra = _load_checkpoint(ckpt, model, opt, cfg)
    if "mean" not in extra:
        extra["mean"] = mean_color(files)
    mean = torch.tensor(extra["mean"], device=device).view(1, 3, 1, 1)

    sampler = EpochBatches(len(files), cfg.batch, cfg.seed, start, cfg.steps, rank, world)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=cfg.workers, worker_init_fn=worker_init,
        persistent_workers=False, prefetch_factor=4 if cfg.workers else None)
    model.train()
    step, ema, t0, seen, waited = start, 0.0, time.perf_counter(), 0, 0.0
    ready = time.perf_counter()
    for images, feats in loader:
        waited += time.perf_counter() - ready  # time the network sat waiting for this batch
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        images, feats = images.to(device, non_blocking=True), feats.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = net(images if encoder is not None else feats)
        pred = pred.float()
        if pred.shape[-2:] != images.shape[-2:]:  # CNN-layer inverters predict a fixed size (§4.1)
            images = F.interpolate(images, size=pred.shape[-2:], mode="bilinear", antialias=True,
                                   align_corners=False)
        loss = F.mse_loss(pred, images - mean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seen += images.shape[0]
        # Bias-corrected moving average (as in Adam): meaningful from the first step on.
        ema = 0.95 * ema + 0.05 * loss.item()
        loss_avg = ema / (1 - 0.95 ** (step - start))
        if on_step and rank == 0:
            on_step(step, cfg.steps, loss_avg, world * seen / (time.perf_counter() - t0))
        if rank == 0 and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            extra["loss"] = loss_avg
            _save_checkpoint(ckpt, model, opt, step, cfg, extra)
        ready = time.perf_counter()
    elapsed = time.perf_counter() - t0
    seen *= world
    meta = {"config": dataclasses.asdict(cfg), "steps_done": step, "final_loss": loss_avg, "processes": world,
            "epochs": round(step * cfg.batch / len(files), 2), "data_images": len(files),
            "data_fingerprint": fingerprint(files),
            "images_per_second": round(seen / elapsed, 1) if seen else None,
            "data_wait_fraction": round(waited / elapsed, 3) if seen else None}
    if rank == 0:
        # An autoencoder's file holds the decoder under the usual names and the encoder as "encoder.*".
        state = model.decoder.state_dict() if encoder is not None else model.state_dict()
        state = {k: v.detach().cpu() for k, v in state.items()}
        if encoder is not None:
            state.update({f"encoder.{k}": v.detach().cpu() for k, v in encoder.state_dict().items()})
        save_model(cfg.output, ModelFile(
            state=state, feature=extractor.spec,
            params=extractor.params, arch=arch, image_size=[cfg.crop, cfg.crop],
            normalization={"mean": extra["mean"], "scale": 1.0}, train=meta, version=__version__),
            dtype=getattr(torch, cfg.dtype))
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # nobody reports success before rank 0 has written the model
    return meta


def default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))
