"""The view cache (featinv pack) and the batches cut from it: what training sees is what extract gives."""
from pathlib import Path

import pytest
import torch

from featinv_cli.batches import ViewBatches
from featinv_cli.data import prepare_view
from featinv_cli.errors import FeatinvError
from featinv_cli.features import parse_spec
from featinv_cli.arguments import list_images
from featinv_cli.images import read_image
from featinv_cli.formats.views import load_views, save_views
from featinv_cli.packing import pack

from conftest import one_line_error


@pytest.fixture(scope="module")
def packed(image_dir, tmp_path_factory) -> Path:
    files = list_images(image_dir)
    out = tmp_path_factory.mktemp("views") / "views.safetensors"
    save_views(out, pack(files, [f.name for f in files], 80, parse_spec("sift")))
    return out


def test_views_are_the_extract_views(packed, image_dir):
    """Each view is the image as `extract --resize 80 --crop 80` prepares it, as 8-bit pixels."""
    vs = load_views(packed)
    files = list_images(image_dir)
    assert vs.views.shape == (len(files), 3, 80, 80) and vs.views.dtype == torch.uint8
    assert vs.sources == [f.name for f in files]
    for i in (0, 5):
        want = prepare_view(read_image(files[i]), 80, 80, "x")
        assert torch.equal(vs.views[i], (want * 255).round().to(torch.uint8))


def test_sift_batches_equal_sift_of_the_view_and_its_mirror(packed):
    """Crops as big as the view: the grid from stored keypoints is the SIFT grid of the image the
    batch holds, mirrored or not (stored keypoints of the mirror image, not mirrored keypoints)."""
    vs, sift = load_views(packed), parse_spec("sift")
    batches = ViewBatches(vs, sift, 80 // 4 * 4, 8, 0, 1.0, torch.device("cpu"))
    for step in range(3):
        x, grid = batches(step)
        assert torch.equal(grid, sift(x))


def test_sift_crops_keep_the_keypoints_inside(packed):
    """A crop's grid holds the view's keypoints that fall in it, moved by the crop's offset: its
    occupied cells are the view grid's occupied cells in that window (for the view and its mirror)."""
    vs, sift = load_views(packed), parse_spec("sift")
    whole = ViewBatches(vs, sift, 80, 8, 0, 1.0, torch.device("cpu"))
    crops = ViewBatches(vs, sift, 64, 8, 0, 1.0, torch.device("cpu"))
    idx, flips = torch.arange(8), torch.tensor([False, True] * 4)
    full = whole._sift_grid(idx, torch.zeros(8, 2, dtype=torch.long), flips)
    cut = crops._sift_grid(idx, torch.tensor([[8, 12]] * 8), flips)
    occupied = lambda g: g[:, :128].abs().sum(1) > 0  # noqa: E731
    assert occupied(cut).sum() > 10
    assert torch.equal(occupied(cut), occupied(full)[:, 2:18, 3:19])


def test_hog_batches_are_features_of_the_crops(packed):
    vs, hog = load_views(packed), parse_spec("hog")
    batches = ViewBatches(vs, hog, 64, 8, 3, 1.25, torch.device("cpu"))
    x, f = batches(7)
    assert x.shape == (8, 3, 64, 64) and torch.equal(f, hog(x))
    assert torch.equal((x * 255).round() / 255, x)  # 8-bit images, as a PNG of the crop would be
    other = ViewBatches(vs, hog, 64, 8, 3, 1.25, torch.device("cpu"))
    other(3), other(5)  # a generator advanced by earlier steps would give another batch at step 7
    again, _ = other(7)
    assert torch.equal(x, again)  # step t's batch depends on (seed, t) alone: resume sees the same
    assert not torch.equal(x, other(6)[0])
    low, fl = batches(7, low_res=True)
    assert low.shape == (8, 3, 32, 32) and fl.shape == (8, 31, 4, 4)


def test_ranks_split_the_global_batch(packed):
    vs, hog = load_views(packed), parse_spec("hog")
    whole, _ = ViewBatches(vs, hog, 64, 8, 0, 1.25, torch.device("cpu"))(4)
    parts = [ViewBatches(vs, hog, 64, 8, 0, 1.25, torch.device("cpu"), rank=r, world=2)(4)[0] for r in (0, 1)]
    assert torch.equal(torch.cat(parts), whole)


def test_views_without_sift_refuse_sift_training(image_dir, tmp_path):
    files = list_images(image_dir)
    out = tmp_path / "v.safetensors"
    save_views(out, pack(files, [f.name for f in files], 64))
    with pytest.raises(FeatinvError, match="--sift"):
        ViewBatches(load_views(out), parse_spec("sift"), 64, 4, 0, 1.0, torch.device("cpu"))
    with pytest.raises(FeatinvError, match="larger than the views"):
        ViewBatches(load_views(out), parse_spec("hog"), 128, 4, 0, 1.0, torch.device("cpu"))


def test_pack_command(cli, image_dir, tmp_path):
    out = tmp_path / "v.safetensors"
    r = cli("pack", image_dir, "-o", out, "--side", "64")
    assert r.code == 0, r.err
    assert load_views(out).views.shape == (8, 3, 64, 64)
    assert "--side" in one_line_error(cli("pack", image_dir, "-o", out, "--side", "32"))
    assert ".safetensors" in one_line_error(cli("pack", image_dir, "-o", tmp_path / "v.npz"))
    assert "sift spec" in one_line_error(cli("pack", image_dir, "-o", out, "--sift", "hog"))


def test_sift_added_to_a_views_file_later_in_parallel_is_the_same(cli, packed, image_dir, tmp_path, monkeypatch):
    """pack photos/ then pack views.safetensors --sift sift --workers 2 (what a GPU machine does with a
    carried WebP pack) gives the keypoints pack photos/ --sift sift gives in one process (in chunks of
    3 views here, so the workers' parts are put back together in order)."""
    import featinv_cli.packing

    monkeypatch.setattr(featinv_cli.packing, "SIFT_CHUNK", 3)
    plain, again = tmp_path / "plain.safetensors", tmp_path / "again.safetensors"
    assert cli("pack", image_dir, "-o", plain, "--side", "80").code == 0
    r = cli("pack", plain, "--sift", "sift", "--workers", "2", "-o", again)
    assert r.code == 0, r.err
    a, b = load_views(again), load_views(packed)
    assert torch.equal(a.views, b.views) and a.sift_params == b.sift_params
    for k in ("keypoints", "descriptors", "counts"):
        assert torch.equal(a.sift[k], b.sift[k]), k
    assert "--side 64" in one_line_error(cli("pack", plain, "--side", "64", "-o", tmp_path / "x.safetensors"))


def test_validation_views_must_be_the_protocols_size(cli, image_dir, tmp_path):
    """--val with 64-px views would be scored on views resampled again to 128: not the protocol, refused
    before training."""
    views = tmp_path / "v.safetensors"
    assert cli("pack", image_dir, "-o", views, "--side", "64").code == 0
    out = tmp_path / "m.safetensors"
    line = one_line_error(cli("train", "hog", "-d", image_dir, "--val", views, "-o", out, "--width", "0.125",
                              "--crop", "64", "--batch", "4", "--steps", "2"))
    assert "--side 128" in line and not out.exists()


def test_train_from_views_file(cli, image_dir, tmp_path):
    views = tmp_path / "v.safetensors"
    assert cli("pack", image_dir, "-o", views, "--side", "64").code == 0
    out = tmp_path / "m.safetensors"
    r = cli("train", "hog", "-d", views, "-o", out, "--width", "0.125", "--crop", "64", "--batch", "4",
            "--steps", "2", "-q")
    assert r.code == 0, r.err
    from featinv_cli.formats.model import load_model

    t = load_model(out).train
    assert t["data_images"] == 8 and t["images_seen"] == 8


def test_webp_views_keep_their_bytes_when_packed_again_and_sift_sees_the_decoded_pixels(cli, image_dir, tmp_path):
    """Packing a WebP pack again at its quality changes nothing (before, each pass encoded the decoded
    pixels again, losing more); SIFT of photos packed as WebP is the SIFT of those WebP views, as
    packing the WebP file with --sift later gives."""
    w1, w2, w3 = (tmp_path / f"w{i}.safetensors" for i in (1, 2, 3))
    assert cli("pack", image_dir, "-o", w1, "--side", "64", "--webp", "75", "--sift", "sift").code == 0
    assert cli("pack", w1, "-o", w2, "--webp", "75").code == 0
    a, b = load_views(w1), load_views(w2)
    assert torch.equal(a.views, b.views) and a.webp[1] == b.webp[1] and a.webp[0] == 75
    assert cli("pack", w1, "-o", w3, "--webp", "75", "--sift", "sift").code == 0
    c = load_views(w3)
    assert torch.equal(a.sift["counts"], c.sift["counts"]) and torch.equal(a.sift["keypoints"], c.sift["keypoints"])
    import json

    shown = json.loads(cli("info", w3, "--json").text)
    assert shown["storage"] == "webp, quality 75" and shown["sift_keypoints"] == len(c.sift["keypoints"])
    w4 = tmp_path / "w4.safetensors"  # another quality: new pixels, so the old keypoints are dropped, said
    r = cli("pack", w3, "-o", w4, "--webp", "50")
    assert r.code == 0 and "add --sift SPEC" in r.err and not load_views(w4).sift


def _tampered(src: Path, dst: Path, edit) -> Path:
    """``src`` with its safetensors header changed by ``edit(header)``, the bytes after it as they were."""
    import json
    import struct

    data = src.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    dst.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])
    return dst


@pytest.mark.parametrize("webp", [False, True])
@pytest.mark.parametrize("edit, message", [
    (lambda h: h["views" if "views" in h else "offsets"]["shape"].__setitem__(0, 50 * 8), "does not fill bytes"),
    (lambda h: h["__metadata__"].__setitem__("side", "-64"), "views' side as '-64'"),
    (lambda h: h["__metadata__"].__setitem__("sources", '["a.png"]'), "1 sources for 8 views"),
])
def test_info_refuses_a_tampered_views_header_as_train_does(cli, image_dir, tmp_path, webp, edit, message):
    """A header claiming 50x the views it holds, or a negative side: `info` believed it ("views 400",
    "side -64") where `train` refused it or trained on something else; both now read it through the
    views format's own check and give the same line."""
    packed = tmp_path / "v.safetensors"
    assert cli("pack", image_dir, "-o", packed, "--side", "64", *(["--webp", "80"] if webp else []), "-q").code == 0
    bad = _tampered(packed, tmp_path / "bad.safetensors", edit)
    refused = one_line_error(cli("info", bad))
    assert message in refused
    trained = one_line_error(cli("train", "hog", "-d", bad, "-o", tmp_path / "m.safetensors", "--steps", "1",
                                 "--batch", "2", "--crop", "64", "--width", "0.125", "-q"))
    assert trained == refused


def test_webp_views_of_another_size_than_the_header_says_are_refused(cli, image_dir, tmp_path):
    """The side a header gives sizes the decoded array before any view is decoded: a view of another
    size is refused in one line (the first view's size sized the whole array before)."""
    packed = tmp_path / "v.safetensors"
    assert cli("pack", image_dir, "-o", packed, "--side", "64", "--webp", "80", "-q").code == 0
    bad = _tampered(packed, tmp_path / "bad.safetensors", lambda h: h["__metadata__"].__setitem__("side", "32"))
    with pytest.raises(FeatinvError, match="do not decode to 32x32"):
        load_views(bad)


def _folder_with_broken_photos(image_dir, tmp_path, broken: int) -> Path:
    import shutil

    folder = tmp_path / "photos"
    shutil.copytree(image_dir, folder)
    for i in range(broken):
        (folder / f"9{i}_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return folder


def test_pack_leaves_out_photos_that_do_not_read_and_names_them(cli, image_dir, tmp_path):
    """One broken file among thousands must not block a pack: it is left out with a note naming it,
    the rest are packed, exit 0; --verbose names every one; --strict stops at the first as before."""
    folder = _folder_with_broken_photos(image_dir, tmp_path, 5)
    out = tmp_path / "v.safetensors"
    r = cli("pack", folder, "-o", out, "--side", "64")
    assert r.code == 0, r.err
    notes = [line for line in r.err.splitlines() if line.startswith("featinv: note:")]
    assert len(notes) == 1 and "5 of 13 photos do not read and are left out" in notes[0]
    assert "90_broken.jpg: not a readable image" in notes[0] and "and 2 more (--verbose lists them all)" in notes[0]
    assert "8 views of 64x64" in r.err and "5 photos left out" in r.err
    vs = load_views(out)
    assert len(vs) == 8 and not any("broken" in s for s in vs.sources)
    good = load_views(_packed_without(image_dir, tmp_path, cli))
    assert torch.equal(vs.views, good.views) and vs.fingerprint == good.fingerprint
    r = cli("pack", folder, "-o", tmp_path / "all.safetensors", "--side", "64", "--verbose")
    assert r.code == 0 and sum(line.startswith("featinv: note: left out: ") for line in r.err.splitlines()) == 5
    msg = one_line_error(cli("pack", folder, "-o", tmp_path / "strict.safetensors", "--side", "64", "--strict"))
    assert "90_broken.jpg: not a readable image" in msg and not (tmp_path / "strict.safetensors").exists()


def _packed_without(image_dir, tmp_path, cli) -> Path:
    out = tmp_path / "good.safetensors"
    assert cli("pack", image_dir, "-o", out, "--side", "64", "-q").code == 0
    return out


def test_pack_with_no_photo_that_reads_is_an_error(cli, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"nothing")
    msg = one_line_error(cli("pack", folder, "-o", tmp_path / "v.safetensors"))
    assert "none of the 2 photos reads" in msg and "a.jpg: not a readable image" in msg
    assert not (tmp_path / "v.safetensors").exists()
