"""Labelled image grids: the PNGs people look at (input | reconstruction, perturbation series),
and where `featinv invert` puts its reconstructions (one PNG, a grid, or a PNG per row)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX; cv2 is imported where a grid is drawn (73 ms, a single PNG needs none)


def _text_block(text: str, width: int, height: int, scale: float) -> np.ndarray:
    import cv2

    block = np.full((height, width, 3), 255, np.uint8)
    if not text:
        return block
    # A long label is broken into lines where the block is tall enough (a row label beside its tiles),
    # and shrunk only if it still does not fit; at the smallest size its last line ends in "...".
    while True:
        fits = lambda t, s=scale: cv2.getTextSize(t, FONT, s, 1)[0][0] <= width - 8  # noqa: E731  (4 px a side)
        line_h = cv2.getTextSize("Ag", FONT, scale, 1)[0][1] + 6
        lines = _wrap(text, fits, max(1, height // line_h))
        if "".join(lines).replace(" ", "") == text.replace(" ", "") or scale <= 0.3:
            break
        scale -= 0.05
    top = (height - line_h * len(lines)) // 2
    for i, line in enumerate(lines):
        (tw, th), _ = cv2.getTextSize(line, FONT, scale, 1)
        org = (max(4, (width - tw) // 2), top + i * line_h + (line_h + th) // 2)
        cv2.putText(block, line, org, FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return block


def _wrap(text: str, fits, most: int) -> list[str]:
    """``text`` in at most ``most`` lines that each ``fits``: broken at spaces (a word too long for a
    line at any character), the last line ending in "..." if the rest does not fit."""
    lines, rest = [], text
    while rest and len(lines) < most:
        if fits(rest):
            return lines + [rest]
        cut = len(rest)
        while cut > 1 and not fits(rest[:cut]):
            cut -= 1
        space = rest.rfind(" ", 0, cut + 1)
        cut = space if space > 0 and fits(rest[:space]) else cut
        if len(lines) == most - 1:  # the last line there is room for
            short = rest
            while len(short) > 1 and not fits(short + "..."):
                short = short[:-1]
            return lines + [short.rstrip() + "..."]
        lines.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return lines


def _fit(tile: np.ndarray, height: int, width: int) -> np.ndarray:
    """Letterbox a tile into height x width, keeping its aspect ratio."""
    import cv2

    h, w = tile.shape[:2]
    s = min(height / h, width / w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    resized = cv2.resize(tile, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    out = np.full((height, width, 3), 255, np.uint8)
    top, left = (height - nh) // 2, (width - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out


def tile_size(rows: list[list[np.ndarray]]) -> int:
    """The square every tile is letterboxed into: the images' own size (no blurring of 128-px
    reconstructions, no shrinking of photos), kept between 96 and 384 pixels."""
    return int(np.clip(max(max(t.shape[:2]) for row in rows for t in row), 96, 384))


def labelled_grid(rows: list[list[np.ndarray]], col_labels: list[str] | None = None,
                  row_labels: list[str] | None = None, captions: list[list[str]] | None = None,
                  tile: int | None = None, pad: int = 4) -> np.ndarray:
    """Tiles (H, W, 3) uint8 arranged in rows, with optional column headers, row labels and a
    caption under each tile.

    Every tile is letterboxed into a ``tile`` x ``tile`` square (default: ``tile_size``) so mixed
    sizes line up.
    """
    import cv2

    tile = tile or tile_size(rows)
    ncols = max(len(r) for r in rows)
    label_h = max(18, tile // 8)
    scale = max(0.35, tile / 384)
    row_w = 0
    if row_labels and any(row_labels):
        longest = max(row_labels, key=len)
        row_w = min(tile, cv2.getTextSize(longest, FONT, scale, 1)[0][0] + 12)
    width = row_w + ncols * (tile + pad) + pad
    parts = []
    if col_labels:
        header = [_text_block("", row_w, label_h, scale)] if row_w else []
        for c in range(ncols):
            header += [np.full((label_h, pad, 3), 255, np.uint8),
                       _text_block(col_labels[c] if c < len(col_labels) else "", tile, label_h, scale)]
        header.append(np.full((label_h, pad, 3), 255, np.uint8))
        parts.append(np.concatenate(header, axis=1))
    for r, row in enumerate(rows):
        cells = [_text_block(row_labels[r] if row_labels and r < len(row_labels) else "", row_w, tile, scale)] \
            if row_w else []
        for c in range(ncols):
            cells.append(np.full((tile, pad, 3), 255, np.uint8))
            cells.append(_fit(row[c], tile, tile) if c < len(row) else np.full((tile, tile, 3), 255, np.uint8))
        cells.append(np.full((tile, pad, 3), 255, np.uint8))
        parts.append(np.full((pad, width, 3), 255, np.uint8))
        parts.append(np.concatenate(cells, axis=1))
        if captions:
            strip = [_text_block("", row_w, label_h, scale)] if row_w else []
            for c in range(ncols):
                text = captions[r][c] if r < len(captions) and c < len(captions[r]) else ""
                strip += [np.full((label_h, pad, 3), 255, np.uint8), _text_block(text, tile, label_h, scale)]
            strip.append(np.full((label_h, pad, 3), 255, np.uint8))
            parts.append(np.concatenate(strip, axis=1))
    parts.append(np.full((pad, width, 3), 255, np.uint8))
    return np.concatenate(parts, axis=0)


def source_label(source: str, folders: bool = False) -> str:
    """How a grid or a file name shows a row's source: its stem, or with ``folders`` its path below the
    folder it was extracted from without the suffix (``n01440764/a``); an interpolation's "a.jpg ->
    b.jpg" becomes "a to b" (one name, not a path through a's folder)."""
    if " -> " in source:
        return " to ".join(Path(s).stem for s in source.split(" -> "))
    return Path(source).with_suffix("").as_posix() if folders else Path(source).stem


def row_labels(ff, folders: bool = False) -> list[str]:
    """A label per row: the image it came from (with ``folders``, its path below the folder it was
    extracted from, ``n01440764/a``: the PNG name ``invert -o DIR/`` gives it, class folders kept as
    ``extract -o DIR/`` keeps them), followed by what was done to it (labels metadata) where that does
    not already tell the rows apart, else its number."""
    n = len(ff)
    sources = [source_label(s, folders) for s in ff.sources] if len(ff.sources) == n else []
    if len(ff.labels) == n:
        # "dropout 0.3" on every tile of a batch of photos says nothing of which photo is which; a file
        # name must say it too (a_p.png's "a dropout 0.5"). Interpolation steps share their source.
        distinct = n > 1 and len(set(sources)) == n
        return [f"{s} {label}" for s, label in zip(sources, ff.labels)] if sources and (folders or distinct) \
            else ff.labels
    return sources or [f"#{i}" for i in range(n)]


def output_names(ff, path: str, folders: list[Path]) -> list[str]:
    """The name of each row's PNG below `invert -o DIR/` (and `audit`'s report): a one-row file found in
    a folder (`extract -o DIR/`'s) gives its file's own name below that folder (x-2.safetensors -> x-2,
    the round trip of extract's numbered names); other rows their ``row_labels``."""
    root = next((d for d in folders if d in Path(path).parents), None)
    if root and len(ff) == 1:
        return [Path(path).relative_to(root).with_suffix("").as_posix()]
    return row_labels(ff, folders=True)


def row_title(captions: list[str], history: list[str], name: str) -> str:
    """What a grid row shows: the caption its tiles share ("binarize"), else their common stem
    ("histogram" of "histogram #1", "histogram #2"), else the file's last operation or its name."""
    common = os.path.commonprefix(captions).rstrip(" #=t").strip()
    if len(set(captions)) == 1 or len(common) >= 3:
        return captions[0] if len(set(captions)) == 1 else common
    return history[-1] if history else Path(name).stem


def file_title(ff, captions: list[str], name: str) -> str:
    """The title of a feature file's grid row: one interpolated pair is "a to b", as it is when inverted
    alone (where each pair is a row titled so); any other file's is ``row_title``'s."""
    if ff.row_length and len(ff) == ff.row_length and len(ff.sources) == len(ff):
        return source_label(ff.sources[0])
    return row_title(captions, ff.history, name)


def distinct_titles(titles: list[str], specs: list[str], files: list[str]) -> list[str]:
    """Row titles that tell the rows apart: where two would read the same (one photo's features from
    several layers, each titled with the photo), the rows' feature specs, else their file names."""
    if len(set(titles)) == len(titles):
        return titles
    return specs if len(set(specs)) == len(specs) else [Path(f).stem for f in files]


def save_reconstructions(output: str, rows: list, captions: list[list[str]], row_names: list[str],
                         columns: int = 0, run_titles: list[str] | None = None) -> None:
    """Write reconstructions where `featinv invert -o FILE` says: rows[i] holds feature file i's images
    ((N, 3, H, W) in [0, 1]). Several files make one grid PNG, a row per file (``row_names``) with a
    caption per tile; one file's batch a grid of ``columns`` per row (all up to 8), each grid row titled
    by ``run_titles`` when given (an interpolation's pair); a plain PNG for a single image. (A directory
    is invert's, row by row (outputs.Output.file); ``output`` was checked before the work.)"""
    from .formats.png import image_to_uint8, write_image

    if len(rows) > 1:
        tiles = [[image_to_uint8(i) for i in images] for images in rows]
        # A caption that only repeats its row's label says nothing: "binarize" left of the row is enough.
        captions = [["" if c == name else c for c in caps] for caps, name in zip(captions, row_names)]
        write_image(output, labelled_grid(tiles, row_labels=row_names,
                                          captions=captions if any(any(c) for c in captions) else None))
        return
    images, labels = rows[0], captions[0]
    if len(images) == 1:
        write_image(output, images[0])
    else:
        cols = columns or min(len(images), 8)
        tiles = [image_to_uint8(i) for i in images]
        write_image(output, labelled_grid([tiles[i:i + cols] for i in range(0, len(tiles), cols)],
                                          row_labels=run_titles,
                                          captions=[labels[i:i + cols] for i in range(0, len(labels), cols)]))
