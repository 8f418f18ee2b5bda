"""What commands must not do quietly: write over a file they did not make or over each other's output,
throw away a run, guess what an array is when more than one answer fits, or ignore what was asked."""
from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from conftest import one_line_error, photo


def test_extract_to_a_folder_numbers_equal_names(cli, tmp_path):
    """x.png and x.jpg, and p.png in two folders given: each keeps a file of its own."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    iio.imwrite(a / "x.png", photo("astronaut", 64))
    iio.imwrite(a / "x.jpg", photo("chelsea", 64))
    iio.imwrite(b / "x.png", photo("coffee", 64))
    r = cli("extract", "hog", a, b, "-o", f"{tmp_path}/out/")
    assert r.code == 0, r.err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["x-2.safetensors", "x-3.safetensors", "x.safetensors"]
    sources = {json.loads(cli("info", tmp_path / "out" / n, "--json").text)["sources"][0] for n in written}
    assert sources == {"x.jpg", "x.png"} and len(written) == 3


def test_shards_name_equal_names_alike_and_invert_keeps_the_names(cli, tmp_path):
    """extract --shard numbers over the whole list (shard 1 does not write over shard 0's x), and invert of
    the folder names each PNG after its feature file, so x-2.png is x-2.safetensors's image."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    photos = {a / "x.jpg": photo("chelsea", 64), a / "x.png": photo("astronaut", 64), b / "x.png": photo("coffee", 64)}
    for path, img in photos.items():
        iio.imwrite(path, img)
    for k in ("0/2", "1/2"):
        assert cli("extract", "hog", a, b, "--shard", k, "-o", f"{tmp_path}/out/").code == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["x-2.safetensors", "x-3.safetensors", "x.safetensors"]
    assert cli("invert", tmp_path / "out", "-o", f"{tmp_path}/rec/").code == 0
    for name in ("x", "x-2", "x-3"):
        source = json.loads(cli("info", tmp_path / "out" / f"{name}.safetensors", "--json").text)["sources"][0]
        assert (tmp_path / "rec" / f"{name}.png").exists() and source.startswith("x.")


def test_a_finished_run_with_a_kept_checkpoint_says_so(cli, image_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    args = ("train", "hog", "-d", image_dir, "-o", out, "--steps", "1", "--batch", "2", "--crop", "64",
            "--width", "0.125", "--workers", "0", "-q", "--keep-checkpoint")
    assert cli(*args).code == 0
    r = cli(*args)
    assert r.code == 1 and "kept by the finished run" in r.err


def test_invert_to_a_folder_never_writes_over_a_photo_but_over_its_own_output(cli, tmp_path):
    iio.imwrite(tmp_path / "a.png", photo("astronaut", 64))
    before = (tmp_path / "a.png").read_bytes()
    assert cli("extract", "hog", tmp_path / "a.png", "-o", f"{tmp_path}/feats/").code == 0
    r = cli("invert", tmp_path / "feats", "-o", f"{tmp_path}/")  # the photo's own folder
    assert r.code == 1 and "not marked as written by featinv" in r.err
    assert (tmp_path / "a.png").read_bytes() == before
    out = tmp_path / "recon"
    assert cli("invert", tmp_path / "feats", "-o", f"{out}/").code == 0
    first = (out / "a.png").read_bytes()
    from featinv_cli.formats.png import write_image

    write_image(out / "a.png", np.zeros((4, 4, 3), np.uint8))  # a featinv PNG, but not this one
    assert cli("invert", tmp_path / "feats", "-o", f"{out}/").code == 0  # a re-run replaces its own PNG
    assert (out / "a.png").read_bytes() == first and len(list(out.iterdir())) == 1


def test_folder_output_of_perturbed_rows_is_named_after_their_images(cli, tmp_path):
    for name in ("astronaut", "coffee"):
        iio.imwrite(tmp_path / f"{name}.png", photo(name, 64))
    batch, drop = tmp_path / "b.safetensors", tmp_path / "d.safetensors"
    assert cli("extract", "hog", tmp_path / "astronaut.png", tmp_path / "coffee.png", "-o", batch).code == 0
    assert cli("perturb", batch, "--dropout", "0.5", "-o", drop).code == 0
    assert cli("invert", drop, "-o", f"{tmp_path}/recon/").code == 0
    assert sorted(p.name for p in (tmp_path / "recon").iterdir()) == ["astronaut dropout 0.5.png",
                                                                      "coffee dropout 0.5.png"]


def test_train_does_not_start_over_a_checkpoint_without_resume(cli, image_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    args = ("train", "hog", "-d", image_dir, "-o", out, "--steps", "2", "--batch", "4", "--crop", "64",
            "--width", "0.125", "--workers", "0", "-q", "--keep-checkpoint")
    assert cli(*args).code == 0
    ckpt = tmp_path / "m.safetensors.ckpt"
    out.unlink()  # as a stopped run leaves it: a checkpoint and no model
    kept = ckpt.read_bytes()
    r = cli(*args)
    assert r.code == 1 and "--resume" in r.err and ckpt.read_bytes() == kept


def test_model_and_statistics_files_must_be_named_safetensors(cli, image_dir, tmp_path):
    r = cli("train", "hog", "-d", image_dir, "-o", tmp_path / "m.npy", "--steps", "1")
    assert r.code == 2 and "*.safetensors" in r.err
    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((20, 8), dtype=np.float32))
    r = cli("sample", "--fit", tmp_path / "v.npy", "-o", tmp_path / "stats.npy")
    assert r.code == 2 and "*.safetensors" in r.err and not (tmp_path / "stats.npy").exists()


def test_a_crop_the_network_cannot_take_is_a_usage_error(cli, image_dir, tmp_path):
    r = cli("train", "hog", "-d", image_dir, "-o", tmp_path / "m.safetensors", "--crop", "100", "--steps", "1")
    assert r.code == 2 and "multiple of 64" in r.err


def test_perturb_takes_zero_values_as_given(cli, tmp_path):
    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((2, 31, 4, 4), dtype=np.float32))
    out = tmp_path / "z.safetensors"
    assert cli("perturb", tmp_path / "v.npy", "--binarize", "--scale", "0", "-o", out).code == 0
    assert json.loads(cli("info", out, "--json").text)["history"] == ["binarize, scale 0"]
    from featinv_cli.formats.features import load_features

    assert not load_features(out).features.any()  # scaled by 0, not skipped
    r = cli("perturb", tmp_path / "v.npy", "--binarize", "--keep-top", "0", "-o", out)
    assert r.code == 2 and "--keep-top 0" in r.err
    r = cli("perturb", tmp_path / "v.npy", "--scale", "2", "--binarize", "--scale", "3", "-o", out)
    assert r.code == 2 and "--scale given 2 times" in r.err


def test_bare_arrays_are_guessed_only_where_one_hand_made_feature_fits(cli, tmp_path, photos):
    """512 channels could be fire8 or fire9: refused without --feature; 133 is OpenCV's SIFT."""
    feats = tmp_path / "f8.npy"
    assert cli("extract", "squeezenet:fire8", photos["coffee"], "-o", feats).code == 0
    r = cli("invert", feats, "-o", tmp_path / "r.png")
    assert r.code == 1 and "cannot tell which extractor" in r.err and "--feature" in r.err
    np.save(tmp_path / "s.npy", np.zeros((1, 133, 16, 16), np.float32))
    info = json.loads(cli("info", tmp_path / "s.npy", "--json").text)
    assert info["guessed_feature"] == "sift"


def test_optimize_refuses_the_options_of_a_learned_inverter(cli, photos, tiny_model, tmp_path):
    feats = tmp_path / "h.safetensors"
    assert cli("extract", "hog", photos["coffee"], "--resize", "64", "--crop", "64", "-o", feats).code == 0
    for extra in (["-m", str(tiny_model)], ["--mirror-average"], ["--grid-size"]):
        r = cli("invert", feats, "--method", "optimize", *extra, "-o", tmp_path / "r.png")
        assert r.code == 2 and extra[0] in r.err and not (tmp_path / "r.png").exists()


def test_features_no_model_ships_for_say_so(cli, photos, tmp_path):
    feats = tmp_path / "h4.safetensors"
    assert cli("extract", "hog:cell=4", photos["coffee"], "--resize", "64", "--crop", "64", "-o", feats).code == 0
    r = cli("invert", feats, "-o", tmp_path / "r.png")
    assert r.code == 1 and "no shipped model for hog:cell=4" in r.err and "-m" in r.err


def test_info_of_an_image_says_to_extract_first(cli, photos):
    r = cli("info", photos["astronaut"])
    assert r.code == 1 and "is an image" in r.err and "featinv extract" in r.err


def test_score_pairs_files_by_name_when_the_names_match(cli, tmp_path):
    """Listed in another order than the references, reconstructions are still scored against their own."""
    for d in ("rec", "ref"):
        (tmp_path / d).mkdir()
    a, b = photo("astronaut", 64), photo("coffee", 64)
    for name, img in (("a", a), ("b", b)):
        iio.imwrite(tmp_path / "rec" / f"{name}.png", img)
        iio.imwrite(tmp_path / "ref" / f"{name}.png", img)
    r = cli("score", tmp_path / "rec" / "b.png", tmp_path / "rec" / "a.png", "-r", tmp_path / "ref", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.text)["mean"]["normalized_error"] == pytest.approx(0.0, abs=1e-6)


def test_score_pairs_the_numbered_names_of_a_folder_round_trip(cli, tmp_path):
    """photos/a.jpg, photos/a.png and photos/sub/a.png through `extract -o feats/`, `invert feats/ -o
    recon/` come back as a.png, a-2.png and sub/a.png: score pairs each with its own photo (by stem alone
    they would not pair, and in sorted order a-2.png met a.jpg), and says which reference each row used."""
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    imgs = {"a.jpg": photo("camera", 64), "a.png": photo("astronaut", 64), "sub/a.png": photo("coffee", 64)}
    for name, img in imgs.items():
        iio.imwrite(photos / name, img)
    recon = tmp_path / "recon"
    (recon / "sub").mkdir(parents=True)
    for name, src in (("a.png", "a.jpg"), ("a-2.png", "a.png"), ("sub/a.png", "sub/a.png")):
        iio.imwrite(recon / name, iio.imread(photos / src))  # a perfect "reconstruction" of its own photo
    r = cli("score", f"{recon}/", "-r", f"{photos}/", "--json", "-q")
    assert r.code == 0, r.err
    result = json.loads(r.text)
    assert result["paired"] == "by name"
    pairs = {Path(row["image"]).relative_to(recon).as_posix(): Path(row["reference"]).relative_to(photos).as_posix()
             for row in result["images"]}
    assert pairs == {"a-2.png": "a.png", "a.png": "a.jpg", "sub/a.png": "sub/a.png"}
    assert max(row["mae"] for row in result["images"]) < 0.02  # JPEG's loss only


def test_score_says_when_it_pairs_in_the_order_given(cli, tmp_path):
    for d in ("rec", "ref"):
        (tmp_path / d).mkdir()
    for i, name in enumerate(("astronaut", "coffee")):
        iio.imwrite(tmp_path / "rec" / f"r{i}.png", photo(name, 64))
        iio.imwrite(tmp_path / "ref" / f"{name}.png", photo(name, 64))
    r = cli("score", tmp_path / "rec", "-r", tmp_path / "ref", "--json")
    assert r.code == 0 and "paired in the order given" in r.err
    assert json.loads(r.text)["paired"] == "in the order given"


def test_minutes_alone_train_for_the_minutes_and_init_skips_low_res(cli, image_dir, tmp_path):
    """`train --init shipped --minutes M` (the README's "continue ours"): the clock ends the run, not the
    default 2000 steps, and an inverter that already reads full-resolution crops is not sent back to
    half resolution."""
    from featinv_cli.formats.model import load_model

    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    common = ("-d", image_dir, "--batch", "2", "--crop", "64", "--width", "0.125", "--workers", "0", "-q")
    assert cli("train", "hog", "-o", first, "--steps", "2", *common).code == 0
    config = load_model(first).train["config"]
    assert config["steps"] == 2 and config["low_res"] == 0.7  # the defaults without --init
    r = cli("train", "hog", "-o", second, "--init", first, "--minutes", "0.02", *common)
    assert r.code == 0, r.err
    t = load_model(second).train
    assert t["config"]["low_res"] == 0.0 and t["config"]["steps"] > 10 ** 6 and t["seconds"] >= 1.0


def test_resume_takes_unset_settings_from_the_checkpoint(cli, image_dir, tmp_path):
    """A run stopped by an older featinv (whose defaults differ: low_res 0.7 with --init, steps 2000 with
    --minutes) resumes with the same command: what the command leaves out comes from the checkpoint."""
    from featinv_cli.formats.checkpoint import checkpoint_path
    from featinv_cli.train import TrainConfig, train

    first, out = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    common = ("-d", image_dir, "--batch", "2", "--crop", "64", "--width", "0.125", "--workers", "0", "-q")
    assert cli("train", "hog", "-o", first, "--steps", "2", *common).code == 0

    class Stop(Exception):
        pass

    def stop(step, total, loss, rate):
        if step == 2:
            raise Stop

    old = TrainConfig(feature="hog", data=[str(image_dir)], output=str(out), arch="skip", width=0.125, crop=64,
                      batch=2, workers=0,
                      init=str(first), low_res=0.7, steps=6, minutes=5.0, checkpoint_every=1)
    with pytest.raises(Stop):
        train(old, on_step=stop)
    assert checkpoint_path(out).exists()
    r = cli("train", "hog", "-o", out, "--init", first, "--minutes", "5", "--checkpoint-every", "1", "--resume", *common)
    assert r.code == 0, r.err


def test_score_gives_a_whole_photos_reconstruction_the_references_view(cli, tmp_path):
    """score --resize 128 --crop 128 of a reconstruction of the whole (non-square) photo takes its centre
    view, as of the photo: squeezed whole into 128x128 it would be compared with other pixels."""
    (tmp_path / "rec").mkdir(), (tmp_path / "ref").mkdir()
    for name in ("chelsea", "coffee"):
        img = photo(name)
        assert img.shape[0] != img.shape[1]  # 300x451, 400x600
        iio.imwrite(tmp_path / "rec" / f"{name}.png", img)
        iio.imwrite(tmp_path / "ref" / f"{name}.png", img)
    r = cli("score", tmp_path / "rec", "-r", tmp_path / "ref", "--resize", "128", "--crop", "128", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.text)["mean"]["normalized_error"] == pytest.approx(0.0, abs=1e-6)


def test_info_tells_every_featinv_file_and_reads_pipes(cli, tmp_path, photos):
    """WebP views counted (were 0), a model's stored evaluation shown, checkpoints and the shipped
    encoder weights described (were refused), a pipe read like a file (was called a directory)."""
    from featinv_cli.inverter import ASSETS

    views = tmp_path / "w.safetensors"
    assert cli("pack", photos["astronaut"], photos["coffee"], "--webp", "75", "-o", views, "-q").code == 0
    assert json.loads(cli("info", views, "--json").text)["views"] == 2
    model = json.loads(cli("info", ASSETS / "hog.safetensors", "--json").text)
    assert 0 < model["evaluation"]["normalized_error"] < 1
    assert json.loads(cli("info", ASSETS / "squeezenet1_0-imagenet.safetensors", "--json").text)["kind"] == \
        "encoder weights"
    import subprocess
    import sys

    feats = tmp_path / "f.safetensors"
    assert cli("extract", "hog", photos["coffee"], "--resize", "64", "--crop", "64", "-o", feats).code == 0
    r = subprocess.run(["bash", "-c", f"{sys.executable} -m featinv_cli info <(cat {feats}) --json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["feature"] == "hog" and d["view"] == {"resize": 64, "crop": 64}


def test_pack_and_demo_fail_before_the_work_and_files_named_twice_count_once(cli, tmp_path, photos):
    r = cli("pack", photos["astronaut"], photos["astronaut"], photos["coffee"], "-o", tmp_path / "v.safetensors")
    assert r.code == 0 and "named twice" in r.err
    assert json.loads(cli("info", tmp_path / "v.safetensors", "--json").text)["views"] == 2
    assert "does not exist" in cli("pack", photos["coffee"], "-o", tmp_path / "no" / "v.safetensors").err
    assert "does not exist" in cli("demo", "-o", tmp_path / "no" / "d.png").err
    assert cli("demo", "--specs", "", "-o", tmp_path / "d.png").code == 2
    assert cli("demo", "--size", "0", "-o", tmp_path / "d.png").code == 2
    assert "not from stdin" in one_line_error(cli("pack", "-", "-o", tmp_path / "s.safetensors",
                                                  stdin=photos["coffee"].read_bytes()))


def test_quiet_silences_notes_for_that_command_only(cli, tmp_path, photos, capfdbinary):
    """-q drops the library's notes (here: a file named twice), not only progress bars; the next command
    in the same process, without -q, notes again."""
    twice = (photos["astronaut"], photos["astronaut"])
    r = cli("extract", "hog", *twice, "--resize", "64", "--crop", "64", "-q", "-o", tmp_path / "q.safetensors")
    assert r.code == 0 and r.err == ""
    from featinv_cli.errors import note

    note("after the command")  # -q ended with its command, also for a caller of main in this process
    assert b"after the command" in capfdbinary.readouterr().err
    r = cli("extract", "hog", *twice, "--resize", "64", "--crop", "64", "-o", tmp_path / "n.safetensors")
    assert r.code == 0 and "featinv: note:" in r.err and "named twice" in r.err


def test_invert_to_one_file_never_replaces_a_photo(cli, photos, tmp_path, tiny_model):
    """-o FILE replaces an earlier reconstruction, never the photo the features came from (nor a name
    that is not *.png: a folder missing its /), checked before any work."""
    feats, out = tmp_path / "a.safetensors", tmp_path / "recon.png"
    assert cli("extract", "hog", photos["astronaut"], "--resize", "64", "--crop", "64", "-o", feats).code == 0
    before = photos["astronaut"].read_bytes()
    assert "not marked as written by featinv" in one_line_error(
        cli("invert", feats, "-m", tiny_model, "-o", photos["astronaut"]))
    assert photos["astronaut"].read_bytes() == before
    assert cli("invert", feats, "-m", tiny_model, "-o", out).code == 0
    assert cli("invert", feats, "-m", tiny_model, "-o", out).code == 0  # its own earlier output: replaced
    assert "*.png" in one_line_error(cli("invert", feats, "-m", tiny_model, "-o", tmp_path / "newdir"))
    assert not (tmp_path / "newdir").exists()


def test_train_never_replaces_its_inputs_or_a_file_that_is_not_a_model(cli, image_dir, photos, tmp_path, tiny_model):
    feats = tmp_path / "f.safetensors"
    assert cli("extract", "hog", photos["coffee"], "--resize", "64", "--crop", "64", "-o", feats).code == 0
    init = tmp_path / "init.safetensors"
    init.write_bytes(tiny_model.read_bytes())
    args = ["train", "hog", "-d", image_dir, "--crop", "64", "--batch", "4", "--steps", "2"]
    before = feats.read_bytes(), init.read_bytes()
    assert "not a featinv model" in one_line_error(cli(*args, "-o", feats))
    assert "overwrite an input" in one_line_error(cli(*args, "--init", init, "-o", init))
    assert (feats.read_bytes(), init.read_bytes()) == before
    assert "--val" in one_line_error(cli(*args, "--val", tmp_path / "nowhere", "-o", tmp_path / "m.safetensors"))
    one = tmp_path / "one"
    one.mkdir()
    (one / "x.png").write_bytes(photos["coffee"].read_bytes())
    assert "two or more" in one_line_error(cli(*args, "--val", one, "-o", tmp_path / "m.safetensors"))
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "m.safetensors.ckpt").exists()


def test_rows_per_file_leaves_this_runs_files_only(cli, tmp_path, image_dir):
    """A shorter rerun removes the numbered files of the longer one before it; a run that fails removes
    the numbered files it wrote (as the one-file output, they would be a part taken for the whole)."""
    out = tmp_path / "rows.safetensors"
    view = ("--resize", "64", "--crop", "64", "--rows-per-file", "2")
    assert cli("extract", "hog", image_dir, *view, "-o", out).code == 0
    assert len(list(tmp_path.glob("rows-*.safetensors"))) == 4
    two = sorted(image_dir.iterdir())[:2]
    r = cli("extract", "hog", *two, *view, "-o", out)
    assert r.code == 0 and "removed 3 numbered files" in r.err
    assert [p.name for p in sorted(tmp_path.glob("rows-*"))] == ["rows-00000.safetensors"]
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in sorted(image_dir.iterdir())[:4]:
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "9_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    one_line_error(cli("extract", "hog", bad, *view, "-o", tmp_path / "b.safetensors"))
    assert not list(tmp_path.glob("b-*"))
    assert cli("extract", "hog", image_dir, *view, "-o", out).code == 0  # four parts again, then a failing
    one_line_error(cli("extract", "hog", bad, *view, "-o", out))       # rerun writes two before its error:
    assert not list(tmp_path.glob("rows-*"))  # neither its own nor the earlier run's last two pass for a set


def test_an_empty_shard_is_no_error(cli, tmp_path, image_dir):
    """A job array with more jobs than images: the spare jobs write nothing and say so, exit 0."""
    r = cli("extract", "hog", image_dir, "--shard", "0/10", "-o", tmp_path / "s0.safetensors")
    assert r.code == 0 and "holds none of the 8 images" in r.err and not (tmp_path / "s0.safetensors").exists()


def test_a_big_photos_hand_made_features_get_a_note_about_scale(cli, photos, tmp_path):
    """The shipped models learned from 128-160-pixel photos: a 512-pixel photo's HOG is inverted (the
    layout survives) with a note saying so and how to extract at the model's scale."""
    big, small = tmp_path / "big.safetensors", tmp_path / "small.safetensors"
    assert cli("extract", "hog", photos["astronaut"], "-o", big).code == 0
    assert cli("extract", "hog", photos["astronaut"], "--resize", "160", "-o", small).code == 0
    r = cli("invert", big, "-o", tmp_path / "big.png")
    assert r.code == 0 and "--resize 160" in r.err
    r = cli("invert", small, "-o", tmp_path / "small.png")
    assert r.code == 0 and r.err == ""


def test_feature_outputs_replace_only_what_featinv_writes_there(cli, photos, tmp_path):
    """perturb, interpolate, sample and extract -o replace an earlier run's features (a Makefile reruns
    them), never someone's array, a model or a photo; checked before any work. A .npy has no mark: one
    of float32 features, what featinv writes there, is replaced; a float64 array is not."""
    feats = tmp_path / "a.safetensors"
    assert cli("extract", "hog", photos["astronaut"], "--resize", "64", "--crop", "64", "-o", feats).code == 0
    theirs, ours = tmp_path / "theirs.npy", tmp_path / "ours.npy"
    np.save(theirs, np.random.default_rng(0).random((3, 100)))  # float64: someone's data
    theirs_bytes = theirs.read_bytes()
    two = tmp_path / "two.safetensors"  # sample fits statistics to several vectors
    assert cli("extract", "hog", photos["astronaut"], photos["coffee"], "--resize", "64", "--crop", "64",
               "-o", two).code == 0
    runs = [("perturb", feats, "--binarize"), ("interpolate", feats, feats), ("sample", two, "-n", "2"),
            ("extract", "hog", photos["coffee"], "--resize", "64", "--crop", "64")]
    not_features = tmp_path / "model.safetensors"
    not_features.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")  # a safetensors file without featinv's mark
    for args in runs:
        assert "not an array of float32 features" in one_line_error(cli(*args, "-o", theirs))
        assert "not a featinv feature file" in one_line_error(cli(*args, "-o", not_features))
        assert theirs.read_bytes() == theirs_bytes
        assert cli(*args, "-o", ours).code == 0 and cli(*args, "-o", ours).code == 0  # its own: replaced
        again = tmp_path / f"{args[0]}.safetensors"
        assert cli(*args, "-o", again).code == 0 and cli(*args, "-o", again).code == 0
    stats = tmp_path / "stats.safetensors"
    assert cli("sample", "--fit", two, "-o", stats).code == 0 and cli("sample", "--fit", two, "-o", stats).code == 0
    assert "not a featinv statistics file" in one_line_error(cli("sample", "--fit", two, "-o", feats))
    zipped = tmp_path / "zipped.npy"  # an .npz under a .npy name: np.load gives no array
    np.savez(tmp_path / "z.npz", a=np.zeros(3, np.float32))
    (tmp_path / "z.npz").rename(zipped)
    assert "not an array of float32 features" in one_line_error(cli("perturb", feats, "--binarize", "-o", zipped))
    (tmp_path / "d.safetensors").mkdir()
    assert "is a directory" in one_line_error(cli("perturb", feats, "--binarize", "-o", tmp_path / "d.safetensors"))


def test_rows_per_file_checks_the_numbered_files_first_and_a_failure_before_writing_keeps_them(
        cli, tmp_path, image_dir, photos):
    """Numbered files already there are checked before any work (someone's float64 array in OUT-00001.npy
    stays, and is not removed by the failed run); an earlier run's set is left whole by a run that fails
    before it writes (a photo that does not decode), and numbered .npy files of an earlier, longer run
    are removed like .safetensors ones."""
    out = tmp_path / "o.npy"
    theirs = tmp_path / "o-00001.npy"
    np.save(theirs, np.zeros((2, 3)))
    before = theirs.read_bytes()
    view = ("--resize", "64", "--crop", "64", "--rows-per-file", "1")
    assert "not an array of float32 features" in one_line_error(cli("extract", "hog", image_dir, *view, "-o", out))
    assert theirs.read_bytes() == before and not (tmp_path / "o-00000.npy").exists()
    theirs.unlink()
    three = sorted(image_dir.iterdir())[:3]
    assert cli("extract", "hog", *three, *view, "-o", out).code == 0
    assert sorted(p.name for p in tmp_path.glob("o-*.npy")) == ["o-00000.npy", "o-00001.npy", "o-00002.npy"]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    assert cli("extract", "hog", broken, *three, *view, "-o", out).code != 0
    assert len(list(tmp_path.glob("o-*.npy"))) == 3  # nothing written: the earlier set stays whole
    r = cli("extract", "hog", *three[:2], *view, "-o", out)
    assert r.code == 0 and "removed 1 numbered file of an earlier run" in r.err and "2 files hold" in r.err
    assert sorted(p.name for p in tmp_path.glob("o-*.npy")) == ["o-00000.npy", "o-00001.npy"]


def test_info_names_a_models_architecture_as_train_takes_it(cli, tmp_path):
    """Files written when the paper's conv network was called paper-conv show the name `train --arch`
    takes: paper, form conv."""
    from conftest import ROOT
    from featinv_cli.safetensors_codec import encode_safetensors, parse_safetensors

    tensors, meta = parse_safetensors(
        (ROOT / "featinv_cli" / "assets" / "squeezenet-fire5.safetensors").read_bytes(), "fire5")
    old = json.loads(meta["arch"])
    old.pop("form"), old.update(name="paper-conv")
    meta["arch"] = json.dumps(old)
    (tmp_path / "old.safetensors").write_bytes(encode_safetensors(tensors, meta))
    arch = json.loads(cli("info", tmp_path / "old.safetensors", "--json").text)["arch"]
    assert arch["name"] == "paper" and arch["form"] == "conv"
