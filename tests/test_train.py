"""The training loop: it learns, it is seeded, and a killed run resumes to the same weights."""
from pathlib import Path

import pytest
import torch

from conftest import ROOT, model_weights as weights, train_config as cfg
from featinv_cli.errors import FeatinvError
from featinv_cli.formats.model import load_model
from featinv_cli.train import TrainConfig, checkpoint_path, learning_rate, train


def test_same_seed_same_model(image_dir, tmp_path):
    train(cfg(image_dir, tmp_path / "a.safetensors", steps=3))
    train(cfg(image_dir, tmp_path / "b.safetensors", steps=3))
    train(cfg(image_dir, tmp_path / "c.safetensors", steps=3, seed=1))
    a, b, c = (weights(tmp_path / f"{n}.safetensors") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_workers_do_not_change_the_result(image_dir, tmp_path):
    train(cfg(image_dir, tmp_path / "a.safetensors", steps=2))
    train(cfg(image_dir, tmp_path / "b.safetensors", steps=2, workers=1))
    a, b = weights(tmp_path / "a.safetensors"), weights(tmp_path / "b.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_killed_run_resumes_to_same_weights(image_dir, tmp_path):
    full = tmp_path / "full.safetensors"
    train(cfg(image_dir, full))

    killed = tmp_path / "killed.safetensors"

    class Killed(Exception):
        pass

    def die(step, total, loss, rate):
        if step == 5:  # after the checkpoint at step 4, before the next one
            raise Killed

    with pytest.raises(Killed):
        train(cfg(image_dir, killed), on_step=die)
    assert checkpoint_path(killed).exists() and not killed.exists()
    resumed = []
    train(cfg(image_dir, killed), resume=True, on_step=lambda s, t, loss, r: resumed.append(s))
    assert resumed[0] == 5  # from the checkpoint at step 4, not from the start (which would end the same)
    assert not checkpoint_path(killed).exists()  # a finished run leaves only its model
    a, b = weights(full), weights(killed)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resume_refuses_other_settings(image_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    train(cfg(image_dir, out, steps=2, keep_checkpoint=True))
    with pytest.raises(FeatinvError, match="width"):
        train(cfg(image_dir, out, steps=2, width=0.25), resume=True)


def test_loss_goes_down(image_dir, tmp_path):
    """Against the same run with a learning rate of 0 (the same batches, seeded by step): the loss falls
    by more than the batch-to-batch variation that the control shows (measured: 0.048 against 0.054;
    over 25 steps, or with the zero-initialised output layer still near zero, the two do not differ)."""
    def final_loss(lr: float) -> float:
        losses = []
        train(cfg(image_dir, tmp_path / f"m{lr}.safetensors", steps=80, checkpoint_every=100, lr=lr, low_res=0.0),
              on_step=lambda s, t, loss, r: losses.append(loss))  # a running mean: no single lucky batch
        return losses[-1]

    assert final_loss(3e-3) < 0.93 * final_loss(0.0)


def test_a_step_its_check_stops_leaves_the_weights_as_they_were():
    """training_step shows its loss to ``check`` before any update: a diverged loss or SIGTERM stops the
    run there, with the weights (and so the last checkpoint) as they were."""
    from featinv_cli.features import parse_spec
    from featinv_cli.models import for_extractor
    from featinv_cli.train import training_step

    torch.manual_seed(0)
    net, _ = for_extractor("paper", parse_spec("hog"), width=0.125)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    feats, images, mean = torch.randn(2, 31, 8, 8), torch.rand(2, 3, 64, 64), torch.full((1, 3, 1, 1), 0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}

    def stop(loss):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training_step(net, opt, feats, images, mean, check=stop)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    done = training_step(net, opt, feats, images, mean, clip_grad_norm=1.0)
    assert done.loss > 0 and done.reconstruction.shape == images.shape and not done.reconstruction.requires_grad
    assert not all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_bench_times_the_step_that_trains():
    """bench/run.py measures train.training_step, not a copy of its own that could drift from it."""
    text = (ROOT / "bench" / "run.py").read_text()
    assert "backward(" not in text and text.count("training_step(") >= 2


def test_learning_rate_warms_up_then_decays_towards_the_end():
    c = TrainConfig(feature="hog", data="", output="", steps=2000, warmup=100)
    assert learning_rate(c, 0) == pytest.approx(1e-5)
    assert learning_rate(c, 49) == pytest.approx(5e-4)
    assert learning_rate(c, 99) == learning_rate(c, 1199) == 1e-3
    assert learning_rate(c, 1600) < 1e-3
    assert learning_rate(c, 1999) < 1e-4
    short = TrainConfig(feature="hog", data="", output="", steps=100, warmup=100)
    assert learning_rate(short, 9) == 1e-3  # warm-up is at most a tenth of the run


def test_metadata_records_training(image_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    train(cfg(image_dir, out, steps=2))
    m = load_model(out)
    assert m.feature == "hog" and m.params == {"cell": 8, "orientations": 9}
    assert m.train["steps_done"] == 2 and m.train["data_images"] == 8
    assert m.train["device"] == "cpu" and m.train["threads"] == torch.get_num_threads()  # README's "CPU, N threads"
    assert len(m.normalization["mean"]) == 3


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted(image_dir, tmp_path):
    """A real SIGKILL in the middle of `featinv train`, then --resume: same weights as a clean run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["hog", "-d", str(image_dir), "--width", "0.125", "--crop", "64", "--batch", "4", "--steps", "40",
            "--checkpoint-every", "5", "--workers", "0", "--full", "-q"]
    cmd = [sys.executable, "-m", "featinv_cli", "train"]
    clean = tmp_path / "clean.safetensors"
    subprocess.run(cmd + args + ["-o", str(clean)], check=True, timeout=300)
    killed = tmp_path / "killed.safetensors"
    proc = subprocess.Popen(cmd + args + ["-o", str(killed)])
    ckpt = checkpoint_path(killed)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not killed.exists(), "the run finished 35 steps within one poll; kill it sooner"
    assert ckpt.exists()
    loud = [a for a in args if a != "-q"]  # it says where it resumes
    r = subprocess.run(cmd + loud + ["-o", str(killed), "--resume"], check=True, timeout=300, capture_output=True,
                       text=True)
    assert int(r.stderr.split("resuming from step ")[1].split()[0]) >= 5  # not from the start
    a, b = weights(clean), weights(killed)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_torchrun_two_processes_match_one(image_dir, tmp_path):
    """DDP with gloo: 2 processes x 2 images per step follow 1 process x 4 images per step. In fp32: on a
    CPU with AMX, --precision auto is bf16, whose rounding differs with the batch's split (1e-3 here)."""
    import subprocess
    import sys

    args = ["train", "hog", "-d", str(image_dir), "--width", "0.125", "--crop", "64", "--batch", "4",
            "--steps", "3", "--checkpoint-every", "100", "--workers", "0", "--full", "-q", "--device", "cpu",
            "--precision", "fp32"]
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, "-m", "featinv_cli", *args, "-o", str(one)], check=True, timeout=300)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "featinv_cli", *args, "-o", str(two)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = weights(one), weights(two)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    t1, t2 = load_model(one).train, load_model(two).train
    assert (t2["processes"], t2["batch_per_process"]) == (2, 2)  # each rank trained on its half
    assert (t1["processes"], t1["batch_per_process"]) == (1, 4)


def test_train_from_extracted_shards(cli, image_dir, tmp_path):
    """extract --shard ... then train --features (a .txt list of shards): stored features, no crops."""
    for i in range(2):
        r = cli("extract", "hog", image_dir, "--resize", "64", "--crop", "64", "--shard", f"{i}/2",
                "-o", tmp_path / f"s{i}.safetensors")
        assert r.code == 0, r.err
    (tmp_path / "shards.txt").write_text(f"{tmp_path / 's0.safetensors'}\n{tmp_path / 's1.safetensors'}\n")
    out = tmp_path / "m.safetensors"
    r = cli("train", "hog", "-d", image_dir, "--features", tmp_path / "shards.txt", "--width", "0.125",
            "--batch", "4", "--steps", "3", "--workers", "0", "-o", out, "-q")
    assert r.code == 0, r.err
    m = load_model(out)
    assert m.train["data_images"] == 8 and m.image_size == [64, 64]
    r = cli("train", "lbp", "-d", image_dir, "--features", tmp_path / "s0.safetensors", "-o", tmp_path / "x.safetensors")
    assert r.code == 1 and "not lbp" in r.err
    cli("extract", "hog", image_dir, "--resize", "60", "--crop", "60", "-o", tmp_path / "odd.safetensors")
    r = cli("train", "hog", "-d", image_dir, "--features", tmp_path / "odd.safetensors", "--batch", "4",
            "-o", tmp_path / "y.safetensors")
    assert r.code == 1 and "multiple of 8" in r.err


def test_resume_of_a_finished_run_says_so(image_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    train(cfg(image_dir, out, steps=2, keep_checkpoint=True))
    with pytest.raises(FeatinvError, match="already finished"):
        train(cfg(image_dir, out, steps=2, keep_checkpoint=True), resume=True)


@pytest.mark.parametrize("signame, code, said", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated (SIGTERM)")])
def test_ctrl_c_or_kill_saves_a_checkpoint_and_exits_130_or_143(image_dir, tmp_path, signame, code, said):
    """SIGINT, as a terminal's Ctrl-C sends it, or SIGTERM (kill, a scheduler's time limit): one line,
    exit 130 or 143, no model, a checkpoint to resume."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "m.safetensors"
    proc = subprocess.Popen([sys.executable, "-m", "featinv_cli", "train", "hog", "-d", str(image_dir), "-o", str(out),
                             "--width", "0.125", "--crop", "64", "--batch", "4", "--steps", "100000",
                             "--workers", "0", "--log-every", "1"],
                            stderr=subprocess.PIPE, text=True,
                            # as a terminal's process would have it: a shell that started this suite in
                            # the background (CI) passes SIGINT on as ignored, and Python keeps that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = proc.stderr.readline()  # the first step's log line: training is under way
    assert first.startswith("step 1/"), first
    time.sleep(0.5)
    proc.send_signal(getattr(signal, signame))
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == code
    last = [line for line in rest.splitlines() if not line.startswith("step ")]
    assert len(last) == 1 and last[0].startswith(f"featinv: interrupted: training {said} at step "), rest[-500:]
    assert "--resume" in last[0]
    assert checkpoint_path(out).exists() and not out.exists()
    assert not list(tmp_path.glob(".*tmp*")) and not list(tmp_path.glob("*.tmp"))


def test_cli_defaults_are_what_the_shipped_model_uses(cli, image_dir, tmp_path):
    """`featinv train hog` with no --arch/--width trains the shipped model's network, and a finished run
    leaves its model and no checkpoint (--keep-checkpoint keeps it)."""
    out = tmp_path / "m.safetensors"
    r = cli("train", "hog", "-d", image_dir, "-o", out, "--steps", "2", "--batch", "4", "--crop", "64",
            "--workers", "0", "-q")
    assert r.code == 0, r.err
    shipped = load_model(Path(__file__).parents[1] / "featinv_cli" / "assets" / "hog.safetensors").arch
    arch = load_model(out).arch
    assert (arch["name"], arch["width"]) == (shipped["name"], shipped["width"]) == ("skip", 0.3)
    assert not checkpoint_path(out).exists()
    r = cli("train", "hog", "-d", image_dir, "-o", out, "--steps", "2", "--batch", "4", "--crop", "64",
            "--workers", "0", "-q", "--keep-checkpoint", "--width", "0.125")
    assert r.code == 0 and checkpoint_path(out).exists()


def test_cnn_layer_trains_from_stored_features(cli, image_dir, tmp_path):
    """The encoder runs once per photo (extract), then the inverter trains from the stored rows; a CNN
    layer's grid is fixed by the network, so any view size will do."""
    feats, model = tmp_path / "f.safetensors", tmp_path / "m.safetensors"
    assert cli("extract", "squeezenet:fire5", image_dir, "--resize", "64", "--crop", "64", "-o", feats).code == 0
    r = cli("train", "squeezenet:fire5", "-d", image_dir, "--features", feats, "--width", "0.0625", "--batch", "4",
            "--steps", "2", "--workers", "0", "-o", model, "-q")
    assert r.code == 0, r.err
    m = load_model(model)
    assert m.feature == "squeezenet:fire5" and (m.arch["name"], m.arch["form"]) == ("paper", "conv") and m.arch["input_scale"] < 0.1


def test_ema_saves_averaged_weights_that_score_no_worse(image_dir, tmp_path):
    """The same run (EMA does not change training) saved as its last weights and as their average:
    the files differ, and the average reconstructs held-out photos no worse."""
    import imageio.v3 as iio

    from conftest import photo
    from featinv_cli.evaluate import evaluate

    val = tmp_path / "val"
    val.mkdir()
    for name in ("camera", "immunohistochemistry", "hubble_deep_field", "coins"):
        iio.imwrite(val / f"{name}.png", photo(name)[:128, :128])
    last, avg = tmp_path / "last.safetensors", tmp_path / "avg.safetensors"
    train(cfg(image_dir, last, steps=60, lr=2e-3, checkpoint_every=100))
    train(cfg(image_dir, avg, steps=60, lr=2e-3, checkpoint_every=100, ema=0.9))
    a, b = weights(last), weights(avg)
    assert not all(torch.equal(a[k], b[k]) for k in a)
    assert load_model(avg).train["weights"] == "moving average, decay 0.9"
    err_last = evaluate(last, val, size=64)["normalized_error"]
    err_avg = evaluate(avg, val, size=64)["normalized_error"]
    assert err_avg <= err_last + 1e-4, (err_avg, err_last)


def test_minutes_end_the_run_and_low_res_trains(image_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    meta = train(cfg(image_dir, out, steps=10 ** 6, minutes=0.05, low_res=0.5, checkpoint_every=10 ** 6))
    assert 0 < meta["steps_done"] < 10 ** 6 and meta["seconds"] >= 3.0
    assert load_model(out).image_size == [64, 64]


def test_full_resolution_starts_with_a_fresh_optimizer(image_dir, tmp_path):
    """--low-res: at the switch Adam's moments are cleared and the warm-up restarts (its old moments
    diverged a 30-minute HOG run at the switch)."""
    from featinv_cli.formats.checkpoint import peek

    out = tmp_path / "m.safetensors"
    train(cfg(image_dir, out, steps=10, low_res=0.5, warmup=100, keep_checkpoint=True, checkpoint_every=100))
    head = peek(checkpoint_path(out))
    assert head["extra"]["full_res_from"] == 5
    seen = []
    train(cfg(image_dir, tmp_path / "n.safetensors", steps=10, low_res=0.5),
          on_step=lambda s, t, loss, r: seen.append(loss))
    assert all(loss == loss and loss < 1.0 for loss in seen)  # finite, no blow-up at the switch


def test_only_rank_0_writes_checkpoints(image_dir, tmp_path):
    """Under torchrun every rank runs the loop; with --keep-checkpoint only rank 0 may write OUTPUT.ckpt
    (all ranks once wrote the final one). The loop of a rank-1 process writes nothing."""
    from featinv_cli.features import parse_spec
    from featinv_cli.train import Run, _loop, _network
    from featinv_cli.training_data import training_data

    out = tmp_path / "m.safetensors"
    c = cfg(image_dir, out, steps=3, checkpoint_every=1, keep_checkpoint=True)
    extractor = parse_spec("hog")
    data = training_data(c, extractor, torch.device("cpu"), 0, 1)
    model, _, _ = _network(c, extractor, 1.0)
    opt = torch.optim.Adam(model.parameters())
    extra = {"mean": data.mean()}
    _loop(Run(c, model, opt, data, extra, torch.device("cpu"), rank=1), 0)
    assert not checkpoint_path(out).exists()
    _loop(Run(c, model, opt, data, extra, torch.device("cpu"), rank=0), 0)
    assert checkpoint_path(out).exists()


def test_cnn_layers_ignore_low_res(image_dir, tmp_path):
    """A CNN resizes every crop to its input size: half-resolution crops would cost as much and blur the
    targets, so --low-res is off for CNN layers (as for sift) and the file says so."""
    out = tmp_path / "f.safetensors"
    train(cfg(image_dir, out, feature="squeezenet:conv1", steps=2, width=0.0625, low_res=0.5))
    m = load_model(out)
    assert m.train["config"]["low_res"] == 0.0 and "full_res_from" not in m.train


def test_a_diverging_run_stops_with_an_error_and_writes_no_model(image_dir, tmp_path):
    """A learning rate far too high: the loss turns non-finite; the run stops there, before that step
    touches the weights, and writes no model (one that inverts to black images with exit 0)."""
    out = tmp_path / "m.safetensors"
    with pytest.raises(FeatinvError, match="diverged at step .*--lr"):
        train(cfg(image_dir, out, steps=30, lr=1e30, warmup=0, checkpoint_every=100))
    assert not out.exists()
    with pytest.raises(FeatinvError, match=f"delete {checkpoint_path(out)}"):  # the way out, when a checkpoint
        train(cfg(image_dir, out, steps=30, lr=1e30, warmup=0, checkpoint_every=1))  # stands in it


def test_resume_refuses_another_learning_rate_or_other_photos(image_dir, tmp_path):
    """What the model's record says must be how it was made: the rate and the data too (the data may
    move, so its fingerprint is compared, not its path)."""
    out = tmp_path / "m.safetensors"
    train(cfg(image_dir, out, steps=2, keep_checkpoint=True))
    out.unlink()
    with pytest.raises(FeatinvError, match="lr"):
        train(cfg(image_dir, out, steps=2, lr=3e-4), resume=True)
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for p in sorted(Path(image_dir).iterdir())[:6]:
        (fewer / p.name).write_bytes(p.read_bytes())
    with pytest.raises(FeatinvError, match="other data"):
        train(cfg(fewer, out, steps=2), resume=True)


def test_a_model_records_its_sources_without_the_trainers_folders(image_dir, tmp_path):
    """A model file goes to other people: paths given as absolute ones are recorded by name, relative
    ones as given (what the user typed), never a folder of the machine that trained it."""
    from featinv_cli.settings import recorded_name

    first = tmp_path / "first.safetensors"
    train(cfg(image_dir, first, steps=1))
    second = tmp_path / "second.safetensors"
    train(cfg(image_dir, second, steps=1, init=str(first)))
    config = load_model(second).train["config"]
    assert config["data"] == [image_dir.name] and config["output"] == "second.safetensors"
    assert config["init"] == "first.safetensors"
    assert [recorded_name(p) for p in ("photos/", "a/b.safetensors", "../up/v.safetensors", "~/v.safetensors", "")] \
        == ["photos", "a/b.safetensors", "v.safetensors", "v.safetensors", ""]
