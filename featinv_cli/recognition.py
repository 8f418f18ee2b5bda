"""Would a classifier recognise what is in a reconstruction? The shipped SqueezeNet's ImageNet class of
each reference and its reconstruction: `score`'s and `audit`'s recognisability.

An attacker's proxy, not ground truth: the judge is one ImageNet network, the same as the
``squeezenet:*`` features, so it may recognise what those features kept more readily than a person
or another network would (and it knows only ImageNet's 1000 classes).
"""
from __future__ import annotations

from pathlib import Path

import torch

JUDGE = "squeezenet:pool10"  # the 1000 class scores, as `featinv extract squeezenet:pool10` gives them
CLASSES = 1000
TOP = 5
CHANCE = {"top1": 1 / CLASSES, "top5": TOP / CLASSES}  # a random guess's rates
# ImageNet's class names in the order of the network's outputs (torchvision's list, BSD-3-Clause).
NAMES_FILE = Path(__file__).parent / "assets" / "imagenet-classes.txt"
ABOUT = ("recognised: the shipped SqueezeNet (ImageNet, 1000 classes) puts the reference's top class first "
         "(top-1) or among its five (top-5) for the reconstruction; chance is 0.1% and 0.5%. A proxy for a "
         "person's judgement, and the same network as the squeezenet:* features, which it may favour")


def class_names() -> list[str]:
    return NAMES_FILE.read_text().splitlines()


class Judge:
    """SqueezeNet's class scores of images (3, H, W) in [0, 1] of any size (each resized to 224)."""

    def __init__(self, device: str = "cpu"):
        from .features import parse_spec

        self.extractor = parse_spec(JUDGE)
        self.device = device

    @torch.no_grad()
    def scores(self, images: list[torch.Tensor]) -> torch.Tensor:
        """(N, 1000) class scores; images of one size go through the network together."""
        out: list[torch.Tensor | None] = [None] * len(images)
        by_size: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(tuple(image.shape), []).append(i)
        for rows in by_size.values():
            for start in range(0, len(rows), 32):
                chunk = rows[start:start + 32]
                batch = torch.stack([images[i] for i in chunk]).to(self.device)
                for i, s in zip(chunk, self.extractor(batch).float().cpu()):
                    out[i] = s
        return torch.stack(out) if out else torch.zeros(0, CLASSES)


def recognition(reference_scores: torch.Tensor, reconstruction_scores: torch.Tensor) -> list[dict]:
    """Per pair: the reference's top class, the reconstruction's five, and whether the reconstruction is
    recognised at top-1 (its first class is the reference's) and top-5 (the reference's is among its five)."""
    names = class_names()
    truth = reference_scores.argmax(1).tolist()
    guesses = reconstruction_scores.topk(TOP, dim=1).indices.tolist()
    return [{"reference_class": names[t], "reconstruction_classes": [names[g] for g in top],
             "recognised_top1": top[0] == t, "recognised_top5": t in top} for t, top in zip(truth, guesses)]


def rates(rows: list[dict]) -> dict:
    """The fraction of pairs recognised at top-1 and top-5, beside chance."""
    n = max(1, len(rows))
    return {"recognised_top1": sum(r["recognised_top1"] for r in rows) / n,
            "recognised_top5": sum(r["recognised_top5"] for r in rows) / n,
            "chance_top1": CHANCE["top1"], "chance_top5": CHANCE["top5"]}


def judge_pairs(recons: list[torch.Tensor], refs: list[torch.Tensor], device: str = "cpu") -> list[dict]:
    """``recognition`` of (3, H, W) pairs in [0, 1], each reconstruction resized to its reference first
    (as the scores are)."""
    from .metrics import match_size

    judge = Judge(device)
    fitted = [match_size(x[None].float(), tuple(r.shape[-2:]))[0].clamp(0, 1) for x, r in zip(recons, refs)]
    return recognition(judge.scores(refs), judge.scores(fitted))
