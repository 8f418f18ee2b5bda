"""Training settings: `featinv train`'s defaults are TrainConfig's, automatic ones are decided in one
place, and the settings a resumed run must keep are marked on the config itself."""
import dataclasses
import typing
from pathlib import Path

import pytest
import typer

from featinv_cli.cli import app
from featinv_cli.cli.train import train as train_command
from featinv_cli.errors import UsageError
from featinv_cli.features import parse_spec
from featinv_cli.settings import STEPS, TrainConfig, bf16_supported, same_on_resume
from featinv_cli.train import resolved

TRAIN = typer.main.get_command(app).commands["train"]


def held_by_config(value, annotation):
    """A command-line default as TrainConfig holds the setting: paths as strings, no path as ''."""
    if typing.get_origin(annotation) is list:
        return [str(v) for v in value]
    if annotation is Path or Path in typing.get_args(annotation):
        return "" if value is None else str(value)
    return value


def config_default(field: dataclasses.Field):
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def test_train_options_default_to_train_configs_defaults():
    """Every TrainConfig setting that is also a `featinv train` option has one default (a required
    option is a required field), so a library caller trains what the command trains. Found by name:
    a new option whose default drifts from the config's fails here."""
    hints = typing.get_type_hints(train_command)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    shared = [p for p in TRAIN.params if p.name in fields]
    assert len(shared) > 20, [p.name for p in shared]  # the command's options were found
    for option in shared:
        default = config_default(fields[option.name])
        if option.required:
            assert default is dataclasses.MISSING, option.name
        else:
            assert held_by_config(option.default, hints[option.name]) == default, option.name
    half = next(p for p in TRAIN.params if p.name == "half")  # --half/--full: the model file's dtype
    assert ("float16" if half.default else "float32") == config_default(fields["dtype"])


def test_a_library_config_is_resolved_as_the_command_resolves_it():
    """TrainConfig() with nothing chosen: the shipped model's network, the default steps and low-res
    start, the device there is and bf16 where it pays, as `featinv train` with no options."""
    cfg = resolved(TrainConfig(feature="hog", data="photos", output="m.safetensors"), parse_spec("hog"))
    assert (cfg.arch, cfg.width, cfg.upsample, cfg.steps, cfg.low_res) == ("skip", 0.3, "zeros", STEPS, 0.7)
    assert cfg.device in ("cpu", "cuda") and cfg.precision == ("bf16" if bf16_supported(cfg.device) else "fp32")
    assert resolved(cfg, parse_spec("hog")) == cfg  # train() resolves the command's config again: no change
    budget = resolved(TrainConfig(feature="squeezenet:fire5", data="photos", output="m.safetensors", minutes=5),
                      parse_spec("squeezenet:fire5"), resumed={"low_res": 0.0})
    assert (budget.arch, budget.steps, budget.low_res) == ("paper", 10 ** 9, 0.0)


def test_the_settings_a_resume_must_keep_are_marked_on_the_config():
    """Checkpoints compare these with a resumed run's settings (formats' SAME_ON_RESUME reads them)."""
    assert set(same_on_resume()) == {"feature", "arch", "width", "upsample", "crop", "batch", "seed", "steps",
                                     "max_zoom", "features", "finetune_encoder", "ema", "low_res", "minutes",
                                     "lr", "warmup", "init"}


def test_the_crop_rule_is_one_rule_for_the_command_and_the_library(cli, image_dir, tmp_path):
    from featinv_cli.train import train

    r = cli("train", "hog", "-d", image_dir, "-o", tmp_path / "a.safetensors", "--crop", "100")
    assert r.code == 2
    with pytest.raises(UsageError) as e:
        train(TrainConfig(feature="hog", data=str(image_dir), output=str(tmp_path / "b.safetensors"), crop=100,
                          device="cpu"))
    assert "--crop 100: must be a positive multiple of 64" in str(e.value) and str(e.value) in r.err
