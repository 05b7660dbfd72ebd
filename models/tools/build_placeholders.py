#!/usr/bin/env python3
"""Build the hand-constructed placeholder models, their manifests and goldens.

    python tools/build_placeholders.py [--out models/]

Writes prescreen-0.1.0.onnx, full-0.1.0.onnx, prescreen.toml, full.toml,
golden/*.png and samples/. Nothing is trained: every weight below is a fixed
filter or a constant set by hand from the feature distributions of synthetic
frames (seed 101, kept apart from the evaluation seed in check.py). The output
is deterministic: running the script twice gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth  # noqa: E402
from preprocess import preprocess  # noqa: E402

VERSION = "0.1.0"
OPSET = 17
IR_VERSION = 8  # lowest IR that carries opset 17; loads in any recent onnxruntime

PRESCREEN_INPUT = {"name": "image", "layout": "nchw", "channels": 1, "width": 64,
                   "height": 64, "mean": [0.5], "std": [0.25]}
FULL_INPUT = {"name": "image", "layout": "nchw", "channels": 3, "width": 128,
              "height": 128, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
FULL_CLASSES = ["good", "spot", "scratch"]
THRESHOLD = 0.5

# Prescreen head: score = sigmoid(PRE_GAIN * (max|DoG| - PRE_BIAS)).
# The feature is in normalised input units (x 63.75 = grey levels at 64x64).
# On good frames it stays below ~0.021, on defective frames above ~0.055; the
# 0.5 point sits near the good side (recall first).
PRE_BIAS = 0.028
PRE_GAIN = 250.0

# Full head. Features after the filter bank: Lmax / Lmin = largest / smallest
# per-orientation peak of the line detectors, B = peak of the blob detector.
#   strength   s = Lmax / 0.087 + B / 0.024      (~1 per term on good frames)
#   elongation e = (Lmin - 0.30 * Lmax) / 0.087  (> 0 spot-like, < 0 line-like)
#   logits: good = 0, spot = A(s - T) + Be, scratch = A(s - T) - Be
# T sits well above the good frames (max s ~1.9; defects >= ~5.9): precision first.
FULL_LINE_UNIT = 0.087
FULL_BLOB_UNIT = 0.024
FULL_ELONG_SPLIT = 0.30
FULL_T = 3.5
FULL_A = 4.0
FULL_B = 8.0

GOLDEN_SEED = 2024
GOLDEN_COUNTS = {"good": 3, "spot": 2, "scratch": 2}
SAMPLES_SEED = 7
SAMPLES_COUNT = 24


# ---------------------------------------------------------------- filters

def _grid(k: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(k, dtype=np.float64) - (k - 1) / 2
    return np.meshgrid(r, r, indexing="ij")  # (y, x)


def _gauss(k: int, sigma: float) -> np.ndarray:
    y, x = _grid(k)
    g = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    return g / g.sum()


def dog(k: int, s_centre: float, s_surround: float) -> np.ndarray:
    """Centre-surround kernel; zero-sum and symmetric, so a linear ramp gives 0."""
    w = _gauss(k, s_centre) - _gauss(k, s_surround)
    return w - w.mean()


def ridge(k: int, theta: float, s_across: float, s_along: float) -> np.ndarray:
    """Line detector along direction theta: -d2/du2 Gaussian across, Gaussian along.

    Zero-sum (flat areas and ramps give 0) and scaled to an L1 norm of 2.
    """
    y, x = _grid(k)
    along = x * np.cos(theta) + y * np.sin(theta)
    across = -x * np.sin(theta) + y * np.cos(theta)
    w = (1 - across**2 / s_across**2) * np.exp(
        -across**2 / (2 * s_across**2) - along**2 / (2 * s_along**2))
    w -= w.mean()
    return 2 * w / np.abs(w).sum()


# ---------------------------------------------------------------- graphs

def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def _model(graph: onnx.GraphProto, doc: str) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="tierline-models", producer_version=VERSION,
                          doc_string=doc)
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m, full_check=True)
    return m


def build_prescreen() -> onnx.ModelProto:
    kernel = dog(5, 0.8, 2.0)[None, None]  # [1,1,5,5], valid convolution
    nodes = [
        helper.make_node("Conv", ["image", "dog_w"], ["resp"], kernel_shape=[5, 5]),
        helper.make_node("Abs", ["resp"], ["mag"]),
        helper.make_node("GlobalMaxPool", ["mag"], ["peak4"]),
        helper.make_node("Flatten", ["peak4"], ["peak"]),
        helper.make_node("Sub", ["peak", "bias"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes, "prescreen",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 64, 64])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [_const("dog_w", kernel), _const("bias", [PRE_BIAS]), _const("gain", [PRE_GAIN])])
    return _model(graph, "Placeholder prescreen (hand-built): sigmoid of the peak "
                         "|centre-surround| response. Output: defect probability.")


def build_full() -> onnx.ModelProto:
    k, n_orient = 9, 8
    bank = [dog(k, 1.5, 3.5)] + [ridge(k, np.pi * i / n_orient, 1.0, 3.0)
                                  for i in range(n_orient)]
    bank_w = np.stack(bank)[:, None]  # [9,1,9,9]: channel 0 blob, 1..8 lines
    # Gemm over [Lmax, Lmin, B] -> logits [good, spot, scratch] (see constants).
    sl = FULL_A / FULL_LINE_UNIT
    sb = FULL_A / FULL_BLOB_UNIT
    el = FULL_B / FULL_LINE_UNIT
    w = np.array([
        [0.0, 0.0, 0.0],
        [sl - el * FULL_ELONG_SPLIT, el, sb],
        [sl + el * FULL_ELONG_SPLIT, -el, sb],
    ])
    b = np.array([0.0, -FULL_A * FULL_T, -FULL_A * FULL_T])
    nodes = [
        helper.make_node("Conv", ["image", "grey_w"], ["grey"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["grey", "bank_w"], ["resp"], kernel_shape=[k, k]),
        helper.make_node("Abs", ["resp"], ["mag"]),
        helper.make_node("GlobalMaxPool", ["mag"], ["peak4"]),
        helper.make_node("Flatten", ["peak4"], ["peak"]),
        helper.make_node("Split", ["peak", "split"], ["blob", "lines"], axis=1),
        helper.make_node("ReduceMax", ["lines"], ["line_max"], axes=[1], keepdims=1),
        helper.make_node("ReduceMin", ["lines"], ["line_min"], axes=[1], keepdims=1),
        helper.make_node("Concat", ["line_max", "line_min", "blob"], ["feat"], axis=1),
        helper.make_node("Gemm", ["feat", "head_w", "head_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "full",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 128, 128])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        [_const("grey_w", np.full((1, 3, 1, 1), 1 / 3)), _const("bank_w", bank_w),
         numpy_helper.from_array(np.array([1, n_orient], dtype=np.int64), "split"),
         _const("head_w", w), _const("head_b", b)])
    return _model(graph, "Placeholder classifier (hand-built): blob and oriented line "
                         "filters, peak responses, fixed linear head. Output: softmax "
                         "over [good, spot, scratch].")


# ---------------------------------------------------------------- scoring

class Runner:
    """Runs a model the way the runtime does and returns per-frame defect scores."""

    def __init__(self, path: str, inp: dict, kind: str):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.inp, self.kind = inp, kind

    def run(self, images: list) -> np.ndarray:
        x = np.concatenate([preprocess(im, self.inp) for im in images])
        return self.sess.run(None, {self.inp["name"]: x})[0]

    @staticmethod
    def defect_score(kind: str, out: np.ndarray) -> np.ndarray:
        return out[:, 0] if kind == "sigmoid" else 1.0 - out[:, 0]


# ---------------------------------------------------------------- outputs

def _toml_list(values) -> str:
    return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else repr(v) for v in values) + "]"


def manifest(name: str, file: str, sha: str, description: str, inp: dict,
             out: dict, goldens: list[tuple[str, str]]) -> str:
    lines = [
        f'name = "{name}"',
        f'version = "{VERSION}"',
        f'file = "{file}"',
        f'sha256 = "{sha}"',
        f'description = "{description}"',
        "",
        "[input]",
        f'name = "{inp["name"]}"',
        f'layout = "{inp["layout"]}"',
        f'channels = {inp["channels"]}',
        f'width = {inp["width"]}',
        f'height = {inp["height"]}',
        f'mean = {_toml_list(inp["mean"])}',
        f'std = {_toml_list(inp["std"])}',
        "",
        "[output]",
        f'name = "{out["name"]}"',
        f'kind = "{out["kind"]}"',
        f'classes = {_toml_list(out["classes"])}',
        f'good_class = {out["good_class"]}',
        f'threshold = {out["threshold"]}',
    ]
    for path, expect in goldens:
        lines += ["", "[[golden]]", f'file = "{path}"', f'expect = "{expect}"']
    return "\n".join(lines) + "\n"


def golden_frames() -> list[tuple[str, Image.Image, str]]:
    """First GOLDEN_COUNTS[label] frames of each class from GOLDEN_SEED, in index order."""
    need = dict(GOLDEN_COUNTS)
    found = []
    i = 0
    while any(need.values()):
        img, p = synth.render(GOLDEN_SEED, i)
        if need[p.label]:
            k = GOLDEN_COUNTS[p.label] - need[p.label]
            need[p.label] -= 1
            decoded = Image.open(io.BytesIO(synth.encode_jpeg(img)))
            decoded.load()
            found.append((f"golden/{p.label}-{k}.png", decoded, p.label))
        i += 1
    return sorted(found, key=lambda f: (FULL_CLASSES.index(f[2]), f[0]))


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = ap.parse_args()
    out = args.out

    models = {
        "prescreen": (build_prescreen(), PRESCREEN_INPUT,
                      {"name": "score", "kind": "sigmoid", "classes": ["good", "defect"],
                       "good_class": 0, "threshold": THRESHOLD},
                      "Placeholder edge prescreen: fixed centre-surround filter and "
                      "sigmoid, hand-built (not trained), tuned for recall"),
        "full": (build_full(), FULL_INPUT,
                 {"name": "probs", "kind": "softmax", "classes": FULL_CLASSES,
                  "good_class": 0, "threshold": THRESHOLD},
                 "Placeholder cloud classifier: fixed blob and line filter bank with a "
                 "linear head, hand-built (not trained), tuned for precision"),
    }

    goldens = golden_frames()
    os.makedirs(os.path.join(out, "golden"), exist_ok=True)
    for rel, img, _ in goldens:
        img.save(os.path.join(out, rel), format="PNG")

    for name, (model, inp, outp, desc) in models.items():
        file = f"{name}-{VERSION}.onnx"
        path = os.path.join(out, file)
        with open(path, "wb") as f:
            f.write(model.SerializeToString())
        # Goldens must pass with a clear margin, read back from the written PNGs.
        runner = Runner(path, inp, outp["kind"])
        out_raw = runner.run([Image.open(os.path.join(out, rel)) for rel, _, _ in goldens])
        scores = Runner.defect_score(outp["kind"], out_raw)
        expects = []
        for (rel, _, label), s, o in zip(goldens, scores, out_raw):
            ok = s <= 0.2 if label == "good" else s >= 0.8
            if outp["kind"] == "softmax":
                ok = ok and outp["classes"][int(np.argmax(o))] == label
            if not ok:
                raise SystemExit(f"{name}: golden {rel} ({label}) scored {s:.3f}")
            expects.append(label if outp["kind"] == "softmax" or label == "good" else "defect")
            print(f"{name}: {rel:24s} {label:8s} defect score {s:.4f}")
        text = manifest(name, file, sha256(path), desc, inp, outp,
                        [(rel, e) for (rel, _, _), e in zip(goldens, expects)])
        with open(os.path.join(out, f"{name}.toml"), "w") as f:
            f.write(text)

    samples = os.path.join(out, "samples")
    os.makedirs(samples, exist_ok=True)
    rows = []
    for i in range(SAMPLES_COUNT):
        data, label = synth.camera_frame(SAMPLES_SEED, i)
        fname = f"frame-{i:02d}.jpg"
        with open(os.path.join(samples, fname), "wb") as f:
            f.write(data)
        rows.append((fname, label))
    with open(os.path.join(samples, "labels.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("file", "label"))
        w.writerows(rows)


if __name__ == "__main__":
    main()
