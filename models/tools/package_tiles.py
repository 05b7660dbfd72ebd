#!/usr/bin/env python3
"""Manifests and golden samples for the tiled 2.x models.

    python tools/package_tiles.py --version 2.0.0 --cloud-threshold T [--edge-threshold E]
        [--suffix -2] [--golden golden-2]

Reads prescreen-<version>.onnx and full-<version>.onnx (tools/train_tiles.py) and writes
prescreen<suffix>.toml and full<suffix>.toml (sha256, input, [tiling], outputs, thresholds,
goldens) and <golden>/*.png. The 1.x manifests, goldens and samples are left alone.

Goldens: from seed 2024 (all surfaces, 640x480, JPEG q90 stored as the decoded PNG), in index
order, the first 2 good frames and the first frame of each defect class that both models answer
with margin, scored as the runtime scores a tiled frame (worst tile): good frames with an edge
score at most a fifth of the edge threshold and a cloud score at most half the cloud threshold;
defective frames with an edge score at least 0.9 (and above the edge threshold), a cloud score at
least the cloud threshold plus 0.1, and the right class with probability >= 0.65 in the worst tile.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth  # noqa: E402
from preprocess import preprocess_tiles  # noqa: E402
from tiles import COLS, OVERLAP, ROWS, SIZE  # noqa: E402

INPUT = {"name": "image", "layout": "nchw", "channels": 1, "width": SIZE, "height": SIZE,
         "mean": [0.5], "std": [0.25]}
TILING = {"cols": COLS, "rows": ROWS, "overlap": OVERLAP}
GOLDEN_SEED = 2024
GOLDEN_SEARCH = 200


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def session(path: str):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def toml_list(values) -> str:
    return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else repr(v) for v in values) + "]"


def manifest(name, version, file, sha, description, out, goldens) -> str:
    lines = [
        f'name = "{name}"', f'version = "{version}"', f'file = "{file}"', f'sha256 = "{sha}"',
        f'description = "{description}"', "", "[input]",
        f'name = "{INPUT["name"]}"', f'layout = "{INPUT["layout"]}"', f'channels = {INPUT["channels"]}',
        f'width = {INPUT["width"]}', f'height = {INPUT["height"]}',
        f'mean = {toml_list(INPUT["mean"])}', f'std = {toml_list(INPUT["std"])}', "", "[output]",
        f'name = "{out["name"]}"', f'kind = "{out["kind"]}"', f'classes = {toml_list(out["classes"])}',
        'good_class = 0', f'threshold = {out["threshold"]}', "", "[tiling]",
        f'cols = {TILING["cols"]}', f'rows = {TILING["rows"]}', f'overlap = {TILING["overlap"]}',
    ]
    for path, expect in goldens:
        lines += ["", "[[golden]]", f'file = "{path}"', f'expect = "{expect}"']
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--version", default="2.0.0")
    ap.add_argument("--suffix", default="-2", help="manifest names: full<suffix>.toml, prescreen<suffix>.toml")
    ap.add_argument("--golden", default="golden-2", help="folder for the golden PNGs")
    ap.add_argument("--cloud-threshold", type=float, required=True)
    ap.add_argument("--edge-threshold", type=float, default=0.5)
    args = ap.parse_args()
    out, v = args.out, args.version
    pre_file, full_file = f"prescreen-{v}.onnx", f"full-{v}.onnx"
    pre, full = session(os.path.join(out, pre_file)), session(os.path.join(out, full_file))
    et, ct = args.edge_threshold, args.cloud_threshold

    def scores(img: Image.Image):
        x = preprocess_tiles(img, INPUT, TILING)
        edge = float(pre.run(None, {"image": x})[0][:, 0].max())
        probs = full.run(None, {"image": x})[0]
        worst = int((1.0 - probs[:, 0]).argmax())
        return edge, float(1.0 - probs[worst, 0]), probs[worst]

    need = {c: (2 if c == "good" else 1) for c in synth.CLASSES}
    goldens, skipped, i = [], 0, 0
    gdir = os.path.join(out, args.golden)
    os.makedirs(gdir, exist_ok=True)
    for f in os.listdir(gdir):
        os.remove(os.path.join(gdir, f))
    while any(need.values()) and i < GOLDEN_SEARCH:
        img, p = synth.render(GOLDEN_SEED, i, kinds=synth.SURFACES)
        i += 1
        if not need[p.label]:
            continue
        decoded = Image.open(io.BytesIO(synth.encode_jpeg(img)))
        decoded.load()
        edge, cloud, probs = scores(decoded)
        k = synth.CLASSES.index(p.label)
        if p.label == "good":
            ok = edge <= et / 5 and cloud <= ct / 2
        else:
            ok = (edge >= max(0.9, et) and cloud >= ct + 0.1 and probs.argmax() == k
                  and probs[k] >= 0.65)
        if not ok:
            skipped += 1
            continue
        n = (2 if p.label == "good" else 1) - need[p.label]
        need[p.label] -= 1
        rel = f"{args.golden}/{p.label}-{n}.png"
        decoded.save(os.path.join(out, rel), format="PNG")
        goldens.append((rel, p.label))
        print(f"golden {rel:24s} {p.surface:8s} edge {edge:.4f} cloud {cloud:.4f} p({p.label}) {probs[k]:.4f}")
    goldens.sort(key=lambda g: (synth.CLASSES.index(g[1]), g[0]))
    print(f"goldens: {len(goldens)} taken, {skipped} skipped for margin, {i} frames looked at, "
          f"none found for {[c for c, n in need.items() if n]}")

    texts = {
        "prescreen": manifest(
            "prescreen", v, pre_file, sha256(os.path.join(out, pre_file)),
            "Edge prescreen: 4-layer CNN (8/16/24 channels) on each 128x128 tile of a 5x4 tiling, worst "
            "tile decides; trained on synthetic defect tiles, threshold calibrated for recall against "
            "the full model",
            {"name": "score", "kind": "sigmoid", "classes": ["good", "defect"], "threshold": et},
            [(g[0], "good" if g[1] == "good" else "defect") for g in goldens]),
        "full": manifest(
            "full", v, full_file, sha256(os.path.join(out, full_file)),
            "Cloud classifier: 6-layer CNN on each 128x128 tile of a 5x4 tiling (near native "
            "resolution), softmax over good and five defect classes, worst tile decides; trained on "
            "synthetic defect tiles",
            {"name": "probs", "kind": "softmax", "classes": list(synth.CLASSES), "threshold": ct},
            [(g[0], g[1]) for g in goldens]),
    }
    for name, text in texts.items():
        with open(os.path.join(out, f"{name}{args.suffix}.toml"), "w") as f:
            f.write(text)
        print(f"wrote {name}{args.suffix}.toml")


if __name__ == "__main__":
    main()
