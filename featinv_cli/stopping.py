"""How a training run stops before its end: Ctrl-C, SIGTERM or a diverged loss, between two steps and
in every torchrun process at the same one, with a checkpoint to resume from where one was saved."""
from __future__ import annotations

import contextlib
import math
import signal
import threading
from pathlib import Path

import torch

from .errors import FeatinvError
from .formats.checkpoint import peek
from .settings import of_steps


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


def in_any_process(flags: list[bool], world: int, device: torch.device) -> list[bool]:
    """Each flag, true if it is in any process: under torchrun each process gets its own SIGTERM (not
    always before the same step) and its own loss, and all must stop at the same step or the others
    wait for them forever."""
    if world == 1:
        return flags
    import torch.distributed as dist

    anyone = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(anyone, op=dist.ReduceOp.MAX)
    return [bool(v) for v in anyone.tolist()]


def stopped(e: BaseException, step: int, steps: int, ckpt: Path) -> Interrupted:
    """The one-line error of a run that Ctrl-C (``KeyboardInterrupt``) or SIGTERM (``Terminated``)
    stopped at ``step``, once its checkpoint is saved: where to resume from, and the exit code shells
    expect (130, 143)."""
    kept = f"; checkpoint {ckpt} saved, add --resume to the same command to continue" \
        if ckpt.exists() else "; no checkpoint yet"
    how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
    error = Interrupted(f"training {how} at step {step}{of_steps(steps)}{kept}")
    error.exit_code = 143 if isinstance(e, Terminated) else 130
    return error
