#!/usr/bin/env python3
"""Build the paired training set: each clean crop and a defective copy of the same crop.

    python tools/dataset.py OUT.npz --pairs 3000 --seed 11 [--kinds train] [--workers 2]

Frames go through the camera path (640x480, JPEG q90) and the runtime's
preprocessing up to the resize (tools/preprocess.py: grey, antialiased bilinear
to SIZE x SIZE, 8-bit). Stored: x uint8 [2 * pairs, SIZE, SIZE], y int
(index into synth.CLASSES), surface names, pair index.
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
import synth  # noqa: E402

SIZE = 128


def camera_resized(img: np.ndarray) -> np.ndarray:
    """JPEG q90 round trip, then the runtime's resize to SIZE x SIZE."""
    decoded = Image.open(io.BytesIO(synth.encode_jpeg(img))).convert("L")
    return np.asarray(decoded.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.uint8)


def make_pair(job: tuple[int, int, tuple[str, ...]]):
    seed, index, kinds = job
    # p_defect = 1: u(1) picks the defect kind; the clean copy is the same crop without it.
    clean, bad, p = synth.render_pair(seed, index, p_defect=1.0, kinds=kinds)
    return camera_resized(clean), camera_resized(bad), synth.CLASSES.index(p.label), p.surface


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--kinds", default="train")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    kinds = synth.parse_kinds(args.kinds)
    jobs = [(args.seed, i, kinds) for i in range(args.pairs)]
    with Pool(args.workers) as pool:
        rows = pool.map(make_pair, jobs, chunksize=16)
    x = np.stack([r[0] for r in rows] + [r[1] for r in rows])
    y = np.array([0] * len(rows) + [r[2] for r in rows], dtype=np.int32)
    surf = np.array([r[3] for r in rows] * 2)
    pair = np.concatenate([np.arange(len(rows))] * 2)
    np.savez_compressed(args.out, x=x, y=y, surface=surf, pair=pair)
    print(f"{args.out}: {len(x)} crops, classes {np.bincount(y, minlength=len(synth.CLASSES)).tolist()}")


if __name__ == "__main__":
    main()
