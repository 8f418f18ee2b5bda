"""COLMAP's SIFT (colmap-sift): a real database written by pycolmap (tests/fixtures/colmap, with the
script that made it) is read with sqlite3 alone, gridded, inverted; damaged databases give one line."""
import shutil
import sqlite3

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from conftest import ROOT, one_line_error
from featinv_cli.batches import ViewBatches
from featinv_cli.errors import FeatinvError
from featinv_cli.features import parse_spec
from featinv_cli.features.colmap import keypoint_geometry, read_database
from featinv_cli.formats.features import load_features
from featinv_cli.formats.model import load_model
from featinv_cli.formats.views import load_views

FIXTURE = ROOT / "tests" / "fixtures" / "colmap"
DB = FIXTURE / "database.db"


def test_database_is_read_without_pycolmap(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pycolmap", None)  # `import pycolmap` now fails, installed or not
    images = read_database(DB)
    assert [i.name for i in images] == ["astronaut.png", "chelsea.png", "rocket.png", "coffee.png"]
    assert [(i.height, i.width) for i in images] == [(128, 128), (128, 128), (96, 128), (96, 128)]
    for i in images:
        photo = iio.imread(FIXTURE / "photos" / i.name)
        assert photo.shape[:2] == (i.height, i.width)  # sizes come from the cameras table
        assert i.keypoints.shape == (len(i.descriptors), 4) and i.descriptors.dtype == np.uint8
        assert len(i.keypoints) > 50 and i.descriptors.shape[1] == 128
        x, y = i.keypoints[:, 0], i.keypoints[:, 1]
        assert x.min() >= -0.5 and x.max() < i.width and y.min() >= -0.5 and y.max() < i.height


def test_keypoint_forms_and_conventions():
    """COLMAP's pixel centres are at +0.5; the affine shape gives scale and orientation."""
    a = 2.0
    affine = np.array([[10.5, 20.5, a * np.cos(0.3), -a * np.sin(0.3), a * np.sin(0.3), a * np.cos(0.3)]], np.float32)
    x, y, s, o = keypoint_geometry(affine)[0]
    assert (x, y) == (10.0, 20.0) and s == pytest.approx(2.0) and o == pytest.approx(0.3)
    four = keypoint_geometry(np.array([[1.5, 2.5, 3.0, -1.0]], np.float32))[0]
    assert four.tolist() == [1.0, 2.0, 3.0, -1.0]
    two = keypoint_geometry(np.array([[1.5, 2.5]], np.float32))[0]
    assert two.tolist() == [1.0, 2.0, 1.0, 0.0]


def test_extract_a_database_to_one_file_per_image(cli, tmp_path):
    out = tmp_path / "feats"
    r = cli("extract", "colmap-sift", DB, "-o", f"{out}/")
    assert r.code == 0, r.err
    colmap = parse_spec("colmap-sift")
    for image in read_database(DB):
        ff = load_features(out / image.name.replace(".png", ".safetensors"))
        assert ff.feature == "colmap-sift" and ff.image_size == (image.height, image.width)
        assert ff.sources == [image.name] and ff.features.shape == (1, 133, image.height // 4, image.width // 4)
        assert torch.equal(ff.features, colmap.grid_of([image], image.height, image.width))
        occupied = int((ff.features[0, :128].abs().sum(0) > 0).sum())
        cells = {(int(y // 4), int(x // 4)) for x, y in np.clip(image.keypoints[:, :2], 0, None)}
        assert occupied == len(cells)  # one keypoint in every cell that has one, zeros elsewhere
    msg = one_line_error(cli("extract", "colmap-sift", DB, "-o", tmp_path / "one.safetensors"))
    assert "2 sizes" in msg and "-o DIR/" in msg and not (tmp_path / "one.safetensors").exists()
    assert "colmap-sift" in one_line_error(cli("extract", "sift", DB, "-o", tmp_path / "s.safetensors"))


def _damaged(tmp_path, sql: str, *args) -> str:
    db = tmp_path / "damaged.db"
    shutil.copyfile(DB, db)
    con = sqlite3.connect(db)
    con.execute(sql, args)
    con.commit()
    con.close()
    return str(db)


@pytest.mark.parametrize("damage, message", [
    ("DROP TABLE descriptors", "no descriptors table"),
    ("UPDATE keypoints SET data = substr(data, 1, 100) WHERE image_id = 2", "the database is damaged"),
    ("UPDATE descriptors SET cols = 64 WHERE image_id = 1", "64 wide"),
    ("UPDATE keypoints SET cols = 5 WHERE image_id = 1", "5 columns"),
    ("UPDATE images SET camera_id = 99 WHERE image_id = 3", "camera 99"),
])
def test_damaged_databases_give_one_line_and_write_nothing(cli, tmp_path, damage, message):
    db = _damaged(tmp_path, damage)
    out = tmp_path / "out"
    msg = one_line_error(cli("extract", "colmap-sift", db, "-o", f"{out}/"))
    assert message in msg
    assert not out.exists()  # not even an empty folder


def test_not_a_database(cli, tmp_path):
    fake = tmp_path / "fake.db"
    fake.write_bytes(b"not sqlite at all")
    with pytest.raises(FeatinvError, match="not a SQLite file"):
        read_database(fake)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE other (x)").connection.close()
    assert "not a COLMAP database" in one_line_error(cli("extract", "colmap-sift", empty, "-o", f"{tmp_path}/f/"))


def test_an_image_without_keypoints_is_an_all_zero_grid(cli, tmp_path):
    db = _damaged(tmp_path, "UPDATE keypoints SET rows = 0, data = NULL WHERE image_id = 1")
    con = sqlite3.connect(db)
    con.execute("UPDATE descriptors SET rows = 0, data = NULL WHERE image_id = 1")
    con.commit()
    con.close()
    assert cli("extract", "colmap-sift", db, "-o", f"{tmp_path}/f/").code == 0
    ff = load_features(tmp_path / "f" / "astronaut.safetensors")
    assert ff.features.abs().sum() == 0 and ff.features.shape == (1, 133, 32, 32)


def test_train_on_a_database_and_invert_every_image_at_its_size(cli, tmp_path):
    """The privacy-audit pipeline on the fixture: extract the database, invert every image to a PNG of
    its own size (a model trained for a few steps on the database's own photos stands in for one
    trained on many)."""
    feats = tmp_path / "feats"
    assert cli("extract", "colmap-sift", DB, "-o", f"{feats}/").code == 0
    model = tmp_path / "m.safetensors"
    r = cli("train", "colmap-sift", "-d", FIXTURE / "photos", "--features", feats / "astronaut.safetensors",
            "--features", feats / "chelsea.safetensors", "-o", model, "--width", "0.125", "--batch", "2",
            "--steps", "2", "-q")
    assert r.code == 0, r.err
    leaked = tmp_path / "leaked"
    files = sorted(feats.glob("*.safetensors"))
    r = cli("invert", *files, "-m", model, "-o", f"{leaked}/")
    assert r.code == 0, r.err
    for image in read_database(DB):
        assert iio.imread(leaked / image.name).shape == (image.height, image.width, 3)


def test_a_sift_model_starts_a_colmap_sift_model(cli, tmp_path):
    """--init takes another feature's model when its network reads this feature's grid as it is: an
    OpenCV-SIFT model (133 channels at stride 4) starts a colmap-sift one, and the file says so."""
    sift, model = tmp_path / "sift.safetensors", tmp_path / "m.safetensors"
    r = cli("train", "sift", "-d", FIXTURE / "photos", "-o", sift, "--width", "0.125", "--crop", "64", "--batch", "2",
            "--steps", "1", "--workers", "0", "-q")
    assert r.code == 0, r.err
    feats = tmp_path / "feats"
    assert cli("extract", "colmap-sift", DB, "-o", f"{feats}/").code == 0
    r = cli("train", "colmap-sift", "-d", FIXTURE / "photos", "--features", feats / "astronaut.safetensors",
            "-o", model, "--batch", "1", "--steps", "1", "--init", sift, "-q")
    assert r.code == 0, r.err
    m = load_model(model)
    assert m.feature == "colmap-sift" and m.train["init"]["feature"] == "sift"
    assert m.arch == load_model(sift).arch


def test_the_shipped_model_reads_the_database_better_than_opencvs(cli, tmp_path):
    """`featinv invert` takes the shipped colmap-sift model without -m. On the fixture's four photos
    (never trained on) its reconstructions are closer to the photos, on average, than OpenCV-SIFT's
    model reading the same grids (what converting the database by hand gives; measured: 152.9 against
    163.8, three photos of four closer, coffee's red cup not)."""
    from featinv_cli.images import read_image
    from featinv_cli.inverter import ASSETS, Inverter

    feats = tmp_path / "feats"
    assert cli("extract", "colmap-sift", DB, "-o", f"{feats}/").code == 0
    r = cli("invert", *sorted(feats.glob("*.safetensors")), "-o", f"{tmp_path / 'leaked'}/")
    assert r.code == 0, r.err
    opencv = Inverter(ASSETS / "sift.safetensors")
    distances = []
    for image in read_database(DB):
        photo = read_image(FIXTURE / "photos" / image.name)
        ours = read_image(tmp_path / "leaked" / image.name)
        ff = load_features(feats / f"{image.name.rsplit('.', 1)[0]}.safetensors")
        with torch.no_grad():
            theirs = opencv(ff.features, tuple(ff.image_size))[0].clamp(0, 1)
        assert ours.shape == photo.shape
        distances.append(((ours - photo).norm(), (theirs - photo).norm()))
    assert sum(d[0] for d in distances) < sum(d[1] for d in distances), distances


def test_images_give_the_database_grids(tmp_path):
    """Both routes, one grid: pycolmap on the photos themselves equals reading the database it made."""
    pytest.importorskip("pycolmap", reason="pycolmap is not installed (pip install 'featinv[colmap]')")
    from featinv_cli.images import read_image

    colmap = parse_spec("colmap-sift")
    for image in read_database(DB):
        photo = read_image(FIXTURE / "photos" / image.name)[None]
        assert torch.equal(colmap(photo), colmap.grid_of([image], image.height, image.width))


def test_a_batch_of_images_gives_each_its_own_grid():
    """COLMAP numbers images as its threads finish them; each image of a batch still gets its own
    keypoints (the same as alone), never its neighbour's."""
    pytest.importorskip("pycolmap", reason="pycolmap is not installed (pip install 'featinv[colmap]')")
    from featinv_cli.images import read_image

    colmap = parse_spec("colmap-sift")
    batch = torch.stack([read_image(p)[:, :96, :96] for p in sorted((FIXTURE / "photos").iterdir())] * 2)
    batch[4:] = batch[4:].flip(-1)
    together = colmap.detect(batch)
    first = torch.cumsum(together["counts"], 0) - together["counts"]
    for i in range(len(batch)):
        alone = colmap.detect(batch[i:i + 1])
        rows = slice(int(first[i]), int(first[i] + together["counts"][i]))
        assert torch.equal(together["keypoints"][rows], alone["keypoints"]), i
        assert torch.equal(together["descriptors"][rows], alone["descriptors"]), i


def test_a_colmap_sift_model_trains_from_packed_views(cli, tmp_path, monkeypatch):
    """`pack --sift colmap-sift` detects COLMAP's SIFT once per view and mirror image (the same with
    --workers 2), and `train
    colmap-sift` cuts its crops' grids from them, as for OpenCV's SIFT."""
    pytest.importorskip("pycolmap", reason="pycolmap is not installed (pip install 'featinv[colmap]')")
    views = tmp_path / "v.safetensors"
    r = cli("pack", FIXTURE / "photos", "-o", views, "--side", "96", "--sift", "colmap-sift")
    assert r.code == 0, r.err
    forked = tmp_path / "forked.safetensors"  # two forked processes, a view each at a time: the same keypoints
    import featinv_cli.packing

    monkeypatch.setattr(featinv_cli.packing, "SIFT_CHUNK", 1)
    r = cli("pack", FIXTURE / "photos", "-o", forked, "--side", "96", "--sift", "colmap-sift", "--workers", "2")
    assert r.code == 0, r.err
    for k in ("keypoints", "descriptors", "counts"):
        assert torch.equal(load_views(forked).sift[k], load_views(views).sift[k]), k
    colmap = parse_spec("colmap-sift")
    for step in range(3):  # crops as big as the views: each is COLMAP's SIFT of the image the batch holds
        x, grid = ViewBatches(load_views(views), colmap, 96, 4, 0, 1.0, torch.device("cpu"))(step)
        assert torch.equal(grid, colmap(x))
    r = cli("train", "colmap-sift", "-d", views, "-o", tmp_path / "m.safetensors", "--width", "0.125", "--crop", "64",
            "--batch", "2", "--steps", "2", "-q")
    assert r.code == 0, r.err


def test_image_names_stay_below_the_output_folder(cli, tmp_path):
    """A database is someone else's file: an image named ../x.png or /abs/x.png must not write outside
    -o DIR/, and a file there that featinv did not make is not overwritten."""
    outside = tmp_path / "victim.safetensors"
    outside.write_text("mine")
    db = _damaged(tmp_path, "UPDATE images SET name = '../victim.png' WHERE image_id = 1")
    con = sqlite3.connect(db)
    con.execute("UPDATE images SET name = ? WHERE image_id = 2", (str(tmp_path / "abs.png"),))
    con.commit()
    con.close()
    out = tmp_path / "out"
    r = cli("extract", "colmap-sift", db, "-o", f"{out}/")
    assert r.code == 0, r.err
    assert outside.read_text() == "mine" and not (tmp_path / "abs.safetensors").exists()
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.safetensors"))
    assert len(written) == 4 and "victim.safetensors" in written
    (out / "rocket.safetensors").write_text("not ours")
    assert "not a featinv feature file" in one_line_error(cli("extract", "colmap-sift", db, "-o", f"{out}/"))
    assert (out / "rocket.safetensors").read_text() == "not ours"


def test_reading_leaves_nothing_beside_the_database(cli, tmp_path):
    """COLMAP writes WAL mode: a plain read-only open leaves -shm/-wal beside the evidence and fails on
    read-only storage. Also a path with # and % (sqlite URIs) reads the file named."""
    import os
    import stat

    folder = tmp_path / "case#12 100%"
    folder.mkdir()
    db = folder / "database.db"
    shutil.copyfile(DB, db)
    os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)  # read-only folder (root ignores this; the listing check still holds)
    try:
        images = read_database(db)
    finally:
        os.chmod(folder, stat.S_IRWXU)
    assert len(images) == 4 and sorted(p.name for p in folder.iterdir()) == ["database.db"]
    assert not (tmp_path / "case").exists()
    # A pending -wal log (a COLMAP still running) is read too, from a private copy.
    live = tmp_path / "live.db"
    shutil.copyfile(DB, live)
    writer = sqlite3.connect(live)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("UPDATE images SET name = 'renamed.png' WHERE image_id = 1")
    writer.commit()
    assert (tmp_path / "live.db-wal").stat().st_size > 0
    before = sorted(p.name for p in tmp_path.iterdir())
    assert read_database(live)[0].name == "renamed.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    writer.close()


@pytest.mark.parametrize("damage, message", [
    ("UPDATE descriptors SET type = 1 WHERE image_id = 1", "feature type 1"),
    ("UPDATE cameras SET width = 0", "0x"),
    ("DELETE FROM images", "no images"),
])
def test_databases_featinv_cannot_read_truthfully_are_refused(cli, tmp_path, damage, message):
    db = _damaged(tmp_path, damage)
    assert message in one_line_error(cli("extract", "colmap-sift", db, "-o", f"{tmp_path}/out/"))


def test_a_zero_scale_is_refused_and_missing_features_are_named(cli, tmp_path):
    db = _damaged(tmp_path, "UPDATE keypoints SET cols = 6, rows = rows * 4 / 6 WHERE 0")  # a copy to edit
    con = sqlite3.connect(db)
    rows, data = con.execute("SELECT rows, data FROM keypoints WHERE image_id = 1").fetchone()
    kp = np.frombuffer(data, np.float32).reshape(rows, -1).copy()
    kp[0, 2:] = 0  # a11 = a12 = a21 = a22 = 0
    con.execute("UPDATE keypoints SET data = ? WHERE image_id = 1", (kp.tobytes(),))
    con.commit()
    assert "zero scale" in one_line_error(cli("extract", "colmap-sift", db, "-o", f"{tmp_path}/a/"))
    con.execute("UPDATE keypoints SET data = ? WHERE image_id = 1", (data,))
    con.execute("DELETE FROM keypoints WHERE image_id = 3")
    con.execute("DELETE FROM descriptors WHERE image_id = 3")
    con.commit()
    con.close()
    r = cli("extract", "colmap-sift", db, "-o", f"{tmp_path}/b/")
    assert r.code == 0 and "1 of 4 images have no stored keypoints (rocket.png)" in r.err


def test_a_database_given_where_features_are_expected_points_to_extract(cli, tmp_path):
    for command in (("info", DB), ("invert", DB, "-o", tmp_path / "x.png")):
        assert "featinv extract colmap-sift" in one_line_error(cli(*command))
    fake = tmp_path / "fake.db"
    fake.write_text("")
    assert "not a SQLite file" in one_line_error(cli("extract", "colmap-sift", fake, "-o", f"{tmp_path}/o/"))


def test_a_database_read_as_the_photos_view():
    """--resize N --crop N on a database: keypoints move as resizing moves pixel centres, those smaller
    than SIFT finds at the new size go, then those outside the centre square."""
    from featinv_cli.features.colmap import SMALLEST_SCALE, DatabaseImage, as_view

    kp = np.array([[99.5, 49.5, 4.0, 0.3],   # the corner at (100, 50) px of 200x100 (pixel centres at whole
                                              # numbers): at (50, 25) px of 100x50, i.e. (49.5, 24.5)
                   [10.0, 10.0, 1.0, 0.0],   # scale 0.5 at half size: finer than SIFT sees there
                   [190.0, 50.0, 8.0, 0.0]], np.float32)  # right of the 50x50 centre square
    image = DatabaseImage("x.png", 100, 200, kp, np.zeros((3, 128), np.uint8))
    view = as_view(image, 50, 50)
    assert (view.height, view.width) == (50, 50) and len(view.keypoints) == 1
    x, y, s, a = view.keypoints[0]
    assert (x, y) == (pytest.approx(49.5 - 25), pytest.approx(24.5)) and s == 2.0 and a == pytest.approx(0.3)
    assert SMALLEST_SCALE == 0.8  # COLMAP's sigma 1.6 at its first octave (-1)


def test_extract_a_database_at_the_evaluation_view(cli, tmp_path):
    """The fixture's 128x128 and 96x128 images, read at --resize 64 --crop 64: one size, so one file."""
    out = tmp_path / "view.safetensors"
    r = cli("extract", "colmap-sift", DB, "--resize", "64", "--crop", "64", "-o", out)
    assert r.code == 0, r.err
    ff = load_features(out)
    assert ff.features.shape == (4, 133, 16, 16) and ff.image_size == (64, 64)
    assert ff.view == {"resize": 64, "crop": 64}
    full = read_database(DB)
    assert (ff.extra["counts"] < torch.tensor([len(i.keypoints) for i in full])).all()
    assert "--shard" in one_line_error(cli("extract", "colmap-sift", DB, "--shard", "0/2", "-o", f"{tmp_path}/s/"))


# A second process inside a write transaction on a rollback-journal database (the fixture's mode), with
# a cache of one page so that its uncommitted pages reach the file before any commit.
WRITER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA cache_size=1")
con.execute("BEGIN EXCLUSIVE")
con.execute("UPDATE descriptors SET data = zeroblob(length(data))")
print("inside", flush=True)
sys.stdin.read()
"""


def _writer_inside_a_transaction(db):
    import subprocess
    import sys

    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "inside\n"
    assert (db.parent / (db.name + "-journal")).stat().st_size > 0
    return writer


def test_a_database_another_process_is_writing_is_waited_for_then_refused(cli, tmp_path, monkeypatch):
    """Uncommitted pages are never read: featinv waits for the lock a bounded time, then says so in one
    line and writes nothing; once the writer is gone the committed descriptors are read."""
    import featinv_cli.features.colmap as colmap

    monkeypatch.setattr(colmap, "LOCK_WAIT_S", 0.2)
    db = tmp_path / "database.db"
    shutil.copyfile(DB, db)
    writer = _writer_inside_a_transaction(db)
    try:
        msg = one_line_error(cli("extract", "colmap-sift", db, "-o", f"{tmp_path}/out/"))
    finally:
        writer.communicate("")  # ends it without a commit: its connection rolls back
    assert "another process is writing the database" in msg and "0.2 s" in msg
    assert not (tmp_path / "out").exists()
    assert [int(i.descriptors.sum()) for i in read_database(db)] == [int(i.descriptors.sum()) for i in read_database(DB)]


def test_a_writer_that_died_mid_transaction_is_rolled_back_in_a_copy(tmp_path):
    """Its hot journal holds the committed pages: they are read, and neither file is touched."""
    import signal

    db = tmp_path / "database.db"
    shutil.copyfile(DB, db)
    writer = _writer_inside_a_transaction(db)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    journal = tmp_path / "database.db-journal"
    before = db.read_bytes(), journal.read_bytes()
    images = read_database(db)
    assert [int(i.descriptors.sum()) for i in images] == [int(i.descriptors.sum()) for i in read_database(DB)]
    assert (db.read_bytes(), journal.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["database.db", "database.db-journal"]


@pytest.mark.parametrize("side", [10**9, 60000])
def test_a_camera_larger_than_memory_is_one_line_naming_its_size(cli, tmp_path, monkeypatch, side):
    """A camera's size is the database's word: 10^9 x 10^9 overflowed torch's size arithmetic, 60000 x
    60000 asks for a 120 GB grid. Both are refused before anything is allocated or written; read at a
    smaller view the same database works."""
    import featinv_cli.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 8 * 2**30)  # the same answer on any machine
    db = _damaged(tmp_path, "UPDATE cameras SET width = ?, height = ? WHERE camera_id = 1", side, side)
    msg = one_line_error(cli("extract", "colmap-sift", db, "-o", f"{tmp_path}/out/"))
    assert f"'astronaut.png' is {side}x{side}" in msg and "more than this machine has free (8.0 GB)" in msg
    assert not (tmp_path / "out").exists()
    r = cli("extract", "colmap-sift", db, "--resize", "64", "--crop", "64", "-o", tmp_path / "view.safetensors")
    assert r.code == 0, r.err


def test_a_negative_scale_is_named_as_one(cli, tmp_path):
    """A keypoint row of 4 columns (x, y, scale, orientation) with scale -2 was "a zero scale"."""
    db = _damaged(tmp_path, "UPDATE keypoints SET rows = 1, cols = 4, data = ? WHERE image_id = 1",
                  np.array([[10.5, 10.5, -2.0, 0.0]], np.float32).tobytes())
    con = sqlite3.connect(db)
    con.execute("UPDATE descriptors SET rows = 1, data = ? WHERE image_id = 1", (bytes(128),))
    con.commit()
    con.close()
    assert "a negative scale (-2)" in one_line_error(cli("extract", "colmap-sift", db, "-o", f"{tmp_path}/out/"))
