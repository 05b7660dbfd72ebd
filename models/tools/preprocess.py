"""The runtime's preprocessing, in Python, for building and checking models.

decode -> grey ("L") or RGB -> Image.resize((w, h), BILINEAR) (antialiased,
8-bit result) -> float32 / 255 -> (x - mean[c]) / std[c] -> NCHW or NHWC.

With a manifest `[tiling]` (cols, rows, overlap), `preprocess_tiles` cuts the frame the
way `shared/src/preprocess.rs` `tiles` does and resizes every tile (stretch) the same way:
one row per tile, row by row.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def preprocess(data: bytes | Image.Image, inp: dict) -> np.ndarray:
    """One encoded image (or decoded PIL image) -> tensor [1, ...] per the manifest's [input]."""
    img = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
    img = img.convert("L" if inp["channels"] == 1 else "RGB")
    img = img.resize((inp["width"], inp["height"]), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    if x.ndim == 2:
        x = x[:, :, None]
    x = (x - np.asarray(inp["mean"], np.float32)) / np.asarray(inp["std"], np.float32)
    if inp["layout"] == "nchw":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def tile_rects(w: int, h: int, cols: int, rows: int, overlap: int = 0) -> list[tuple[int, int, int, int]]:
    """[x, y, width, height] per tile, row by row: `cols` x `rows` tiles of equal size, evenly spaced
    from edge to edge, neighbours sharing at least `overlap` pixels (the runtime's arithmetic)."""
    def axis(length: int, n: int) -> list[tuple[int, int]]:
        size = min(max(-(-(length + (n - 1) * overlap) // n), 1), length)
        return [(0 if n == 1 else i * (length - size) // (n - 1), size) for i in range(n)]
    xs, ys = axis(w, cols), axis(h, rows)
    return [(x, y, tw, th) for (y, th) in ys for (x, tw) in xs]


def preprocess_tiles(data: bytes | Image.Image, inp: dict, tiling: dict | None) -> np.ndarray:
    """One encoded image -> tensor [tiles, ...] (one row per tile; [1, ...] without tiling).
    Stretch resize only (the 2.x models' mode)."""
    img = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
    img = img.convert("L" if inp["channels"] == 1 else "RGB")
    if not tiling:
        return preprocess(img, inp)
    rows = []
    for x, y, w, h in tile_rects(img.width, img.height, tiling["cols"], tiling["rows"],
                                 tiling.get("overlap", 0)):
        t = img.resize((inp["width"], inp["height"]), Image.BILINEAR, box=(x, y, x + w, y + h))
        rows.append(preprocess(t, inp))
    return np.concatenate(rows)
