"""Paper cuts a new user hit, each pinned: a bad value is refused with a one-line usage error (exit 2),
a finished run says where its model is, and so on."""
import pytest

from conftest import one_line_error


@pytest.fixture
def hog_file(cli, photos, tmp_path):
    f = tmp_path / "h.safetensors"
    assert cli("extract", "hog", photos["astronaut"], "--resize", "64", "--crop", "64", "-o", f).code == 0
    return f


@pytest.mark.parametrize("steps", ["-5", "0"])
def test_optimize_steps_must_be_positive(cli, hog_file, tmp_path, steps):
    out = tmp_path / "o.png"
    r = cli("invert", hog_file, "--method", "optimize", "--optimize-steps", steps, "-o", out)
    assert "--optimize-steps" in one_line_error(r) and r.code == 2 and not out.exists()


@pytest.mark.parametrize("flag", ["--steps", "--batch", "--checkpoint-every"])
def test_train_names_the_option_that_is_wrong(cli, image_dir, tmp_path, flag):
    r = cli("train", "hog", "-d", image_dir, "-o", tmp_path / "m.safetensors", flag, "-5")
    msg = one_line_error(r)
    assert r.code == 2 and msg.startswith(f"featinv: error: {flag} -5")


def test_a_bad_feature_spec_is_a_usage_error(cli, image_dir, photos, tmp_path):
    for args in (("train", "hgo", "-d", image_dir, "-o", tmp_path / "m.safetensors"),
                 ("extract", "hgo", photos["astronaut"], "-o", tmp_path / "f.safetensors")):
        r = cli(*args)
        assert "hgo" in one_line_error(r) and r.code == 2


def test_resume_of_a_finished_run_says_where_the_model_is(cli, image_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    args = ("train", "hog", "-d", image_dir, "-o", out, "--width", "0.125", "--crop", "64", "--batch", "4",
            "--steps", "2", "-q")
    assert cli(*args).code == 0
    msg = one_line_error(cli(*args, "--resume"))
    assert "finished" in msg and str(out) in msg


def test_a_resumed_run_says_where_it_resumes(cli, image_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    args = ("train", "hog", "-d", image_dir, "-o", out, "--width", "0.125", "--crop", "64", "--batch", "4",
            "--checkpoint-every", "1")
    assert cli(*args, "--steps", "2", "--keep-checkpoint", "-q").code == 0
    out.unlink()
    r = cli(*args, "--steps", "2", "--resume")
    assert r.code == 0, r.err
    assert "resuming from step 2 of 2" in r.err


def test_an_image_over_the_pixel_limit_says_what_it_is(cli, tmp_path, monkeypatch):
    """A 20000x20000 PNG is over Pillow's decompression-bomb limit: the message says so and how to go
    on, not "not a readable image". (The limit is lowered here so the file stays small.)"""
    import imageio.v3 as iio
    import numpy as np

    big = tmp_path / "big.png"
    iio.imwrite(big, np.zeros((300, 400, 3), np.uint8))
    monkeypatch.setenv("FEATINV_MAX_PIXELS", "50000")
    msg = one_line_error(cli("extract", "hog", big, "-o", tmp_path / "f.safetensors"))
    assert "megapixels" in msg and "FEATINV_MAX_PIXELS" in msg and "not a readable" not in msg
    monkeypatch.setenv("FEATINV_MAX_PIXELS", "200000")
    assert cli("extract", "hog", big, "-o", tmp_path / "f.safetensors").code == 0


def test_score_says_when_it_resizes(cli, photos, tmp_path):
    import imageio.v3 as iio
    import numpy as np

    small = tmp_path / "small.png"
    iio.imwrite(small, np.zeros((64, 96, 3), np.uint8))
    r = cli("score", small, "-r", photos["astronaut"])
    assert r.code == 0 and "resized bilinearly" in r.err and "64x96" in r.err
    same = cli("score", photos["astronaut"], "-r", photos["astronaut"])
    assert same.code == 0 and "resized" not in same.err


def test_score_writes_whole_file_names_into_a_pipe(cli, photos, tmp_path):
    """stdout is no terminal here: the table keeps its full width (rich's 80 columns cut "recon/astrona…")."""
    import shutil

    recon, ref = tmp_path / "reconstructions_of_the_validation_photos", tmp_path / "the_validation_photos_themselves"
    for d in (recon, ref):
        d.mkdir()
        for name in ("astronaut", "coffee"):
            shutil.copy(photos[name], d / f"{name}_at_128_pixels_centre_crop.png")
    r = cli("score", recon, "-r", ref)
    assert r.code == 0, r.err
    for name in ("astronaut", "coffee"):
        assert str(recon / f"{name}_at_128_pixels_centre_crop.png") in r.text
        assert str(ref / f"{name}_at_128_pixels_centre_crop.png") in r.text
    assert "…" not in r.text


def test_an_output_name_without_a_suffix_suggests_a_folder(cli, photos, tmp_path):
    msg = one_line_error(cli("extract", "hog", photos["astronaut"], "-o", tmp_path / "feats"))
    assert f"-o {tmp_path / 'feats'}/" in msg


def test_an_unknown_layer_is_a_usage_error_like_an_unknown_feature(cli, photos, tmp_path):
    for spec in ("squeezenet:fire10", "alexnet:conv9", "squeezenet:fire9,size=8"):
        r = cli("extract", spec, photos["astronaut"], "-o", tmp_path / "f.safetensors")
        assert r.code == 2 and "featinv: error:" in one_line_error(r), spec


def test_a_channels_last_array_gets_a_hint(cli, tmp_path):
    import numpy as np

    hwc = tmp_path / "hwc.npy"
    np.save(hwc, np.random.default_rng(0).random((16, 16, 31), dtype=np.float32))
    for extra in ((), ("--feature", "hog")):
        msg = one_line_error(cli("invert", hwc, "-o", tmp_path / "o.png", *extra))
        assert "channels first" in msg and "a.transpose(2, 0, 1)" in msg and "hog" in msg


def test_interpolate_takes_pool10_vectors_of_photos_of_two_sizes(cli, photos, tmp_path):
    """pool10 (any CNN layer) sees the photo at the network's input size: the photos' sizes change no
    value, so two of them interpolate, with a note on the size the reconstructions take."""
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for photo, out in ((photos["astronaut"], a), (photos["chelsea"], b)):  # 512x512 and 300x451
        assert cli("extract", "squeezenet:pool10", photo, "-o", out).code == 0
    r = cli("interpolate", a, b, "-n", "3", "-o", tmp_path / "ab.safetensors")
    assert r.code == 0, r.err
    assert "do not depend on it" in r.err and "512x512" in r.err
    hog_a, hog_b = tmp_path / "ha.safetensors", tmp_path / "hb.safetensors"
    assert cli("extract", "hog", photos["astronaut"], "--resize", "64", "-o", hog_a).code == 0
    assert cli("extract", "hog", photos["chelsea"], "--resize", "64", "-o", hog_b).code == 0
    assert "extract both at one size" in one_line_error(cli("interpolate", hog_a, hog_b, "-o", tmp_path / "h.safetensors"))


def test_an_output_below_a_file_says_it_is_a_file(cli, photos, tmp_path):
    for command in (("extract", "hog", photos["astronaut"]), ("pack", photos["astronaut"])):
        msg = one_line_error(cli(*command, "-o", f"{photos['coffee']}/x.safetensors"))
        assert f"{photos['coffee']} is a file, not a directory" in msg


def test_resume_with_other_settings_refuses_before_saying_it_resumes(cli, image_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    args = ("train", "hog", "-d", image_dir, "-o", out, "--width", "0.125", "--crop", "64", "--batch", "4",
            "--steps", "2")
    assert cli(*args, "--keep-checkpoint", "-q").code == 0
    r = cli(*args, "--lr", "0.01", "--resume")
    assert "resuming" not in r.err and "lr=0.001" in one_line_error(r)


def test_one_image_is_one_image(cli, photos, tmp_path):
    import shutil

    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(photos["astronaut"], folder)
    msg = one_line_error(cli("train", "hog", "-d", folder, "-o", tmp_path / "m.safetensors", "--batch", "2"))
    assert "1 image cannot fill a batch of 2" in msg
