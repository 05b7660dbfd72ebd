#!/usr/bin/env python3
"""Reference generator for synthetic inspection frames (see models/SYNTHETIC.md).

Surfaces: procedural (brushed, cast, woven, painted) and photographic textures
shipped in the scikit-image wheel (brick, grass, gravel; CC0). Defects: scratch,
spot, crack, dent, stain, with varied contrast, size and edge softness.

Every frame is a pure function of (seed, index, width, height, p_defect, kinds):
all randomness comes from one SplitMix64 stream per frame, so a port that
follows SYNTHETIC.md reproduces the procedural frames (up to +-1 grey level
where libm rounds differently). `edge/src/synth.rs` is that port.

CLI:
    python synth.py OUT_DIR --count 100 --seed 7 [--p-defect 0.5] [--kinds brushed,cast]
writes OUT_DIR/frame-00000.jpg ... and OUT_DIR/labels.csv (file,label,surface).
    python synth.py --describe --count 3 --seed 1
prints parameters and raw (pre-JPEG) pixel checksums, for checking a port.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

CLASSES = ("good", "scratch", "spot", "crack", "dent", "stain")
DEFECTS = CLASSES[1:]
PROCEDURAL = ("brushed", "cast", "woven", "painted")
TEXTURES = ("brick", "grass", "gravel")
SURFACES = PROCEDURAL + TEXTURES
# Kept out of training, evaluated separately.
HELD_OUT = ("woven", "gravel")
TRAIN_SURFACES = tuple(s for s in SURFACES if s not in HELD_OUT)
JPEG_QUALITY = 90

_M64 = 0xFFFF_FFFF_FFFF_FFFF
_GAMMA = 0x9E37_79B9_7F4A_7C15
_C1 = 0xBF58_476D_1CE4_E5B9
_C2 = 0x94D0_49BB_1331_11EB

# Salts of the bulk noise streams.
SALT_PIXEL = 1
SALT_ROW = 2
SALT_LATTICE_A = 3
SALT_LATTICE_B = 4
# Value-noise lattice row stride: lattice point (ix, iy) is draw iy * STRIDE + ix.
STRIDE = 4099
CRACK_SEGMENTS = 10


def mix64(z: int) -> int:
    """SplitMix64 output function on a Python int."""
    z &= _M64
    z = ((z ^ (z >> 30)) * _C1) & _M64
    z = ((z ^ (z >> 27)) * _C2) & _M64
    return z ^ (z >> 31)


def _mix64_array(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
    return z ^ (z >> np.uint64(31))


class Stream:
    """u(k) = (mix64(s0 + (k+1)*gamma) >> 11) * 2**-53, i.e. SplitMix64 seeded with s0."""

    def __init__(self, s0: int):
        self.s0 = s0 & _M64

    @classmethod
    def frame(cls, seed: int, index: int) -> "Stream":
        return cls(mix64((seed & _M64) ^ mix64(index)))

    def child(self, salt: int) -> "Stream":
        return Stream(mix64(self.s0 ^ mix64(salt)))

    def u(self, k: int) -> float:
        return (mix64(self.s0 + (k + 1) * _GAMMA) >> 11) * 2.0**-53

    def uniforms_at(self, k: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            z = np.uint64(self.s0) + (k.astype(np.uint64) + np.uint64(1)) * np.uint64(_GAMMA)
            return (_mix64_array(z) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def normals_at(self, j: np.ndarray) -> np.ndarray:
        """Box-Muller: normal j uses u(2j) and u(2j+1)."""
        j = j.astype(np.uint64)
        a = self.uniforms_at(2 * j)
        b = self.uniforms_at(2 * j + 1)
        return np.sqrt(-2.0 * np.log(1.0 - a)) * np.cos(2.0 * math.pi * b)


@dataclass
class Params:
    label: str
    surface: str
    g0: float
    grad_amp: float
    grad_dir: float
    sigma: float
    sa: float
    sb: float
    sc: float
    defect: dict = field(default_factory=dict)


def draw_params(s: Stream, width: int, height: int, p_defect: float,
                kinds: tuple[str, ...], force: str | None = None) -> Params:
    """Scalar draws u(0..31). `force`: "good" or a defect name overrides u(0)/u(1)."""
    u = [s.u(k) for k in range(32)]
    if force is None:
        label = DEFECTS[min(int(u[1] * len(DEFECTS)), len(DEFECTS) - 1)] if u[0] < p_defect else "good"
    else:
        label = force
    p = Params(
        label=label,
        surface=kinds[min(int(u[2] * len(kinds)), len(kinds) - 1)],
        g0=70.0 + 110.0 * u[3],
        grad_amp=-30.0 + 60.0 * u[4],
        grad_dir=2.0 * math.pi * u[5],
        sigma=2.0 + 4.0 * u[6],
        sa=u[7], sb=u[8], sc=u[9],
    )
    m = float(min(width, height))
    mag = 25.0 + 55.0 * u[15]
    sign = 1.0 if u[16] < 0.5 else -1.0
    d = p.defect
    if label == "scratch":
        length = m * (0.12 + 0.35 * u[12])
        phi = math.pi * u[13]
        hx = 0.5 * length * abs(math.cos(phi))
        hy = 0.5 * length * abs(math.sin(phi))
        d.update(length=length, angle=phi, width=m * (0.004 + 0.010 * u[14]), delta=sign * mag,
                 cx=hx + u[10] * (width - 1 - 2 * hx), cy=hy + u[11] * (height - 1 - 2 * hy))
    elif label == "spot":
        r = m * (0.012 + 0.035 * u[12])
        d.update(radius=r, blur=1.0 + 4.0 * u[14], delta=sign * mag,
                 cx=r + u[10] * (width - 1 - 2 * r), cy=r + u[11] * (height - 1 - 2 * r))
    elif label == "crack":
        step = m * (0.025 + 0.02 * u[12])
        heading = 2.0 * math.pi * u[13]
        x = 0.15 * width + u[10] * 0.7 * width
        y = 0.15 * height + u[11] * 0.7 * height
        pts = [(x, y)]
        for i in range(CRACK_SEGMENTS):
            heading += (u[17 + i] - 0.5) * 1.2
            x += step * math.cos(heading)
            y += step * math.sin(heading)
            pts.append((x, y))
        d.update(points=pts, width=m * (0.0025 + 0.005 * u[14]), delta=-(35.0 + 55.0 * u[15]))
    elif label == "dent":
        r = m * (0.03 + 0.05 * u[12])
        d.update(radius=r, light=2.0 * math.pi * u[13], delta=20.0 + 40.0 * u[15],
                 cx=r + u[10] * (width - 1 - 2 * r), cy=r + u[11] * (height - 1 - 2 * r))
    elif label == "stain":
        r = m * (0.05 + 0.10 * u[12])
        d.update(radius=r, ramp=m * (0.01 + 0.03 * u[14]),
                 delta=(12.0 + 33.0 * u[15]) * (1.0 if u[16] >= 0.75 else -1.0),
                 ph3=2.0 * math.pi * u[17], ph5=2.0 * math.pi * u[18],
                 cx=r + u[10] * (width - 1 - 2 * r), cy=r + u[11] * (height - 1 - 2 * r))
    return p


def _value_noise(s: Stream, width: int, height: int, cell_x: float, cell_y: float) -> np.ndarray:
    """Smoothstep-interpolated lattice noise in [-1, 1] over a width x height frame."""
    gx = np.arange(width, dtype=np.float64) / cell_x
    gy = np.arange(height, dtype=np.float64) / cell_y
    ix, iy = np.floor(gx), np.floor(gy)
    tx, ty = gx - ix, gy - iy
    sx = (tx * tx * (3.0 - 2.0 * tx))[None, :]
    sy = (ty * ty * (3.0 - 2.0 * ty))[:, None]
    ix, iy = ix.astype(np.int64), iy.astype(np.int64)
    # Lattice values on the grid the frame touches, then gathered per pixel.
    lx = np.arange(int(ix[-1]) + 2, dtype=np.int64)
    ly = np.arange(int(iy[-1]) + 2, dtype=np.int64)
    grid = 2.0 * s.uniforms_at(ly[:, None] * STRIDE + lx[None, :]) - 1.0
    a, b = grid[iy][:, ix], grid[iy][:, ix + 1]
    c, d = grid[iy + 1][:, ix], grid[iy + 1][:, ix + 1]
    top = a * (1.0 - sx) + b * sx
    bot = c * (1.0 - sx) + d * sx
    return top * (1.0 - sy) + bot * sy


_TEXTURE_CACHE: dict[str, np.ndarray] = {}


def _texture(name: str) -> np.ndarray:
    if name not in _TEXTURE_CACHE:
        from skimage import data  # only the photographic surfaces need scikit-image
        img = getattr(data, name)()
        if img.ndim == 3:
            img = img[..., :3].mean(axis=2)
        _TEXTURE_CACHE[name] = img.astype(np.float64)
    return _TEXTURE_CACHE[name]


def surface(p: Params, s: Stream, width: int, height: int) -> np.ndarray:
    """Zero-mean surface pattern (grey levels), before base level, gradient and noise."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    if p.surface == "brushed":
        rows = s.child(SALT_ROW).normals_at(np.arange(height))[:, None]
        streak = _value_noise(s.child(SALT_LATTICE_A), width, height, 40.0 + 80.0 * p.sa, 1.0)
        return 2.5 * rows + (3.0 + 4.0 * p.sb) * streak
    if p.surface == "cast":
        a = _value_noise(s.child(SALT_LATTICE_A), width, height, 40.0, 40.0)
        b = _value_noise(s.child(SALT_LATTICE_B), width, height, 8.0, 8.0)
        return (6.0 + 10.0 * p.sa) * a + (3.0 + 5.0 * p.sb) * b
    if p.surface == "woven":
        period = 10.0 + 14.0 * p.sa
        gx, gy = xs / period, ys / period
        fx, fy = gx - np.floor(gx), gy - np.floor(gy)
        parity = (np.floor(gx) + np.floor(gy)) % 2.0
        prof = np.where(parity == 0.0, np.sin(math.pi * fx), np.sin(math.pi * fy))
        return (10.0 + 20.0 * p.sb) * (prof - 0.5)
    if p.surface == "painted":
        a = _value_noise(s.child(SALT_LATTICE_A), width, height, 120.0, 120.0)
        b = _value_noise(s.child(SALT_LATTICE_B), width, height, 5.0, 5.0)
        return (4.0 + 6.0 * p.sa) * a + (1.5 + 2.5 * p.sb) * b
    # Photographic texture: a random crop (side 50-100 % of the texture), flipped and
    # resized to the frame, contrast scaled, mean removed.
    tex = _texture(p.surface)
    th, tw = tex.shape
    side = int(min(th, tw) * (0.5 + 0.5 * p.sa))
    ox = int((tw - side) * p.sb)
    oy = int((th - side) * p.sc)
    crop = tex[oy:oy + side, ox:ox + side]
    if p.sc < 0.5:
        crop = crop[:, ::-1]
    img = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8), mode="L").resize(
        (width, height), Image.BILINEAR)
    t = np.asarray(img, dtype=np.float64)
    return (t - t.mean()) * (0.3 + 0.4 * p.sb)


def _capsule_alpha(xs, ys, ax, ay, bx, by, w):
    dx, dy = bx - ax, by - ay
    t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    dist = np.hypot(xs - (ax + t * dx), ys - (ay + t * dy))
    return np.clip(0.5 * w + 0.5 - dist, 0.0, 1.0)


def defect_layer(p: Params, width: int, height: int) -> np.ndarray:
    """Additive defect layer in grey levels (zero for good frames)."""
    d = p.defect
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    if p.label == "scratch":
        dx = 0.5 * d["length"] * math.cos(d["angle"])
        dy = 0.5 * d["length"] * math.sin(d["angle"])
        a = _capsule_alpha(xs, ys, d["cx"] - dx, d["cy"] - dy, d["cx"] + dx, d["cy"] + dy, d["width"])
        return d["delta"] * a
    if p.label == "spot":
        dist = np.hypot(xs - d["cx"], ys - d["cy"])
        return d["delta"] * np.clip((d["radius"] + 0.5 * d["blur"] - dist) / d["blur"], 0.0, 1.0)
    if p.label == "crack":
        a = np.zeros((height, width))
        pts = d["points"]
        for (ax, ay), (bx, by) in zip(pts[:-1], pts[1:]):
            a = np.maximum(a, _capsule_alpha(xs, ys, ax, ay, bx, by, d["width"]))
        return d["delta"] * a
    if p.label == "dent":
        ddx, ddy = xs - d["cx"], ys - d["cy"]
        r = d["radius"]
        along = (ddx * math.cos(d["light"]) + ddy * math.sin(d["light"])) / r
        return d["delta"] * along * np.exp(0.5 - (ddx * ddx + ddy * ddy) / (2.0 * r * r))
    if p.label == "stain":
        ddx, ddy = xs - d["cx"], ys - d["cy"]
        ang = np.arctan2(ddy, ddx)
        edge = d["radius"] * (1.0 + 0.2 * np.sin(3.0 * ang + d["ph3"])
                              + 0.12 * np.sin(5.0 * ang + d["ph5"]))
        return d["delta"] * np.clip((edge - np.hypot(ddx, ddy)) / d["ramp"] + 0.5, 0.0, 1.0)
    return np.zeros((height, width))


def render_pair(seed: int, index: int, width: int = 640, height: int = 480,
                p_defect: float = 0.5, kinds: tuple[str, ...] = PROCEDURAL,
                force: str | None = None) -> tuple[np.ndarray, np.ndarray, Params]:
    """(clean uint8 frame, frame with the drawn defect, params). For good frames both are equal."""
    clean, bad, _, p = render_layers(seed, index, width, height, p_defect, kinds, force)
    return clean, bad, p


def render_layers(seed: int, index: int, width: int = 640, height: int = 480,
                  p_defect: float = 0.5, kinds: tuple[str, ...] = PROCEDURAL,
                  force: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, Params]:
    """render_pair plus the additive defect layer (grey levels, float [height, width]; zero for good
    frames): where the defect is, for labelling tiles."""
    s = Stream.frame(seed, index)
    p = draw_params(s, width, height, p_defect, kinds, force)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    c, sn = math.cos(p.grad_dir), math.sin(p.grad_dir)
    t = (xs - 0.5 * (width - 1)) * c + (ys - 0.5 * (height - 1)) * sn
    t_max = 0.5 * (width - 1) * abs(c) + 0.5 * (height - 1) * abs(sn)
    v = p.g0 + p.grad_amp * t / (2.0 * t_max) + surface(p, s, width, height)
    k = np.arange(width * height, dtype=np.uint64).reshape(height, width)
    v = v + p.sigma * s.child(SALT_PIXEL).normals_at(k)
    clean = np.clip(np.floor(v + 0.5), 0, 255).astype(np.uint8)
    if p.label == "good":
        return clean, clean, np.zeros((height, width)), p
    layer = defect_layer(p, width, height)
    bad = np.clip(np.floor(v + layer + 0.5), 0, 255).astype(np.uint8)
    return clean, bad, layer, p


def render(seed: int, index: int, width: int = 640, height: int = 480,
           p_defect: float = 0.5, kinds: tuple[str, ...] = PROCEDURAL) -> tuple[np.ndarray, Params]:
    """Frame `index` of the run `seed`: (uint8 array [height, width], params)."""
    _, img, p = render_pair(seed, index, width, height, p_defect, kinds)
    return img, p


def encode_jpeg(img: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """What the camera sends: greyscale baseline JPEG."""
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def describe(seed: int, index: int, width: int, height: int, p_defect: float,
             kinds: tuple[str, ...]) -> None:
    s = Stream.frame(seed, index)
    img, p = render(seed, index, width, height, p_defect, kinds)
    print(f"seed {seed} index {index}: s0 = 0x{s.s0:016x}, u(0) = {s.u(0):.17f}")
    print(f"  label={p.label} surface={p.surface} g0={p.g0:.6f} sigma={p.sigma:.6f}")
    print(f"  raw pixel sum {int(img.sum(dtype=np.int64))}, "
          f"pixel[0,0]={img[0, 0]} pixel[{height // 2},{width // 2}]={img[height // 2, width // 2]}, "
          f"sha256 {hashlib.sha256(img.tobytes()).hexdigest()}")


def parse_kinds(text: str) -> tuple[str, ...]:
    if text in ("all", "train", "held-out", "procedural"):
        return {"all": SURFACES, "train": TRAIN_SURFACES, "held-out": HELD_OUT,
                "procedural": PROCEDURAL}[text]
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in SURFACES]
    if bad or not kinds:
        raise SystemExit(f"--kinds: unknown surface {bad}; choose from {', '.join(SURFACES)}")
    return kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?")
    ap.add_argument("--describe", action="store_true")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0, help="first frame index")
    ap.add_argument("--p-defect", type=float, default=0.5)
    ap.add_argument("--kinds", default="procedural",
                    help="surfaces: comma list, or all / train / held-out / procedural")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--only", choices=("good", "defective"), default=None,
                    help="keep only good or only defective frames (skips the others)")
    args = ap.parse_args()
    kinds = parse_kinds(args.kinds)

    if args.describe:
        for i in range(args.start, args.start + args.count):
            describe(args.seed, i, args.width, args.height, args.p_defect, kinds)
        return
    if not args.out_dir:
        ap.error("OUT_DIR is required unless --describe is given")
    os.makedirs(args.out_dir, exist_ok=True)
    rows = []
    i = args.start
    while len(rows) < args.count:
        s = Stream.frame(args.seed, i)
        defective = s.u(0) < args.p_defect
        if args.only is None or defective == (args.only == "defective"):
            img, p = render(args.seed, i, args.width, args.height, args.p_defect, kinds)
            name = f"frame-{i:05d}.jpg"
            with open(os.path.join(args.out_dir, name), "wb") as f:
                f.write(encode_jpeg(img))
            rows.append((name, p.label, p.surface))
        i += 1
    with open(os.path.join(args.out_dir, "labels.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("file", "label", "surface"))
        w.writerows(rows)


if __name__ == "__main__":
    main()
