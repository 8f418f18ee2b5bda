"""Labelled image grids: the PNGs people look at (input | reconstruction, perturbation series)."""
from __future__ import annotations

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text_block(text: str, width: int, height: int, scale: float) -> np.ndarray:
    block = np.full((height, width, 3), 255, np.uint8)
    if not text:
        return block
    # Shrink long labels until they fit the tile width.
    while scale > 0.3 and cv2.getTextSize(text, FONT, scale, 1)[0][0] > width - 4:
        scale -= 0.05
    (tw, th), _ = cv2.getTextSize(text, FONT, scale, 1)
    org = (max(2, (width - tw) // 2), (height + th) // 2)
    cv2.putText(block, text, org, FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return block


def _fit(tile: np.ndarray, height: int, width: int) -> np.ndarray:
    """Letterbox a tile into height x width, keeping its aspect ratio."""
    h, w = tile.shape[:2]
    s = min(height / h, width / w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    resized = cv2.resize(tile, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    out = np.full((height, width, 3), 255, np.uint8)
    top, left = (height - nh) // 2, (width - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out


def labelled_grid(rows: list[list[np.ndarray]], col_labels: list[str] | None = None,
                  row_labels: list[str] | None = None, captions: list[list[str]] | None = None,
                  tile: int = 192, pad: int = 4) -> np.ndarray:
    """Tiles (H, W, 3) uint8 arranged in rows, with optional column headers, row labels and a
    caption under each tile.

    Every tile is letterboxed into a ``tile`` x ``tile`` square so mixed sizes line up.
    """
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
