"""Feature and model files: round trips, streams, damaged files, atomic writes."""
import io
import os

import numpy as np
import pytest
import torch

from featinv_cli.errors import FeatinvError
from featinv_cli.files import atomic_write
from featinv_cli.formats.features import FeatureFile, features_from_bytes, load_features, save_features
from featinv_cli.formats.model import load_model
from featinv_cli.images import read_image


def sample() -> FeatureFile:
    return FeatureFile(torch.rand(2, 31, 4, 5), "hog", {"cell": 8, "orientations": 9}, (36, 44),
                       ["a.png", "b.png"], history=["dropout 0.5"], labels=["x", "y"])


def test_safetensors_round_trip(tmp_path):
    ff = sample()
    save_features(tmp_path / "f.safetensors", ff)
    back = load_features(tmp_path / "f.safetensors")
    assert torch.equal(back.features, ff.features)
    assert (back.feature, back.params, back.image_size, back.sources) == \
        (ff.feature, ff.params, ff.image_size, ff.sources)
    assert back.history == ["dropout 0.5"] and back.labels == ["x", "y"]


def test_npy_is_a_bare_array(tmp_path):
    ff = sample()
    save_features(tmp_path / "f.npy", ff)
    arr = np.load(tmp_path / "f.npy")
    assert arr.shape == (2, 31, 4, 5) and arr.dtype == np.float32
    back = load_features(tmp_path / "f.npy")
    assert back.feature is None and back.image_size is None
    assert torch.equal(back.features, ff.features)


def test_single_map_is_batch_of_one(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((31, 3, 3), np.float32))
    assert load_features(tmp_path / "one.npy").features.shape == (1, 31, 3, 3)


def test_truncated_safetensors(tmp_path):
    save_features(tmp_path / "f.safetensors", sample())
    data = (tmp_path / "f.safetensors").read_bytes()
    for cut in (4, 20, len(data) // 2, len(data) - 1):
        (tmp_path / "cut.safetensors").write_bytes(data[:cut])
        with pytest.raises(FeatinvError, match="not a valid safetensors"):
            load_features(tmp_path / "cut.safetensors")


def test_corrupt_npy_and_pickled_npy(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.zeros((31, 2, 2), np.float32))
    with pytest.raises(FeatinvError, match="not a valid .npy"):
        features_from_bytes(buf.getvalue()[:-10], "x.npy")
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FeatinvError):  # never unpickled
        features_from_bytes(buf.getvalue(), "obj.npy")


def test_nan_features_refused(tmp_path):
    f = torch.rand(1, 31, 2, 2)
    f[0, 0, 0, 0] = float("nan")
    save_features(tmp_path / "nan.safetensors", FeatureFile(f, "hog", {}, (16, 16)))
    with pytest.raises(FeatinvError, match="NaN or Inf"):
        load_features(tmp_path / "nan.safetensors")


def test_model_file_is_not_features(tiny_model):
    with pytest.raises(FeatinvError, match="is a model file"):
        load_features(tiny_model)
    assert load_model(tiny_model).arch["name"] == "paper"


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(FeatinvError, match="cannot write"):
        atomic_write(target, b"new" * 1000)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_read_image_kinds(tmp_path):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "g.png", np.full((5, 7), 128, np.uint8))
    iio.imwrite(tmp_path / "g16.png", np.full((5, 7), 65535, np.uint16))
    iio.imwrite(tmp_path / "rgba.png", np.full((5, 7, 4), 255, np.uint8))
    for name, value in (("g.png", 128 / 255), ("g16.png", 1.0), ("rgba.png", 1.0)):
        img = read_image(tmp_path / name)
        assert img.shape == (3, 5, 7)
        assert torch.allclose(img, torch.full_like(img, value), atol=1e-6)
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(FeatinvError, match="not a readable image"):
        read_image(tmp_path / "text.png")
    with pytest.raises(FeatinvError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_a_cmyk_jpeg_reads_as_its_colours(tmp_path):
    """Print JPEGs (and some of ImageNet's) are CMYK: four channels that are not RGBA."""
    from PIL import Image
    from skimage import data

    rgb = data.astronaut()[::4, ::4]
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    img = read_image(tmp_path / "cmyk.jpg")
    assert img.shape == (3, 128, 128)
    assert (img - torch.from_numpy(rgb).permute(2, 0, 1) / 255).abs().mean() < 0.03  # JPEG's loss; CMYK as RGB: 0.5


def test_a_gif_is_its_first_frame_and_a_16_bit_pgm_its_values(tmp_path):
    """imageio gives every GIF as a stack of frames (one frame too), and Pillow a 16-bit PGM as 32-bit
    integers, which scaled by int32's range were flat grey."""
    from PIL import Image

    frames = [Image.fromarray(np.full((40, 50, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[1].save(tmp_path / "one.gif")
    for name, value in (("anim.gif", 10), ("one.gif", 200)):
        img = read_image(tmp_path / name)
        assert img.shape == (3, 40, 50) and torch.allclose(img, torch.full_like(img, value / 255), atol=1 / 255)
    gray = (np.arange(40 * 50).reshape(40, 50) * 30).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.pgm")
    img = read_image(tmp_path / "g16.pgm")
    assert torch.allclose(img[0], torch.from_numpy(gray.astype(np.float32) / 65535), atol=1e-6)


def test_safetensors_written_here_and_by_the_library_read_both_ways(tmp_path):
    """featinv writes safetensors itself (straight from tensor memory) and reads them as views of the
    file's bytes; both must stay the format the safetensors library writes and reads."""
    from safetensors.torch import load as st_load, save as st_save

    from featinv_cli.safetensors_codec import encode_safetensors, parse_safetensors

    tensors = {"a": torch.rand(3, 5), "b": torch.arange(7), "c": torch.rand(2, 2).half(),
               "d": torch.rand(4).bfloat16(), "e": torch.zeros(0, 3), "f": torch.tensor([True, False])}
    meta = {"format": "x", "k": "v"}
    ours = encode_safetensors(tensors, meta)
    for k, v in st_load(ours).items():
        assert torch.equal(v, tensors[k]) and v.dtype == tensors[k].dtype
    back, back_meta = parse_safetensors(st_save(tensors, metadata=meta), "lib")
    assert back_meta == meta
    for k, v in back.items():
        assert torch.equal(v, tensors[k]) and v.dtype == tensors[k].dtype and v.shape == tensors[k].shape


def test_a_feature_file_is_memory_mapped_not_copied(tmp_path, monkeypatch):
    """Loading a feature file maps it and keeps the features as a view of the mapped pages (a
    6000x6000 photo's SIFT grid is 1.2 GB): the tensor's memory lies inside the file's mapping."""
    from featinv_cli.formats import features as formats

    path = tmp_path / "f.safetensors"
    save_features(path, FeatureFile(torch.rand(1, 31, 40, 50), feature="hog"))
    maps = []
    real = formats.map_file
    monkeypatch.setattr(formats, "map_file", lambda p: maps.append(real(p)) or maps[-1])
    ff = formats.load_features(path)
    assert isinstance(maps[0], np.memmap)
    start = maps[0].ctypes.data
    assert start <= ff.features.data_ptr() and ff.features.data_ptr() + ff.features.nbytes <= start + maps[0].nbytes


@pytest.mark.parametrize("shape, dtype", [((5, 7, 3), np.uint8), ((5, 7, 4), np.uint8), ((5, 7), np.uint8),
                                          ((5, 7, 3), np.uint16), ((5, 7, 2), np.uint16)])
def test_integer_images_convert_as_numpy_divides(shape, dtype):
    """The in-place torch conversion gives exactly numpy's arr.astype(float32) / max, gray repeated."""
    from featinv_cli.images import image_from_array

    top = np.iinfo(dtype).max
    arr = np.random.default_rng(0).integers(0, top + 1, shape).astype(dtype)
    arr.flat[:2] = (0, top)
    rgb = arr[:, :, None] if arr.ndim == 2 else arr
    rgb = rgb[:, :, :3] if rgb.shape[2] in (3, 4) else rgb[:, :, :1]
    expected = np.repeat(rgb, 3 // rgb.shape[2], axis=2).astype(np.float32) / np.float32(top)
    assert np.array_equal(image_from_array(arr).numpy(), expected.transpose(2, 0, 1))


def test_a_npy_file_is_read_as_a_view_of_its_bytes():
    """Only the .npy header is parsed through a stream; the array is a view of the bytes read."""
    from featinv_cli.formats.features import npy_array

    buf = io.BytesIO()
    np.save(buf, np.random.rand(3, 31, 8, 8).astype(np.float32))
    data = bytearray(buf.getvalue())
    assert np.shares_memory(npy_array(data, "f.npy"), np.frombuffer(data, np.uint8))
