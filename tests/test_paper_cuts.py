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
