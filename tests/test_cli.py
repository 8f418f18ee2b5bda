"""The command line as a user meets it: one test (or more) per command, and every error is one line."""
import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from conftest import one_line_error, photo
from featinv_cli.inverter import ASSETS


def test_help_and_version(cli):
    r = cli("--help")
    assert r.code == 0
    for cmd in ("extract", "train", "invert", "score", "info", "demo", "kernels"):
        assert cmd in r.text
    assert cli("--version").text.startswith("featinv ")
    r = cli("invert", "--help")
    assert "Examples" in r.text and "--model" in r.text


def test_extract_invert_restores_original_size(cli, photos, tiny_model, tmp_path):
    feats, out = tmp_path / "h.safetensors", tmp_path / "r.png"
    assert cli("extract", "hog", photos["chelsea"], "-o", feats).code == 0
    r = cli("invert", feats, "-m", tiny_model, "-o", out)
    assert r.code == 0, r.err
    assert iio.imread(out).shape == (300, 451, 3)
    assert cli("invert", feats, "-m", tiny_model, "--grid-size", "-o", out).code == 0
    assert iio.imread(out).shape == (38 * 8, 56 * 8, 3)


@pytest.mark.skipif(not (ASSETS / "hog.safetensors").exists(), reason="no shipped HOG model")
def test_invert_without_model_uses_shipped_one(cli, photos, tmp_path):
    feats, out = tmp_path / "h.safetensors", tmp_path / "r.png"
    assert cli("extract", "hog", photos["chelsea"], "-o", feats).code == 0
    r = cli("invert", feats, "-o", out)
    assert r.code == 0, r.err
    assert iio.imread(out).shape == (300, 451, 3)


def test_bare_npy_just_works(cli, photos, tiny_model, tmp_path):
    """`featinv invert hog.npy -o out.png`: 31 channels means HOG, size = cells x 8."""
    npy = tmp_path / "hog.npy"
    assert cli("extract", "hog", photos["chelsea"], "-o", npy).code == 0
    assert np.load(npy).shape == (1, 31, 38, 56)
    assert cli("invert", npy, "-m", tiny_model, "-o", tmp_path / "r.png").code == 0
    assert iio.imread(tmp_path / "r.png").shape == (304, 448, 3)
    r = cli("invert", npy, "-m", tiny_model, "--image-size", "300x451", "-o", tmp_path / "r2.png")
    assert r.code == 0 and iio.imread(tmp_path / "r2.png").shape == (300, 451, 3)


def test_batch_to_grid_and_directory(cli, photos, tiny_model, tmp_path):
    feats = tmp_path / "b.safetensors"
    r = cli("extract", "hog", photos["chelsea"], photos["astronaut"], "--resize", "64", "--crop", "64",
            "-o", feats)
    assert r.code == 0, r.err
    info = json.loads(cli("info", feats, "--json").out)
    assert info["shape"] == [2, 31, 8, 8] and info["image_size"] == [64, 64]
    assert info["sources"] == ["chelsea.jpg", "astronaut.png"]
    assert cli("invert", feats, "-m", tiny_model, "-o", tmp_path / "grid.png").code == 0
    grid = iio.imread(tmp_path / "grid.png")
    assert grid.shape[1] > 2 * 96  # two labelled tiles side by side (tiles of at least 96 px)
    assert cli("invert", feats, "-m", tiny_model, "-o", f"{tmp_path}/each/").code == 0
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["astronaut.png", "chelsea.png"]


def test_invert_takes_a_directory_of_feature_files(cli, photos, tiny_model, tmp_path):
    """extract photos/ -o feats/ then invert feats/ -o recon/: one PNG per source image, at its size,
    in the class folders extract kept (two cat.png in two folders stay apart); a folder with no
    feature files is one clear line and leaves nothing."""
    import shutil

    for cls, name in (("tabby", "chelsea"), ("siamese", "chelsea"), ("cups", "coffee")):
        (tmp_path / "photos" / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(photos[name], tmp_path / "photos" / cls / f"cat{photos[name].suffix}")
    r = cli("extract", "hog", tmp_path / "photos", "-o", f"{tmp_path}/feats/")
    assert r.code == 0, r.err
    r = cli("invert", tmp_path / "feats", "-m", tiny_model, "-o", f"{tmp_path}/recon/")
    assert r.code == 0, r.err
    written = sorted(p.relative_to(tmp_path / "recon").as_posix() for p in (tmp_path / "recon").rglob("*.png"))
    assert written == ["cups/cat.png", "siamese/cat.png", "tabby/cat.png"]
    assert iio.imread(tmp_path / "recon" / "cups" / "cat.png").shape == iio.imread(photos["coffee"]).shape
    # A file named on its own and again inside a named folder (either order) is inverted once.
    from featinv_cli.arguments import expand_feature_args

    feats, one = tmp_path / "feats", str(tmp_path / "feats" / "cups" / "cat.safetensors")
    assert len(expand_feature_args([str(feats)])) == 3
    assert expand_feature_args([one, str(feats)]).count(one) == 1 and len(expand_feature_args([one, str(feats)])) == 3
    assert expand_feature_args([str(feats), one])[-1] == one and len(expand_feature_args([str(feats), one])) == 3
    assert len(expand_feature_args([str(feats), str(feats / "cups")])) == 3
    (tmp_path / "empty").mkdir()
    r = cli("invert", tmp_path / "empty", "-m", tiny_model, "-o", f"{tmp_path}/none/")
    assert r.code == 1 and "no feature files found" in r.err and not (tmp_path / "none").exists()


def test_grid_rows_of_one_photo_are_titled_by_what_differs():
    from featinv_cli.grid import distinct_titles

    assert distinct_titles(["a", "b"], ["hog", "hog"], ["x.npy", "y.npy"]) == ["a", "b"]
    assert distinct_titles(["coffee", "coffee"], ["squeezenet:fire3", "squeezenet:fire7"], ["c3", "c7"]) == \
        ["squeezenet:fire3", "squeezenet:fire7"]
    assert distinct_titles(["coffee", "coffee"], ["hog", "hog"], ["d/one.safetensors", "two.npy"]) == ["one", "two"]


def test_an_interpolated_pair_is_titled_a_to_b_beside_other_files_too():
    import torch
    from featinv_cli.formats.features import FeatureFile
    from featinv_cli.grid import file_title

    pair = FeatureFile(torch.zeros(3, 4), "hog", {}, (8, 8), ["x/a.png -> y/b.jpg"] * 3,
                       history=["interpolate 3 points to b.safetensors"], labels=["t = 0", "t = 0.5", "t = 1"],
                       row_length=3)
    assert file_title(pair, pair.labels, "ab.safetensors") == "a to b"
    plain = FeatureFile(torch.zeros(2, 4), "hog", {}, (8, 8), ["a.png", "b.png"], history=["binarize"],
                        labels=["binarize"] * 2)
    assert file_title(plain, plain.labels, "p.safetensors") == "binarize"


def test_long_labels_are_broken_into_lines_not_cut():
    """A row label too wide for its column goes on two lines; a caption with room for one line only ends
    in "..." instead of being cut mid-letter at the tile's edge."""
    from featinv_cli.grid import _wrap

    fits = lambda t: len(t) <= 20  # noqa: E731
    text = "interpolate 5 points to chelsea.safetensors"
    assert _wrap(text, fits, 3) == ["interpolate 5 points", "to", "chelsea.safetensors"]
    assert _wrap(text, fits, 1) == ["interpolate 5 poi..."]
    assert _wrap("short", fits, 1) == ["short"]
    assert all(fits(line) for line in _wrap("x" * 50, fits, 5))


def test_directory_output_numbers_repeated_names_and_keeps_paths_inside(tmp_path):
    from featinv_cli.formats.png import PNG_FILE, write_image
    from featinv_cli.outputs import Output

    out = Output(f"{tmp_path}/out/", PNG_FILE, takes="file or folder")
    image = torch.zeros(3, 4, 4)
    for name in ["dropout 0.5", "dropout 0.5", "../../escape", "a/b:c"]:
        write_image(out.file(name, ".png"), image)
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert written == ["a/b_c.png", "dropout 0.5-2.png", "dropout 0.5.png", "escape.png"]


def test_score_json(cli, photos, tmp_path):
    from featinv_cli.data import prepare_view as prepare
    from featinv_cli.formats.png import write_image
    from featinv_cli.images import read_image

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    write_image(a, prepare(read_image(photos["astronaut"]), 64, 64, "a"))
    write_image(b, prepare(read_image(photos["coffee"]), 64, 64, "b"))
    ra, rb = photos["astronaut"], photos["coffee"]
    r = cli("score", a, b, "-r", ra, "-r", rb, "--resize", "64", "--crop", "64", "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["mean"]["normalized_error"] == pytest.approx(0, abs=0.01)  # only 8-bit rounding
    assert res["mean"]["psnr"] > 45
    r = cli("score", b, a, "-r", ra, "-r", rb, "--resize", "64", "--crop", "64", "--json")
    assert json.loads(r.out)["mean"]["normalized_error"] == pytest.approx(1.0, abs=0.01)


def test_info_on_model(cli, tiny_model):
    r = cli("info", tiny_model, "--json")
    d = json.loads(r.out)
    assert d["kind"] == "model" and d["feature"] == "hog" and d["arch"]["name"] == "paper"
    assert d["train"]["steps_done"] == 3


# ------------------------------------------------------------------ every bad input: one line, exit != 0

def test_missing_file(cli, tmp_path, tiny_model):
    assert "no such file" in one_line_error(cli("extract", "hog", tmp_path / "nope.jpg", "-o", tmp_path / "x.safetensors"))
    assert "no such file" in one_line_error(cli("invert", tmp_path / "nope.npy", "-o", tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_not_an_image(cli, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a JPEG")
    assert "not a readable image" in one_line_error(cli("extract", "hog", bad, "-o", tmp_path / "f.safetensors"))
    assert not (tmp_path / "f.safetensors").exists()


def test_truncated_safetensors(cli, photos, tmp_path, tiny_model):
    f = tmp_path / "h.safetensors"
    cli("extract", "hog", photos["chelsea"], "-o", f)
    f.write_bytes(f.read_bytes()[:300])
    msg = one_line_error(cli("invert", f, "-m", tiny_model, "-o", tmp_path / "r.png"))
    assert "not a valid safetensors file" in msg and "truncated" in msg
    assert not (tmp_path / "r.png").exists()


def test_channel_count_mismatch(cli, tmp_path, tiny_model):
    np.save(tmp_path / "f58.npy", np.random.rand(1, 58, 4, 4).astype(np.float32))
    msg = one_line_error(cli("invert", tmp_path / "f58.npy", "--feature", "hog", "-m", tiny_model,
                             "-o", tmp_path / "r.png"))
    assert "31 channels" in msg and "58" in msg
    np.save(tmp_path / "f40.npy", np.random.rand(1, 40, 4, 4).astype(np.float32))
    msg = one_line_error(cli("invert", tmp_path / "f40.npy", "-m", tiny_model, "-o", tmp_path / "r.png"))
    assert "--feature" in msg  # 40 channels fit no extractor
    msg = one_line_error(cli("invert", tmp_path / "f58.npy", "-m", tiny_model, "-o", tmp_path / "r.png"))
    assert "lbp" in msg  # 58 channels are taken to be LBP, which this HOG model refuses


def test_npy_without_metadata_where_size_is_needed(cli, tmp_path, tiny_model):
    np.save(tmp_path / "vec.npy", np.random.rand(2, 4096).astype(np.float32))
    msg = one_line_error(cli("invert", tmp_path / "vec.npy", "--feature", "hog", "-m", tiny_model,
                             "-o", tmp_path / "r.png"))
    assert "--image-size" in msg


def test_output_may_not_overwrite_input(cli, photos, tiny_model, tmp_path):
    f = tmp_path / "h.safetensors"
    cli("extract", "hog", photos["chelsea"], "-o", f)
    before = f.read_bytes()
    assert "overwrite an input" in one_line_error(cli("invert", f, "-m", tiny_model, "-o", f))
    assert f.read_bytes() == before


def test_usage_errors_exit_2(cli):
    r = cli("extract", "hog")
    assert r.code == 2 and r.err.startswith("featinv: error:")
    r = cli("invert", "x", "-o", "y.png", "--device", "tpu")
    assert r.code == 2


def test_wrong_feature_kind_for_model(cli, photos, tiny_model, tmp_path):
    f = tmp_path / "h4.safetensors"
    assert cli("extract", "hog:cell=4", photos["chelsea"], "-o", f).code == 0
    msg = one_line_error(cli("invert", f, "-m", tiny_model, "-o", tmp_path / "r.png"))
    # names the file, what it holds and what the model inverts, so the user sees which side to change
    assert f"{f}: extractor settings {{'cell': 4, 'orientations': 9}} differ from the model's {{'cell': 8," in msg
    assert not (tmp_path / "r.png").exists()


def test_pipe_through_real_processes(photos, tiny_model, tmp_path):
    """extract -o - | invert - : safetensors bytes on a real pipe."""
    out = tmp_path / "r.png"
    cmd = (f"{sys.executable} -m featinv_cli extract hog {photos['astronaut']} -o - | "
           f"{sys.executable} -m featinv_cli invert - -m {tiny_model} -o {out}")
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert iio.imread(out).shape == (512, 512, 3)


@pytest.mark.parametrize("feature,channels", [("lbp", 58), ("sift", 133)])
def test_lbp_and_sift_extract_then_invert_with_shipped_models(cli, photos, tmp_path, feature, channels):
    if not (ASSETS / f"{feature}.safetensors").exists():
        pytest.skip(f"no shipped {feature} model")
    feats, out = tmp_path / "f.safetensors", tmp_path / "r.png"
    assert cli("extract", feature, photos["chelsea"], "-o", feats).code == 0
    info = json.loads(cli("info", feats, "--json").out)
    assert info["shape"][1] == channels
    r = cli("invert", feats, "-o", out)
    assert r.code == 0, r.err
    assert iio.imread(out).shape == (300, 451, 3)


def test_sift_file_keeps_keypoints_and_info_counts_them(cli, photos, tmp_path):
    feats = tmp_path / "s.safetensors"
    assert cli("extract", "sift", photos["chelsea"], photos["astronaut"], "--resize", "128", "--crop", "128",
               "-o", feats).code == 0
    from featinv_cli.formats.features import load_features

    ff = load_features(feats)
    counts = ff.extra["counts"]
    assert counts.shape == (2,) and ff.extra["keypoints"].shape == (int(counts.sum()), 4)
    assert ff.extra["descriptors"].shape == (int(counts.sum()), 128)
    assert json.loads(cli("info", feats, "--json").out)["keypoints"] == int(counts.sum()) > 0
    # every occupied cell holds a keypoint: at most one per cell, never more cells than keypoints
    occupied = (ff.features[:, :128].abs().sum(1) > 0).sum()
    assert 0 < occupied <= int(counts.sum())
    assert cli("extract", "sift", photos["chelsea"], "-o", tmp_path / "n.safetensors", "--no-raw").code == 0
    assert load_features(tmp_path / "n.safetensors").extra == {}


def test_lbp_refused_by_hog_model(cli, photos, tiny_model, tmp_path):
    feats = tmp_path / "l.safetensors"
    cli("extract", "lbp", photos["chelsea"], "-o", feats)
    msg = one_line_error(cli("invert", feats, "-m", tiny_model, "-o", tmp_path / "r.png"))
    assert "lbp" in msg and "hog" in msg


def test_mixed_sizes_need_a_directory_or_crop(cli, photos, tmp_path):
    out = tmp_path / "f.safetensors"
    msg = one_line_error(cli("extract", "hog", photos["chelsea"], photos["astronaut"], "-o", out))
    assert "-o DIR/" in msg and not out.exists()
    assert cli("extract", "hog", photos["chelsea"], photos["astronaut"], "-o", f"{tmp_path}/each/").code == 0
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["astronaut.safetensors", "chelsea.safetensors"]


def test_unwritable_output_leaves_nothing(cli, photos, tmp_path, monkeypatch):
    import errno
    import os

    from featinv_cli import files

    assert "does not exist" in one_line_error(cli("extract", "hog", photos["chelsea"], "-o",
                                                  tmp_path / "no" / "such" / "f.safetensors"))
    assert not (tmp_path / "no").exists()
    full = tmp_path / "full"
    full.mkdir()

    def disk_full(fd):  # the write fails at its end, as on a full disk (root or not)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", disk_full)
    msg = one_line_error(cli("extract", "hog", photos["chelsea"], "-o", full / "f.safetensors"))
    assert "cannot write (No space left on device)" in msg
    assert list(full.iterdir()) == []  # neither the file nor a temporary one
    monkeypatch.undo()
    before = sorted(p.name for p in tmp_path.iterdir())
    one_line_error(cli("extract", "hog", photos["chelsea"], "-o", tmp_path / "x.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_shards_rows_per_file_and_workers_give_the_whole_set(cli, image_dir, tmp_path):
    """--shard I/N blocks cover the set once, in order; --rows-per-file splits; workers change nothing."""
    from featinv_cli.formats.features import load_features

    common = ["extract", "hog", image_dir, "--resize", "64", "--crop", "64"]
    assert cli(*common, "-o", tmp_path / "all.safetensors").code == 0
    whole = load_features(tmp_path / "all.safetensors")
    parts = []
    for i in range(3):
        r = cli(*common, "--shard", f"{i}/3", "--rows-per-file", "2", "--workers", "1",
                "-o", tmp_path / f"s{i}.safetensors")
        assert r.code == 0, r.err
        parts += sorted(tmp_path.glob(f"s{i}-*.safetensors"))
    loaded = [load_features(p) for p in parts]
    assert all(len(ff) <= 2 for ff in loaded)
    assert [s for ff in loaded for s in ff.sources] == whole.sources
    assert torch.equal(torch.cat([ff.features for ff in loaded]), whole.features)
    assert one_line_error(cli(*common, "--shard", "3/3", "-o", tmp_path / "x.safetensors"))
    assert one_line_error(cli(*common, "--shard", "a/b", "-o", tmp_path / "x.safetensors"))


def test_feature_files_named_like_images_are_refused(cli, photos, tmp_path):
    r = cli("extract", "hog", photos["chelsea"], "-o", tmp_path / "a.png")
    msg = one_line_error(r)
    assert "an image name" in msg and ".safetensors" in msg and r.code == 2  # the command line is wrong
    assert not (tmp_path / "a.png").exists()
    assert "not a feature file name" in one_line_error(cli("extract", "hog", photos["chelsea"], "-o", tmp_path / "a"))


def test_invert_of_an_image_says_to_extract_first(cli, photos, tmp_path):
    msg = one_line_error(cli("invert", photos["chelsea"], "-o", tmp_path / "r.png"))
    assert "is an image" in msg and "featinv extract" in msg


def test_binary_output_to_a_terminal_is_refused(photos, tmp_path):
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    r = subprocess.run([sys.executable, "-m", "featinv_cli", "extract", "hog", str(photos["chelsea"]), "-o", "-"],
                       stdout=follower, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(follower)
    os.close(leader)
    assert r.returncode == 1 and "refusing to write binary data to a terminal" in r.stderr


def test_info_on_a_bare_array_a_model_from_stdin_and_statistics(cli, photos, tmp_path, tiny_model):
    import json

    import numpy as np

    feats = tmp_path / "h.safetensors"
    assert cli("extract", "hog", photos["chelsea"], "--resize", "64", "--crop", "64", "-o", feats).code == 0
    from featinv_cli.formats.features import load_features

    np.save(tmp_path / "h.npy", load_features(feats).features[0].numpy())  # one map: (31, 8, 8)
    d = json.loads(cli("info", tmp_path / "h.npy", "--json").out)
    assert d["shape"] == [31, 8, 8] and d["guessed_feature"] == "hog" and d["guessed_image_size"] == [64, 64]
    d = json.loads(cli("info", "-", "--json", stdin=tiny_model.read_bytes()).out)
    assert d["kind"] == "model" and d["feature"] == "hog"
    assert cli("extract", "hog", photos["chelsea"], photos["coffee"], "--resize", "64", "--crop", "64",
               "-o", feats).code == 0
    assert cli("sample", "--fit", feats, "-o", tmp_path / "stats.safetensors").code == 0
    d = json.loads(cli("info", tmp_path / "stats.safetensors", "--json").out)
    assert d["kind"].startswith("feature statistics") and d["feature_shape"] == [31, 8, 8] and d["fitted_on"] == 2


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["invert", "--help"], ["train", "--nope"]])
def test_help_version_and_usage_errors_do_not_import_torch(args):
    """Start-up: torch is imported only by commands that compute (importing it alone takes ~1.3 s)."""
    import subprocess
    import sys

    code = ("import sys\nfrom featinv_cli.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert r.stderr.endswith("NO-TORCH"), r.stderr[-300:]


def test_class_folders_are_walked_and_keep_their_names_apart(cli, tmp_path):
    """ImageNet's layout: photos in class folders, equal file names in two folders. extract walks the
    folders, records each source below the folder given, and -o DIR/ keeps the sub-folders."""
    import imageio.v3 as iio

    from featinv_cli.formats.features import load_features

    root = tmp_path / "photos"
    for cls, name in (("cat", "chelsea"), ("cup", "coffee")):
        (root / cls).mkdir(parents=True)
        iio.imwrite(root / cls / "0001.png", photo(name)[:80, :80])
    feats = tmp_path / "f.safetensors"
    assert cli("extract", "hog", root, "-o", feats).code == 0
    assert load_features(feats).sources == ["cat/0001.png", "cup/0001.png"]
    assert cli("extract", "hog", root, "-o", f"{tmp_path}/each/").code == 0
    assert sorted(p.relative_to(tmp_path / "each").as_posix() for p in (tmp_path / "each").rglob("*.safetensors")) \
        == ["cat/0001.safetensors", "cup/0001.safetensors"]


def test_extract_device(cli, photos, tmp_path):
    """--device on extract: cpu and auto agree (here auto is the CPU); cuda without CUDA is one clear line."""
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert cli("extract", "hog", photos["chelsea"], "-o", a, "--device", "cpu").code == 0
    assert cli("extract", "hog", photos["chelsea"], "-o", b, "--device", "auto", "--workers", "1").code == 0
    assert a.read_bytes() == b.read_bytes()
    if not torch.cuda.is_available():
        msg = one_line_error(cli("extract", "hog", photos["chelsea"], "-o", tmp_path / "c.safetensors",
                                 "--device", "cuda"))
        assert "--device cuda: this torch has no usable CUDA device" in msg
        assert not (tmp_path / "c.safetensors").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("spec", ["hog", "lbp", "sift", "squeezenet:fire9"])
def test_extract_on_the_gpu_matches_the_cpu(cli, photos, tmp_path, spec):
    from featinv_cli.formats.features import load_features

    a, b = tmp_path / "cpu.safetensors", tmp_path / "gpu.safetensors"
    assert cli("extract", spec, photos["chelsea"], "-o", a, "--device", "cpu").code == 0
    assert cli("extract", spec, photos["chelsea"], "-o", b, "--device", "cuda", "--workers", "2").code == 0
    fa, fb = load_features(a).features, load_features(b).features
    if spec.startswith("squeezenet"):  # cuDNN's float32 convolutions round differently, but no TF32:
        assert float((fa - fb).norm() / fa.norm()) < 1e-4  # measured on an H100: 5e-6 (TF32: 2e-3)
    else:
        assert torch.equal(fa, fb)
