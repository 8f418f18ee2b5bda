"""The paper's normalized error, PSNR and SSIM."""
import math

import pytest
import torch

from featinv_cli import metrics


def test_perfect_reconstruction_scores_zero_error():
    x = torch.rand(4, 3, 16, 16)
    s = metrics.score(x, x)
    assert s["mean"]["normalized_error"] == 0
    assert s["mean"]["ssim"] == pytest.approx(1.0)


def test_normalizer_is_mean_pairwise_distance():
    a, b, c = torch.zeros(3, 2, 2), torch.ones(3, 2, 2), torch.full((3, 2, 2), 0.5)
    refs = torch.stack([a, b, c])
    d_ab, d_ac, d_bc = math.sqrt(12), math.sqrt(3), math.sqrt(3)
    assert metrics.mean_pairwise_distance(refs) == pytest.approx((d_ab + d_ac + d_bc) / 3)


def test_error_of_predicting_another_image_is_about_one():
    """Predicting another test image costs about N: the error scale the paper's numbers live on. (With
    two images this is exactly 1 by definition; with several it is 1 only on average.)"""
    torch.manual_seed(0)
    refs = torch.rand(6, 3, 8, 8)
    err = metrics.normalized_errors(refs.roll(1, 0), refs)
    assert not torch.allclose(err, torch.ones(6, dtype=torch.float64))  # single images differ ...
    assert abs(float(err.mean()) - 1) < 0.05  # ... the mean is about one
    assert float(metrics.normalized_errors(refs, refs).max()) == 0
    half = refs * 0.5 + 0.25  # halfway to grey: about half the distance of another image
    assert 0 < float(metrics.normalized_errors(half, refs).mean()) < 0.6


def test_reconstruction_is_upsampled_to_reference():
    smooth = torch.rand(3, 3, 4, 4)
    ref = torch.nn.functional.interpolate(smooth, size=(32, 32), mode="bilinear")
    small = torch.nn.functional.interpolate(ref, size=(16, 16), mode="bilinear", antialias=True)
    s = metrics.score(small, ref)
    assert s["normalized_error"] and len(s["normalized_error"]) == 3
    assert 0 < s["mean"]["normalized_error"] < 0.2


def test_mae_is_the_mean_absolute_pixel_error_in_0_1():
    from featinv_cli.metrics import mae, score

    black, white = torch.zeros(2, 3, 16, 16), torch.ones(2, 3, 16, 16)
    assert mae(black, white).tolist() == [1.0, 1.0] and mae(white, white).tolist() == [0.0, 0.0]
    half = torch.full((2, 3, 16, 16), 0.25)
    assert score(half, black)["mean"]["mae"] == pytest.approx(0.25)


def test_psnr_and_ssim_have_their_textbook_values():
    """PSNR of mid-grey against black is 10 log10(1 / 0.25) = 6.02 dB; SSIM is scikit-image's on the same
    pair (channels last, data range 1), not merely 1 for identical images."""
    from skimage.metrics import structural_similarity

    grey, black = torch.full((1, 3, 8, 8), 0.5), torch.zeros(1, 3, 8, 8)
    assert float(metrics.psnr(grey, black)[0]) == pytest.approx(10 * math.log10(4), abs=1e-9)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    b = 0.5 * a + 0.5 * b  # related, so SSIM sits well inside (0, 1)
    want = structural_similarity(a[0].permute(1, 2, 0).double().numpy(), b[0].permute(1, 2, 0).double().numpy(),
                                 channel_axis=2, data_range=1.0, win_size=7)
    assert float(metrics.ssim(a, b)[0]) == pytest.approx(want, abs=1e-12) and 0.2 < want < 0.9


def test_identical_pairs_do_not_outweigh_the_mean_psnr():
    """An identical pair's PSNR is infinite (120 dB here); averaged in, 28 and 120 dB would read 74."""
    torch.manual_seed(0)
    refs = [torch.rand(3, 16, 16), torch.rand(3, 16, 16)]
    recon = [refs[0].clone(), (refs[1] + 0.05).clamp(0, 1)]
    s = metrics.score_pairs(recon, refs)
    assert s["psnr"][0] == metrics.PSNR_IDENTICAL
    assert s["mean"]["psnr"] == pytest.approx(s["psnr"][1])
    assert metrics.score_pairs(refs, refs)["mean"]["psnr"] == metrics.PSNR_IDENTICAL


def test_references_that_are_all_one_image_give_no_normalized_error():
    """N, the mean distance between the references, is 0: no NaN or inf, the other metrics stay."""
    ref = torch.rand(3, 16, 16)
    s = metrics.score_pairs([torch.rand(3, 16, 16), ref], [ref, ref.clone()])
    assert s["normalizer"] is None and s["mean"]["normalized_error"] is None
    assert all(math.isfinite(v) for v in s["psnr"] + s["ssim"])


def test_blocked_mean_distance_is_the_mean_pairwise_distance():
    """audit's N, a block of rows at a time from 8-bit views, is the paper's N of the same images."""
    from featinv_cli.metrics import blocked_mean_distance, mean_pairwise_distance

    views = torch.randint(0, 256, (10, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    expected = mean_pairwise_distance(views.double() / 255.0)  # (score reads float32 pixels: 1e-8 apart)
    assert abs(blocked_mean_distance(views, block=3) - expected) < 1e-9 * expected
