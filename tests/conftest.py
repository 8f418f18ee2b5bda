"""Fixtures: small real images from scikit-image, a tiny trained model, and a CLI runner."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# VLFeat 0.9.21's own vl_hog and vl_lbp outputs on seven images (tests/fixtures/README-vlfeat.md): in the
# repository, so a fresh clone checks the README's "matches VLFeat" claim.
REFERENCE = ROOT / "tests" / "fixtures" / "vlfeat_hog_lbp.npz"
DATA = SHARED / "data" / "imagenet-sample"
REFERENCE_NAMES = ["camera", "astronaut", "chelsea", "coffee", "noise_97x123", "crop_64", "flat_40x56"]


def pytest_collection_modifyitems(config, items):
    if os.environ.get("FEATINV_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow test (training, packaging); set FEATINV_SLOW=1 (make test-all)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def operators_built():
    """Compile (or load) the operators before any test: on a fresh machine the first command that
    needs them prints a build notice, which would otherwise land in whichever test comes first."""
    from featinv_cli import ops

    ops.build()


def train_config(image_dir, out, **kw):
    """A tiny TrainConfig for tests. It pins the network, schedule and precision the training tests
    were measured with, whatever `featinv train`'s automatic choices (TrainConfig's defaults) are:
    fp32 for bit-exact runs, low-res even with --init."""
    from featinv_cli.settings import TrainConfig

    base = dict(feature="hog", data=str(image_dir), output=str(out), arch="paper", width=0.125, crop=64, batch=4,
                steps=6, workers=0, checkpoint_every=2, dtype="float32", low_res=0.7, device="cpu", precision="fp32")
    base.update(kw)
    return TrainConfig(**base)


def model_weights(path) -> dict:
    """The tensors of a model file."""
    from featinv_cli.formats.model import load_model

    return load_model(path).state


def photo(name: str, size: int | None = None) -> np.ndarray:
    from skimage import data

    arr = getattr(data, name)()
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if size:
        arr = arr[:size, :size]
    return np.ascontiguousarray(arr)


@pytest.fixture
def photos(tmp_path) -> dict[str, Path]:
    """A few bundled photographs written as files: the kind of input a user has."""
    import imageio.v3 as iio

    out = {}
    for name, ext in (("chelsea", ".jpg"), ("astronaut", ".png"), ("coffee", ".png")):
        p = tmp_path / f"{name}{ext}"
        iio.imwrite(p, photo(name))
        out[name] = p
    return out


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """Eight small crops of bundled photographs: enough to run the training loop."""
    import imageio.v3 as iio

    d = tmp_path_factory.mktemp("train")
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    for i, name in enumerate(names):
        arr = photo(name)
        iio.imwrite(d / f"{i}a_{name}.png", arr[:96, :112])
        iio.imwrite(d / f"{i}b_{name}.png", arr[-100:, -90:])
    return d


@pytest.fixture(scope="session")
def tiny_model(image_dir, tmp_path_factory) -> Path:
    """A HOG inverter trained for three steps: real file, real format, meaningless weights."""
    from featinv_cli.train import TrainConfig, train

    out = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    train(TrainConfig(feature="hog", data=str(image_dir), output=str(out), arch="paper", width=0.125, crop=64,
                      batch=4, steps=3, workers=0, checkpoint_every=100, device="cpu", precision="fp32"))
    return out


@pytest.fixture(scope="session")
def reference():
    """VLFeat's own HOG and LBP outputs on seven images (../shared/reference)."""
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} not present")
    return np.load(REFERENCE)


class Result:
    def __init__(self, code: int, out: bytes, err: str):
        self.code, self.out, self.err = code, out, err

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")


@pytest.fixture
def cli(capfdbinary, monkeypatch):
    """Run ``featinv ARGS`` in-process through the real entry point; returns code, stdout, stderr."""
    from featinv_cli.cli import main

    def run(*args: str, stdin: bytes | None = None) -> Result:
        if stdin is not None:
            import io

            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        captured = capfdbinary.readouterr()
        return Result(code, captured.out, captured.err.decode(errors="replace"))

    return run


def one_line_error(result: Result) -> str:
    """Assert the CLI failed the way README says: non-zero, one line on stderr, no traceback."""
    assert result.code != 0, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("featinv: error: "), result.err
    assert "Traceback" not in result.err
    return lines[0]


# featinv follows the machine's load with its thread count unless told; tests compare runs bit for bit,
# which needs one thread count (in this process and in the featinv processes tests start).
os.environ["OMP_NUM_THREADS"] = "2"


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
