"""train --init: a run starts from a model file's network and weights (another feature's where only the
input channels differ), grown wider when asked, and refuses a file it cannot start from."""
import pytest
import torch

from conftest import model_weights as weights, train_config as cfg
from featinv_cli.errors import FeatinvError
from featinv_cli.features import from_metadata
from featinv_cli.formats.model import load_model
from featinv_cli.train import train
from featinv_cli.warmstart import init_model


def test_init_continues_from_the_model_not_from_scratch(image_dir, tmp_path):
    source = tmp_path / "source.safetensors"
    trained = []
    train(cfg(image_dir, source, steps=40, checkpoint_every=100, lr=3e-3, arch="skip"),
          on_step=lambda s, t, loss, r: trained.append(loss))
    warm, fresh = [], []
    train(cfg(image_dir, tmp_path / "warm.safetensors", steps=3, init=str(source), arch="skip"),
          on_step=lambda s, t, loss, r: warm.append(loss))
    train(cfg(image_dir, tmp_path / "fresh.safetensors", steps=3, arch="skip"),
          on_step=lambda s, t, loss, r: fresh.append(loss))
    assert warm[0] < 0.75 * fresh[0]  # a fresh network starts at the mean image
    assert warm[0] < 1.5 * trained[-1]
    m = load_model(tmp_path / "warm.safetensors")
    assert m.train["init"]["file"] == "source.safetensors" and m.train["init"]["steps_done"] == 40
    assert m.normalization["mean"] == load_model(source).normalization["mean"]


def test_init_refuses_another_feature_or_network(image_dir, tmp_path):
    source = tmp_path / "source.safetensors"
    train(cfg(image_dir, source, steps=1, arch="skip"))
    with pytest.raises(FeatinvError, match="inverts hog.*more than its input channels"):  # sift: stride 4, not 8
        init_model(cfg(image_dir, tmp_path / "s.safetensors", feature="sift", init=str(source), arch="skip"),
                   from_metadata("sift", {}), measure_scale=lambda: pytest.fail("not a CNN feature"))
    with pytest.raises(FeatinvError, match="not shrink"):
        train(cfg(image_dir, tmp_path / "w.safetensors", steps=1, init=str(source), arch="skip", width=0.0625))
    with pytest.raises(FeatinvError, match="upsample"):
        train(cfg(image_dir, tmp_path / "u.safetensors", steps=1, init=str(source), arch="skip", upsample="resize"))


def test_init_from_another_feature_keeps_every_layer_but_the_first(image_dir, tmp_path):
    """hog (31 channels) -> lbp with 8-pixel cells (58), both at stride 8: the networks differ only in the first layer, which
    starts fresh; every other tensor is the file's, and the training record names the fresh one."""
    source = tmp_path / "hog.safetensors"
    train(cfg(image_dir, source, steps=1, arch="skip"))
    model, arch, extra = init_model(cfg(image_dir, tmp_path / "l.safetensors", feature="lbp", init=str(source),
                                        arch="skip"), from_metadata("lbp", {"cell": 8}),
                                    measure_scale=lambda: pytest.fail("not a CNN feature"))
    theirs, mine = weights(source), model.state_dict()
    assert extra["init"]["fresh"] == ["stem.0.0.weight"] and extra["init"]["feature"] == "hog"
    assert arch["in_channels"] == 58 and mine["stem.0.0.weight"].shape[1] == 58
    assert all(torch.equal(mine[k], theirs[k].float()) for k in theirs if k != "stem.0.0.weight")


def test_init_from_another_cnn_layer_rescales_its_features(cli, image_dir, tmp_path):
    """conv10 (1000 channels) from a fire9 model (512), same 13x13 grid: the first layer starts fresh and
    the new layer's features get their own scale (1 / std), so the first layer reads order-one inputs."""
    feats, source = tmp_path / "f.safetensors", tmp_path / "fire9.safetensors"
    assert cli("extract", "squeezenet:fire9", image_dir, "--resize", "64", "--crop", "64", "-o", feats).code == 0
    r = cli("train", "squeezenet:fire9", "-d", image_dir, "--features", feats, "--width", "0.0625", "--batch", "4",
            "--steps", "1", "--workers", "0", "-o", source, "-q")
    assert r.code == 0, r.err
    model, arch, extra = init_model(cfg(image_dir, tmp_path / "c.safetensors", feature="squeezenet:conv10",
                                        init=str(source), arch="paper", width=0.0625),
                                    from_metadata("squeezenet", {"layer": "conv10"}), measure_scale=lambda: 0.25)
    assert arch["in_channels"] == 1000 and arch["input_scale"] == extra["input_scale"] == 0.25
    assert model.input_scale == 0.25 and extra["init"]["fresh"] == ["net.0.0.weight"]
    theirs = weights(source)
    assert all(torch.equal(model.state_dict()[k], theirs[k].float()) for k in theirs if k != "net.0.0.weight")


def test_init_with_a_larger_width_grows_the_network_and_starts_where_it_was(image_dir, tmp_path):
    """Same seed, same first batch: the widened run's first loss (before any update) is the narrow
    run's, so the growth kept the function; the file is wider and says what it grew from."""
    source = tmp_path / "source.safetensors"
    train(cfg(image_dir, source, steps=20, checkpoint_every=100, lr=3e-3, arch="skip"))
    same, wide = [], []
    train(cfg(image_dir, tmp_path / "same.safetensors", steps=2, init=str(source), arch="skip"),
          on_step=lambda s, t, loss, r: same.append(loss))
    train(cfg(image_dir, tmp_path / "wide.safetensors", steps=2, init=str(source), arch="skip", width=0.25),
          on_step=lambda s, t, loss, r: wide.append(loss))
    assert wide[0] == pytest.approx(same[0], rel=1e-4)
    m = load_model(tmp_path / "wide.safetensors")
    assert m.arch["width"] == 0.25 and m.train["init"]["widened_from"] == 0.125
    assert sum(v.numel() for v in m.state.values()) > sum(v.numel() for v in weights(source).values())


def test_one_rule_says_which_file_can_start_which_run():
    """init_refusal (train's check, and the GPU recipe's choice between --init and a fresh start): the
    file's network at its width or wider, never narrower, never another upsampling; fc never grown."""
    from featinv_cli.warmstart import init_refusal

    skip, fc = {"name": "skip", "width": 0.3}, {"name": "paper", "form": "fc", "width": 0.35}
    assert init_refusal("m", skip, "skip", 0.3) == init_refusal("m", skip, "skip", 0.5) == ""
    assert "not shrink" in init_refusal("m", skip, "skip", 0.2)
    assert "'upsample': 'resize'" in init_refusal("m", skip, "skip", 0.3, "resize")
    assert "its network is {'name': 'skip'" in init_refusal("m", skip, "paper", 0.3)
    assert init_refusal("m", fc, "paper", 0.35) == ""
    assert init_refusal("m", fc, "paper", 0.4) == ("--init m --width 0.4: networks with fully connected layers "
                                                    "(the fc form) cannot be widened")
