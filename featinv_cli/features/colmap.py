"""COLMAP's SIFT (``colmap-sift``): the keypoints and descriptors a COLMAP reconstruction keeps, on the
paper's grid. The question it answers: does a stored SfM database leak the photos it was built from?

Two sources, one grid: a COLMAP ``database.db`` read with the standard library's sqlite3 (no pycolmap
needed), or images through pycolmap's own SIFT with COLMAP's defaults (the ``colmap`` extra).

The grid is ``sift``'s (cell 4, one keypoint per cell by ``featinv::grid_bin``'s seeded hash): per
cell ``(d / 512, x mod 4, y mod 4, sin a, cos a, log s)`` where ``d`` is the stored uint8 descriptor
(COLMAP's L1-root normalisation, x512, clipped to 255), (x, y) the keypoint in OpenCV's pixel
convention (COLMAP puts the centre of the top-left pixel at (0.5, 0.5); featinv at (0, 0)), ``a`` its
orientation and ``s`` its scale, both from the affine shape: s = sqrt(a11² + a21²), a = atan2(a21, a11).
"""
from __future__ import annotations

import shutil
import sqlite3
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import FeatinvError
from .sift import KeypointGrid

SQLITE_MAGIC = b"SQLite format 3\x00"
TABLES = ("cameras", "images", "keypoints", "descriptors")


@dataclass
class DatabaseImage:
    """One image of a COLMAP database: its name, size, keypoints (K, 4) float32 x, y, scale, angle
    (radians, OpenCV's pixel convention) and descriptors (K, 128) uint8."""

    name: str
    height: int
    width: int
    keypoints: np.ndarray
    descriptors: np.ndarray
    stored: bool = True  # False: the database has no keypoints row for it (features never extracted)

    def outside(self) -> int:
        """Keypoints outside the camera's image, which no grid cell holds."""
        x, y = self.keypoints[:, 0], self.keypoints[:, 1]
        return int((~((x >= 0) & (y >= 0) & (x < self.width) & (y < self.height))).sum())  # grid_bin's test


def is_database(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    with p.open("rb") as f:
        return f.read(16) == SQLITE_MAGIC


def _blob(data: bytes | None, rows: int, cols: int, dtype, what: str, name: str, db: str) -> np.ndarray:
    if rows == 0 or data is None:
        return np.zeros((0, cols), dtype)
    need = rows * cols * np.dtype(dtype).itemsize
    if len(data) != need:
        raise FeatinvError(f"{db}: {what} of image {name!r} hold {len(data)} bytes, not {rows} x {cols} "
                           f"({need}): the database is damaged")
    return np.frombuffer(data, dtype).reshape(rows, cols)


def _bad_geometry(kp: np.ndarray) -> str:
    """What is wrong with keypoints (K, 4) that are not all finite with a positive scale, in words."""
    if not np.isfinite(kp).all():
        return "a non-finite position, scale or angle"
    scale = float(kp[kp[:, 2] <= 0, 2].min())
    return "a zero scale" if scale == 0 else f"a negative scale ({scale:g})"


def keypoint_geometry(kp: np.ndarray) -> np.ndarray:
    """COLMAP's keypoint rows (2, 4 or 6 columns) -> (K, 4) x, y, scale, angle in OpenCV's convention."""
    x, y = kp[:, 0] - 0.5, kp[:, 1] - 0.5
    if kp.shape[1] == 2:
        scale, angle = np.ones_like(x), np.zeros_like(x)
    elif kp.shape[1] == 4:
        scale, angle = kp[:, 2], kp[:, 3]
    else:  # affine shape (a11, a12, a21, a22)
        scale, angle = np.hypot(kp[:, 2], kp[:, 4]), np.arctan2(kp[:, 4], kp[:, 2])
    return np.stack([x, y, scale, angle], axis=1).astype(np.float32)


# How long a read waits for another process's write transaction on a rollback-journal database to end
# before it gives up (COLMAP commits in short transactions; a longer hold is a job still running).
LOCK_WAIT_S = 5.0


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _has(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _wal_mode(path: Path) -> bool:
    """Header bytes 18-19 are 2 in WAL mode, 1 with a rollback journal."""
    with path.open("rb") as f:
        return f.read(20)[18:20] == b"\x02\x02"


def _read_only_storage(path: Path) -> bool:
    import os

    return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)


def _private_copy(path: Path, tmp: Path, log: str) -> sqlite3.Connection:
    """The database and its -wal or -journal, copied and opened read-write where nobody else looks:
    SQLite replays the committed frames of a WAL, or rolls a crashed writer's journal back, in the copy."""
    copy = tmp / "database.db"
    shutil.copyfile(path, copy)
    shutil.copyfile(_sibling(path, log), _sibling(copy, log))
    return sqlite3.connect(copy.as_uri(), uri=True, isolation_level=None)


def _immutable(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro&immutable=1", uri=True, isolation_level=None)


def _open(path: Path, tmp: Path, db: str) -> sqlite3.Connection:
    """A connection inside one read transaction on the last committed state of the database; never the
    pages of a transaction another process has not committed."""
    if _wal_mode(path):
        # In WAL mode the file holds committed pages only (a writer's go to the -wal): no lock is needed
        # to read it, and a locking reader would create -shm and -wal beside the evidence.
        return _private_copy(path, tmp, "-wal") if _has(_sibling(path, "-wal")) else _immutable(path)
    # A rollback journal: a writer changes the file in place, so only SQLite's lock keeps its
    # uncommitted pages out. An immutable open skips the lock and read a writer's half-done work.
    con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=LOCK_WAIT_S, isolation_level=None)
    try:
        con.execute("BEGIN")
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the shared lock until the end
        return con
    except sqlite3.OperationalError as e:
        con.close()
        reason = getattr(e, "sqlite_errorname", "")
        if reason == "SQLITE_BUSY":
            raise FeatinvError(f"{db}: another process is writing the database (still locked after "
                               f"{LOCK_WAIT_S:g} s); run again when it has finished") from None
        if reason == "SQLITE_READONLY_ROLLBACK":  # a writer died mid-transaction: its journal undoes it
            return _private_copy(path, tmp, "-journal")
        if _read_only_storage(path) and not _has(_sibling(path, "-journal")):
            return _immutable(path)  # storage nobody can write, where locks cannot be taken either
        raise


@contextmanager
def _connection(path: Path, db: str):
    """A read-only sqlite connection to one committed state of the database that leaves nothing beside
    it (COLMAP writes WAL mode, where a locking reader would create -shm and -wal files: beside
    evidence, or failing on read-only storage). Changes still in a -wal log (a COLMAP still running, or
    one that crashed) are read from a private copy of both files; a writer inside a transaction on a
    rollback journal is waited for, then refused."""
    with tempfile.TemporaryDirectory() as tmp:
        con = _open(path, Path(tmp), db)
        try:
            if not con.in_transaction:
                con.execute("BEGIN")  # every table read from the same state
            yield con
        finally:
            con.close()


def read_database(path: str | Path) -> list[DatabaseImage]:
    """Every image of a COLMAP database in image_id order, with its size from its camera; all checked
    (geometry, descriptor type and size), so a damaged database fails before anything is written."""
    db = str(path)
    if not is_database(path):
        raise FeatinvError(f"{db}: not a SQLite file (a COLMAP database.db is one)")
    try:
        with _connection(Path(path), db) as con:
            have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            missing = [t for t in TABLES if t not in have]
            if missing:
                raise FeatinvError(f"{db}: not a COLMAP database (no {', '.join(missing)} table)")
            cameras = {cid: (h, w) for cid, w, h in con.execute("SELECT camera_id, width, height FROM cameras")}
            kps = {i: (r, c, d) for i, r, c, d in con.execute("SELECT image_id, rows, cols, data FROM keypoints")}
            typed = "type" in {r[1] for r in con.execute("PRAGMA table_info(descriptors)")}  # COLMAP 3.12+
            descs = {i: (t, r, c, d) for i, t, r, c, d in con.execute(
                f"SELECT image_id, {'type' if typed else '0'}, rows, cols, data FROM descriptors")}
            images = list(con.execute("SELECT image_id, name, camera_id FROM images ORDER BY image_id"))
    except (sqlite3.DatabaseError, OSError) as e:
        raise FeatinvError(f"{db}: cannot read the database ({e})") from None
    if not images:
        raise FeatinvError(f"{db}: the database holds no images (run COLMAP's feature extraction first)")
    out = []
    for image_id, name, camera_id in images:
        if camera_id not in cameras:
            raise FeatinvError(f"{db}: image {name!r} names camera {camera_id}, which the database lacks")
        height, width = cameras[camera_id]
        if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
            raise FeatinvError(f"{db}: image {name!r}'s camera {camera_id} is {width}x{height}; the database is damaged")
        rows, cols, data = kps.get(image_id, (0, 6, None))
        if cols not in (2, 4, 6):
            raise FeatinvError(f"{db}: keypoints of image {name!r} have {cols} columns (COLMAP writes 2, 4 or 6)")
        kp = keypoint_geometry(_blob(data, rows, cols, np.float32, "keypoints", name, db))
        if not np.isfinite(kp).all() or (kp[:, 2] <= 0).any():
            raise FeatinvError(f"{db}: keypoints of image {name!r} include {_bad_geometry(kp)}; the database is damaged")
        kind, drows, dcols, ddata = descs.get(image_id, (0, 0, 128, None))
        if kind != 0:
            raise FeatinvError(f"{db}: descriptors of image {name!r} are of COLMAP feature type {kind}, not SIFT "
                               f"(0; ALIKED and other learned features have no inverter here)")
        if dcols != 128:
            raise FeatinvError(f"{db}: descriptors of image {name!r} are {dcols} wide; SIFT's are 128 "
                               f"(ALIKED's float descriptors have no inverter here)")
        desc = _blob(ddata, drows, dcols, np.uint8, "descriptors", name, db)
        if len(desc) != len(kp):
            raise FeatinvError(f"{db}: image {name!r} has {len(kp)} keypoints but {len(desc)} descriptors")
        out.append(DatabaseImage(name, height, width, kp, desc, stored=image_id in kps))
    return out


# COLMAP's SIFT finds nothing smaller than its base blur at its first octave: sigma 1.6 at octave -1
# (its defaults), a scale of 0.8 px.
SMALLEST_SCALE = 0.8


def as_view(image: DatabaseImage, resize: int | None, crop: int | None) -> DatabaseImage:
    """The keypoints a SIFT of the photo's view (`extract --resize N --crop N`) could have: positions and
    scales moved as resizing moves them (featinv's pixel centres), those smaller than SIFT finds at the
    new size dropped (the full-size photo's fine detail, which the view does not have), then those
    outside the centre square. Read this way, a full-size database inverts as its photos' 128-px views do."""
    from ..data import crop_corner, shorter_side_size

    h, w = image.height, image.width
    kp = image.keypoints.copy()
    if resize:
        h, w = shorter_side_size(image.height, image.width, resize)
        sx, sy = w / image.width, h / image.height
        kp[:, 0] = (kp[:, 0] + 0.5) * sx - 0.5
        kp[:, 1] = (kp[:, 1] + 0.5) * sy - 0.5
        kp[:, 2] *= np.sqrt(sx * sy)
    keep = kp[:, 2] >= SMALLEST_SCALE if resize else np.ones(len(kp), bool)
    if crop:
        if min(h, w) < crop:
            raise FeatinvError(f"{image.name}: {h}x{w} is smaller than --crop {crop}; add --resize {crop}")
        top, left = crop_corner(h, w, crop)
        kp[:, 0] -= left
        kp[:, 1] -= top
        h = w = crop
        keep &= (kp[:, 0] >= 0) & (kp[:, 1] >= 0) & (kp[:, 0] < crop) & (kp[:, 1] < crop)
    return DatabaseImage(image.name, h, w, kp[keep], image.descriptors[keep], image.stored)


def check_grids_fit(images: list[DatabaseImage], extractor: KeypointGrid, db: str) -> None:
    """An image's size is its camera's, the database's word: before the first grid is made (one image at
    a time), the largest must fit in memory. A camera claiming 10^9 x 10^9 pixels overflowed torch's
    size arithmetic; one of 60000 x 60000 asks for a 120 GB grid."""
    from ..memory import check_fits

    big = max(images, key=lambda i: i.height * i.width)
    hc, wc = extractor.grid_size(big.height, big.width)
    check_fits(extractor.channels * hc * wc * 4,
               f"{db}: image {big.name!r} is {big.width}x{big.height} (its camera's size); its grid",
               "the database is damaged, or read its images smaller with --resize N")


def raw_arrays(images: list[DatabaseImage]) -> dict[str, torch.Tensor]:
    """The raw arrays a feature file keeps beside the grid, as for ``sift``: keypoints (K, 4),
    descriptors (K, 128) float32 (COLMAP's whole numbers 0..255), counts (N,)."""
    return {"keypoints": torch.from_numpy(np.concatenate([i.keypoints for i in images])),
            "descriptors": torch.from_numpy(np.concatenate([i.descriptors for i in images]).astype(np.float32)),
            "counts": torch.tensor([len(i.keypoints) for i in images], dtype=torch.long)}


@dataclass(frozen=True)
class ColmapSIFT(KeypointGrid):
    """COLMAP's SIFT keypoints and descriptors on the paper's grid (cell x cell cells, 133 channels).
    The settings after ``seed`` are COLMAP's extraction options (its defaults): they change the
    descriptors, so a model trained on one setting refuses another's features."""

    cell: int = 4
    seed: int = 0
    normalization: str = "l1_root"  # COLMAP's default; "l2" the other choice
    upright: bool = False
    max_num_features: int = 8192
    max_image_size: int = 3200
    name = "colmap-sift"
    guess_by_channels = False  # 133 channels is `sift` too: a bare .npy is taken for OpenCV's

    def grid_of(self, images: list[DatabaseImage], height: int, width: int) -> torch.Tensor:
        """(N, 133, ceil(H / cell), ceil(W / cell)) of database images of one size."""
        return self.grid(raw_arrays(images), height, width)

    def read_images(self, images: torch.Tensor) -> list[DatabaseImage]:
        """pycolmap's SIFT of (N, 3, H, W) images in [0, 1], through a database as COLMAP writes it
        (so both routes read the same bytes)."""

        from ..formats.png import write_image

        try:
            import pycolmap
        except ImportError:
            raise FeatinvError("colmap-sift from images needs pycolmap: pip install 'featinv[colmap]' "
                               "(a COLMAP database.db needs nothing more)") from None
        with tempfile.TemporaryDirectory() as d:
            photos = Path(d) / "images"  # apart from the database, which COLMAP would try to read as a photo
            photos.mkdir()
            for i, image in enumerate(images):
                write_image(photos / f"{i:06d}.png", image)
            options = pycolmap.FeatureExtractionOptions()
            sift = options.sift
            sift.max_num_features, sift.upright = self.max_num_features, self.upright
            sift.normalization = getattr(pycolmap.Normalization, self.normalization.upper())
            options.max_image_size = self.max_image_size
            level = pycolmap.logging.minloglevel
            pycolmap.logging.minloglevel = 2  # COLMAP logs a dozen lines a photo; errors only
            try:
                pycolmap.extract_features(f"{d}/database.db", photos, extraction_options=options,
                                          device=pycolmap.Device.cpu)
            finally:
                pycolmap.logging.minloglevel = level
            # COLMAP numbers the images as its reader threads finish them, not in the order given:
            # back to the batch's order by name.
            return sorted(read_database(f"{d}/database.db"), key=lambda image: image.name)

    def detect(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw keypoints of (N, 3, H, W) images, as SIFT.detect gives them: ``keypoints`` (K, 4),
        ``descriptors`` (K, 128) float (whole numbers 0..255), ``counts`` (N,)."""
        return raw_arrays(self.read_images(images))

    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        found = self.read_images(images)
        return self.grid_of(found, *images.shape[-2:]), raw_arrays(found)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.extract(images)[0]
