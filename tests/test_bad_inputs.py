"""Hostile inputs: every one gives one line on stderr, a non-zero exit, no traceback, and no file
under the output name. Odd but valid images (16-bit, gray, RGBA, palette) simply work."""
import io
import os
import json
import struct

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import one_line_error, photo
from featinv_cli.errors import FeatinvError
from featinv_cli.formats.features import FeatureFile, features_from_bytes, save_features
from featinv_cli.formats.model import load_model
from featinv_cli.safetensors_codec import parse_safetensors


@pytest.fixture
def hog_file(cli, photos, tmp_path):
    f = tmp_path / "h.safetensors"
    assert cli("extract", "hog", photos["astronaut"], "--resize", "64", "--crop", "64", "-o", f).code == 0
    return f


def fails_cleanly(result, out):
    msg = one_line_error(result)
    assert not out.exists(), f"{out} was left behind"
    return msg


# ------------------------------------------------------------------------------------------ images

@pytest.mark.parametrize("damage", ["truncated", "corrupted", "empty", "text"])
def test_damaged_images(cli, photos, tmp_path, damage):
    good = photos["astronaut"].read_bytes()
    data = {"truncated": good[: len(good) // 3], "corrupted": good[:40] + bytes(range(256)) * 20,
            "empty": b"", "text": b"hello, not an image"}[damage]
    bad = tmp_path / f"bad_{damage}.png"
    bad.write_bytes(data)
    out = tmp_path / "f.safetensors"
    assert "bad_" in fails_cleanly(cli("extract", "hog", bad, "-o", out), out)


@pytest.mark.parametrize("shape", [(1, 1), (1, 1, 3), (3, 200)])
def test_tiny_images(cli, tmp_path, shape):
    img = tmp_path / "tiny.png"
    iio.imwrite(img, np.full(shape, 128, np.uint8))
    out = tmp_path / "f.safetensors"
    assert "too small" in fails_cleanly(cli("extract", "hog", img, "-o", out), out)


def test_odd_but_valid_image_kinds_work(cli, tmp_path):
    rgb = photo("astronaut")[:64, :64]
    gray8 = np.round(rgb @ [0.2125, 0.7154, 0.0721]).astype(np.uint8)
    files = {
        "gray.png": gray8,
        "gray16.png": gray8.astype(np.uint16) * 257,
        "rgba.png": np.concatenate([np.repeat(gray8[..., None], 3, 2), np.full((64, 64, 1), 9, np.uint8)], 2),
    }
    for name, arr in files.items():
        iio.imwrite(tmp_path / name, arr)
    from PIL import Image

    Image.fromarray(gray8).convert("P").save(tmp_path / "palette.png")
    feats = {}
    for name in list(files) + ["palette.png"]:
        out = tmp_path / f"{name}.safetensors"
        r = cli("extract", "hog", tmp_path / name, "-o", out)
        assert r.code == 0, r.err
        feats[name] = features_from_bytes(out.read_bytes(), name).features
    for name, f in feats.items():  # all are the same gray picture, so the same HOG
        assert torch.allclose(f, feats["gray.png"], atol=1e-3), name


# -------------------------------------------------------------------------------- feature files

@pytest.mark.parametrize("cut", [0, 7, 9, 100, -1])
def test_truncated_feature_files(cli, hog_file, tmp_path, tiny_model, cut):
    data = hog_file.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:cut] if cut >= 0 else data[:-1])
    out = tmp_path / "r.png"
    fails_cleanly(cli("invert", bad, "-m", tiny_model, "-o", out), out)
    fails_cleanly(cli("perturb", bad, "--binarize", "-o", out), out)
    one_line_error(cli("info", bad))


def test_corrupted_header(cli, hog_file, tmp_path, tiny_model):
    data = bytearray(hog_file.read_bytes())
    data[8:20] = b"{{{{{{{{{{{{"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    out = tmp_path / "r.png"
    assert "JSON" in fails_cleanly(cli("invert", bad, "-m", tiny_model, "-o", out), out)


def test_truncated_npy(cli, tmp_path, tiny_model):
    buf = io.BytesIO()
    np.save(buf, np.random.rand(1, 31, 8, 8).astype(np.float32))
    bad = tmp_path / "cut.npy"
    bad.write_bytes(buf.getvalue()[:-50])
    out = tmp_path / "r.png"
    assert ".npy" in fails_cleanly(cli("invert", bad, "-m", tiny_model, "-o", out), out)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_nan_and_inf_features(cli, tmp_path, tiny_model, value, suffix):
    f = torch.rand(1, 31, 8, 8)
    f[0, 3, 2, 2] = value
    path = tmp_path / f"f{suffix}"
    save_features(path, FeatureFile(f, "hog", {"cell": 8, "orientations": 9}, (64, 64)))
    out = tmp_path / "r.png"
    assert "NaN or Inf" in fails_cleanly(cli("invert", path, "-m", tiny_model, "-o", out), out)
    perturbed = tmp_path / f"p{suffix}"
    assert "NaN or Inf" in fails_cleanly(cli("perturb", path, "--scale", "2", "-o", perturbed), perturbed)


def test_metadata_from_another_extractor(cli, hog_file, tmp_path, tiny_model):
    """A file whose metadata says LBP while the tensor has HOG's 31 channels."""
    tensors, meta = parse_safetensors(hog_file.read_bytes(), "h")
    meta["feature"], meta["params"] = "lbp", json.dumps({"cell": 16})
    bad = tmp_path / "lying.safetensors"
    from featinv_cli.safetensors_codec import encode_safetensors

    bad.write_bytes(encode_safetensors(tensors, meta))
    out = tmp_path / "r.png"
    assert "58 channels" in fails_cleanly(cli("invert", bad, "-m", tiny_model, "-o", out), out)


def test_wrong_image_size_metadata(cli, hog_file, tmp_path, tiny_model):
    tensors, meta = parse_safetensors(hog_file.read_bytes(), "h")
    meta["image_size"] = "[640, 480]"
    bad = tmp_path / "size.safetensors"
    from featinv_cli.safetensors_codec import encode_safetensors

    bad.write_bytes(encode_safetensors(tensors, meta))
    out = tmp_path / "r.png"
    assert "grid" in fails_cleanly(cli("invert", bad, "-m", tiny_model, "-o", out), out)


# ---------------------------------------------------------------------------------- model files

@pytest.mark.parametrize("tamper", ["drop-arch", "bad-arch-json", "other-format", "in-channels"])
def test_tampered_model_metadata(cli, hog_file, tmp_path, tiny_model, tamper):
    from featinv_cli.safetensors_codec import encode_safetensors

    tensors, meta = parse_safetensors(tiny_model.read_bytes(), "m")
    if tamper == "drop-arch":
        del meta["arch"]
    elif tamper == "bad-arch-json":
        meta["arch"] = "{not json"
    elif tamper == "other-format":
        meta["format"] = "somebody-else/3"
    else:
        arch = json.loads(meta["arch"])
        arch["in_channels"] = 58
        meta["arch"] = json.dumps(arch)
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(encode_safetensors(tensors, meta))
    out = tmp_path / "r.png"
    fails_cleanly(cli("invert", hog_file, "-m", bad, "-o", out), out)


def test_model_without_metadata(cli, hog_file, tmp_path):
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(3)}, str(bare))
    out = tmp_path / "r.png"
    assert "not a featinv model" in fails_cleanly(cli("invert", hog_file, "-m", bare, "-o", out), out)


class _Tripwire:
    """Unpickling this writes a file: the visible side effect a hostile pickle would have."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickle_is_never_loaded(cli, tmp_path, photos):
    """A pickle offered as a model or as CNN weights is refused, and never unpickled (no side effect)."""
    import pickle

    tripwire = tmp_path / "pwned"
    payload = pickle.dumps(_Tripwire(tripwire))
    pickle.loads(payload)  # the tripwire works ...
    assert tripwire.exists()
    tripwire.unlink()
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(payload)
    with pytest.raises(FeatinvError):
        load_model(evil)
    evil_pth = tmp_path / "evil.pth"
    evil_pth.write_bytes(payload)
    one_line_error(cli("extract", "alexnet:fc6", photos["chelsea"], "--weights", evil_pth, "-o",
                       tmp_path / "f.safetensors"))
    assert not tripwire.exists()  # ... and featinv never set it off


# ------------------------------------------------------------------------------------ outputs

def test_unwritable_output_paths(cli, photos, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for out in (blocker / "inside.safetensors", tmp_path / "missing" / "f.safetensors"):
        fails_cleanly(cli("extract", "hog", photos["astronaut"], "-o", out), out)


def test_output_equal_to_input_everywhere(cli, hog_file, tiny_model):
    before = hog_file.read_bytes()
    for args in (["perturb", hog_file, "--scale", "2", "-o", hog_file],
                 ["interpolate", hog_file, hog_file, "-o", hog_file],
                 ["sample", hog_file, "-o", hog_file],
                 ["invert", hog_file, "-m", tiny_model, "-o", tiny_model]):
        assert "overwrite an input" in one_line_error(cli(*args))
    assert hog_file.read_bytes() == before


# --------------------------------------------------------------------------------------- fuzzing

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_feature_bytes_only_ever_raise_featinv_error(data):
    try:
        features_from_bytes(data, "fuzz")
    except FeatinvError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**64 - 1), st.binary(max_size=200))
def test_fuzz_safetensors_header_lengths(length, rest):
    try:
        features_from_bytes(struct.pack("<Q", length) + rest, "fuzz.safetensors")
    except FeatinvError:
        pass


def _valid_header() -> tuple[dict, bytes]:
    """The header (as JSON) and the data section of a valid feature file with SIFT's raw arrays."""
    ff = FeatureFile(torch.rand(2, 31, 3, 4), feature="hog", params={"cell": 8, "orientations": 9},
                     image_size=(24, 32), sources=["a.png", "b.png"], extra={"counts": torch.tensor([1, 2])})
    from featinv_cli.safetensors_codec import safetensors_chunks

    data = b"".join(bytes(c) for c in safetensors_chunks({"features": ff.features, **ff.extra}, ff.metadata()))
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


_FIELD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64), st.floats(allow_nan=True),
                          st.text(max_size=12), st.lists(st.integers(-5, 2**40), max_size=5),
                          st.sampled_from(["F32", "I64", "U8", "BF16", "F64", "X9", ""]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["dtype", "shape", "data_offsets"]), st.sampled_from(["features", "counts"]), _FIELD_VALUES,
       st.sampled_from(["format", "feature", "params", "image_size", "sources", "history", "labels"]), _FIELD_VALUES,
       st.booleans())
def test_fuzz_header_fields_of_a_valid_file(entry_key, tensor, entry_value, meta_key, meta_value, which):
    """A real feature file with one header field replaced (a tensor's dtype, shape or offsets, or a
    metadata value): every such file is refused as a FeatinvError or read consistently, never a crash."""
    header, body = _valid_header()
    if which:
        header[tensor][entry_key] = entry_value
    else:
        header["__metadata__"][meta_key] = meta_value if isinstance(meta_value, str) else json.dumps(meta_value)
    text = json.dumps(header).encode()
    try:
        ff = features_from_bytes(struct.pack("<Q", len(text)) + text + body, "fuzz.safetensors")
    except FeatinvError:
        return
    assert ff.features.dtype == torch.float32 and ff.features.ndim in (2, 4)


def _valid_files() -> tuple[bytes, bytes]:
    """A valid safetensors feature file and a valid .npy of the same array, as bytes."""
    import io

    header, body = _valid_header()
    text = json.dumps(header).encode()
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(0).random((2, 31, 3, 4), dtype=np.float32), allow_pickle=False)
    return struct.pack("<Q", len(text)) + text + body, buf.getvalue()


_SAFETENSORS, _NPY = _valid_files()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4))
def test_fuzz_bytes_of_valid_files(npy, edits):
    """A valid file (safetensors or .npy) with a few bytes overwritten, mostly in its header, where the
    parsing happens (random bytes alone rarely get past the first length check): refused as a
    FeatinvError or read as a consistent float32 array, never a crash."""
    data = bytearray(_NPY if npy else _SAFETENSORS)
    head = 128 if npy else 8 + struct.unpack("<Q", data[:8])[0]
    for where, value in edits:
        data[int(where * head)] = value
    try:
        ff = features_from_bytes(bytes(data), "fuzz.npy" if npy else "fuzz.safetensors")
    except FeatinvError:
        return
    assert ff.features.dtype == torch.float32 and ff.features.ndim in (2, 4)


def test_a_bad_image_in_a_folder_run_keeps_the_files_before_it(cli, photos, tmp_path):
    """README: with -o DIR/, the files of the inputs before the bad one stay (each is written when done)."""
    bad = tmp_path / "zz-bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    r = cli("extract", "hog", photos["astronaut"], bad, "-o", f"{tmp_path}/out/")
    assert r.code == 1 and "zz-bad.png" in r.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["astronaut.safetensors"]


def test_zero_size_image_and_features(cli, tmp_path, tiny_model):
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # A PNG whose header says 0 x 0 pixels.
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    (tmp_path / "zero.png").write_bytes(png)
    out = tmp_path / "f.safetensors"
    fails_cleanly(cli("extract", "hog", tmp_path / "zero.png", "-o", out), out)
    np.save(tmp_path / "empty.npy", np.zeros((0, 31, 4, 4), np.float32))
    out = tmp_path / "r.png"
    fails_cleanly(cli("invert", tmp_path / "empty.npy", "-m", tiny_model, "-o", out), out)


@pytest.mark.parametrize("args", [
    ["train", "hog", "--log-every", "0"], ["train", "hog", "--crop", "0"], ["train", "hog", "--crop", "-64"],
    ["train", "hog", "--crop", "100"], ["train", "hog", "--lr", "-1"], ["train", "hog", "--lr", "nan"],
    ["train", "hog", "--max-zoom", "0.5"], ["extract", "hog:cell=0"], ["extract", "hog:orientations=-3"],
    ["extract", "lbp:cell=0"], ["extract", "squeezenet:fire5,size=0"], ["extract", "hog", "--resize", "-5"],
    ["extract", "hog", "--resize", "0"], ["extract", "hog", "--crop", "0"],
])
def test_numbers_out_of_range_are_a_usage_error_before_any_work(cli, image_dir, tmp_path, args):
    where = ["-d", image_dir] if args[0] == "train" else [image_dir]
    r = cli(*args[:2], *where, *args[2:], "-o", tmp_path / "x.safetensors")
    assert r.code == 2 and "unexpected" not in one_line_error(r)
    assert not list(tmp_path.iterdir())


def test_an_error_in_a_worker_is_one_line(cli, tmp_path, image_dir):
    """A photo that does not decode, read in a DataLoader worker: the user's line, not torch's
    "Caught FeatinvError in DataLoader worker process 0" and the worker's traceback."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in sorted(image_dir.iterdir())[:2]:
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "z.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    line = one_line_error(cli("extract", "hog", bad, "--resize", "64", "--crop", "64", "--workers", "1",
                              "-o", tmp_path / "w.safetensors"))
    assert "z.png" in line and "DataLoader" not in line


def test_a_bare_array_names_the_specs_its_channels_fit(cli, tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((1, 512, 13, 13), np.float32))
    line = one_line_error(cli("invert", tmp_path / "f.npy", "-o", tmp_path / "x.png"))
    assert "squeezenet:fire8, squeezenet:fire9 give 512 channels" in line
    np.save(tmp_path / "v.npy", np.zeros((2, 1000), np.float32))  # vectors: pool10's, never conv10's maps
    line = one_line_error(cli("invert", tmp_path / "v.npy", "-o", tmp_path / "x.png"))
    assert "squeezenet:pool10 gives 1000 values" in line and "conv10" not in line
    info = json.loads(cli("info", tmp_path / "v.npy", "--json").text)
    assert "invert needs --feature" in info["guessed_feature"]


def test_a_model_with_nan_weights_is_refused_not_inverted_to_black(cli, tiny_model, tmp_path, photos):
    from featinv_cli.formats.model import save_model

    m = load_model(tiny_model)
    name = next(k for k, v in m.state.items() if v.is_floating_point())
    m.state[name] = torch.full_like(m.state[name], float("nan"))
    bad = tmp_path / "nan.safetensors"
    save_model(bad, m)
    feats = tmp_path / "f.safetensors"
    assert cli("extract", "hog", photos["coffee"], "--resize", "64", "--crop", "64", "-o", feats).code == 0
    assert "diverged" in one_line_error(cli("invert", feats, "-m", bad, "-o", tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_requests_too_big_for_memory_are_one_line(cli, hog_file, tmp_path):
    """10^14 interpolation steps (400 TB, more than a process can address, so the first allocation fails
    whatever the kernel's overcommit): the user's request, said in one line."""
    out = tmp_path / "x.safetensors"
    line = one_line_error(cli("interpolate", hog_file, hog_file, "-n", str(10 ** 14), "-o", out))
    assert "out of memory (it needed" in line and "GiB" in line and not out.exists()


def test_inputs_that_are_not_features_are_named_for_what_they_are(cli, photos, hog_file, tmp_path):
    out = tmp_path / "x.safetensors"
    assert "is an image, not features" in one_line_error(cli("sample", photos["astronaut"], "-o", out))
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    for command in (("info", empty), ("perturb", empty, "--binarize", "-o", out)):
        assert "not a valid .npy file (empty)" in one_line_error(cli(*command))
    no_rows = tmp_path / "none.npy"
    np.save(no_rows, np.zeros((0, 31, 8, 8), np.float32))
    assert "holds no feature vectors" in one_line_error(cli("perturb", no_rows, "--binarize", "-o", out))
    assert not out.exists()


def test_perturbations_that_leave_nothing_say_so(cli, hog_file, tmp_path):
    """--dropout P that rounds to every entry is refused (no norm to restore); a combination that leaves
    a vector all zeros (keep the K largest of negated features: zeros) is written with a note."""
    out = tmp_path / "p.safetensors"
    line = one_line_error(cli("perturb", hog_file, "--dropout", "0.9999", "-o", out))
    assert "zeroes all 1984 entries" in line and not out.exists()
    r = cli("perturb", hog_file, "--scale", "-1", "--keep-top", "10", "-o", out)
    assert r.code == 0 and "1 of 1 vectors are all zeros after scale -1, keep-top 10" in r.err
    r = cli("perturb", hog_file, "--dropout", "0.5", "-o", out)
    assert r.code == 0 and "all zeros" not in r.err


def test_sample_refuses_what_it_would_ignore_and_perturb_says_what_a_npy_drops(cli, photos, tmp_path):
    two, stats = tmp_path / "two.safetensors", tmp_path / "stats.safetensors"
    assert cli("extract", "hog", photos["astronaut"], photos["coffee"], "--resize", "64", "--crop", "64",
               "-o", two).code == 0
    assert cli("sample", "--fit", two, "-o", stats).code == 0
    out = tmp_path / "s.safetensors"
    assert "holds statistics already" in one_line_error(cli("sample", "--fit", stats, "-o", out))
    assert "uses no histogram bins" in one_line_error(cli("sample", two, "--method", "gaussian", "--bins", "4",
                                                          "-o", out))
    line = one_line_error(cli("sample", stats, "-n", "0", "-o", out))
    assert "--count 0" in line and "--bins" not in line
    assert not out.exists()
    r = cli("perturb", two, "--binarize", "-o", tmp_path / "bare.npy")
    assert r.code == 0 and "a .npy holds the array alone" in r.err and "hog" in r.err
    r = cli("perturb", two, "--binarize", "-o", tmp_path / "kept.safetensors")
    assert r.code == 0 and "note" not in r.err


def test_demo_is_never_told_to_write_a_folder(cli, tmp_path):
    line = one_line_error(cli("demo", "-o", f"{tmp_path}/out/"))
    assert "*.png" in line and "folder" not in line
    (tmp_path / "grid.png").mkdir()
    assert "is a directory" in one_line_error(cli("demo", "-o", tmp_path / "grid.png"))


def test_a_featinv_file_given_for_photos_is_named(cli, hog_file, photos, tmp_path):
    """pack, extract and train -d given a feature file or a model say what it is, not "not a readable image"."""
    from conftest import ROOT

    model = ROOT / "featinv_cli" / "assets" / "hog.safetensors"
    out = tmp_path / "v.safetensors"
    assert "is a featinv feature file, not an image" in one_line_error(cli("pack", hog_file, "-o", out))
    assert "is a featinv model, not an image" in one_line_error(cli("extract", "hog", model, "-o", out))
    assert "is a featinv feature file, not a folder of images" in one_line_error(
        cli("train", "hog", "-d", hog_file, "-o", tmp_path / "m.safetensors", "--steps", "1"))
    assert not out.exists()
    fifo = tmp_path / "pipe"  # looking inside it would wait for a writer forever
    os.mkfifo(fifo)
    assert "not a directory" in one_line_error(
        cli("train", "hog", "-d", fifo, "-o", tmp_path / "m.safetensors", "--steps", "1"))



def test_a_model_header_claiming_a_huge_network_is_refused_before_it_is_built(cli, hog_file, tmp_path):
    """Sizes in a header are untrusted: an arch edited to width 1000 (terabytes of weights) is checked
    against the weights the file holds, on torch's meta device, before anything is allocated (it ended
    in "out of memory", or on a machine that overcommits, in the kernel's OOM killer)."""
    from featinv_cli.inverter import ASSETS

    data = (ASSETS / "hog.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header["__metadata__"]["arch"] = json.dumps({**json.loads(header["__metadata__"]["arch"]), "width": 1000.0})
    text = json.dumps(header).encode()
    model = tmp_path / "wide.safetensors"
    model.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])
    out = tmp_path / "o.png"
    msg = fails_cleanly(cli("invert", hog_file, "-m", model, "-o", out), out)
    assert "weights do not fit the architecture in its metadata" in msg
