"""invert --method refine: the learned reconstruction, then the optimisation's steps from it, a batch
at once; and HOG's gradient, which the refinement of an 8-bit image needs finite at flat regions."""
import torch

from conftest import one_line_error, photo
from featinv_cli.data import eval_view
from featinv_cli.features import parse_spec
from featinv_cli.features.hog import uoctti_hog_torch
from featinv_cli.images import image_from_array
from featinv_cli.optimize import REFINE_STEPS, OptimizeConfig, descend, refine


def test_hog_gradient_is_finite_on_flat_regions():
    """A constant image, a constant region beside an edge, an 8-bit photo: no NaN, and the features are
    still VLFeat's (the values at flat pixels are untouched: 0)."""
    edge = torch.full((1, 3, 48, 64), 0.25)
    edge[..., 32:] = 0.75
    eight_bit = (eval_view(image_from_array(photo("coffee")), 64) * 255).round()[None] / 255
    for image in (torch.full((1, 3, 40, 40), 0.5), edge, eight_bit):
        x = image.clone().requires_grad_(True)
        uoctti_hog_torch(x).pow(2).sum().backward()
        assert torch.isfinite(x.grad).all()
    assert torch.equal(uoctti_hog_torch(edge), parse_spec("hog")(edge))  # the compiled op, or the same torch one


def test_a_batch_is_each_image_on_its_own():
    """One optimisation over a batch gives every image what it gets alone (the loss is a sum of
    per-image terms; Adam is elementwise), up to float rounding: the batched convolution sums in another
    order, and Adam's first steps (about lr times the gradient's sign) turn a gradient of nearly zero
    rounded either way into +-lr at a few pixels."""
    e = parse_spec("squeezenet:conv1")
    views = torch.stack([eval_view(image_from_array(photo(n)), 48) for n in ("coffee", "astronaut", "chelsea")])
    target = e(views)
    start = views.mean(dim=(2, 3), keepdim=True).expand_as(views).contiguous()
    cfg = OptimizeConfig(steps=3, lr=0.01)
    together, _ = descend(e, start, target, cfg, anchor=start)
    alone = torch.cat([descend(e, start[i:i + 1], target[i:i + 1], cfg, anchor=start[i:i + 1])[0] for i in range(3)])
    assert (together - alone).abs().mean() < 1e-4
    assert ((together - alone).abs() > 1e-3).float().mean() < 0.02
    mixed = descend(e, start, target.roll(1, 0), cfg, anchor=start)[0]  # each image another's target
    assert (mixed - alone).abs().mean() > 10 * (together - alone).abs().mean()


def test_refine_lowers_the_error_of_a_low_layer():
    """From a blurred estimate (what a learned inverter gives), conv1's features pull the image back
    towards the photo: the error falls."""
    from torch.nn import functional as F

    e = parse_spec("squeezenet:conv1")
    view = eval_view(image_from_array(photo("astronaut")), 64)[None]
    blurred = F.avg_pool2d(F.pad(view, (3, 3, 3, 3), mode="replicate"), 7, stride=1)
    refined = refine(e, e(view), blurred, OptimizeConfig(steps=30, lr=0.01))
    before, after = (float((x - view).norm()) for x in (blurred, refined))
    assert after < 0.8 * before, (before, after)


def test_refine_on_the_command_line(cli, photos, tmp_path):
    f = tmp_path / "c1.safetensors"
    assert cli("extract", "squeezenet:conv1", photos["coffee"], photos["astronaut"], "--resize", "64", "--crop", "64",
               "-o", f).code == 0
    r = cli("invert", f, "--method", "refine", "--optimize-steps", "2", "-o", tmp_path / "r.png")
    assert r.code == 0, r.err
    assert REFINE_STEPS["squeezenet:conv1"] > 0 and "squeezenet:fire9" not in REFINE_STEPS
    f9 = tmp_path / "f9.safetensors"
    assert cli("extract", "squeezenet:fire9", photos["coffee"], "-o", f9).code == 0
    r = cli("invert", f9, "--method", "refine", "-o", tmp_path / "k.png")
    assert r.code == 0 and "learned reconstruction is kept" in r.err
    learned = tmp_path / "l.png"
    assert cli("invert", f9, "-o", learned).code == 0
    assert (tmp_path / "k.png").read_bytes() == learned.read_bytes()  # kept as it is, to the byte
    for feature in ("lbp", "sift"):
        g = tmp_path / f"{feature}.safetensors"
        assert cli("extract", feature, photos["chelsea"], "-o", g).code == 0
        msg = one_line_error(cli("invert", g, "--method", "refine", "-o", tmp_path / "x.png"))
        assert "gradients" in msg and "learned inverter" in msg
    r = cli("invert", f, "--method", "refine", "--grid-size", "-o", tmp_path / "x.png")
    assert r.code == 2 and "--grid-size" in r.err
    r = cli("invert", f, "--optimize-steps", "5", "-o", tmp_path / "x.png")
    assert r.code == 2 and "--method optimize or refine" in r.err
