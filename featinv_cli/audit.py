"""`featinv audit`'s library: what a source of features leaks, one image at a time.

Each image is extracted (or read), inverted, written and scored before the next chunk is read, so
memory does not grow with the database; the summary and the defence curve are aggregates of the rows.
Only each reference's 8-bit view is kept until the end (the normalized error's N is the mean distance
between every pair of references), and only while they share one size and fit REFERENCE_BUDGET.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from . import metrics
from .errors import FeatinvError, note
from .recognition import CHANCE, Judge, recognition

AUDIT_FORMAT = "featinv-audit/1"
RECONSTRUCTIONS, REFERENCES, DEFENCE = "reconstructions", "references", "defence"
REFERENCE_BUDGET = 2 * 2**30  # bytes of 8-bit reference views kept for N; beyond, no normalized error
THUMBNAIL = 256  # the longer side of the reference views the page shows
SHOWN_DEFENCE = 6  # images whose reconstruction at every --keep the page shows


@dataclass
class Item:
    """One image to audit: ``features`` (1, C, h, w) or (1, D) of an image of ``image_size``; ``raw``
    its keypoints (sift, colmap-sift) for the defence sweep; ``name`` its file name below the report
    folder (sub-folders kept) and the key it is paired with its reference by."""

    name: str
    source: str
    features: torch.Tensor
    image_size: tuple[int, int]
    extractor: object
    raw: dict | None = None
    view: tuple[int | None, int | None] = (None, None)  # (resize, crop) the image was prepared with


# ------------------------------------------------------------------------------------ sources

def database_items(database: str, spec: str, resize: int | None, crop: int | None) -> tuple[int, Iterator[Item]]:
    """The images of a COLMAP database (read and checked whole first: a damaged one stops before any
    work), as `extract colmap-sift DATABASE.db -o DIR/` names them."""
    from .cli.extract import say_what_the_database_lacks
    from .extraction import database_rows, per_file_names
    from .features import parse_spec
    from .features.colmap import as_view, read_database

    extractor = parse_spec(spec)
    if extractor.name != "colmap-sift":
        raise FeatinvError(f"{database}: a COLMAP database holds colmap-sift features, not {extractor.spec}")
    found = read_database(database)
    say_what_the_database_lacks(found, database)
    if resize or crop:
        found = [as_view(i, resize, crop) for i in found]

    rows = database_rows(extractor, found, database)  # the largest grid checked against memory first

    def items():
        for (image, size, feats, raw), name in zip(rows, per_file_names([i.name for i in found])):
            yield Item(name, f"{database} ({image})", feats, size, extractor, raw, (resize, crop))
    return len(found), items()


def feature_items(args: list[str], feature: str | None) -> tuple[int, Iterator[Item]]:
    """The rows of feature files (folders walked), named as `invert FILES -o DIR/` names its PNGs."""
    from .features import resolve
    from .arguments import expand_feature_args
    from .formats.features import load_features
    from .grid import output_names

    folders = [Path(a) for a in args if Path(a).is_dir()]
    files = expand_feature_args(args)
    rows = 0
    for path in files:  # each file's header and shape checked before any work (files are memory-mapped: cheap)
        ff = load_features(path)
        resolve(ff, path, feature)
        rows += len(ff)

    def items():
        for path in files:
            ff = load_features(path)
            extractor, size = resolve(ff, path, feature)
            raw_keys = {"keypoints", "descriptors", "counts"}
            rows_raw = split_raw(ff.extra, len(ff)) if raw_keys <= ff.extra.keys() else [None] * len(ff)
            sources = ff.sources if len(ff.sources) == len(ff) else [f"{path} #{i}" for i in range(len(ff))]
            view = ((ff.view or {}).get("resize"), (ff.view or {}).get("crop"))  # extract's, for the reference
            for i, name in enumerate(output_names(ff, path, folders)):
                yield Item(name, sources[i], ff.features[i:i + 1], size, extractor, rows_raw[i], view)
    return rows, items()


def split_raw(extra: dict, rows: int) -> list[dict]:
    """A feature file's raw keypoints (all rows') -> one dict per row."""
    counts = extra["counts"].tolist()
    starts = [0]
    for c in counts:
        starts.append(starts[-1] + c)
    return [{"keypoints": extra["keypoints"][a:b], "descriptors": extra["descriptors"][a:b],
             "counts": extra["counts"][i:i + 1]} for i, (a, b) in enumerate(zip(starts, starts[1:]))][:rows]


def photo_items(files: list[Path], args: list[str], spec: str, resize: int | None,
                crop: int | None) -> tuple[int, Iterator[Item]]:
    """Photos through an extractor, named as `extract -o DIR/` names their feature files."""
    from .data import prepare_view
    from .extraction import per_file_names
    from .features import parse_spec
    from .arguments import source_names
    from .images import read_image

    extractor = parse_spec(spec)
    sources = source_names(files, args)

    def items():
        for f, source, name in zip(files, sources, per_file_names(sources)):
            image = prepare_view(read_image(f), resize, crop, str(f))
            with torch.no_grad():
                feats, extra = extractor.extract(image[None])
            raw = extra if extractor.keypoint_grid else None
            yield Item(name, source, feats, tuple(image.shape[-2:]), extractor, raw, (resize, crop))
    return len(files), items()


def pair_references(names: list[str], ref_files: list[Path], ref_args: list[str]) -> dict[str, Path]:
    """Each item name's reference: by name below the folders given (numbered as `extract -o DIR/`
    numbers them, so ``sub/x`` finds ``photos/sub/x.jpg``), else by file stem where stems are distinct."""
    from .extraction import per_file_names
    from .arguments import source_names

    by_name = dict(zip(per_file_names(source_names(ref_files, ref_args)), ref_files))
    stems = [f.stem for f in ref_files]
    by_stem = {f.stem: f for f in ref_files} if len(set(stems)) == len(stems) else {}
    out = {}
    for n in names:
        ref = by_name.get(n) or by_stem.get(Path(n).name)
        if ref is not None:
            out[n] = ref
    return out


# ------------------------------------------------------------------------------------ scoring

@dataclass
class Tally:
    """What a run of reconstructions adds up to: distances for the normalized error, PSNR, recognition."""

    distances: list = field(default_factory=list)
    psnr: list = field(default_factory=list)
    top1: int = 0
    top5: int = 0
    judged: int = 0
    keypoints: list = field(default_factory=list)

    def add(self, distance: float | None, psnr: float | None, judged: dict | None, keypoints: int | None) -> None:
        if distance is not None:
            self.distances.append(distance)
            self.psnr.append(psnr)
        if judged is not None:
            self.judged += 1
            self.top1 += judged["recognised_top1"]
            self.top5 += judged["recognised_top5"]
        if keypoints is not None:
            self.keypoints.append(keypoints)

    def summary(self, norm: float | None) -> dict:
        mean = lambda v: sum(v) / len(v) if v else None  # noqa: E731
        return {"normalized_error": mean([d / norm for d in self.distances]) if norm else None,
                "psnr": metrics.mean_psnr(self.psnr) if self.psnr else None,
                "recognised_top1": self.top1 / self.judged if self.judged else None,
                "recognised_top5": self.top5 / self.judged if self.judged else None,
                "keypoints": mean(self.keypoints)}


class Auditor:
    """Inverts, writes and scores chunks of Items into a report folder; ``finish`` gives the record."""

    def __init__(self, root: Path, references: dict[str, Path], keep: list[float], seed: int,
                 model: str | None, device: str = "cpu", method: str = "learned"):
        self.root, self.references, self.method = root, references, method
        self.refined: dict[str, int] = {}  # refine's steps per feature spec, for the provenance
        self.keep, self.seed, self.model, self.device = keep, seed, model, device
        self._judge = None
        self.inverters: dict[Path, object] = {}
        self.rows: list[dict] = []
        self.tallies = {p: Tally() for p in keep}
        self.kept_refs: list[torch.Tensor] | None = []  # 8-bit views for N, while one size and within budget
        self.written: set[str] = set()
        self.swept = False  # whether any image had keypoints to sweep
        self.shown = 0  # images whose reconstruction at every --keep the page shows

    def inverter(self, item: Item):
        from .inverter import inverter_for

        return inverter_for(self.inverters, self.model, item.extractor, item.features.shape[1], item.source,
                            self.device)

    def invert(self, items: list[Item], features: list[torch.Tensor]) -> list[torch.Tensor]:
        """(3, H, W) reconstructions of items' features (given: the defence's), batched where they share a
        size; with method "refine", refined as `invert --method refine` refines them."""
        out: list[torch.Tensor | None] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (item, f) in enumerate(zip(items, features)):
            groups.setdefault((tuple(f.shape), item.image_size, id(item.extractor)), []).append(i)
        for (_, size, _), rows in groups.items():
            inv = self.inverter(items[rows[0]])
            batch = torch.cat([features[i] for i in rows])
            for i, image in zip(rows, self.refine(items[rows[0]].extractor, batch, inv(batch, size))):
                out[i] = image
        return out

    def refine(self, extractor, features: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
        """--method refine: the steps measured for the feature (none for those they did not help, nor for
        keypoints, which have no gradient)."""
        from .optimize import refine, refine_config, refine_steps

        steps = refine_steps(extractor) if self.method == "refine" and extractor.differentiable else 0
        self.refined[extractor.spec] = steps
        if not steps:
            return learned
        return refine(extractor, features, learned, refine_config(steps, self.device))

    def add(self, items: list[Item]) -> list[torch.Tensor | None]:
        """Invert, write and score a chunk of images; returns their references (None where there is none)."""
        from .data import quantize8
        from .images import read_image

        refs = [self.reference(item, read_image) for item in items]
        recons = [self.fit(x, r, quantize8) for x, r in zip(self.invert(items, [i.features for i in items]), refs)]
        judged = self.recognise(refs, recons)
        for item, ref, recon, j in zip(items, refs, recons, judged):
            self.rows.append(self.row(item, ref, recon, j))
        return refs

    def reference(self, item: Item, read_image) -> torch.Tensor | None:
        """The reference's view, prepared as the item's image was (score --resize/--crop's way)."""
        from .data import prepare_view

        path = self.references.get(item.name)
        if path is None:
            return None
        ref = prepare_view(read_image(path), *item.view, str(path))
        if self.kept_refs is not None:
            kept = self.kept_refs
            if (kept and kept[0].shape != ref.shape) or (len(kept) + 1) * ref.numel() > REFERENCE_BUDGET:
                self.kept_refs = None  # mixed sizes (no N, as score says) or too many to hold
            else:
                kept.append((ref * 255).round().to(torch.uint8))
        return ref

    @staticmethod
    def fit(recon: torch.Tensor, ref: torch.Tensor | None, quantize8) -> torch.Tensor:
        """The reconstruction at its reference's size, as the 8-bit PNG written holds it."""
        if ref is not None:
            recon = metrics.match_size(recon[None], tuple(ref.shape[-2:]))[0]
        return quantize8(recon.clamp(0, 1))

    def recognise(self, refs: list, recons: list) -> list[dict | None]:
        pairs = [i for i, r in enumerate(refs) if r is not None]
        out: list[dict | None] = [None] * len(refs)
        if pairs:
            self._judge = self._judge or Judge(self.device)
            judged = recognition(self._judge.scores([refs[i] for i in pairs]),
                                 self._judge.scores([recons[i] for i in pairs]))
            for i, j in zip(pairs, judged):
                out[i] = j
        return out

    def row(self, item: Item, ref, recon, judged) -> dict:
        from .formats.png import write_image

        recon_name = f"{RECONSTRUCTIONS}/{item.name}.png"
        write_image(self.claim(recon_name), recon)
        row = {"name": item.name, "source": item.source, "reconstruction": recon_name,
               "reference": str(self.references[item.name]) if ref is not None else None,
               "image_size": list(item.image_size),
               "keypoints": int(item.raw["counts"].sum()) if item.raw is not None else None}
        distance = psnr = None
        if ref is not None:
            view = f"{REFERENCES}/{item.name}.png"
            write_image(self.claim(view), thumbnail(ref))
            distance = float((recon.double() - ref.double()).norm())
            psnr = float(metrics.psnr(recon[None], ref[None])[0])
            row.update(reference_view=view, distance=distance, psnr=psnr,
                       ssim=float(metrics.ssim(recon[None], ref[None])[0]),
                       mae=float(metrics.mae(recon[None], ref[None])[0]), **judged)
        if 1.0 in self.tallies:
            self.tallies[1.0].add(distance, psnr, judged, row["keypoints"])
        return row

    def defend(self, items: list[Item], refs: list) -> None:
        """The defence sweep of the chunk ``add`` just did: each --keep fraction of every image's
        keypoints, gridded again, inverted and scored."""
        from .analysis import keep_keypoints
        from .data import quantize8
        from .formats.png import write_image

        chosen = [i for i, (item, ref) in enumerate(zip(items, refs)) if item.raw is not None and ref is not None]
        self.swept |= bool(chosen)
        for p in (p for p in self.keep if p < 1 and chosen):
            raws = [keep_keypoints(items[i].raw, p, self.seed, [items[i].source]) for i in chosen]
            feats = [items[i].extractor.grid(raw, *items[i].image_size) for i, raw in zip(chosen, raws)]
            recons = [self.fit(x, refs[i], quantize8)
                      for i, x in zip(chosen, self.invert([items[i] for i in chosen], feats))]
            judged = self.recognise([refs[i] for i in chosen], recons)
            for i, raw, recon, j in zip(chosen, raws, recons, judged):
                ref = refs[i]
                self.tallies[p].add(float((recon.double() - ref.double()).norm()),
                                    float(metrics.psnr(recon[None], ref[None])[0]), j, int(raw["counts"].sum()))
                row = self.rows[len(self.rows) - len(items) + i]
                if row.get("defence") is not None or self.shown < SHOWN_DEFENCE:
                    self.shown += row.get("defence") is None
                    name = f"{DEFENCE}/keep-{p:g}/{items[i].name}.png"
                    write_image(self.claim(name), recon)
                    row.setdefault("defence", {})[f"{p:g}"] = name

    def claim(self, name: str) -> Path:
        """The path of a report file, made ready: its folder made; a file there replaced only if featinv
        wrote it (an earlier audit's), never twice in one run."""
        from .formats.png import PNG_FILE
        from .outputs import check_replaceable, make_folder

        if name.lower() in self.written:
            raise FeatinvError(f"{name}: two images of the audit would have this name")
        self.written.add(name.lower())
        path = self.root / name
        check_replaceable(path, PNG_FILE, "give -o another folder")
        make_folder(path.parent)
        return path

    def finish(self) -> tuple[float | None, list[dict], list[dict]]:
        """(N, the rows with their normalized error, the defence curve)."""
        norm = self.normalizer()
        for row in self.rows:
            d = row.pop("distance", None)
            row["normalized_error"] = d / norm if (d is not None and norm) else None
        defence = [dict(keep=p, **self.tallies[p].summary(norm)) for p in sorted(self.keep, reverse=True)] \
            if self.swept else []
        return norm, self.rows, defence

    def normalizer(self) -> float | None:
        refs = self.kept_refs
        if not refs or len(refs) < 2:
            if self.references:
                note("normalized error needs two or more references of one size (and at most "
                     f"{REFERENCE_BUDGET / 2**30:.0f} GiB of them); add --resize/--crop. Showing PSNR, SSIM and "
                     "recognition only")
            return None
        norm = metrics.blocked_mean_distance(torch.stack(refs))
        return norm if norm > 0 else None


def thumbnail(image: torch.Tensor) -> torch.Tensor:
    h, w = image.shape[-2:]
    if max(h, w) <= THUMBNAIL:
        return image
    s = THUMBNAIL / max(h, w)
    return metrics.match_size(image[None], (max(1, round(h * s)), max(1, round(w * s))))[0]


def summary(rows: list[dict], norm: float | None, defence: list[dict]) -> dict:
    """The audit's headline numbers: over the images that have a reference."""
    scored = [r for r in rows if r.get("reference") is not None]
    mean = lambda k: (sum(r[k] for r in scored if r.get(k) is not None) / len(scored)) if scored and \
        all(r.get(k) is not None for r in scored) else None  # noqa: E731
    out = {"images": len(rows), "with_reference": len(scored), "normalized_error": mean("normalized_error"),
           "psnr": metrics.mean_psnr([r["psnr"] for r in scored]) if scored else None, "ssim": mean("ssim"),
           "recognised_top1": mean("recognised_top1"), "recognised_top5": mean("recognised_top5"),
           "chance_top1": CHANCE["top1"], "chance_top5": CHANCE["top5"], "normalizer": norm}
    out["verdict"] = verdict(out, defence)
    return out


LEAKS, SOME = 0.25, 0.05  # top-5 rates: a quarter recognised; ten times chance


def verdict(s: dict, defence: list[dict]) -> str:
    """The report's first sentence: would someone recognise what is in these pictures, and which defence
    tried makes that stop (fall under ten times chance)?"""
    r5 = s["recognised_top5"]
    if r5 is None:
        return ("No photos to compare with (-r): look at the reconstructions; the error and recognisability "
                "need the photos the features came from.")
    how = f"SqueezeNet recognises {r5:.0%} of the reconstructions (top-5; chance {s['chance_top5']:.1%})"
    if r5 >= LEAKS:
        head = f"These features leak what is in the photos: {how}."
    elif r5 >= SOME:
        head = f"These features leak some of what is in the photos: {how}."
    else:
        head = f"Little that a classifier recognises survives featinv's inversion: {how}; a lower bound, not proof of privacy."
    swept = [d for d in defence if d["keep"] < 1 and d["recognised_top5"] is not None]
    if r5 >= SOME and swept:
        enough = [d for d in swept if d["recognised_top5"] < SOME]
        head += (f" Keeping {enough[0]['keep']:.0%} of the keypoints brings it to {enough[0]['recognised_top5']:.0%}."
                 if enough else f" Even keeping {swept[-1]['keep']:.0%} of the keypoints leaves "
                 f"{swept[-1]['recognised_top5']:.0%} recognised.")
    return head
