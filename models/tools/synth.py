#!/usr/bin/env python3
"""Reference generator for synthetic inspection frames (see models/SYNTHETIC.md).

Every frame is a pure function of (seed, index, width, height, p_defect): all
randomness comes from one SplitMix64 stream per frame, so a port that follows
SYNTHETIC.md reproduces the same frames (up to +-1 grey level from libm
rounding in log/cos).

CLI:
    python synth.py OUT_DIR --count 100 --seed 7 [--p-defect 0.5] [--format jpg]
writes OUT_DIR/frame-00000.jpg ... and OUT_DIR/labels.csv (file,label).
    python synth.py --describe --count 3 --seed 1
prints each frame's stream state, parameters and raw (pre-JPEG) pixel checksum,
for checking a port against this reference.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

CLASSES = ("good", "spot", "scratch")
JPEG_QUALITY = 90

_M64 = 0xFFFF_FFFF_FFFF_FFFF
_GAMMA = 0x9E37_79B9_7F4A_7C15
_C1 = 0xBF58_476D_1CE4_E5B9
_C2 = 0x94D0_49BB_1331_11EB

# Uniform draws 0..15 are per-frame scalars (13 used, 3 reserved); the row
# offsets and the pixel noise follow.
_SCALAR_DRAWS = 16


def mix64(z: int) -> int:
    """SplitMix64 output function on a Python int."""
    z &= _M64
    z = ((z ^ (z >> 30)) * _C1) & _M64
    z = ((z ^ (z >> 27)) * _C2) & _M64
    return z ^ (z >> 31)


def _mix64_array(z: np.ndarray) -> np.ndarray:
    # uint64 arithmetic wraps modulo 2**64, as the spec requires.
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
    return z ^ (z >> np.uint64(31))


class Stream:
    """u(k) = (mix64(s0 + (k+1)*gamma) >> 11) * 2**-53, i.e. SplitMix64 seeded with s0."""

    def __init__(self, seed: int, index: int):
        self.s0 = mix64((seed & _M64) ^ mix64(index))

    def uniforms(self, start: int, count: int) -> np.ndarray:
        k = np.arange(start + 1, start + 1 + count, dtype=np.uint64)
        z = np.uint64(self.s0) + k * np.uint64(_GAMMA)
        return (_mix64_array(z) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def normals(self, start: int, count: int) -> np.ndarray:
        """Box-Muller: normal j uses u(start+2j) and u(start+2j+1)."""
        u = self.uniforms(start, 2 * count)
        return np.sqrt(-2.0 * np.log(1.0 - u[0::2])) * np.cos(2.0 * math.pi * u[1::2])


@dataclass
class Params:
    label: str
    g0: float
    grad_amp: float
    grad_dir: float
    sigma: float
    # Defect geometry (unused for "good").
    size: float = 0.0  # spot radius or scratch length, px
    cx: float = 0.0
    cy: float = 0.0
    angle: float = 0.0  # scratch direction, radians in [0, pi)
    width: float = 0.0  # scratch width, px
    delta: float = 0.0  # signed intensity delta


def draw_params(stream: Stream, width: int, height: int, p_defect: float) -> Params:
    u = stream.uniforms(0, _SCALAR_DRAWS)
    m = min(width, height)
    if u[0] < p_defect:
        label = "spot" if u[1] < 0.5 else "scratch"
    else:
        label = "good"
    p = Params(
        label=label,
        g0=90.0 + 80.0 * u[2],
        grad_amp=-25.0 + 50.0 * u[3],
        grad_dir=2.0 * math.pi * u[4],
        sigma=3.0 + 5.0 * u[5],
    )
    if label == "good":
        return p
    p.delta = (40.0 + 50.0 * u[11]) * (1.0 if u[12] < 0.5 else -1.0)
    if label == "spot":
        r = m * (0.02 + 0.03 * u[6])
        p.size = r
        p.cx = r + u[7] * (width - 1 - 2 * r)
        p.cy = r + u[8] * (height - 1 - 2 * r)
    else:
        length = m * (0.15 + 0.30 * u[6])
        p.size = length
        p.angle = math.pi * u[9]
        p.width = max(2.0, m * (0.008 + 0.008 * u[10]))
        hx = 0.5 * length * abs(math.cos(p.angle))
        hy = 0.5 * length * abs(math.sin(p.angle))
        p.cx = hx + u[7] * (width - 1 - 2 * hx)
        p.cy = hy + u[8] * (height - 1 - 2 * hy)
    return p


def defect_alpha(p: Params, width: int, height: int) -> np.ndarray:
    """Defect coverage in [0, 1] per pixel; pixel (x, y) sits at (x, y)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    if p.label == "spot":
        d = np.hypot(xs - p.cx, ys - p.cy)
        return np.clip((p.size + 0.75 - d) / 1.5, 0.0, 1.0)
    if p.label == "scratch":
        dx = 0.5 * p.size * math.cos(p.angle)
        dy = 0.5 * p.size * math.sin(p.angle)
        ax, ay = p.cx - dx, p.cy - dy
        bx, by = 2.0 * dx, 2.0 * dy  # B - A
        t = np.clip(((xs - ax) * bx + (ys - ay) * by) / (bx * bx + by * by), 0.0, 1.0)
        d = np.hypot(xs - (ax + t * bx), ys - (ay + t * by))
        return np.clip(0.5 * p.width + 0.5 - d, 0.0, 1.0)
    return np.zeros((height, width))


def render(seed: int, index: int, width: int = 640, height: int = 480,
           p_defect: float = 0.5) -> tuple[np.ndarray, Params]:
    """Frame `index` of the run `seed`: (uint8 array [height, width], params)."""
    s = Stream(seed, index)
    p = draw_params(s, width, height, p_defect)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    # Linear gradient spanning -A/2 .. +A/2 along the direction over the frame.
    c, sn = math.cos(p.grad_dir), math.sin(p.grad_dir)
    t = (xs - 0.5 * (width - 1)) * c + (ys - 0.5 * (height - 1)) * sn
    t_max = 0.5 * (width - 1) * abs(c) + 0.5 * (height - 1) * abs(sn)
    v = p.g0 + p.grad_amp * t / (2.0 * t_max)
    # Brushed rows, then per-pixel noise.
    v = v + 2.0 * s.normals(_SCALAR_DRAWS, height)[:, None]
    v = v + p.sigma * s.normals(_SCALAR_DRAWS + 2 * height, width * height).reshape(height, width)
    if p.label != "good":
        v = v + p.delta * defect_alpha(p, width, height)
    return np.clip(np.floor(v + 0.5), 0, 255).astype(np.uint8), p


def encode_jpeg(img: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """What the camera sends: greyscale baseline JPEG."""
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def camera_frame(seed: int, index: int, width: int = 640, height: int = 480,
                 p_defect: float = 0.5) -> tuple[bytes, str]:
    img, p = render(seed, index, width, height, p_defect)
    return encode_jpeg(img), p.label


def describe(seed: int, index: int, width: int, height: int, p_defect: float) -> None:
    s = Stream(seed, index)
    u = s.uniforms(0, 3)
    img, p = render(seed, index, width, height, p_defect)
    fields = {k: v for k, v in vars(p).items() if k == "label" or v != 0.0}
    print(f"seed {seed} index {index}: s0 = 0x{s.s0:016x}, "
          f"u(0..2) = {u[0]:.17f} {u[1]:.17f} {u[2]:.17f}")
    print("  " + ", ".join(f"{k}={v:.6f}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in fields.items()))
    print(f"  raw pixel sum {int(img.sum(dtype=np.int64))}, "
          f"pixel[0,0]={img[0, 0]} pixel[{height // 2},{width // 2}]={img[height // 2, width // 2]}, "
          f"sha256 {hashlib.sha256(img.tobytes()).hexdigest()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?")
    ap.add_argument("--describe", action="store_true",
                    help="print parameters and raw-frame checksums instead of writing files")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0, help="first frame index")
    ap.add_argument("--p-defect", type=float, default=0.5)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--format", choices=("jpg", "png"), default="jpg",
                    help="jpg: camera JPEG (q90); png: the JPEG decoded, stored losslessly")
    args = ap.parse_args()

    if args.describe:
        for i in range(args.start, args.start + args.count):
            describe(args.seed, i, args.width, args.height, args.p_defect)
        return
    if not args.out_dir:
        ap.error("OUT_DIR is required unless --describe is given")
    os.makedirs(args.out_dir, exist_ok=True)
    rows = []
    for i in range(args.start, args.start + args.count):
        data, label = camera_frame(args.seed, i, args.width, args.height, args.p_defect)
        name = f"frame-{i:05d}.{args.format}"
        path = os.path.join(args.out_dir, name)
        if args.format == "jpg":
            with open(path, "wb") as f:
                f.write(data)
        else:
            Image.open(io.BytesIO(data)).save(path, format="PNG")
        rows.append((name, label))
    with open(os.path.join(args.out_dir, "labels.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("file", "label"))
        w.writerows(rows)


if __name__ == "__main__":
    main()
