"""perturb / interpolate / sample: each operation's defining property."""
import pytest
import torch

from featinv_cli import analysis


def feats(seed=0, n=4, shape=(31, 6, 5), sparsity=0.5):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n,) + shape, generator=g)
    return torch.where(torch.rand(x.shape, generator=g) < sparsity, torch.zeros_like(x), x)


def norms(x):
    return x.reshape(x.shape[0], -1).double().norm(dim=1)


def test_binarize_keeps_signs_norm_and_one_magnitude():
    x = feats() - 0.2 * (feats(1) > 0)  # some negative entries too
    y = analysis.binarize(x)
    assert torch.equal(torch.sign(y), torch.sign(x))
    assert torch.allclose(norms(y), norms(x), rtol=1e-6)
    for row in y.reshape(len(y), -1):
        assert len(torch.unique(row[row != 0].abs())) == 1


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 0.9])
def test_dropout_count_and_norm(p):
    x = feats(sparsity=0.0) + 0.01  # no zeros to begin with, so the zeros are dropout's
    y = analysis.dropout(x, p, torch.Generator().manual_seed(0))
    d = x[0].numel()
    assert ((y.reshape(len(y), -1) == 0).sum(1) == round(p * d)).all()
    assert torch.allclose(norms(y), norms(x), rtol=1e-6)


def test_dropout_same_seed_same_output():
    x = feats()
    a = analysis.dropout(x, 0.5, torch.Generator().manual_seed(3))
    b = analysis.dropout(x, 0.5, torch.Generator().manual_seed(3))
    c = analysis.dropout(x, 0.5, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_drop_least_zeroes_the_smallest_nonzero():
    x = torch.tensor([[0.0, 5.0, 1.0, 3.0, 0.0, 2.0, 4.0]])
    y = analysis.drop_least(x, 0.4)  # 5 non-zero -> round(2.0) = 2 smallest: 1.0 and 2.0
    assert y.tolist() == [[0.0, 5.0, 0.0, 3.0, 0.0, 0.0, 4.0]]


def test_keep_and_zero_top_k_with_ties():
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0, 0.0]])
    assert analysis.keep_top(x, 2).tolist() == [[0.0, 3.0, 3.0, 0.0, 0.0, 0.0]]  # ties: lower index first
    assert analysis.zero_top(x, 2).tolist() == [[1.0, 0.0, 0.0, 2.0, 3.0, 0.0]]
    k = analysis.keep_top(feats(), 7)
    assert ((k.reshape(4, -1) != 0).sum(1) == 7).all()


def test_interpolation_end_points_are_the_inputs():
    a, b = feats(0), feats(1)
    y = analysis.interpolate(a, b, 5)
    assert y.shape == (20,) + a.shape[1:]
    assert torch.equal(y[0], a[0]) and torch.equal(y[4], b[0]) and torch.equal(y[19], b[3])
    assert torch.allclose(y[2], (a[0] + b[0]) / 2)


def test_histogram_samples_match_sparsity():
    x = feats(n=400, sparsity=0.7)
    stats = analysis.fit_histograms(x)
    s = analysis.sample_histograms(stats, 400, generator=torch.Generator().manual_seed(0))
    data_sparsity = float((x == 0).double().mean())
    assert abs(float((s == 0).double().mean()) - data_sparsity) < 0.02
    assert s.min() >= 0 and s.max() <= x.max() + 1e-6


def test_contrast_leaves_keypoint_geometry_as_drawn():
    s = torch.rand(3, 133 * 2 * 2) + 0.1
    assert torch.equal(analysis.raise_contrast(s, [532], 2.0), 2 * s)  # plain vectors: all scaled
    out = analysis.raise_contrast(s, [133, 2, 2], 2.0, geometry=5).view(3, 133, 2, 2)
    assert torch.equal(out[:, :128], 2 * s.view(3, 133, 2, 2)[:, :128])
    assert torch.equal(out[:, 128:], s.view(3, 133, 2, 2)[:, 128:])


def test_truncated_gaussian_recovers_its_parameters():
    g = torch.Generator().manual_seed(0)
    x = torch.clamp_min(-0.5 + torch.randn(2000, 50, generator=g), 0)
    mu, sigma, truncated = analysis.fit_gaussian(x).tolist()
    assert truncated == 1 and abs(mu + 0.5) < 0.05 and abs(sigma - 1) < 0.05
    s = analysis.sample_gaussian(torch.tensor([mu, sigma, 1.0]), 500, 50, torch.Generator().manual_seed(1))
    assert abs(float((s == 0).double().mean()) - float((x == 0).double().mean())) < 0.02
