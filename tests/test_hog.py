"""HOG must be VLFeat's vl_hog (UoCTTI, cell 8, 9 orientations) to float32 rounding."""
import numpy as np
import pytest
import torch

from conftest import REFERENCE_NAMES as NAMES, photo
from featinv_cli.features import parse_spec
from featinv_cli.features.hog import uoctti_hog

@pytest.mark.parametrize("name", NAMES)
def test_matches_vlfeat(reference, name):
    gray = torch.from_numpy(reference[f"{name}/gray"])[None, None]
    ours = uoctti_hog(gray)[0].numpy()
    theirs = reference[f"{name}/hog"]
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 2e-7  # README: "max abs diff < 2e-7"


def test_output_size_is_vlfeats():
    hog = parse_spec("hog")
    for h, w in [(300, 451), (64, 64), (97, 123), (12, 9)]:
        x = torch.rand(1, 3, h, w)
        assert hog(x).shape == (1, 31, (h + 4) // 8, (w + 4) // 8)
        assert hog.grid_size(h, w) == ((h + 4) // 8, (w + 4) // 8)


def test_batch_equals_one_by_one():
    x = torch.rand(3, 3, 40, 56)
    hog = parse_spec("hog")
    batched = hog(x)
    for i in range(3):
        assert torch.allclose(batched[i], hog(x[i:i + 1])[0], atol=1e-6)


@pytest.mark.parametrize("factor", [10.0, 0.1])
def test_intensity_scaling_hardly_changes_features(factor):
    """Paper §3: multiplying the image by 10 or 0.1 hardly changes HOG (normalisation epsilon)."""
    gray = torch.from_numpy(photo("camera").astype(np.float32)[:, :, 0] / 255.0)[None, None]
    a, b = uoctti_hog(gray), uoctti_hog(gray * factor)
    rel = (a - b).norm() / a.norm()
    assert rel < 0.05, rel
    # ...while a different image changes them a lot, so the check above can fail.
    other = uoctti_hog(torch.from_numpy(photo("astronaut").astype(np.float32)[:, :, 0] / 255.0)[None, None])
    assert (a - other).norm() / a.norm() > 0.5


def test_gray_input_equals_rgb_replicated():
    g = torch.rand(1, 1, 33, 47)
    hog = parse_spec("hog")
    assert torch.allclose(hog(g), hog(g.expand(1, 3, 33, 47)), atol=1e-6)


def test_spec_parsing_and_errors():
    from featinv_cli.errors import FeatinvError

    assert parse_spec("hog").spec == "hog"
    assert parse_spec("hog:cell=4").cell == 4
    assert parse_spec("hog:cell=4").spec == "hog:cell=4"
    with pytest.raises(FeatinvError, match="unknown feature"):
        parse_spec("hag")
    with pytest.raises(FeatinvError, match="takes: cell, orientations"):
        parse_spec("hog:size=3")
    with pytest.raises(FeatinvError, match="not a valid int"):
        parse_spec("hog:cell=x")
