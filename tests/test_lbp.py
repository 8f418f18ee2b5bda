"""LBP must be VLFeat's vl_lbp (uniform, 58 codes, cell 16) and blind to monotonic intensity changes."""
import numpy as np
import pytest
import torch

from conftest import REFERENCE_NAMES as NAMES, photo
from featinv_cli.features import parse_spec
from featinv_cli.features.lbp import MAPPING, vl_lbp

@pytest.mark.parametrize("name", NAMES)
def test_matches_vlfeat(reference, name):
    ours = vl_lbp(torch.from_numpy(reference[f"{name}/gray"])[None, None])[0].numpy()
    theirs = reference[f"{name}/lbp"]
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-7  # README: "max abs diff < 1e-7"


def test_uniform_mapping_has_58_codes():
    counts = torch.bincount(MAPPING, minlength=58)
    assert len(counts) == 58
    assert (counts[:56] == 1).all() and counts[56] == 2 and counts[57] == 256 - 58


@pytest.mark.parametrize("transform", [lambda x: x ** 2, lambda x: 0.2 + 0.5 * x, lambda x: torch.sqrt(x)])
def test_invariant_to_monotonic_intensity_change(transform):
    gray = torch.from_numpy(photo("camera").astype(np.float64)[:, :, 0] / 255.0)[None, None]
    a, b = vl_lbp(gray.float()), vl_lbp(transform(gray).float())
    assert torch.allclose(a, b, atol=1e-6)
    # a non-monotonic change does alter the codes, so the check above can fail
    assert not torch.allclose(a, vl_lbp((gray - 0.5).abs().float()), atol=1e-3)


def test_extractor_shape_and_size():
    lbp = parse_spec("lbp")
    assert lbp(torch.rand(2, 3, 70, 100)).shape == (2, 58, 4, 6)
    assert lbp.grid_size(70, 100) == (4, 6) and lbp.differentiable is False
