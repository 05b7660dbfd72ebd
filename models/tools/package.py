#!/usr/bin/env python3
"""Write the manifests, golden samples and the small labeled sample set for the trained models.

    python tools/package.py [--out models/]

Reads prescreen-<version>.onnx and full-<version>.onnx (from train.py) and writes
prescreen.toml, full.toml (sha256, input spec, normalization, outputs, thresholds,
goldens), golden/*.png and samples/ (JPEG frames and labels.csv).

Goldens: from seed 2024 (all surfaces, 640x480, JPEG q90 stored as the decoded
PNG), in index order, the first 2 good frames and the first frame of each defect
class that both models answer with margin (edge score <= 0.01 / >= 0.9; cloud:
right class with probability >= 0.65). The margin keeps the load-time and
periodic golden checks stable when `calibrate` moves the edge threshold.
A prescreen threshold already in prescreen.toml is kept (calibrate owns it).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import sys
import tomllib

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth  # noqa: E402
from preprocess import preprocess  # noqa: E402
from train import SIZE, VERSION  # noqa: E402

INPUT = {"name": "image", "layout": "nchw", "channels": 1, "width": SIZE, "height": SIZE,
         "mean": [0.5], "std": [0.25]}
GOLDEN_SEED = 2024
GOLDEN_SEARCH = 120  # frames looked at; a class without a golden by then gets none
SAMPLES_SEED = 7
SAMPLES_COUNT = 24
DEFAULT_EDGE_THRESHOLD = 0.5
FULL_THRESHOLD = 0.68  # 2 % false alarms on the validation goods (precision first)


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


def manifest(name, file, sha, description, out, goldens) -> str:
    lines = [
        f'name = "{name}"', f'version = "{VERSION}"', f'file = "{file}"', f'sha256 = "{sha}"',
        f'description = "{description}"', "", "[input]",
        f'name = "{INPUT["name"]}"', f'layout = "{INPUT["layout"]}"', f'channels = {INPUT["channels"]}',
        f'width = {INPUT["width"]}', f'height = {INPUT["height"]}',
        f'mean = {toml_list(INPUT["mean"])}', f'std = {toml_list(INPUT["std"])}', "", "[output]",
        f'name = "{out["name"]}"', f'kind = "{out["kind"]}"', f'classes = {toml_list(out["classes"])}',
        f'good_class = 0', f'threshold = {out["threshold"]}',
    ]
    for path, expect in goldens:
        lines += ["", "[[golden]]", f'file = "{path}"', f'expect = "{expect}"']
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = ap.parse_args()
    out = args.out
    pre_file, full_file = f"prescreen-{VERSION}.onnx", f"full-{VERSION}.onnx"
    pre, full = session(os.path.join(out, pre_file)), session(os.path.join(out, full_file))

    edge_threshold = DEFAULT_EDGE_THRESHOLD
    old = os.path.join(out, "prescreen.toml")
    if os.path.exists(old):
        with open(old, "rb") as f:
            m = tomllib.load(f)
        if m.get("version") == VERSION:
            edge_threshold = m["output"]["threshold"]

    def scores(img: Image.Image):
        x = preprocess(img, INPUT)
        return float(pre.run(None, {"image": x})[0][0, 0]), full.run(None, {"image": x})[0][0]

    need = {c: (2 if c == "good" else 1) for c in synth.CLASSES}
    goldens, skipped, i = [], 0, 0
    os.makedirs(os.path.join(out, "golden"), exist_ok=True)
    for f in os.listdir(os.path.join(out, "golden")):
        os.remove(os.path.join(out, "golden", f))
    while any(need.values()) and i < GOLDEN_SEARCH:
        img, p = synth.render(GOLDEN_SEED, i, kinds=synth.SURFACES)
        i += 1
        if not need[p.label]:
            continue
        decoded = Image.open(io.BytesIO(synth.encode_jpeg(img)))
        decoded.load()
        edge, probs = scores(decoded)
        k = synth.CLASSES.index(p.label)
        ok_edge = edge <= 0.01 if p.label == "good" else edge >= 0.9
        if not (ok_edge and probs.argmax() == k and probs[k] >= 0.65):
            skipped += 1
            continue
        n = (2 if p.label == "good" else 1) - need[p.label]
        need[p.label] -= 1
        rel = f"golden/{p.label}-{n}.png"
        decoded.save(os.path.join(out, rel), format="PNG")
        goldens.append((rel, p.label, p.surface, edge, float(probs[k])))
        print(f"golden {rel:22s} {p.surface:8s} edge {edge:.4f} cloud p({p.label}) {probs[k]:.4f}")
    goldens.sort(key=lambda g: (synth.CLASSES.index(g[1]), g[0]))
    print(f"goldens: {len(goldens)} taken, {skipped} skipped for margin, {i} frames looked at, "
          f"none found for {[c for c, n in need.items() if n]}")

    pre_out = {"name": "score", "kind": "sigmoid", "classes": ["good", "defect"],
               "threshold": edge_threshold}
    full_out = {"name": "probs", "kind": "softmax", "classes": list(synth.CLASSES),
                "threshold": FULL_THRESHOLD}
    texts = {
        "prescreen": manifest(
            "prescreen", pre_file, sha256(os.path.join(out, pre_file)),
            "Edge prescreen: 4-layer CNN over a 128x128 grey frame, peak of a 16x16 defect map, "
            "trained on synthetic defects, threshold calibrated for recall against the full model",
            pre_out, [(g[0], "good" if g[1] == "good" else "defect") for g in goldens]),
        "full": manifest(
            "full", full_file, sha256(os.path.join(out, full_file)),
            "Cloud classifier: 6-layer CNN over a 128x128 grey frame, softmax over good and five "
            "defect classes, trained on synthetic defects",
            full_out, [(g[0], g[1]) for g in goldens]),
    }
    for name, text in texts.items():
        with open(os.path.join(out, f"{name}.toml"), "w") as f:
            f.write(text)

    samples = os.path.join(out, "samples")
    os.makedirs(samples, exist_ok=True)
    for f in os.listdir(samples):
        os.remove(os.path.join(samples, f))
    rows = []
    for i in range(SAMPLES_COUNT):
        img, p = synth.render(SAMPLES_SEED, i, kinds=synth.SURFACES)
        fname = f"frame-{i:02d}.jpg"
        with open(os.path.join(samples, fname), "wb") as f:
            f.write(synth.encode_jpeg(img))
        rows.append((fname, p.label, p.surface))
    with open(os.path.join(samples, "labels.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("file", "label", "surface"))
        w.writerows(rows)
    print(f"samples: {len(rows)} frames, labels {np.unique([r[1] for r in rows], return_counts=True)}")


if __name__ == "__main__":
    main()
