#!/usr/bin/env python3
"""Tile crops for the tiled models, cut exactly the way the runtime cuts them.

    python tools/tiles.py OUT.npz --frames 3000 --seed 51 [--kinds train] [--workers 2]

The runtime (`shared/src/preprocess.rs`, `tiles`) cuts a W x H frame into `cols` x `rows`
tiles of equal size, evenly spaced from edge to edge, neighbours sharing at least
`overlap` pixels, and resizes every tile to the model input with an antialiased
bilinear filter. `preprocess.tile_rects` is the same arithmetic; `cut_tiles` does the
resize with Pillow (`Image.resize(size, BILINEAR, box=...)`, the resampling that
`fast_image_resize` `Convolution(Bilinear)` with a crop reproduces).

Every generated frame is a pair (synth.render_layers with p_defect = 1): the clean
frame and the same frame with one defect, both through the camera path (JPEG q90).
Stored per frame: all tiles of the clean frame (label good) and the tiles of the
defective frame in which the defect is visible (label = defect class). A tile shows
the defect when it holds at least MIN_STRONG pixels (or half of them, for a small
defect) where the defect layer is at least half its peak; the tile with the most such
pixels always counts. Tiles of the defective frame that touch the defect only faintly
are left out (neither good nor defective).

Stored: x uint8 [n, SIZE, SIZE], y int (synth.CLASSES index), surface, frame (frame
index), tile (tile index), src (0 clean frame, 1 defective frame).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from multiprocessing import Pool

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import preprocess  # noqa: E402
import synth  # noqa: E402

SIZE = 128
# The tiling of the 2.x models' manifests.
COLS, ROWS, OVERLAP = 5, 4, 16
MIN_STRONG = 40
FAINT = 2.0  # grey levels: a tile with defect pixels this strong but not shown is left out


def tile_rects(w: int, h: int, cols: int = COLS, rows: int = ROWS,
               overlap: int = OVERLAP) -> list[tuple[int, int, int, int]]:
    """[x, y, width, height] per tile, row by row: `preprocess::tiles` of the runtime."""
    return preprocess.tile_rects(w, h, cols, rows, overlap)


def cut_tiles(img: Image.Image, size: int = SIZE, cols: int = COLS, rows: int = ROWS,
              overlap: int = OVERLAP) -> np.ndarray:
    """Decoded grey image -> uint8 [tiles, size, size], each tile resized as the runtime does."""
    out = []
    for x, y, w, h in tile_rects(img.width, img.height, cols, rows, overlap):
        t = img.resize((size, size), Image.BILINEAR, box=(x, y, x + w, y + h))
        out.append(np.asarray(t, dtype=np.uint8))
    return np.stack(out)


def camera(img: np.ndarray) -> Image.Image:
    """JPEG q90 round trip, decoded to grey."""
    decoded = Image.open(io.BytesIO(synth.encode_jpeg(img))).convert("L")
    decoded.load()
    return decoded


def tile_labels(layer: np.ndarray, rects) -> np.ndarray:
    """Per tile: 1 the defect is shown, 0 no trace of it, -1 faint trace only (left out)."""
    a = np.abs(layer)
    peak = float(a.max())
    if peak <= 0:
        return np.zeros(len(rects), np.int8)
    strong = a >= max(0.5 * peak, FAINT)
    faint = a >= FAINT
    total = int(strong.sum())
    counts = np.array([int(strong[y:y + h, x:x + w].sum()) for x, y, w, h in rects])
    touched = np.array([bool(faint[y:y + h, x:x + w].any()) for x, y, w, h in rects])
    shown = (counts >= min(MIN_STRONG, 0.5 * total)) & (counts > 0)
    shown[int(counts.argmax())] = True
    return np.where(shown, 1, np.where(touched, -1, 0)).astype(np.int8)


def make_frame(job):
    seed, index, kinds = job
    clean, bad, layer, p = synth.render_layers(seed, index, p_defect=1.0, kinds=kinds)
    rects = tile_rects(clean.shape[1], clean.shape[0])
    ct = cut_tiles(camera(clean))
    bt = cut_tiles(camera(bad))
    lab = tile_labels(layer, rects)
    k = synth.CLASSES.index(p.label)
    pos = np.flatnonzero(lab == 1)
    x = np.concatenate([ct, bt[pos]])
    y = np.concatenate([np.zeros(len(ct), np.int32), np.full(len(pos), k, np.int32)])
    tile = np.concatenate([np.arange(len(ct)), pos]).astype(np.int16)
    src = np.concatenate([np.zeros(len(ct), np.int8), np.ones(len(pos), np.int8)])
    return x, y, tile, src, p.surface, index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=51)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--kinds", default="train")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    kinds = synth.parse_kinds(args.kinds)
    jobs = [(args.seed, i, kinds) for i in range(args.start, args.start + args.frames)]
    xs, ys, tiles, srcs, surfs, frames = [], [], [], [], [], []
    with Pool(args.workers) as pool:
        for x, y, tile, src, surf, index in pool.imap(make_frame, jobs, chunksize=8):
            xs.append(x)
            ys.append(y)
            tiles.append(tile)
            srcs.append(src)
            surfs += [surf] * len(x)
            frames.append(np.full(len(x), index, np.int32))
    y = np.concatenate(ys)
    np.savez(args.out, x=np.concatenate(xs), y=y, tile=np.concatenate(tiles),
             src=np.concatenate(srcs), surface=np.array(surfs), frame=np.concatenate(frames))
    print(f"{args.out}: {len(y)} tiles from {args.frames} frame pairs, "
          f"classes {np.bincount(y, minlength=len(synth.CLASSES)).tolist()}")


if __name__ == "__main__":
    main()
