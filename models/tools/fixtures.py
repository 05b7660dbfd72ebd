"""Builds the model-contract fixtures under models/fixtures/ and their reference outputs.

    python models/tools/fixtures.py            # own fixtures: small ONNX graphs of every output kind
    python models/tools/fixtures.py --third-party <folder the rapidocr_onnxruntime wheel is unpacked in>

Own fixtures are tiny graphs written with the `onnx` package whose behaviour is known by construction
(bright blobs are "spots", dark pixels "cracks", local contrast is "anomaly"), one per output kind and input
variant, each with a manifest and test images with a planted defect. Third-party fixtures are real models
taken from the rapidocr_onnxruntime wheel on PyPI (PaddleOCR's text detector and text-direction classifier),
which `scripts/setup` fetches; their references come from the publisher's own preprocessing code.

Every reference is onnxruntime's output on the test images after preprocessing written here in numpy
(or by the publisher), independent of Tierline's Rust code: `reference.json` beside each manifest.
Needs: numpy, onnx, onnxruntime, pillow (and opencv-python-headless, pyclipper, shapely, pyyaml for the
third-party references).
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures")
OPSET = [helper.make_opsetid("", 17)]


def const(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def save(model, path):
    model.ir_version = 8  # what opset 17 needs; readable by every ONNX Runtime of the last years
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def write_png(path, array):
    Image.fromarray(array.astype(np.uint8)).save(path)


def surface(h, w, seed, rgb=True):
    """A mid-grey surface with mild noise."""
    rng = np.random.default_rng(seed)
    base = 115 + rng.normal(0, 3, (h, w))
    base = np.clip(base, 0, 255)
    return np.stack([base] * 3, axis=-1) if rgb else base


# ---------------------------------------------------------------- numpy preprocessing (the reference side)


def load(path, channels, order="rgb"):
    img = Image.open(path)
    if channels == 1:
        return np.asarray(img.convert("L"), dtype=np.float32)[..., None]
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    return arr[..., ::-1] if order == "bgr" else arr


def pil_resize(arr, w, h):
    """Antialiased bilinear, as Pillow does it (the filter Tierline's resizer implements)."""
    chans = [
        np.asarray(Image.fromarray(arr[..., c]).resize((w, h), Image.BILINEAR), dtype=np.float32)
        for c in range(arr.shape[-1])
    ]
    return np.stack(chans, axis=-1)


def letterbox(arr, w, h, pad):
    ih, iw = arr.shape[:2]
    s = min(w / iw, h / ih)
    nw, nh = max(1, min(w, round(iw * s))), max(1, min(h, round(ih * s)))
    inner = pil_resize(arr, nw, nh)
    # Pillow resamples floats without rounding; Tierline resamples 8-bit pixels.
    inner = np.clip(np.round(inner), 0, 255)
    canvas = np.full((h, w, arr.shape[-1]), pad, dtype=np.float32)
    px, py = (w - nw) // 2, (h - nh) // 2
    canvas[py : py + nh, px : px + nw] = inner
    return canvas


def tensor(arr, mean, std, scale=1 / 255.0, layout="nchw"):
    x = (arr * scale - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return x.transpose(2, 0, 1) if layout == "nchw" else x


# ---------------------------------------------------------------- own fixtures


def anomaly_fixture(d):
    """Local contrast as anomaly: |grey - 9x9 mean| x 10; score = the map's max. Non-square input, and tensor
    names with '/' and '.' as exporters write them."""
    h, w = 64, 96
    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["batch", 3, h, w])
    amap = helper.make_tensor_value_info("/model/anomaly_map", TensorProto.FLOAT, ["batch", 1, h, w])
    score = helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, ["batch"])
    nodes = [
        helper.make_node("ReduceMean", ["input.1"], ["grey"], axes=[1], keepdims=1),
        helper.make_node(
            "AveragePool", ["grey"], ["blur"], kernel_shape=[9, 9], pads=[4, 4, 4, 4], count_include_pad=0
        ),
        helper.make_node("Sub", ["grey", "blur"], ["diff"]),
        helper.make_node("Abs", ["diff"], ["absdiff"]),
        helper.make_node("Mul", ["absdiff", "ten"], ["/model/anomaly_map"]),
        helper.make_node("ReduceMax", ["/model/anomaly_map"], ["pred_score"], axes=[1, 2, 3], keepdims=0),
    ]
    g = helper.make_graph(nodes, "anomaly", [x], [score, amap], [const("ten", 10.0)])
    sha = save(helper.make_model(g, opset_imports=OPSET), os.path.join(d, "anomaly.onnx"))
    manifest = f'''name = "fixture-anomaly"
version = "1.0.0"
file = "anomaly.onnx"
sha256 = "{sha}"
description = "Fixture: local contrast as an anomaly map and score"

[input]
name = "input.1"
layout = "nchw"
channels = 3
width = {w}
height = {h}
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]

[output]
kind = "anomaly"
name = "pred_score"
map = "/model/anomaly_map"
classes = ["anomaly"]
threshold = 0.5
min_area = 4
normalization = {{ min = 0.0, max = 10.0, image_threshold = 2.0 }}

[[golden]]
file = "spot.png"
expect = "anomaly"
region = [50.0, 20.0, 6.0, 6.0]
iou = 0.1

[[golden]]
file = "good.png"
expect = "good"
'''
    open(os.path.join(d, "anomaly.toml"), "w").write(manifest)
    good = surface(h, w, 1)
    spot = surface(h, w, 2)
    spot[20:26, 50:56] = 240
    write_png(os.path.join(d, "good.png"), good)
    write_png(os.path.join(d, "spot.png"), spot)
    sess = ort.InferenceSession(os.path.join(d, "anomaly.onnx"))
    ref = {}
    for name in ["good.png", "spot.png"]:
        t = tensor(load(os.path.join(d, name), 3), [0] * 3, [1] * 3)[None]
        s, m = sess.run(["pred_score", "/model/anomaly_map"], {"input.1": t})
        norm = float(np.clip((s[0] - 2.0) / 10.0 + 0.5, 0, 1))
        ref[name] = {"defect_score": norm, "raw_score": float(s[0])}
    return {"anomaly.toml": ref}


def detector_graph(layout):
    """8x8 cells over a 64x64 input; a cell's 'spot' score rises with its mean brightness, 'hole' with its
    darkness. Boxes are the cells (centre, size) in input pixels."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 64, 64])
    cells = 8
    cx = np.tile(np.arange(cells) * 8 + 4, cells)
    cy = np.repeat(np.arange(cells) * 8 + 4, cells)
    boxes = np.stack([cx, cy, np.full(64, 8), np.full(64, 8)])[None].astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("AveragePool", ["grey"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Sub", ["pooled", "bright"], ["b0"]),
        helper.make_node("Mul", ["b0", "gain"], ["b1"]),
        helper.make_node("Sigmoid", ["b1"], ["spot"]),
        helper.make_node("Sub", ["dark", "pooled"], ["d0"]),
        helper.make_node("Mul", ["d0", "gain"], ["d1"]),
        helper.make_node("Sigmoid", ["d1"], ["hole"]),
        helper.make_node("Concat", ["spot", "hole"], ["cls4"], axis=1),
        helper.make_node("Reshape", ["cls4", "shape"], ["cls"]),
        helper.make_node("ReduceSum", ["cls", "axis1"], ["sum"], keepdims=1),
        helper.make_node("Mul", ["sum", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "boxes"], ["xywh"]),
    ]
    inits = [
        const("bright", 0.6),
        const("dark", 0.25),
        const("gain", 40.0),
        const("zero", 0.0),
        const("boxes", boxes),
        numpy_helper.from_array(np.array([0, 2, 64], dtype=np.int64), "shape"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    if layout == "yolov8":
        nodes.append(helper.make_node("Concat", ["xywh", "cls"], ["output0"], axis=1))
        out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 6, 64])
    else:
        nodes += [
            helper.make_node("ReduceMax", ["cls"], ["obj"], axes=[1], keepdims=1),
            helper.make_node("Concat", ["xywh", "obj", "cls"], ["cat"], axis=1),
            helper.make_node("Transpose", ["cat"], ["output0"], perm=[0, 2, 1]),
        ]
        out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 64, 7])
    g = helper.make_graph(nodes, "detector", [x], [out], inits)
    return helper.make_model(g, opset_imports=OPSET)


def detection_fixture(d):
    refs = {}
    # Frames are 128x96: letterboxed into 64x64 at scale 0.5 with 8 rows of padding above and below.
    frame = surface(96, 128, 3)
    spot = frame.copy()
    spot[32:48, 48:64] = 255
    hole = frame.copy()
    hole[64:80, 96:112] = 0
    write_png(os.path.join(d, "det-good.png"), frame)
    write_png(os.path.join(d, "det-spot.png"), spot)
    write_png(os.path.join(d, "det-hole.png"), hole)
    for layout in ["yolov8", "yolov5"]:
        path = os.path.join(d, f"detector-{layout}.onnx")
        sha = save(detector_graph(layout), path)
        manifest = f'''name = "fixture-detector-{layout}"
version = "1.0.0"
file = "detector-{layout}.onnx"
sha256 = "{sha}"
description = "Fixture: bright and dark 8x8 cells as boxes, {layout} output layout"

[input]
name = "images"
layout = "nchw"
channels = 3
width = 64
height = 64
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
resize = "letterbox"
pad_value = 114

[output]
kind = "detection"
layout = "{layout}"
name = "output0"
classes = ["spot", "hole"]
threshold = 0.5
iou = 0.45

[[golden]]
file = "det-spot.png"
expect = "spot"
region = [48.0, 32.0, 16.0, 16.0]

[[golden]]
file = "det-good.png"
expect = "good"
'''
        open(os.path.join(d, f"detector-{layout}.toml"), "w").write(manifest)
        sess = ort.InferenceSession(path)
        ref = {}
        for name in ["det-good.png", "det-spot.png", "det-hole.png"]:
            t = tensor(letterbox(load(os.path.join(d, name), 3), 64, 64, 114), [0] * 3, [1] * 3)[None]
            (out,) = sess.run(["output0"], {"images": t})
            out = out[0] if layout == "yolov8" else out[0].T
            if layout == "yolov8":
                conf = out[4:].max(axis=0)
            else:
                conf = out[4] * out[5:].max(axis=0)
            ref[name] = {"defect_score": float(conf.max())}
        refs[f"detector-{layout}.toml"] = ref
    return refs


def segmentation_fixture(d):
    """Dark pixels are cracks: p(crack) = sigmoid(30 (0.2 - x)); two outputs: class probabilities and the
    argmax class index map."""
    h, w = 32, 48
    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 1, h, w])
    probs = helper.make_tensor_value_info("seg.probs", TensorProto.FLOAT, ["batch", 2, h, w])
    mask = helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", h, w])
    nodes = [
        helper.make_node("Sub", ["t", "pixel_values"], ["a"]),
        helper.make_node("Mul", ["a", "gain"], ["b"]),
        helper.make_node("Sigmoid", ["b"], ["crack"]),
        helper.make_node("Sub", ["one", "crack"], ["background"]),
        helper.make_node("Concat", ["background", "crack"], ["seg.probs"], axis=1),
        helper.make_node("ArgMax", ["seg.probs"], ["mask"], axis=1, keepdims=0),
    ]
    inits = [const("t", 0.2), const("gain", 30.0), const("one", 1.0)]
    g = helper.make_graph(nodes, "segmenter", [x], [probs, mask], inits)
    sha = save(helper.make_model(g, opset_imports=OPSET), os.path.join(d, "segmenter.onnx"))
    for variant, output in [("probs", "seg.probs"), ("mask", "mask")]:
        manifest = f'''name = "fixture-segmenter-{variant}"
version = "1.0.0"
file = "segmenter.onnx"
sha256 = "{sha}"
description = "Fixture: dark pixels as cracks, read from the {output} output"

[input]
name = "pixel_values"
layout = "nchw"
channels = 1
width = {w}
height = {h}
mean = [0.0]
std = [1.0]

[output]
kind = "segmentation"
name = "{output}"
classes = ["background", "crack"]
good_class = 0
threshold = 0.5
min_area = 4

[[golden]]
file = "seg-crack.png"
expect = "crack"
region = [20.0, 8.0, 4.0, 40.0]
iou = 0.3

[[golden]]
file = "seg-good.png"
expect = "good"
'''
        open(os.path.join(d, f"segmenter-{variant}.toml"), "w").write(manifest)
    # Frames at twice the model size: a 4-pixel wide vertical crack, 40 pixels long.
    good = surface(2 * h, 2 * w, 4, rgb=False)
    crack = good.copy()
    crack[8:48, 20:24] = 5
    write_png(os.path.join(d, "seg-good.png"), good)
    write_png(os.path.join(d, "seg-crack.png"), crack)
    sess = ort.InferenceSession(os.path.join(d, "segmenter.onnx"))
    ref = {}
    for name in ["seg-good.png", "seg-crack.png"]:
        arr = np.clip(np.round(pil_resize(load(os.path.join(d, name), 1), w, h)), 0, 255)
        t = tensor(arr, [0.0], [1.0])[None]
        p, m = sess.run(["seg.probs", "mask"], {"pixel_values": t})
        ys, xs = np.nonzero(m[0] == 1)
        # The crack's bounding box in frame pixels (the map is half the frame's size).
        boxes = [] if len(xs) == 0 else [[2 * int(xs.min()), 2 * int(ys.min()), 2 * int(xs.max() - xs.min() + 1), 2 * int(ys.max() - ys.min() + 1)]]
        ref[name] = {"crack_pixels": int(len(xs)), "boxes": boxes}
    return {"segmenter-probs.toml": ref, "segmenter-mask.toml": ref}


def classifier_fixture(d):
    """A u8 NHWC BGR classifier with a fixed batch of 1: p(defect) = sigmoid(20 (mean(blue) / 255 - 0.5)),
    and an f16 version of the same rule on NCHW input. Both say 'defect' for a blue-heavy frame."""
    refs = {}
    for variant in ["u8", "f16"]:
        if variant == "u8":
            x = helper.make_tensor_value_info("image:0", TensorProto.UINT8, [1, 16, 16, 3])
            out = helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 1])
            nodes = [
                helper.make_node("Cast", ["image:0"], ["f"], to=TensorProto.FLOAT),
                # BGR order: channel 0 is blue.
                helper.make_node("Slice", ["f", "s0", "s1", "ax"], ["blue"]),
                helper.make_node("ReduceMean", ["blue"], ["m"], axes=[1, 2, 3], keepdims=0),
                helper.make_node("Div", ["m", "k255"], ["u"]),
            ]
            inp = "image:0"
        else:
            x = helper.make_tensor_value_info("image", TensorProto.FLOAT16, ["batch", 3, 16, 16])
            out = helper.make_tensor_value_info("prob", TensorProto.FLOAT16, ["batch", 1])
            nodes = [
                helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
                # RGB order: channel 2 is blue.
                helper.make_node("Slice", ["f", "s2", "s3", "ax1"], ["blue"]),
                helper.make_node("ReduceMean", ["blue"], ["u"], axes=[1, 2, 3], keepdims=0),
            ]
            inp = "image"
        nodes += [
            helper.make_node("Sub", ["u", "half"], ["c"]),
            helper.make_node("Mul", ["c", "gain"], ["e"]),
            helper.make_node("Sigmoid", ["e"], ["p"]),
            helper.make_node("Unsqueeze", ["p", "ax1"], ["prob32"]),
        ]
        if variant == "f16":
            nodes.append(helper.make_node("Cast", ["prob32"], ["prob"], to=TensorProto.FLOAT16))
        else:
            nodes.append(helper.make_node("Identity", ["prob32"], ["prob"]))
        ints = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)
        inits = [
            const("half", 0.5),
            const("gain", 20.0),
            const("k255", 255.0),
            ints("s0", [0]),
            ints("s1", [1]),
            ints("s2", [2]),
            ints("s3", [3]),
            ints("ax", [3]),
            ints("ax1", [1]),
        ]
        g = helper.make_graph(nodes, f"classifier_{variant}", [x], [out], inits)
        sha = save(helper.make_model(g, opset_imports=OPSET), os.path.join(d, f"classifier-{variant}.onnx"))
        if variant == "u8":
            inspec = 'layout = "nhwc"\nchannels = 3\nwidth = 16\nheight = 16\nmean = [0.0, 0.0, 0.0]\nstd = [1.0, 1.0, 1.0]\ntype = "u8"\nrange = "0-255"\nchannel_order = "bgr"\nbatch = 1'
        else:
            inspec = 'layout = "nchw"\nchannels = 3\nwidth = 16\nheight = 16\nmean = [0.0, 0.0, 0.0]\nstd = [1.0, 1.0, 1.0]\ntype = "f16"\nresize = "center-crop"'
        manifest = f'''name = "fixture-classifier-{variant}"
version = "1.0.0"
file = "classifier-{variant}.onnx"
sha256 = "{sha}"
description = "Fixture: a blue-heavy frame is a defect ({variant} input)"

[input]
name = "{inp}"
{inspec}

[output]
kind = "sigmoid"
name = "prob"
classes = ["good", "defect"]
good_class = 0
threshold = 0.5

[[golden]]
file = "blue.png"
expect = "defect"

[[golden]]
file = "grey.png"
expect = "good"
'''
        open(os.path.join(d, f"classifier-{variant}.toml"), "w").write(manifest)
    # 32x16 frames: for the centre crop, only the middle 16 columns count.
    grey = np.full((16, 32, 3), 100, dtype=np.uint8)
    blue = grey.copy()
    blue[:, 8:24, 2] = 230
    write_png(os.path.join(d, "grey.png"), grey)
    write_png(os.path.join(d, "blue.png"), blue)
    # u8: stretch 32x16 -> 16x16; f16: centre crop (no resampling: the crop is 16x16).
    for variant in ["u8", "f16"]:
        sess = ort.InferenceSession(os.path.join(d, f"classifier-{variant}.onnx"))
        ref = {}
        for name in ["grey.png", "blue.png"]:
            if variant == "u8":
                arr = np.clip(np.round(pil_resize(load(os.path.join(d, name), 3, "bgr"), 16, 16)), 0, 255)
                (p,) = sess.run(["prob"], {"image:0": arr[None].astype(np.uint8)})
            else:
                arr = load(os.path.join(d, name), 3)[:, 8:24]
                t = tensor(arr, [0] * 3, [1] * 3)[None].astype(np.float16)
                (p,) = sess.run(["prob"], {"image": t})
            ref[name] = {"defect_score": float(p.reshape(-1)[0])}
        refs[f"classifier-{variant}.toml"] = ref
    return refs


# ---------------------------------------------------------------- third party: PaddleOCR via rapidocr


def third_party(d):
    """References for the rapidocr_onnxruntime models, with the publisher's own preprocessing classes."""
    import cv2
    from PIL import ImageDraw

    sys.path.insert(0, d)
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess
    from rapidocr_onnxruntime.ch_ppocr_cls.text_cls import TextClassifier

    fixtures = os.path.join(OUT, "third-party")
    # Detector: 320x192 frames (a multiple of 32, so the publisher's resize keeps them as they are); dark
    # text stamped on a light part is the "defect" to localise.
    good = np.full((192, 320, 3), 205, dtype=np.uint8)
    marked = Image.fromarray(good.copy())
    draw = ImageDraw.Draw(marked)
    draw.text((180, 120), "LOT 4711", fill=(20, 20, 20), font_size=22)
    marked = np.asarray(marked)
    write_png(os.path.join(fixtures, "det-clean.png"), good)
    write_png(os.path.join(fixtures, "det-marked.png"), marked)
    pre = DetPreProcess(limit_side_len=320, limit_type="max", mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    det = ort.InferenceSession(os.path.join(d, "rapidocr_onnxruntime", "models", "ch_PP-OCRv4_det_infer.onnx"))
    ref_det = {}
    for name in ["det-clean.png", "det-marked.png"]:
        bgr = cv2.imread(os.path.join(fixtures, name))  # the publisher works on BGR arrays
        t = pre(bgr)
        (m,) = det.run(None, {"x": t})
        prob = m[0, 0]
        n, _, stats, _ = cv2.connectedComponentsWithStats((prob >= 0.3).astype(np.uint8), connectivity=4)
        boxes = [
            [int(s[0]), int(s[1]), int(s[2]), int(s[3])]
            for s in stats[1:]
            if s[4] >= 16
        ]
        ref_det[name] = {"defect_score": float(prob.max()), "boxes": boxes}
    # Classifier: 192x48 text strips (the publisher's size, so no resize or padding), upright and upside down.
    strip = Image.new("RGB", (192, 48), (235, 235, 235))
    ImageDraw.Draw(strip).text((10, 8), "Tierline 0042", fill=(10, 10, 10), font_size=26)
    up = np.asarray(strip)
    write_png(os.path.join(fixtures, "cls-upright.png"), up)
    write_png(os.path.join(fixtures, "cls-rotated.png"), up[::-1, ::-1])
    cls = TextClassifier.__new__(TextClassifier)
    cls.cls_image_shape = [3, 48, 192]
    sess = ort.InferenceSession(os.path.join(d, "rapidocr_onnxruntime", "models", "ch_ppocr_mobile_v2.0_cls_infer.onnx"))
    ref_cls = {}
    for name in ["cls-upright.png", "cls-rotated.png"]:
        bgr = cv2.imread(os.path.join(fixtures, name))
        t = cls.resize_norm_img(bgr)[None].astype(np.float32)
        (p,) = sess.run(None, {"x": t})
        ref_cls[name] = {"class_scores": [float(v) for v in p[0]]}
    json.dump(
        {"text-detector.toml": ref_det, "text-direction.toml": ref_cls},
        open(os.path.join(fixtures, "reference.json"), "w"),
        indent=2,
        sort_keys=True,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--third-party", help="folder holding the extracted rapidocr_onnxruntime package")
    args = ap.parse_args()
    if args.third_party:
        third_party(os.path.abspath(args.third_party))
        return
    d = os.path.join(OUT, "own")
    os.makedirs(d, exist_ok=True)
    refs = {}
    for build in [anomaly_fixture, detection_fixture, segmentation_fixture, classifier_fixture]:
        refs.update(build(d))
    json.dump(refs, open(os.path.join(d, "reference.json"), "w"), indent=2, sort_keys=True)
    print(f"wrote {len(refs)} fixture manifests to {d}")


if __name__ == "__main__":
    main()
