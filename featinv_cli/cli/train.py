"""featinv train: fit an inverter for one kind of feature on a folder of images."""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import FeatinvError, UsageError, counted
from ..settings import LOW_RES, STEPS, check_crop, low_res_fraction, of_steps, run_steps
from ..settings import TrainConfig as D  # the defaults (no torch import)
from ..threads import Threads
from .common import DEVICE, QUIET, THREADS, WEIGHTS, err, progress



def train(
    feature: str = typer.Argument(..., help="Feature spec to invert: hog, hog:cell=8, ..."),
    data: List[Path] = typer.Option(..., "--data", "-d", help="Folder of training images, sub-folders "
                                    "included, decoded once into memory at the start; repeat for several "
                                    "folders. Or a views file made by `featinv pack` (no decoding at all)."),
    output: Path = typer.Option(..., "--output", "-o", help="Model file to write (.safetensors). "
                                "Checkpoints go beside it as OUTPUT.ckpt."),
    weights: Optional[str] = WEIGHTS,
    arch: str = typer.Option(D.arch, help="Network architecture. paper: the paper's (hand-made features: "
                             "contracting to 1/64, then up-convolutions; CNN layers: its conv or fc network); "
                             "skip (hog, lbp, sift): the same with U-Net skip connections; auto (default): "
                             "skip for hog, lbp, sift, paper for CNN layers, as the shipped models."),
    width: Optional[float] = typer.Option(D.width, help="Channel multiplier (1.0 = the paper's widths; default: "
                                          "the shipped model's for this feature, else 1.0; with --init, the file's). With "
                                          "--init, a larger width grows the file's network: the wider one starts "
                                          "out computing exactly what the file's does (its new channels have no "
                                          "say until training gives them one)."),
    upsample: str = typer.Option(D.upsample, help="--arch skip: how up-convolutions double the size. zeros "
                                 "(the paper's: zero insertion, then 5x5 conv) or resize (repeat pixels, then "
                                 "5x5 conv: no 2-pixel checkerboard in flat regions)."),
    crop: int = typer.Option(D.crop, help="Training crop size in pixels (a multiple of 64)."),
    max_zoom: float = typer.Option(D.max_zoom, "--max-zoom", help="Each step the views (photos cut square at "
                                   "max-zoom x crop pixels) are resized so their shorter side is random in "
                                   "[crop, max-zoom x crop], then cropped (1: whole photos only). Sift: crops "
                                   "at the views' scale."),
    low_res: Optional[float] = typer.Option(D.low_res, "--low-res", metavar="FRACTION", help="Train the first "
                                            "FRACTION of the run on the same crops at half resolution (a quarter "
                                            "of the cost; colour and layout first), then the rest at full "
                                            f"resolution with a fresh optimizer. 0: off. Default {LOW_RES}; "
                                            "with --init 0 (the file's network already reads full-resolution "
                                            "crops). Ignored for sift and --features (one resolution) and CNN "
                                            "layers (their input size is fixed)."),
    init: Optional[Path] = typer.Option(None, "--init", metavar="MODEL", help="Start from this model file's "
                                        "weights (or 'shipped': the model featinv ships for this feature) with "
                                        "a fresh optimizer and warm-up; its architecture and width too (--width "
                                        "may grow it). Another "
                                        "feature's model will do where the networks differ at most in their "
                                        "input channels: its first layer then starts fresh (fire5 for fire4, "
                                        "fire9 for conv10, sift for colmap-sift)."),
    warmup: int = typer.Option(D.warmup, "--warmup", metavar="STEPS", help="Raise the learning rate linearly "
                               "from 0 over the first STEPS steps (at most a tenth of --steps)."),
    ema: float = typer.Option(D.ema, "--ema", metavar="DECAY", help="Save an exponential moving average of "
                              "the weights with this decay (e.g. 0.999) instead of the last weights (0: off)."),
    batch: int = typer.Option(D.batch, help="Images per step (the paper: 64)."),
    steps: Optional[int] = typer.Option(D.steps, help=f"Optimizer steps in all (default {STEPS}; with --minutes "
                                        f"and no --steps, no step limit: the time budget ends the run)."),
    minutes: float = typer.Option(D.minutes, "--minutes", help="A wall-time budget: stop after this long "
                                  "(or at --steps, if sooner), with the schedule (decay, --low-res) run "
                                  "over the budget. Runs on one machine then differ with its speed. 0: off."),
    lr: float = typer.Option(D.lr, help="Adam learning rate; warms up over --warmup steps, decays (cosine, "
                             "to 1%) over the last 40% of steps."),
    seed: int = typer.Option(D.seed, help="Seed for weights, crops and batch order."),
    workers: int = typer.Option(D.workers, help="Processes decoding a folder at the start, or reading "
                                "--features rows (-1: cores - 1, max 4). Training batches are made in the "
                                "main process."),
    checkpoint_every: int = typer.Option(D.checkpoint_every, help="Write OUTPUT.ckpt every N steps, every 5 minutes, and "
                                         "on Ctrl-C or SIGTERM."),
    keep_checkpoint: bool = typer.Option(D.keep_checkpoint, "--keep-checkpoint", help="Keep OUTPUT.ckpt (weights and "
                                         "optimizer state) after the run finishes; by default it is removed."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT.ckpt with the same settings."),
    half: bool = typer.Option(True, "--half/--full", help="Store the final weights as float16 (half the size)."),
    log_every: int = typer.Option(50, help="When stderr is not a terminal, print a log line every N steps."),
    features: List[Path] = typer.Option([], "--features", help="Train from feature files made by "
                                        "`featinv extract --resize N --crop N` (e.g. its shards; a .txt lists "
                                        "one file per line; repeat the flag) instead of random crops; --data "
                                        "is where their source images are."),
    finetune_encoder: bool = typer.Option(D.finetune_encoder, "--finetune-encoder", help="CNN features: train the "
                                          "encoder too (an autoencoder: the upper bound of paper §4.2)."),
    val: Path = typer.Option(None, "--val", help="After training, report the normalized error on this "
                             "folder (shorter side 128, centre crop 128: the README's protocol), or on a "
                             "views file of it (pack --side 128)."),
    precision: str = typer.Option(D.precision, help="auto, fp32 or bf16: bf16 runs the network under bf16 "
                                  "autocast (loss and optimizer state stay fp32); auto = bf16 on a GPU with "
                                  "bf16 or a CPU with AMX, else fp32."),
    device: str = DEVICE,
    threads: Optional[int] = THREADS,
    quiet: bool = QUIET,
):
    """Train an up-convolutional network to predict the image from its features (paper eq. 3).

    Adam (0.9, 0.999), batch 64, lr 1e-3 after a warm-up, decayed towards the end, MSE in pixel
    space. The photos are decoded once (or packed beforehand with `featinv pack`); each step cuts a
    batch of random crops (zoom, flips) from them and computes its features on the training device,
    in the main process. Seeded: the same seed, data and --threads give the same model on CPU. Ctrl-C saves a
    checkpoint and stops (exit 130; SIGTERM, as `kill` or a batch scheduler sends it: the same, exit
    143); a stopped or killed run continues with --resume.

    \b
    Examples:
      featinv train hog -d photos/ -o hog.safetensors --width 0.3 --steps 5000
      featinv pack photos/ -o views.safetensors && featinv train hog -d views.safetensors -o hog.safetensors
      featinv train hog -d views.safetensors -o hog2.safetensors --init shipped --ema 0.999 --lr 3e-4 --minutes 60
      featinv train hog -d views.safetensors -o hog3.safetensors --init shipped --width 0.38 --minutes 60
      featinv train hog -d photos/ -o hog.safetensors --steps 5000 --resume
      torchrun --nproc-per-node 4 $(which featinv) train hog -d photos/ -o hog.safetensors

    Under torchrun (DDP: gloo on CPU, nccl on GPU) each process takes 1/K of every batch of --batch
    images, so the run follows the single-process one; rank 0 alone writes files and progress.
    """
    from ..features.registry import parse_spec, with_weights
    from ..settings import TrainConfig
    from ..train import resolved

    resumed = resumed_config(output) if resume else {}
    steps = run_steps(steps, minutes, resumed)  # a resumed run keeps its own: an older default may differ
    check_numbers(steps=steps, batch=batch, checkpoint_every=checkpoint_every, log_every=log_every, crop=crop, lr=lr,
                  max_zoom=max_zoom, output=output, width=width, upsample=upsample, precision=precision)
    low_res = low_res_fraction(low_res, init, resumed)
    check_schedule(low_res, ema, minutes, warmup)
    extractor = parse_spec(with_weights(feature, weights))
    if str(init) == "shipped":
        from ..inverter import shipped_model

        init = shipped_model(extractor, how="start from scratch (leave --init out) or give --init MODEL")
    check_outputs(output, init, data, val)
    cfg = resolved(TrainConfig(
        feature=with_weights(feature, weights), data=[str(d) for d in data], output=str(output), arch=arch, width=width,
        upsample=upsample, crop=crop, max_zoom=max_zoom, batch=batch, steps=steps, lr=lr, seed=seed, workers=workers,
        init=str(init or ""), warmup=warmup, ema=ema, low_res=low_res, minutes=minutes, checkpoint_every=checkpoint_every,
        keep_checkpoint=keep_checkpoint, device=device, precision=precision, dtype="float16" if half else "float32",
        features=listed_files(features), finetune_encoder=finetune_encoder), extractor, resumed)
    cpu = Threads(threads)  # follows the load while it trains, unless --threads
    # Under torchrun only rank 0 talks; the others train silently.
    quiet = quiet or int(os.environ.get("RANK", "0")) != 0
    meta = run_with_progress(cfg, resume, log_every, cpu, quiet)
    if not quiet:
        err.print(f"wrote {output} ({counted(meta['steps_done'], 'step')}, {meta['epochs']} epochs, "
                  f"loss {meta['final_loss']:.5f})")
    if val is not None and int(os.environ.get("RANK", "0")) == 0:
        report_validation(output, val, cfg)


def check_numbers(*, steps, batch, checkpoint_every, log_every, crop, lr, max_zoom, output, width, upsample,
                  precision) -> None:
    """The options a number or a name can make wrong, each a usage error naming it."""
    for flag, value in (("--steps", steps), ("--batch", batch), ("--checkpoint-every", checkpoint_every),
                        ("--log-every", log_every)):
        if value < 1:
            raise UsageError(f"{flag} {value}: must be a positive number")
    check_crop(crop)
    if not (math.isfinite(lr) and lr > 0):
        raise UsageError(f"--lr {lr:g}: give a positive learning rate (default {D.lr:g})")
    if not (math.isfinite(max_zoom) and max_zoom >= 1):
        raise UsageError(f"--max-zoom {max_zoom:g}: must be 1 (whole photos only) or more")
    if output.suffix != ".safetensors":
        raise UsageError(f"-o {output}: a model file is safetensors; name it *.safetensors")
    if width is not None and width <= 0:
        raise UsageError(f"--width {width:g}: must be positive")
    if upsample not in ("zeros", "resize"):
        raise UsageError(f"--upsample {upsample!r}: choose zeros or resize")
    if precision not in ("auto", "fp32", "bf16"):
        raise UsageError(f"--precision {precision!r}: choose auto, fp32 or bf16")


def listed_files(features: list[Path]) -> list[str]:
    """--features: the files, a .txt naming one feature file per line (shards of a big extraction)."""
    listed: list[str] = []
    for f in features:
        listed += [line.strip() for line in f.read_text().splitlines() if line.strip()] \
            if f.suffix == ".txt" else [str(f)]
    return listed


def check_schedule(low_res: float, ema: float, minutes: float, warmup: int) -> None:
    """The schedule's options: fractions, a decay, a budget, warm-up steps."""
    if not 0 <= low_res < 1:
        raise UsageError(f"--low-res {low_res:g}: give a fraction of the steps, 0 <= FRACTION < 1")
    if not 0 <= ema < 1:
        raise UsageError(f"--ema {ema:g}: give a decay, 0 <= DECAY < 1 (e.g. 0.999)")
    if minutes < 0:
        raise UsageError(f"--minutes {minutes:g}: must be 0 (no budget) or more")
    if warmup < 0:
        raise UsageError(f"--warmup {warmup}: must be 0 or more")


def run_with_progress(cfg, resume: bool, log_every: int, cpu, quiet: bool) -> dict:
    """The training run behind a progress bar on a terminal (filled by the minutes of a --minutes
    budget, else by the steps), a log line every --log-every steps otherwise; the threads follow the load."""
    from ..train import train as run_training

    minutes, steps = cfg.minutes, cfg.steps
    start, log_lines = time.perf_counter(), not quiet and not sys.stderr.isatty()
    clock = minutes > 0  # a time budget: the bar fills with the minutes, the steps go beside it
    with progress(round(minutes * 60) if clock else steps, f"train ({minutes:g} min)" if clock else "train",
                  quiet) as bar:
        def on_step(step, total, loss, rate):
            cpu.adjust()
            done = min(time.perf_counter() - start, minutes * 60) if clock else step
            bar.set(done, f"{f'step {step}  ' if clock else ''}loss {loss:.5f}  {rate:.0f} img/s")
            if log_lines and (step % log_every == 0 or step == total):
                err.print(f"step {step}{of_steps(total)}  loss {loss:.5f}  {rate:.0f} img/s  "
                          f"{time.perf_counter() - start:.0f}s")

        if resume:
            say_where_resuming(cfg, quiet)
        return run_training(cfg, resume=resume, on_step=on_step)


def check_outputs(output: Path, init: Path | None, data: list[Path], val: Path | None) -> None:
    """Before any work: -o is none of the inputs, replaces only a featinv model (an earlier run's, never a
    feature file or photo named by mistake), and --val holds images that decode (not found out after an
    hour of training)."""
    from ..evaluate import evaluation_views
    from ..formats.model import MODEL_FILE
    from ..outputs import Output

    Output(output, MODEL_FILE, inputs=[init, *data, val])  # not found out at the first checkpoint
    if val is not None:
        try:
            n = len(evaluation_views(val, 128))
        except FeatinvError as e:
            raise UsageError(f"--val: {e}") from None
        if n < 2:
            raise UsageError(f"--val {val}: one image; the normalized error needs two or more (it divides by "
                             f"their mean distance)")


def resumed_config(output: Path) -> dict:
    """The settings of the checkpoint --resume will continue ({} when there is none: train says so)."""
    from ..formats.checkpoint import checkpoint_path, peek

    ckpt = checkpoint_path(output)
    return peek(ckpt)["config"] if ckpt.exists() else {}


def say_where_resuming(cfg, quiet: bool) -> None:
    """Where --resume continues, once the checkpoint is known to fit this run (a refusal says nothing else)."""
    from ..formats.checkpoint import checkpoint_path, resumable

    ckpt = checkpoint_path(cfg.output)
    if ckpt.exists():
        step = resumable(ckpt, cfg)["step"]
        if not quiet:
            err.print(f"resuming from step {step}{of_steps(cfg.steps, ' of ')} ({ckpt})")


def report_validation(output, val, cfg) -> None:
    """`train --val`: the model's error on a folder, against predicting the mean training image; stored
    in the model file's metadata (``evaluation``) too."""
    from ..evaluate import baseline_mean, evaluation_record
    from ..formats.model import store_evaluation

    e = evaluation_record(output, val, baseline_mean(cfg.data, 128), device=cfg.device)
    store_evaluation(output, e)
    err.print(f"validation ({e['images']} images of {val}): normalized error {e['normalized_error']:.3f} "
              f"(predicting the mean training image: {e['baseline_mean_error']:.3f}), "
              f"PSNR {e['psnr']:.2f} dB, SSIM {e['ssim']:.3f}")
    if "mirror_average" in e and not cfg.finetune_encoder:
        err.print(f"  with invert --mirror-average: normalized error {e['mirror_average']:.3f}")
