"""featinv's operators (grid_bin, hog, lbp): every implementation gives the same result, bit for bit,
each input check runs once for all of them, and the ops are well formed."""
import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from featinv_cli import ops


def random_case(seed, n=3, per=400, height=61, width=83, d=16, outside=True):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, per, (n,), generator=g)
    counts[0] = 0  # an empty image
    k = int(counts.sum())
    kp = torch.rand(k, 4, generator=g)
    margin = 6.0 if outside else 0.0
    kp[:, 0] = kp[:, 0] * (width + 2 * margin) - margin
    kp[:, 1] = kp[:, 1] * (height + 2 * margin) - margin
    kp[:, 2] = kp[:, 2] * 8 + 0.1
    kp[:, 3] = kp[:, 3] * 6.2831853
    if k > 4:  # exactly on borders and on cell corners
        kp[0, :2] = torch.tensor([0.0, 0.0])
        kp[1, :2] = torch.tensor([width - 1e-3, height - 1e-3])
        kp[2, :2] = torch.tensor([float(width), 4.0])  # just outside
        kp[3, :2] = torch.tensor([8.0, 12.0])
    desc = torch.rand(k, d, generator=g)
    return kp, desc, counts, height, width


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_extension_matches_the_torch_version_bit_for_bit(seed):
    if ops.build() != "extension":
        pytest.skip(f"C++ extension unavailable: {ops.status()['reason']}")
    case = random_case(seed)
    for cell in (4, 3, 8):
        a = torch.ops.featinv.grid_bin(*case, cell, seed)
        b = ops.grid_bin_torch(*case, cell, seed)
        assert a.dtype == torch.float32 and torch.equal(a, b)


def test_torch_version_matches_python_loop():
    kp, desc, counts, h, w = random_case(5, n=2, per=60, d=4)
    assert torch.equal(ops.grid_bin_torch(kp, desc, counts, h, w, 4, 3),
                       ops.grid_bin_loop(kp, desc, counts, h, w, 4, 3))


def test_many_keypoints_per_cell_one_winner_and_seed_matters():
    kp = torch.tensor([[1.0, 1.0, 1.0, 0.0]] * 50)
    kp[:, 0] += torch.linspace(0, 2.9, 50)
    desc = torch.arange(50, dtype=torch.float32).view(50, 1)
    counts = torch.tensor([50])
    winners = {int(ops.grid_bin(kp, desc, counts, 4, 4, 4, s)[0, 0, 0, 0]) for s in range(20)}
    assert len(winners) > 5  # a different seed picks a different keypoint
    out = ops.grid_bin(kp, desc, counts, 4, 4, 4, 0)
    assert out.shape == (1, 6, 1, 1)
    w = int(out[0, 0, 0, 0])
    assert out[0, 1, 0, 0] == kp[w, 0]  # x mod 4 of the winner itself


def test_an_images_grid_does_not_depend_on_its_batch():
    """The winner of a shared cell is drawn from the keypoint's rank in its own image, so a photo binned
    alone, first or last of a batch gets the same grid (extract a.jpg == row 0 of extract a.jpg b.jpg)."""
    g = torch.Generator().manual_seed(7)
    counts, h, w = torch.tensor([200, 150, 250]), 23, 31  # 48 cells: nearly every cell is shared
    k = int(counts.sum())
    kp = torch.rand(k, 4, generator=g) * torch.tensor([w, h, 8.0, 6.28]) + torch.tensor([0, 0, 0.1, 0])
    desc = torch.rand(k, 8, generator=g)
    together = ops.grid_bin(kp, desc, counts, h, w, 4, 0)
    start = 0
    for i, c in enumerate(counts.tolist()):
        alone = ops.grid_bin(kp[start:start + c], desc[start:start + c], torch.tensor([c]), h, w, 4, 0)
        assert torch.equal(alone[0], together[i]), i
        reordered = torch.cat([counts[i:i + 1], counts[:i], counts[i + 1:]])
        order = torch.cat([torch.arange(start, start + c), torch.arange(0, start), torch.arange(start + c, k)])
        assert torch.equal(ops.grid_bin(kp[order], desc[order], reordered, h, w, 4, 0)[0], together[i]), i
        start += c


def test_cell_vector_and_empty_cells():
    kp = torch.tensor([[5.5, 2.25, 2.0, 0.5]])
    out = ops.grid_bin(kp, torch.ones(1, 3), torch.tensor([1]), 8, 12, 4, 0)
    assert out.shape == (1, 8, 2, 3)
    v = out[0, :, 0, 1]
    expected = torch.tensor([1, 1, 1, 1.5, 2.25, torch.sin(torch.tensor(0.5)), torch.cos(torch.tensor(0.5)),
                             torch.log(torch.tensor(2.0))])
    assert torch.allclose(v, expected)
    assert out.abs().sum() == v.abs().sum()  # every other cell stays zero


def test_keypoints_outside_the_image_never_land():
    h, w = 16, 20
    kp = torch.tensor([[-0.5, 3.0, 2.0, 0.1], [float(w), 3.0, 2.0, 0.1], [5.0, float(h), 2.0, 0.1],
                       [5.0, -1e-3, 2.0, 0.1], [float("nan"), 1.0, 2.0, 0.1]])
    out = ops.grid_bin(kp, torch.ones(5, 2), torch.tensor([5]), h, w, 4, 0)
    assert out.abs().sum() == 0
    inside = torch.cat([kp, torch.tensor([[w - 1e-3, h - 1e-3, 2.0, 0.1]])])
    out = ops.grid_bin(inside, torch.ones(6, 2), torch.tensor([6]), h, w, 4, 0)
    assert (out[0, 0] != 0).sum() == 1 and out[0, 0, -1, -1] == 1  # only the last one, in the corner cell


def image_cases():
    g = torch.Generator().manual_seed(0)
    yield torch.rand(1, 1, 61, 83, generator=g)  # odd sizes, one gray image
    yield torch.rand(5, 3, 40, 56, generator=g)  # a batch of RGB images
    yield torch.rand(2, 3, 130, 97, generator=g) * 7.0  # any intensity scale
    flat = torch.full((1, 1, 33, 35), 0.5)
    flat[0, 0, 10:20, 5:25] = 0.75  # equal neighbours (ties) and large flat areas
    yield flat


def test_opcheck_in_a_fresh_process():
    """Kernels are registered at import: torch.library.opcheck of every op works before anything else
    has run (it used to fail run alone, when the CPU kernel appeared only after ops.build())."""
    code = ("import torch; from featinv_cli.features import hog, lbp; from tests.test_ops import random_case; "
            "from featinv_cli import ops; x = torch.rand(2, 3, 40, 48); "
            "torch.library.opcheck(torch.ops.featinv.grid_bin.default, (*random_case(3, n=2, per=50), 4, 0)); "
            "torch.library.opcheck(torch.ops.featinv.hog.default, (x, 8, 9)); "
            "torch.library.opcheck(torch.ops.featinv.lbp.default, (x, 16)); print(ops.status()['backend'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")])))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] in ("extension", "torch")


@pytest.mark.parametrize("op", ["hog", "lbp"])
def test_hog_lbp_extension_matches_torch_version_bit_for_bit(op):
    from featinv_cli.features import hog, lbp

    if ops.build() != "extension":
        pytest.skip(f"C++ extension unavailable: {ops.status()['reason']}")
    compiled, torch_version, args = {"hog": (ops.implementation("hog", "cpu"), hog.uoctti_hog_torch, (8, 9)),
                                     "lbp": (ops.implementation("lbp", "cpu"), lbp.vl_lbp_torch, (16,))}[op]
    assert compiled is not torch_version
    for x in image_cases():
        if op == "lbp" and min(x.shape[2:]) < 16:
            continue
        a, b = compiled(x, *args), torch_version(x, *args)
        assert a.dtype == torch.float32 and torch.equal(a, b), (op, tuple(x.shape))
        for cell, orientations in ((4, 6), (5, 7), (3, 9)):  # other parameters, odd cells too, every image
            if op == "hog":
                assert torch.equal(compiled(x, cell, orientations), torch_version(x, cell, orientations))
            elif min(x.shape[2:]) >= cell:
                assert torch.equal(compiled(x, cell), torch_version(x, cell)), (cell, tuple(x.shape))


def test_one_input_check_for_every_implementation():
    """Bad input is refused with the same message whichever implementation would run (the CUDA binding
    once accepted negative counts that the CPU one refused)."""
    from featinv_cli.features import hog, lbp

    kp, desc, counts, h, w = random_case(0, n=2, per=20)
    bad = torch.tensor([int(counts.sum()) + 1, -1])
    for fn in (torch.ops.featinv.grid_bin, ops.grid_bin_torch):
        with pytest.raises(Exception, match="non-negative"):
            fn(kp, desc, bad, h, w, 4, 0)
    for fn in (torch.ops.featinv.hog, hog.uoctti_hog_torch):
        with pytest.raises(Exception, match=r"\(N, 1 or 3, H, W\)"):
            fn(torch.rand(2, 40, 40), 8, 9)
        with pytest.raises(Exception, match="orientations <= 127"):
            fn(torch.rand(1, 1, 40, 40), 8, 200)  # bins are bytes in the C++ kernel
    for fn in (torch.ops.featinv.lbp, lbp.vl_lbp_torch):
        with pytest.raises(Exception, match="no 16x16 LBP cell"):
            fn(torch.rand(1, 1, 12, 40), 16)


def test_hog_keeps_its_gradient():
    """invert --method optimize needs d(HOG)/d(pixels): with gradients on, the torch version runs."""
    from featinv_cli.features.hog import uoctti_hog

    x = torch.rand(1, 3, 32, 40, requires_grad=True)
    f = uoctti_hog(x)
    f.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(f.detach(), uoctti_hog(x.detach()))


def test_torch_compile():
    case = random_case(4, n=2, per=50)
    ops.build()
    f = torch.compile(lambda *a: torch.ops.featinv.grid_bin(*a, 4, 0) * 2, backend="eager", fullgraph=True)
    assert torch.equal(f(*case), ops.grid_bin_torch(*case, 4, 0) * 2)


def test_fallback_without_extension_gives_same_result(tmp_path):
    """Where no compiler exists the pure-torch version is registered and answers identically."""
    code = ("import torch; from featinv_cli import ops; from featinv_cli.features import parse_spec; "
            "from tests.test_ops import random_case; c = random_case(0); x = torch.rand(3, 3, 64, 80, "
            "generator=torch.Generator().manual_seed(0)); ops.build(); print(ops.status()['backend']); "
            "torch.save([ops.grid_bin(*c, 4, 0), parse_spec('hog')(x), parse_spec('lbp')(x)], %r)"
            % str(tmp_path / "fallback.pt"))
    env = dict(os.environ, CXX="/nonexistent/c++", CC="/nonexistent/cc",
               FEATINV_CACHE=str(tmp_path / "ext"),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "torch"
    assert "using their torch versions" in r.stderr
    grid, hog, lbp = torch.load(tmp_path / "fallback.pt")
    assert torch.equal(grid, ops.grid_bin(*random_case(0), 4, 0))
    x = torch.rand(3, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    assert torch.equal(hog, torch.ops.featinv.hog(x, 8, 9)) and torch.equal(lbp, torch.ops.featinv.lbp(x, 16))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_source_compiles_with_nvcc(tmp_path):
    r = subprocess.run(["nvcc", "-std=c++17", "-c", str(ROOT / "kernels" / "grid_bin.cu"),
                        "-o", str(tmp_path / "grid_bin.o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_the_torch_version():
    case = random_case(1, n=4, per=3000, height=480, width=640, d=128)
    gpu = [t.cuda() if isinstance(t, torch.Tensor) else t for t in case]
    a = ops.grid_bin(*gpu, 4, 0).cpu()
    assert torch.equal(a, ops.grid_bin_torch(*case, 4, 0))
    bad = gpu[2].clone()
    bad[0], bad[1] = -1, bad[1] + 1
    with pytest.raises(Exception, match="non-negative"):
        ops.grid_bin(gpu[0], gpu[1], bad, 480, 640, 4, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_hog_lbp_on_the_gpu_match_the_cpu():
    for x in image_cases():
        assert torch.equal(torch.ops.featinv.hog(x.cuda(), 8, 9).cpu(), torch.ops.featinv.hog(x, 8, 9))
        if min(x.shape[2:]) >= 16:
            assert torch.equal(torch.ops.featinv.lbp(x.cuda(), 16).cpu(), torch.ops.featinv.lbp(x, 16))


def test_a_built_module_loads_quietly_from_a_cache_it_cannot_write(tmp_path, monkeypatch, capfd):
    """A cached build is imported as it is: no line, no lock file, no ninja run, so a read-only cache (a
    shared or mounted one) serves; a first build says so in one line, with the folder."""
    if ops.build() != "extension":
        pytest.skip(f"C++ extension unavailable: {ops.status()['reason']}")
    built = Path(ops._state["module"].__file__)
    monkeypatch.setenv("FEATINV_CACHE", str(tmp_path))
    monkeypatch.setattr(ops, "_state", {"backend": None, "reason": None, "module": None})
    where = ops.build_directory(ops.build_name())
    where.mkdir(parents=True)
    shutil.copyfile(built, where / built.name)
    capfd.readouterr()
    assert ops.build() == "extension" and capfd.readouterr().err == ""
    assert sorted(p.name for p in where.iterdir()) == [built.name]  # no lock, no build files
    ops._prepare(where, "x")
    assert capfd.readouterr().err.startswith("featinv: note: building the featinv operators once")


def test_a_failed_build_is_remembered_until_kernels_tries_again(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("FEATINV_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setattr(ops, "_state", {"backend": None, "reason": None, "module": None})
    where = ops.build_directory(ops.build_name())
    where.mkdir(parents=True)
    (where / ops.FAILED).write_text("g++: internal compiler error")
    capfd.readouterr()
    assert ops.build() == "torch" and "internal compiler error" in ops.status()["reason"]
    assert capfd.readouterr().err == ""  # said when it failed; not again on every command
    assert ops.build(retry=True) == "torch" and "no C++ compiler (/nonexistent/c++)" in ops.status()["reason"]
    assert not (where / ops.FAILED).exists() and "could not build" in capfd.readouterr().err
    r = subprocess.run([sys.executable, "-m", "featinv_cli", "kernels"], capture_output=True, text=True, timeout=300,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 1 and "torch versions" in r.stdout  # asked to build, and it could not


def test_the_cache_name_changes_with_torch(monkeypatch):
    """A module built against another torch must not be loaded into this one."""
    name = ops.build_name()
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert ops.build_name() != name


def test_grid_bin_refuses_fractional_counts():
    kp, desc, counts = random_case(0)[:3]
    with pytest.raises(Exception, match="integer"):  # C++ truncated 1.5 to 1 and dropped a keypoint
        torch.ops.featinv.grid_bin(kp, desc, counts.double(), 64, 64, 4, 0)


def test_a_lock_left_by_a_killed_build_is_removed(tmp_path, monkeypatch, capfd):
    """torch waits for ever on the lock file of a build that was killed; an old one is removed."""
    import os
    import time

    from featinv_cli import ops

    monkeypatch.setenv("FEATINV_CACHE", str(tmp_path))
    where = ops.build_directory("featinv_lock_test")
    where.mkdir(parents=True)
    (where / "featinv_lock_test.so").write_bytes(b"")
    lock = where / "lock"
    lock.write_bytes(b"")
    ops._prepare(where, "featinv_lock_test")
    assert lock.exists()  # a fresh lock belongs to a build in progress
    old = time.time() - ops.STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    ops._prepare(where, "featinv_lock_test")
    assert not lock.exists() and "left by a build that was stopped" in capfd.readouterr().err


@pytest.mark.parametrize("value, refused", [("", False), ("0", False), ("false", False), ("No", False),
                                            ("off", False), ("1", True), ("yes", True)])
def test_no_extension_reads_like_a_switch(monkeypatch, value, refused):
    """FEATINV_NO_EXTENSION=0 or =false leaves the compiled operators on; before, any value turned them off."""
    monkeypatch.setenv("FEATINV_NO_EXTENSION", value)
    assert ops.extension_refused() is refused
