"""README's and BENCHMARKS.md's generated blocks: figures that cannot drift from where they come from.

    python bench/readme.py             # rewrite the blocks in README.md
    python bench/readme.py --check     # exit 1 if a block differs from what its sources give (a test runs this)
    python bench/readme.py --evaluate DIR   # first score every shipped model on DIR (the validation
                                            # photos) and store the result in the model file's metadata
    python bench/readme.py --evaluate DIR --only sift   # just these models

A block sits between ``<!-- generated: NAME -->`` and ``<!-- end generated -->``:
- ``models``: the shipped models' table, from each model file's metadata (``train`` and ``evaluation``);
- ``speed``: the speed figures, from bench/results.json (what bench/run.py and bench/grid_bin.py measured);
- ``memory``: peak memory of a 6000x6000 photo, from bench/results.json (bench/run.py --only memory);
- ``arch``: the paper's network against the skip network, from docs/figures/hog-arch-study.json (bench/study.py);
- ``audit``: the privacy audit's table, from docs/figures/colmap-audit.json (examples/colmap_audit.py);
- ``audit_full``: the same on a database of full-size photos, from docs/figures/colmap-fullsize.json
  (examples/colmap_audit.py --full-size);
- ``results:SECTION`` (BENCHMARKS.md): every figure of one bench/results.json section, under its
  run's stamp; every section must have one;
- ``fig7``: the paper's Figure 7 on SqueezeNet, from docs/figures/squeezenet-fig7.json (what
  examples/layer_sweep.py measured), its learned column checked against the shipped files' evaluation.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
README = ROOT / "README.md"
BENCHMARKS = ROOT / "BENCHMARKS.md"
RESULTS = ROOT / "bench" / "results.json"
SWEEP = ROOT / "docs" / "figures" / "squeezenet-fig7.json"
AUDIT = ROOT / "docs" / "figures" / "colmap-audit.json"
AUDIT_FULL = ROOT / "docs" / "figures" / "colmap-fullsize.json"  # examples/colmap_audit.py --full-size
ARCH = ROOT / "docs" / "figures" / "hog-arch-study.json"
BLOCK = re.compile(r"(<!-- generated: ([\w:]+) -->\n)(.*?)(<!-- end generated -->)", re.S)


def shipped_models() -> list[str]:
    """Every model file in the package: the hand-made features, then the SqueezeNet layers from the
    image up, then anything else (so a new model's row cannot be left out of the table)."""
    from featinv_cli.features.squeezenet import LAYERS, WEIGHTS_FILE
    from featinv_cli.inverter import ASSETS

    first = ["hog", "sift", "colmap-sift", "lbp"] + [f"squeezenet-{layer}" for layer in LAYERS]
    found = {p.stem for p in ASSETS.glob("*.safetensors")} - {WEIGHTS_FILE.stem}  # the CNN's weights
    return [n for n in first if n in found] + sorted(found - set(first))


PAPER = {"hog": "0.24", "sift": "0.28", "lbp": "0.38"}  # Table 2 of the paper (AlexNet era, 1.2 M photos)


def _metadata(path: Path) -> dict:
    from featinv_cli.formats.model import canonical_arch
    from featinv_cli.safetensors_codec import json_field, read_metadata

    meta = read_metadata(path)
    out = {k: json_field(meta, k, str(path), {}) for k in ("arch", "train", "evaluation")}
    out["arch"] = canonical_arch(out["arch"])  # today's names (old files say paper-conv)
    return out


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.0f} min"


def _device(name: str | None, threads: int | None = None) -> str:
    if name not in (None, "cpu"):
        return name.replace("NVIDIA ", "")
    return f"CPU, {threads} thread{'s' if threads > 1 else ''}" if threads else "CPU"  # older files: threads unknown


def _run(t: dict) -> str:
    photos = t.get("data_images") or 0
    data = "15k photos" if photos >= 14000 else f"{photos:,} photos"
    return (f"{data}, {_device(t.get('device'), t.get('threads'))}, {t['steps_done']:,} steps, "
            f"{_duration(t.get('seconds'))}")


def _trained_on(train: dict) -> str:
    """Every run a model file went through, oldest first (--init chains them)."""
    from featinv_cli.warmstart import training_summary

    runs, t, feature = [], training_summary(train), None
    while t:
        feature = t.get("feature", feature)  # runs under an --init of another feature's model
        start = t.get("before") or t.get("init")
        grown = f", the network grown from width {start['widened_from']:g}" if (start or {}).get("widened_from") else ""
        runs.append(_run(t) + grown + (f" (as `{feature}`)" if feature else ""))
        t = start
    return "; then ".join(reversed(runs))


def models_block() -> str:
    from featinv_cli.inverter import ASSETS

    rows, baseline = [], None
    for name in shipped_models():
        path = ASSETS / f"{name}.safetensors"
        if not path.exists():
            continue
        m = _metadata(path)
        arch, t, e = m["arch"], m["train"], m["evaluation"]
        if not e:
            raise SystemExit(f"{path}: no evaluation in its metadata; run bench/readme.py --evaluate VAL_DIR")
        baseline = e.get("baseline_mean_error", baseline)
        label = "Table 1" if name.endswith("pool10") else arch["name"]
        size = path.stat().st_size / 2 ** 20
        mirror = f"{e['mirror_average']:.3f}" if e.get("mirror_average") is not None else "—"
        rows.append(f"| `{name}` ({label}, width {arch.get('width', 1.0):g}, {size:.1f} MB) | {_trained_on(t)} "
                    f"| **{e['normalized_error']:.3f}** | {mirror} | {e['thumbnail_error']:.3f} | {e['psnr']:.2f} "
                    f"| {e['ssim']:.3f} | {PAPER.get(name, '')} |")
    head = ["| model | trained on | normalized error | `--mirror-average` | thumbnail error | PSNR | SSIM | "
            "paper (AlexNet era, 1.2 M photos) |", "|---|---|---|---|---|---|---|---|",
            f"| predict the mean training image | — | {baseline:.3f} | | | | | |"]
    return "\n".join(head + rows) + "\n"


def _v(results: dict, section: str, key: str) -> float:
    try:
        return results[section]["values"][key]
    except KeyError:
        raise SystemExit(f"{RESULTS}: no {section!r} figure {key!r}; run the benchmark that makes it") from None


def _key(results: dict, section: str, prefix: str) -> str:
    """The one figure of a section whose name starts with ``prefix`` (its thread count varies by machine)."""
    keys = [k for k in results.get(section, {}).get("values", {}) if k.startswith(prefix)]
    if len(keys) != 1:
        raise SystemExit(f"{RESULTS}: {len(keys)} {section!r} figures start with {prefix!r}; expected one")
    return keys[0]


def speed_block() -> str:
    if not RESULTS.exists():
        return "No measurements yet: `python bench/run.py` and `python bench/grid_bin.py` write them.\n"
    r = json.loads(RESULTS.read_text())
    ex, tr = r["extraction"], r["training"]
    cpp = _key(r, "grid_bin", "C++ op (")  # "C++ op (2 threads) ...": the thread count is the machine's
    lines = [
        f"Measured by `python bench/run.py` on {ex['machine']} ({ex['date']}; `bench/results.json`):",
        "",
        f"- one 512x512 image on one thread: HOG {_v(r, 'extraction', 'hog_ms 512 px 1 thread(s)'):.2f} ms "
        f"(scikit-image's `hog`: {_v(r, 'extraction', 'skimage_hog_ms 512 px 1 thread(s)'):.1f} ms), "
        f"LBP {_v(r, 'extraction', 'lbp_ms 512 px 1 thread(s)'):.2f} ms "
        f"(`local_binary_pattern`: {_v(r, 'extraction', 'skimage_lbp_ms 512 px 1 thread(s)'):.1f} ms);",
        f"- a batch of 64 RGB 256x256 images on one thread: HOG "
        f"{_v(r, 'extraction', 'hog images/s batch of 64 256 px 1 thread(s)'):,.0f} images/s, LBP "
        f"{_v(r, 'extraction', 'lbp images/s batch of 64 256 px 1 thread(s)'):,.0f} images/s;",
        f"- `featinv::grid_bin`: {_v(r, 'grid_bin', cpp):,.0f} keypoints/s, "
        f"{cpp[len('C++ op ('):].split(')')[0]} ({r['grid_bin']['date']});",
        f"- training (`featinv train`, batch 32, {tr['date']}): HOG at width 0.3 "
        f"{_v(r, 'training', 'hog views file images/s'):.0f} images/s from a views file and "
        f"{_v(r, 'training', 'hog JPEG folder images/s'):.0f} from a folder of JPEGs, against "
        f"{_v(r, 'training', 'hog step only images/s'):.0f} for the bare training step "
        f"({_v(r, 'training', 'hog GFLOP/s'):.0f} GFLOP/s, the matmul peak being "
        f"{_v(r, 'training', 'fp32 matmul peak GFLOP/s'):.0f});",
        f"- the optimisation baseline (`invert --method optimize`, 200 steps) takes "
        f"{_v(r, 'optimisation', 'hog (shipped model) optimize s (200 steps)'):.2f} s for one 128x128 HOG "
        f"image, the learned inverter {_v(r, 'optimisation', 'hog (shipped model) learned ms'):.2f} ms "
        f"({r['optimisation']['date']}).",
    ]
    return "\n".join(lines) + "\n"


def memory_block() -> str:
    r = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if "memory" not in r:
        return "No measurements yet: `python bench/run.py --only memory` writes them.\n"
    m = r["memory"]
    features = (("hog", "HOG"), ("lbp", "LBP"), ("sift", "SIFT"), ("squeezenet:fire9", "SqueezeNet fire9"))
    pairs = [(name, _v(r, "memory", f"{spec} 6000 px extract GB"), _v(r, "memory", f"{spec} 6000 px invert GB"))
             for spec, name in features]
    largest = max(max(e, i) for _, e, i in pairs)
    return (f"A 6000x6000 photo extracts and inverts in at most {largest:.2f} GB of memory here, every feature "
            f"(peak resident memory, extract / invert: "
            + ", ".join(f"{name} {e:.2f} / {i:.2f} GB" for name, e, i in pairs)
            + f"; `python bench/run.py --only memory` on {m['machine']}, {m['date']}; smaller sizes in "
            f"[BENCHMARKS.md](BENCHMARKS.md)). What makes that possible:\n")


def arch_block() -> str:
    study = json.loads(ARCH.read_text())
    rows = {r["variant"]: r for r in study["rows"]}
    skip, paper = rows["defaults"], rows["paper-net"]
    width = re.search(r"--width (\S+)", skip["command"]).group(1)
    return (f"With the same {study['minutes']:g} minutes of training ({study['feature'].upper()}, width {width}, "
            f"`train`'s other defaults, {study['threads_per_run']} thread{'s' if study['threads_per_run'] > 1 else ''} "
            f"each, {study['date']}) the paper's network scores {paper['normalized_error']:.3f} and the "
            f"skip network {skip['normalized_error']:.3f}, though the paper's network, cheaper per image, saw "
            f"{paper['images_seen'] / skip['images_seen']:.1f}x the images (`python bench/study.py ... defaults "
            f"paper-net`; docs/figures/hog-arch-study.json).\n")


def fig7_block() -> str:
    from featinv_cli.inverter import ASSETS

    sweep = json.loads(SWEEP.read_text())
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["| layer | learned, 100 images | learned, the same 2 images | learned, then refined, 2 images "
             "| optimisation, 2 images |", "|---|---|---|---|---|"]
    for r in sweep["rows"]:
        path = ASSETS / f"squeezenet-{r['layer']}.safetensors"
        stored = _metadata(path)["evaluation"].get("normalized_error") if path.exists() else None
        if (stored is None) != (r["learned"] is None) or stored is not None and abs(stored - r["learned"]) > 5e-4:
            raise SystemExit(f"{SWEEP}: {r['layer']} learned {r['learned']} but the shipped file says {stored}; "
                             f"rerun `make -C examples fig-sweep-squeezenet` and copy its sweep.json and sweep.png")
        same, refined, opt = r.get("learned_same_images"), r.get("refined_same_images"), r["optimize"]
        given = [v for v in (same, refined, opt) if v is not None]
        best = round(min(given), 3) if given else None  # ties at the table's precision are both bold
        cell = lambda v: f"**{v:.3f}**" if v is not None and round(v, 3) == best and same is not None else fmt(v)  # noqa: E731
        lines.append(f"| {r['layer']} | {fmt(stored)} | {cell(same)} | {cell(refined)} | {cell(opt)} |")
    return "\n".join(lines) + "\n"


def audit_block(path: Path = AUDIT, what: str = "database by pycolmap, read with") -> str:
    a = json.loads(path.read_text())
    lines = [f"| {a['images']} photos, {what} | normalized error | PSNR | SSIM | MAE |",
             "|---|---|---|---|---|"]
    best = min(s["mean"]["normalized_error"] for s in a["scores"].values())
    for label, s in a["scores"].items():
        m = s["mean"]
        error = f"**{m['normalized_error']:.3f}**" if m["normalized_error"] == best else f"{m['normalized_error']:.3f}"
        lines.append(f"| {label} | {error} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['mae']:.3f} |")
    if "baseline_mean_error" in a:
        lines.append(f"| (predicting the mean training image) | {a['baseline_mean_error']:.3f} | | | |")
    return "\n".join(lines) + "\n"


BLOCKS = {"models": models_block, "speed": speed_block, "memory": memory_block, "arch": arch_block, "fig7": fig7_block,
          "audit": audit_block,
          "audit_full": lambda: audit_block(AUDIT_FULL, "database of the full-size photos by pycolmap, read by")}


def results_block(section: str) -> str:
    """BENCHMARKS.md's "now" table of one bench/results.json section: every figure it holds, under the
    stamp of the run that measured them (date, machine, threads, operators, how busy the machine was)."""
    r = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if section not in r:
        raise SystemExit(f"{RESULTS}: no section {section!r}; run the benchmark that makes it")
    s = r[section]
    stamp = [s["date"], s["machine"], f"torch {s['torch']}"]
    if "torch_threads" in s:
        stamp += [f"{s['torch_threads']} torch threads", f"operators: {s['operators']}",
                  f"load average {s['load_at_start']} at the start"]
    fmt = lambda v: v if isinstance(v, str) else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"  # noqa: E731
    return (f"`bench/results.json`, `{section}`: " + ", ".join(stamp) + "\n\n| figure | value |\n|---|---|\n"
            + "".join(f"| {k} | {fmt(v)} |\n" for k, v in s["values"].items()))


def block(name: str) -> str:
    if name.startswith("results:"):
        return results_block(name.partition(":")[2])
    return BLOCKS[name]()


def render(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + block(m.group(2)) + m.group(4), text)


def missing_blocks(readme: str, benchmarks: str) -> list[str]:
    """Block markers that should be there and are not: README's every block, BENCHMARKS.md's a table
    for every section of bench/results.json (a deleted marker would otherwise pass --check)."""
    found = {m.group(2) for m in BLOCK.finditer(readme)} | {m.group(2) for m in BLOCK.finditer(benchmarks)}
    sections = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    return sorted((set(BLOCKS) | {f"results:{s}" for s in sections}) - found)


def evaluate_shipped(val: str, only: list[str] | None = None) -> None:
    """Score every shipped model (or those named in ``only``) on ``val`` and store the scores in its
    metadata (weights untouched)."""
    from featinv_cli.evaluate import baseline_mean, evaluation_record
    from featinv_cli.formats.model import store_evaluation
    from featinv_cli.inverter import ASSETS

    mean = baseline_mean(str(Path(val).parent / "train"), 128)  # the sample's training photos
    for name in only or shipped_models():
        path = ASSETS / f"{name}.safetensors"
        if only and not path.exists():
            raise SystemExit(f"--only {name}: no {path}")
        if path.exists():
            e = evaluation_record(path, val, mean)
            store_evaluation(path, e)
            print(f"{path.name}: {e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--evaluate", metavar="VAL_DIR")
    ap.add_argument("--only", nargs="+", choices=shipped_models(), help="with --evaluate: just these models")
    args = ap.parse_args()
    if args.only and not args.evaluate:
        ap.error("--only goes with --evaluate")
    if args.evaluate:
        evaluate_shipped(args.evaluate, args.only)
    texts = {path: path.read_text() for path in (README, BENCHMARKS)}
    missing = missing_blocks(texts[README], texts[BENCHMARKS])
    if missing:
        raise SystemExit(f"README.md / BENCHMARKS.md: no generated block for {', '.join(missing)}")
    for path, text in texts.items():
        new = render(text)
        if args.check and new != text:
            print(f"{path.name}: generated blocks are out of date; run python bench/readme.py", file=sys.stderr)
            sys.exit(1)
        if not args.check:
            path.write_text(new)


if __name__ == "__main__":
    main()
