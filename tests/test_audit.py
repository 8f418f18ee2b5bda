"""featinv audit (a COLMAP database, feature files or photos -> a report folder), the keypoint defences
it sweeps (perturb --keep-keypoints, --quantize-descriptors) and score's recognisability."""
import json
import re
import shutil
import subprocess

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from conftest import ROOT, one_line_error
from featinv_cli.analysis import keep_keypoints, quantize_descriptors
from featinv_cli.formats.features import load_features

FIXTURE = ROOT / "tests" / "fixtures" / "colmap"
DB, PHOTOS = FIXTURE / "database.db", FIXTURE / "photos"
VIEW = ["--resize", "96", "--crop", "96"]  # the fixture's photos have two sizes; N needs one


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One audit of the fixture database (4 images, the default sweep), shared by the tests that read it."""
    from featinv_cli.cli import main

    out = tmp_path_factory.mktemp("audit") / "report"
    try:
        main(["audit", str(DB), "-r", str(PHOTOS), *VIEW, "-o", f"{out}/", "-q"])
    except SystemExit as e:
        assert not e.code
    return out


def test_report_folder_and_record(report):
    record = json.loads((report / "audit.json").read_text())
    assert record["format"] == "featinv-audit/1"
    s = record["summary"]
    assert s["images"] == s["with_reference"] == 4 and 0 < s["normalized_error"] < 1
    assert s["chance_top1"] == 0.001 and s["chance_top5"] == 0.005 and s["verdict"]
    names = sorted(r["name"] for r in record["images"])
    assert names == ["astronaut", "chelsea", "coffee", "rocket"]
    for r in record["images"]:
        recon = iio.imread(report / r["reconstruction"])  # relative to the report folder
        assert recon.shape == (96, 96, 3)  # the reference's (prepared) size
        assert r["reference"] == str(PHOTOS / f"{r['name']}.png")
        for key in ("normalized_error", "psnr", "ssim", "recognised_top1", "recognised_top5", "reference_class"):
            assert r[key] is not None, key
    p = record["provenance"]
    assert p["command"].startswith("featinv audit ") and p["feature"].startswith("colmap-sift")
    assert p["models"][0]["file"] == "shipped colmap-sift.safetensors" and len(p["models"][0]["sha256"]) == 64


def test_summary_agrees_with_score_and_extract(report, cli, tmp_path):
    """The audit's numbers are score's on the reconstructions it lists, and its classes are those of
    SqueezeNet's class scores from `extract squeezenet:pool10`."""
    record = json.loads((report / "audit.json").read_text())
    r = cli("score", report / "reconstructions", "-r", PHOTOS, *VIEW, "--json", "-q")
    assert r.code == 0, r.err
    scored = json.loads(r.out)
    assert scored["mean"]["normalized_error"] == pytest.approx(record["summary"]["normalized_error"], abs=1e-6)
    assert scored["mean"]["recognised_top5"] == record["summary"]["recognised_top5"]
    by_name = {row["name"]: row for row in record["images"]}
    for row in scored["images"]:
        mine = by_name[re.sub(r"\.png$", "", row["image"].split("/")[-1])]
        assert row["normalized_error"] == pytest.approx(mine["normalized_error"], abs=1e-6)
        assert row["recognised_top1"] == mine["recognised_top1"] and row["reference_class"] == mine["reference_class"]
    r = cli("extract", "squeezenet:pool10", report / "references" / "coffee.png", "-o", tmp_path / "p.safetensors")
    assert r.code == 0, r.err
    classes = (ROOT / "featinv_cli" / "assets" / "imagenet-classes.txt").read_text().splitlines()
    top = int(load_features(tmp_path / "p.safetensors").features[0].argmax())
    assert classes[top] == by_name["coffee"]["reference_class"]


def test_defence_sweep_loses_detail_as_keypoints_go(report):
    record = json.loads((report / "audit.json").read_text())
    d = record["defence"]
    assert [x["keep"] for x in d] == [1.0, 0.5, 0.25, 0.1]
    assert d[0]["normalized_error"] == pytest.approx(record["summary"]["normalized_error"])
    assert d[-1]["normalized_error"] > d[0]["normalized_error"] + 0.05  # a tenth of the keypoints: much less
    assert d[-1]["keypoints"] < 0.15 * d[0]["keypoints"]
    assert (report / "defence.png").is_file() and record["plot"] == "defence.png"
    shown = [r for r in record["images"] if r.get("defence")]
    assert shown and all((report / p).is_file() for r in shown for p in r["defence"].values())


def test_page_is_a_view_of_the_record(report):
    page = (report / "index.html").read_text()
    record = json.loads((report / "audit.json").read_text())
    assert record["summary"]["verdict"].split(":")[0] in page.replace("&#x27;", "'")
    for r in record["images"]:
        assert f'src="{r["reconstruction"]}"' in page
    # Nothing from the network: no absolute URL in any src, href or CSS url(...).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//""", page)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not CHROMIUM, reason="no chromium here (apt-get install -y chromium) to render the report")
def test_page_renders_in_a_browser_from_disk(report, tmp_path):
    """Headless Chromium opens index.html from file:// with the network off: every image loads (the
    page's script counts them into data-images-loaded) and every reconstruction is on the page."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
           "--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path}",
           "--proxy-server=127.0.0.1:9", "--virtual-time-budget=5000", "--dump-dom",
           (report / "index.html").as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    loaded, total = (int(re.search(rf'{k}="(\d+)"', body).group(1)) for k in ("data-images-loaded", "data-images"))
    record = json.loads((report / "audit.json").read_text())
    assert loaded == total and total >= 2 * len(record["images"]) + 1  # photo and reconstruction each, the plot
    assert "missing" not in re.findall(r'<img[^>]*class="([^"]*)"', dom)


def test_rerun_replaces_only_what_audit_wrote(report, cli, tmp_path):
    out = tmp_path / "r"
    shutil.copytree(report, out)
    r = cli("audit", DB, "-r", PHOTOS, *VIEW, "-o", out, "--keep", "1", "-q")
    assert r.code == 0, r.err
    assert json.loads((out / "audit.json").read_text())["defence"] == []  # --keep 1: no sweep
    (out / "index.html").write_text("<html>someone's page</html>")
    line = one_line_error(cli("audit", DB, "-r", PHOTOS, "-o", out, "-q"))
    assert "index.html" in line and "not an audit featinv wrote" in line
    assert (out / "index.html").read_text() == "<html>someone's page</html>"


def test_bad_outputs_and_sources_stop_before_any_work(cli, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "is a file" in one_line_error(cli("audit", DB, "-o", afile))
    assert "cannot create folder" in one_line_error(cli("audit", DB, "-o", f"{afile}/sub/"))
    assert "no such file" in one_line_error(cli("audit", tmp_path / "nope.db", "-o", tmp_path / "r"))
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    assert "broken.db" in one_line_error(cli("audit", broken, "-o", tmp_path / "r2"))
    photo = tmp_path / "p.png"
    iio.imwrite(photo, np.zeros((64, 64, 3), np.uint8))
    assert "--feature" in one_line_error(cli("audit", photo, "-o", tmp_path / "r3"))
    assert cli("audit", "-", "-o", tmp_path / "r5").code == 2
    r = cli("audit", DB, "-o", tmp_path / "r4", "--keep", "1,2")
    assert r.code == 2 and "(0, 1]" in r.err
    assert not any((tmp_path / d).exists() for d in ("r", "r2", "r3", "r4", "r5"))


def test_missing_references_are_named_not_fatal(cli, tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    for name in ("astronaut", "chelsea"):
        shutil.copy(PHOTOS / f"{name}.png", refs)
    r = cli("audit", DB, "-r", refs, "-o", tmp_path / "out", "--keep", "1")
    assert r.code == 0, r.err
    assert "no reference for 2 of 4 images (rocket, coffee)" in r.err
    rows = {x["name"]: x for x in json.loads((tmp_path / "out" / "audit.json").read_text())["images"]}
    assert rows["rocket"]["reference"] is None and rows["rocket"]["normalized_error"] is None
    assert rows["chelsea"]["normalized_error"] is not None  # two references of one size (128 px)


def test_photos_with_a_feature_are_their_own_references(cli, photos, tmp_path):
    r = cli("audit", photos["coffee"], photos["astronaut"], "--feature", "hog", "--resize", "64", "--crop", "64",
            "-o", tmp_path / "out", "-q")
    assert r.code == 0, r.err
    record = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert record["summary"]["with_reference"] == 2 and record["defence"] == []  # no keypoints to sweep
    assert record["summary"]["normalized_error"] is not None


def test_audit_with_refine_says_how_far_it_refined(cli, photos, tmp_path):
    """At the 128-px view the steps were chosen on, refining lowers the error (at 64 px it raised it
    here: the defaults are the protocol's)."""
    r = cli("audit", photos["coffee"], photos["astronaut"], "--feature", "squeezenet:conv1", "--resize", "128",
            "--crop", "128", "--method", "refine", "-o", tmp_path / "out", "-q")
    assert r.code == 0, r.err
    record = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert record["provenance"]["method"] == "learned, then refined: squeezenet:conv1 40 steps"
    r = cli("audit", photos["coffee"], photos["astronaut"], "--feature", "squeezenet:conv1", "--resize", "128",
            "--crop", "128", "-o", tmp_path / "plain", "-q")
    plain = json.loads((tmp_path / "plain" / "audit.json").read_text())
    assert plain["provenance"]["method"] == "learned"
    assert record["summary"]["normalized_error"] < plain["summary"]["normalized_error"]


def test_feature_files_in_a_folder(cli, tmp_path):
    feats = tmp_path / "feats"
    r = cli("extract", "colmap-sift", DB, *VIEW, "-o", f"{feats}/")
    assert r.code == 0, r.err
    r = cli("audit", feats, "-r", PHOTOS, "-o", tmp_path / "out", "--keep", "1,0.5", "-q")
    assert r.code == 0, r.err  # the references are prepared as the files say extract prepared the photos
    record = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert sorted(x["name"] for x in record["images"]) == ["astronaut", "chelsea", "coffee", "rocket"]
    assert [d["keep"] for d in record["defence"]] == [1.0, 0.5]
    (feats / "zz-broken.safetensors").write_bytes(b"\x00" * 20)  # a damaged file after the good ones
    assert "zz-broken" in one_line_error(cli("audit", feats, "-r", PHOTOS, "-o", tmp_path / "o3"))
    assert not (tmp_path / "o3").exists()
    assert record["summary"]["normalized_error"] is not None  # 96-px views of both: one size
    assert "prepare photos or a database" in cli("audit", feats, "-r", PHOTOS, *VIEW, "-o", tmp_path / "o2").err


# ------------------------------------------------------------------------------ keypoint defences

def raw_of(n: int, per: int = 10) -> dict:
    g = torch.Generator().manual_seed(1)
    k = n * per
    return {"keypoints": torch.rand(k, 4, generator=g) * 60, "descriptors": torch.randint(0, 256, (k, 128), generator=g).float(),
            "counts": torch.full((n,), per, dtype=torch.long)}


def test_keep_keypoints_keeps_whole_keypoints_by_image_name():
    raw = raw_of(3)
    kept = keep_keypoints(raw, 0.3, seed=5, keys=["a", "b", "c"])
    assert kept["counts"].tolist() == [3, 3, 3]
    rows = {tuple(r) for r in torch.cat([raw["keypoints"], raw["descriptors"]], 1).tolist()}
    assert all(tuple(r) in rows for r in torch.cat([kept["keypoints"], kept["descriptors"]], 1).tolist())
    alone = keep_keypoints({k: v[10:20] if k != "counts" else v[1:2] for k, v in raw.items()}, 0.3, 5, ["b"])
    assert torch.equal(alone["keypoints"], kept["keypoints"][3:6])  # "b" keeps the same, in any file
    assert keep_keypoints(raw, 1.0, 5, ["a", "b", "c"])["keypoints"] is raw["keypoints"]
    other = keep_keypoints(raw, 0.3, seed=6, keys=["a", "b", "c"])
    assert not torch.equal(other["keypoints"], kept["keypoints"])


def test_quantize_descriptors():
    raw = raw_of(1)
    assert torch.equal(quantize_descriptors(raw, 8)["descriptors"], raw["descriptors"])
    one = quantize_descriptors(raw, 1)["descriptors"]
    assert set(one.unique().tolist()) <= {63.0, 191.0}
    assert set(quantize_descriptors(raw, 2)["descriptors"].unique().tolist()) <= {31.0, 95.0, 159.0, 223.0}


def test_perturb_keypoint_defences(cli, tmp_path):
    src = tmp_path / "f.safetensors"
    assert cli("extract", "colmap-sift", DB, *VIEW, "-o", src).code == 0
    r = cli("perturb", src, "--keep-keypoints", "1", "-o", tmp_path / "same.safetensors")
    assert r.code == 0, r.err
    a, same = load_features(src), load_features(tmp_path / "same.safetensors")
    assert torch.equal(a.features, same.features)
    r = cli("perturb", src, "--keep-keypoints", "0.25", "--quantize-descriptors", "4", "-o", tmp_path / "d.safetensors")
    assert r.code == 0, r.err
    d = load_features(tmp_path / "d.safetensors")
    assert d.history[-1] == "keep-keypoints 0.25, quantize-descriptors 4 (seed 0)"
    assert d.extra["counts"].tolist() == [round(0.25 * c) for c in a.extra["counts"].tolist()]
    assert (d.features[:, :128] != 0).any(1).sum() < (a.features[:, :128] != 0).any(1).sum()
    assert set(d.extra["descriptors"].unique().tolist()) <= {7.0 + 16 * i for i in range(16)}
    assert "before the operations on the grid" in one_line_error(
        cli("perturb", src, "--scale", "2", "--keep-keypoints", "0.5", "-o", tmp_path / "x.safetensors"))
    bare = tmp_path / "bare.safetensors"
    assert cli("perturb", src, "--scale", "1", "-o", bare).code == 0  # a grid operation drops the raw arrays
    assert "no raw keypoints" in one_line_error(cli("perturb", bare, "--keep-keypoints", "0.5", "-o", tmp_path / "y.safetensors"))


def test_perturb_keypoint_defence_refuses_dense_features(cli, photos, tmp_path):
    src = tmp_path / "hog.safetensors"
    assert cli("extract", "hog", photos["coffee"], "-o", src).code == 0
    r = cli("perturb", src, "--keep-keypoints", "0.5", "-o", tmp_path / "x.safetensors")
    assert r.code == 2 and "for keypoint features" in r.err


# ------------------------------------------------------------------------------ score's recognisability

def test_score_recognises_a_photo_as_itself_and_says_chance(cli, photos, tmp_path):
    r = cli("score", photos["coffee"], photos["astronaut"], "-r", photos["coffee"], "-r", photos["astronaut"],
            "--json", "-q")
    assert r.code == 0, r.err
    s = json.loads(r.out)
    assert s["mean"]["recognised_top1"] == 1.0 and s["mean"]["chance_top5"] == 0.005 and s["judge"] == "squeezenet:pool10"
    assert s["images"][0]["reference_class"] == "espresso"
    flat = tmp_path / "flat.png"
    iio.imwrite(flat, np.full((200, 200, 3), 128, np.uint8))
    r = cli("score", flat, "-r", photos["coffee"], "--json", "-q")
    assert json.loads(r.out)["images"][0]["recognised_top5"] is False  # grey is not an espresso
    r = cli("score", flat, "-r", photos["coffee"], "--json", "-q", "--no-recognition")
    assert "recognised_top1" not in json.loads(r.out)["images"][0]
