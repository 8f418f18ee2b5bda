"""`train --init`: a run that starts from a model file's network and weights, grown wider when asked."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .errors import FeatinvError, UsageError
from .features import from_metadata
from .formats.model import load_model
from .models import build, for_extractor
from .models.widen import CANNOT_WIDEN_FC
from .settings import TrainConfig


def training_summary(train: dict) -> dict:
    """What a model file's ``train`` record says about how much training it had, in one form for every
    file (older ones lack seconds and images seen, the old GPU recipe's its device): steps, images seen,
    photos, device, seconds. A model continued with --init adds its source's summary as ``before``."""
    batch = train.get("batch") or (train.get("config") or {}).get("batch") or 64
    steps = int(train.get("steps_done", 0))
    seconds = train.get("seconds")
    if seconds is None and train.get("images_per_second"):
        seconds = round(steps * batch / train["images_per_second"], 1)
    out = {"steps_done": steps, "images_seen": train.get("images_seen", steps * batch),
           "data_images": train.get("data_images"), "seconds": seconds,
           "device": train.get("device") or ("NVIDIA H200" if train.get("recipe") else "cpu"),
           **({"threads": train["threads"]} if train.get("threads") else {})}
    if "init" in train:
        out["before"] = train["init"]
    return out


def same_but_input(a: dict, b: dict) -> bool:
    """Two networks' ``arch`` that differ at most in what their first layer reads (its input channels and
    the scale applied to them)."""
    ignore = ("in_channels", "input_scale")
    return {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}


def file_network(init: Path) -> dict:
    """The canonical ``arch`` of the model file --init names (a UsageError when it is none), read from
    its header alone."""
    from .formats.model import canonical_arch, model_fields
    from .safetensors_codec import read_metadata

    if not init.is_file():
        raise UsageError(f"--init {init}: no such model file")
    try:
        return canonical_arch(model_fields(read_metadata(init), str(init))["arch"])
    except FeatinvError as e:  # the model format's own checks, said of the option
        raise UsageError(f"--init {e}") from None


def init_defaults(init: Path, arch: str, width: float | None, upsample: str) -> tuple[str, float, str]:
    """--init: the model file's architecture, width and upsampling where the settings leave them out
    (arch auto, no width, the default upsampling)."""
    theirs = file_network(init)
    return (theirs.get("name", arch) if arch == "auto" else arch,
            float(theirs.get("width", 1.0)) if width is None else width,
            theirs.get("upsample", "zeros") if upsample == TrainConfig.upsample else upsample)


def init_refusal(init, theirs: dict, name: str, width: float, upsample: str | None = None) -> str:
    """Why a run of network ``name`` at ``width`` (with ``upsample``; None: the file's) cannot start from
    --init's file, whose network is ``theirs`` (its canonical ``arch``), in the error's words; '' when it
    can: the same network at the file's width, or grown wider (models/widen.py), which fc ones cannot be."""
    before = float(theirs.get("width", 1.0))
    file_net = {"name": theirs.get("name"), "upsample": theirs.get("upsample", "zeros")}
    run_net = {"name": name, "upsample": file_net["upsample"] if upsample is None else upsample}
    if run_net != file_net or width < before:
        return (f"--init {init}: its network is {dict(file_net, width=before)}, this run's is "
                f"{dict(run_net, width=width)}; leave --arch and --upsample out to take the file's "
                f"(--width may grow the network, not shrink it)")
    if width > before and theirs.get("form") == "fc":
        return f"--init {init} --width {width:g}: {CANNOT_WIDEN_FC}"
    return ""


def init_model(cfg: TrainConfig, extractor, measure_scale: Callable[[], float]):
    """The model file's network with its weights, arch metadata and normalization, checked against this
    run's feature and architecture. A larger ``cfg.width`` grows the network first (models/widen.py):
    the wider network starts out computing exactly what the file's does.

    A model of another feature is a starting point when its network differs at most in its input
    channels (fire4 from fire5, conv10 from fire9, colmap-sift from sift): every layer keeps its weights
    except the first where the channels differ, which starts fresh. The features are scaled to unit
    spread as the file's were (``measure_scale``, CNN features), so its first layer sees inputs of the
    size it was trained on."""
    from .inverter import same_settings
    from .formats.model import canonical_arch
    from .models.widen import widen

    mf = load_model(cfg.init)
    source = from_metadata(mf.feature, mf.params)
    arch = canonical_arch(mf.arch)
    state, fresh = mf.state, []
    if source.spec != extractor.spec or not same_settings(mf.params, extractor.params):
        hyper = {k: arch[k] for k in ("width", "upsample") if k in arch}
        try:
            _, wanted = for_extractor(arch["name"], extractor, **hyper)
        except FeatinvError:
            wanted = {}
        if not same_but_input(wanted, arch):
            raise FeatinvError(f"--init {cfg.init}: inverts {source.spec} {mf.params}, not {extractor.spec} "
                               f"{extractor.params}, and its network differs in more than its input channels")
        if "input_scale" in wanted:
            wanted["input_scale"] = measure_scale()
        arch = canonical_arch(wanted)
        shapes = {k: v.shape for k, v in build(arch).state_dict().items()}
        fresh = sorted(k for k, v in state.items() if shapes[k] != v.shape)
    width = float(arch.get("width", 1.0))
    refusal = init_refusal(cfg.init, arch, cfg.arch, cfg.width, cfg.upsample)
    if refusal:
        raise FeatinvError(refusal)
    if arch.get("finetuned_encoder") or cfg.finetune_encoder:
        raise FeatinvError("--init and --finetune-encoder do not go together (yet)")
    model = build(arch)
    model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=not fresh)
    start = {"file": Path(cfg.init).name, **({"feature": source.spec} if source.spec != extractor.spec else {}),
             **({"fresh": fresh} if fresh else {}), **training_summary(mf.train)}
    if cfg.width > width:
        arch = dict(arch, width=cfg.width)
        try:
            model = widen(model, build(arch), check=True)
        except ValueError as e:
            raise FeatinvError(f"--init {cfg.init} --width {cfg.width:g}: {e}") from None
        start["widened_from"] = width
    extra = {"mean": mf.normalization["mean"], "input_scale": float(arch.get("input_scale", 1.0)), "init": start}
    return model, arch, extra
