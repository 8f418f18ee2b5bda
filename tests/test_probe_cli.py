"""perturb, interpolate, sample on the command line: metadata travels, mismatches are refused, pipes work."""
import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from conftest import one_line_error
from featinv_cli.formats.features import load_features


@pytest.fixture
def hog_pair(cli, photos, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for src, dst in ((photos["chelsea"], a), (photos["astronaut"], b)):
        assert cli("extract", "hog", src, "--resize", "64", "--crop", "64", "-o", dst).code == 0
    return a, b


def test_perturb_records_operations_in_order(cli, hog_pair, tmp_path):
    a, _ = hog_pair
    out = tmp_path / "p.safetensors"
    r = cli("perturb", a, "--drop-least", "0.5", "--binarize", "-o", out)
    assert r.code == 0, r.err
    ff = load_features(out)
    assert ff.history == ["drop-least 0.5, binarize"] and ff.feature == "hog" and ff.image_size == (64, 64)
    from featinv_cli.analysis import binarize, drop_least

    x = load_features(a).features
    assert torch.equal(ff.features, binarize(drop_least(x, 0.5)))  # applied in the order typed, not only named so
    from featinv_cli.analysis import zero_top

    r = cli("perturb", a, "--binarize", "--zero-top", "50", "-o", out)
    assert r.code == 0, r.err
    assert load_features(out).history == ["binarize, zero-top 50"]
    assert torch.equal(load_features(out).features, zero_top(binarize(x), 50))
    assert not torch.equal(binarize(zero_top(x, 50)), zero_top(binarize(x), 50))


def test_perturb_refuses_drop_least_after_binarize(cli, hog_pair, tmp_path):
    """Binarized entries share one magnitude, so "the least" would be the first channels whole (HOG's
    0-14 zeroed): refused, with the paper's order named."""
    a, _ = hog_pair
    r = cli("perturb", a, "--binarize", "--drop-least", "0.5", "-o", tmp_path / "x.safetensors")
    assert r.code == 2 and "--drop-least P --binarize" in r.err
    assert not (tmp_path / "x.safetensors").exists()


def test_perturb_bad_values(cli, hog_pair, tmp_path):
    a, _ = hog_pair
    for args in (["--dropout", "1"], ["--dropout", "-0.1"], ["--drop-least", "1.5"], ["--keep-top", "999999"],
                 ["--zero-top", "0"], []):
        r = cli("perturb", a, *args, "-o", tmp_path / "x.safetensors")
        one_line_error(r)
        assert r.code == 2
    assert not (tmp_path / "x.safetensors").exists()


def test_interpolate_labels_and_mismatches(cli, hog_pair, photos, tmp_path, tiny_model):
    a, b = hog_pair
    out = tmp_path / "ab.safetensors"
    assert cli("interpolate", a, b, "-n", "5", "-o", out).code == 0
    ff = load_features(out)
    assert len(ff) == 5 and ff.labels[0] == "t = 0" and ff.labels[-1] == "t = 1"
    assert np.array_equal(ff.features[0], load_features(a).features[0])
    assert cli("invert", out, "-m", tiny_model, "-o", tmp_path / "ab.png").code == 0
    assert iio.imread(tmp_path / "ab.png").shape[1] > 5 * 96  # five tiles of at least 96 px
    lbp = tmp_path / "l.safetensors"
    cli("extract", "lbp", photos["coffee"], "--resize", "64", "--crop", "64", "-o", lbp)
    assert "one extractor" in one_line_error(cli("interpolate", a, lbp, "-o", tmp_path / "x.safetensors"))
    big = tmp_path / "big.safetensors"
    cli("extract", "hog", photos["coffee"], "--resize", "96", "--crop", "96", "-o", big)
    assert "--resize" in one_line_error(cli("interpolate", a, big, "-o", tmp_path / "x.safetensors"))
    assert one_line_error(cli("interpolate", a, b, "-n", "1", "-o", tmp_path / "x.safetensors"))


def test_sample_fit_then_draw(cli, photos, tmp_path, image_dir):
    many = tmp_path / "many.safetensors"
    assert cli("extract", "hog", image_dir, "--resize", "64", "--crop", "64", "-o", many).code == 0
    stats = tmp_path / "stats.safetensors"
    assert cli("sample", "--fit", many, "-o", stats).code == 0
    out1, out2 = tmp_path / "s1.safetensors", tmp_path / "s2.safetensors"
    assert cli("sample", stats, "-n", "6", "--seed", "1", "-o", out1).code == 0
    assert cli("sample", many, "-n", "6", "--seed", "1", "-o", out2).code == 0  # fit on the fly: same draw
    s1, s2 = load_features(out1), load_features(out2)
    assert s1.features.shape == (6, 31, 8, 8) and s1.feature == "hog" and s1.image_size == (64, 64)
    assert np.array_equal(s1.features, s2.features)
    r = cli("sample", stats, "--method", "gaussian", "-n", "3", "-o", tmp_path / "g.safetensors")
    assert r.code == 0, r.err
    one_line_error(cli("sample", stats, "--method", "magic", "-o", tmp_path / "x.safetensors"))


def test_npy_without_metadata_interpolates_but_needs_description_to_invert(cli, tmp_path, tiny_model):
    np.save(tmp_path / "a.npy", np.random.rand(1, 31, 4, 4).astype(np.float32))
    np.save(tmp_path / "b.npy", np.random.rand(1, 31, 4, 4).astype(np.float32))
    assert cli("interpolate", tmp_path / "a.npy", tmp_path / "b.npy", "-o", tmp_path / "ab.safetensors").code == 0
    np.save(tmp_path / "v.npy", np.random.rand(3, 100).astype(np.float32))
    r = cli("perturb", tmp_path / "v.npy", "--binarize", "-o", tmp_path / "vb.safetensors")
    assert r.code == 0
    assert "--feature" in one_line_error(cli("invert", tmp_path / "vb.safetensors", "-m", tiny_model,
                                             "-o", tmp_path / "x.png"))


def test_pipe_extract_perturb_invert_through_real_processes(photos, tiny_model, tmp_path):
    out = tmp_path / "out.png"
    py = f"{sys.executable} -m featinv_cli"
    cmd = (f"{py} extract hog {photos['chelsea']} -o - | {py} perturb - --dropout 0.5 -o - | "
           f"{py} invert - -m {tiny_model} -o {out}")
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert iio.imread(out).shape == (300, 451, 3)
    info = subprocess.run(f"{py} extract hog {photos['chelsea']} -o - | {py} perturb - --dropout 0.5 -o - | "
                          f"{py} info - --json", shell=True, capture_output=True, text=True, timeout=120)
    assert json.loads(info.stdout)["history"] == ["dropout 0.5 (seed 0)"]


def test_several_files_make_one_grid_with_a_row_each(cli, hog_pair, tiny_model, tmp_path):
    a, _ = hog_pair
    cli("perturb", a, "--binarize", "-o", tmp_path / "bin.safetensors")
    r = cli("invert", a, tmp_path / "bin.safetensors", "-m", tiny_model, "-o", tmp_path / "two.png")
    assert r.code == 0, r.err
    two = iio.imread(tmp_path / "two.png")
    assert cli("invert", a, "-m", tiny_model, "-o", tmp_path / "one.png").code == 0
    one = iio.imread(tmp_path / "one.png")  # a single row: just the image, no grid
    assert two.shape[0] > 2 * 96 > one.shape[0]  # two rows of tiles (at least 96 px each), or one 64-px image
    assert "*.png" in one_line_error(cli("invert", a, a, "-m", tiny_model, "-o", tmp_path / "two.jpg"))
    # To a directory: one PNG per row of every file, never one overwriting another.
    assert cli("invert", a, a, "-m", tiny_model, "-o", f"{tmp_path}/dir/").code == 0
    assert len(list((tmp_path / "dir").glob("*.png"))) == 2


def test_invert_to_a_directory_never_overwrites_its_own_rows(cli, photos, tmp_path, tiny_model):
    """Three rows perturbed alike share the label 'dropout 0.5': three files, not one."""
    feats, perturbed = tmp_path / "f.safetensors", tmp_path / "p.safetensors"
    assert cli("extract", "hog", photos["chelsea"], photos["astronaut"], photos["coffee"], "--resize", "64",
               "--crop", "64", "-o", feats).code == 0
    assert cli("perturb", feats, "--dropout", "0.5", "-o", perturbed).code == 0
    assert len(set(load_features(perturbed).labels)) == 1
    r = cli("invert", perturbed, "-m", tiny_model, "-o", f"{tmp_path}/each/")
    assert r.code == 0, r.err
    assert len(list((tmp_path / "each").glob("*.png"))) == 3


def test_perturb_keeps_each_rows_caption_and_names_the_photos(cli, hog_pair, photos, tmp_path):
    """An interpolation's "t = 0.25" survives perturb ("t = 0.25, dropout 0.2"), and a batch of photos
    is captioned photo by photo, not "dropout 0.2" under every tile."""
    from featinv_cli.grid import row_labels

    a, b = hog_pair
    ab, abd = tmp_path / "ab.safetensors", tmp_path / "abd.safetensors"
    assert cli("interpolate", a, b, "-n", "3", "-o", ab).code == 0
    assert cli("perturb", ab, "--dropout", "0.2", "-o", abd).code == 0
    assert load_features(abd).labels == ["t = 0, dropout 0.2", "t = 0.5, dropout 0.2", "t = 1, dropout 0.2"]
    batch, dropped = tmp_path / "batch.safetensors", tmp_path / "dropped.safetensors"
    assert cli("extract", "hog", photos["chelsea"], photos["coffee"], "--resize", "64", "--crop", "64",
               "-o", batch).code == 0
    assert cli("perturb", batch, "--dropout", "0.2", "-o", dropped).code == 0
    assert row_labels(load_features(dropped)) == ["chelsea dropout 0.2", "coffee dropout 0.2"]
    assert row_labels(load_features(abd)) == load_features(abd).labels  # one pair: the steps share a source


def test_perturbed_sift_does_not_carry_the_raw_descriptors(cli, photos, tmp_path):
    """A file that looks degraded must not hold the unperturbed keypoints and descriptors."""
    sift, out = tmp_path / "s.safetensors", tmp_path / "z.safetensors"
    assert cli("extract", "sift", photos["astronaut"], "-o", sift).code == 0
    assert "descriptors" in load_features(sift).extra
    assert cli("perturb", sift, "--zero-top", "100", "-o", out).code == 0
    assert load_features(out).extra == {}
    assert "keypoints" not in json.loads(cli("info", out, "--json").text)


def test_probes_refuse_values_that_are_not_numbers(cli, hog_pair, tmp_path):
    a, b = hog_pair
    out, many = tmp_path / "x.safetensors", tmp_path / "many.safetensors"
    assert cli("interpolate", a, b, "-n", "4", "-o", many).code == 0  # vectors enough to fit statistics
    for args in (["--scale", "nan"], ["--scale", "inf"]):
        assert one_line_error(cli("perturb", a, *args, "-o", out)) and not out.exists()
    assert "float32" in one_line_error(cli("perturb", a, "--scale", "1e39", "-o", out)) and not out.exists()
    for alpha in ("nan", "-1", "0"):
        assert "--alpha" in one_line_error(cli("sample", many, "--alpha", alpha, "-o", out)) and not out.exists()
    stats = tmp_path / "stats.safetensors"
    assert cli("sample", "--fit", many, "-o", stats).code == 0
    assert "--bins" in one_line_error(cli("sample", stats, "--bins", "4", "-o", out))
    assert "featinv sample" in one_line_error(cli("perturb", stats, "--binarize", "-o", out))


def test_interpolation_pairs_make_grid_rows_and_file_names(cli, photos, tmp_path, tiny_model):
    """Two pairs of five steps: a grid row per pair (not eight tiles, then two), titled "a to b"; and
    -o DIR/ names each step "a to b t = 0.25.png", not a path through a's folder."""
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    view = ("--resize", "64", "--crop", "64")
    assert cli("extract", "hog", photos["chelsea"], photos["coffee"], *view, "-o", a).code == 0
    assert cli("extract", "hog", photos["astronaut"], photos["chelsea"], *view, "-o", b).code == 0
    ab = tmp_path / "ab.safetensors"
    assert cli("interpolate", a, b, "-n", "5", "-o", ab).code == 0
    assert cli("invert", ab, "-m", tiny_model, "-o", tmp_path / "ab.png").code == 0
    assert cli("invert", ab, "-m", tiny_model, "--columns", "10", "-o", tmp_path / "flat.png").code == 0
    grid, flat = iio.imread(tmp_path / "ab.png"), iio.imread(tmp_path / "flat.png")
    assert grid.shape[0] > 2 * 64 > flat.shape[0] - 64 and flat.shape[1] > 2 * grid.shape[1] - 200
    assert cli("invert", ab, "-m", tiny_model, "-o", f"{tmp_path}/steps/").code == 0
    names = sorted(p.relative_to(tmp_path / "steps").as_posix() for p in (tmp_path / "steps").rglob("*.png"))
    assert len(names) == 10 and "chelsea to astronaut t = 0.25.png" in names and "coffee to chelsea t = 1.png" in names
    assert "--columns" in one_line_error(cli("invert", a, b, "-m", tiny_model, "--columns", "3",
                                             "-o", tmp_path / "x.png"))


def test_a_bare_npy_end_takes_the_other_ends_description(cli, hog_pair, tmp_path):
    a, b = hog_pair
    np.save(tmp_path / "b.npy", load_features(b).features.numpy())
    out = tmp_path / "ab.safetensors"
    r = cli("interpolate", a, tmp_path / "b.npy", "-n", "3", "-o", out)
    assert r.code == 0 and "bare array" in r.err
    ff = load_features(out)
    assert ff.feature == "hog" and ff.image_size == (64, 64)


def test_sampled_sift_keeps_its_geometry_in_range(cli, photos, tmp_path):
    """--alpha raises the descriptors' contrast; the position, sin/cos and log-scale channels stay within
    what was fitted (twice a cell offset is outside the cell, twice sin a is no angle)."""
    sift, out = tmp_path / "s.safetensors", tmp_path / "r.safetensors"
    assert cli("extract", "sift:cell=8", photos["astronaut"], photos["chelsea"], photos["coffee"],  # a spec with
               "--resize", "128", "--crop", "128", "-o", sift).code == 0  # parameters: the file says "sift:cell=8"
    assert cli("sample", sift, "-n", "16", "--alpha", "3", "-o", out).code == 0
    real, drawn = load_features(sift).features, load_features(out).features
    for c in range(128, 133):
        assert drawn[:, c].min() >= real[:, c].min() - 1e-6 and drawn[:, c].max() <= real[:, c].max() + 1e-6
    assert drawn[:, :128].max() > real[:, :128].max()  # the descriptors were multiplied
