#!/usr/bin/env python3
"""Python reference of `tierline-models eval` and `calibrate` (same definitions, Pillow preprocessing).

    python tools/evaluate.py DIR [--prevalence 0.02] [--calibrate 0.995] [--edge-threshold T]
        [--edge prescreen.toml] [--cloud full.toml] [--cloud-fa 0.02] [--cache scores.npz]

DIR holds labels.csv (file,label[,surface]). Prints the cascade numbers as
`eval` defines them (src/report.rs), per class and per surface; with
--calibrate, the threshold `calibrate` would pick (src/calibrate.rs) instead.
Tiled manifests are scored as the runtime scores them: one row per tile, the
frame's score is its worst tile's and its label that tile's. --cloud-fa prints
the cloud threshold that flags at most that share of the good frames.
--cache keeps the scores of a set in a file for later runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tomllib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from preprocess import preprocess_tiles  # noqa: E402

MODELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Z95 = 1.959963984540054


def wilson_lower(k: int, n: int) -> float:
    if n == 0:
        return 0.0
    p, z2 = k / n, Z95 * Z95
    centre = p + z2 / (2 * n)
    spread = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z2 / n))


def load(path: str):
    import onnxruntime as ort
    with open(path, "rb") as f:
        m = tomllib.load(f)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(os.path.join(os.path.dirname(os.path.abspath(path)), m["file"]), opts,
                                providers=["CPUExecutionProvider"])
    return m, sess


def frame_scores(path: str, rows, d: str):
    """Per frame: (defect score of the worst tile, that tile's probabilities or None)."""
    m, sess = load(path)
    kind = m["output"]["kind"]
    scores, probs = [], []
    for r in rows:
        with open(os.path.join(d, r["file"]), "rb") as f:
            x = preprocess_tiles(f.read(), m["input"], m.get("tiling"))
        out = sess.run(None, {"image": x})[0]
        if kind == "sigmoid":
            t = out[:, 0]
            scores.append(float(t.max()))
        else:
            t = 1.0 - out[:, m["output"]["good_class"]]
            worst = int(t.argmax())
            scores.append(float(t[worst]))
            probs.append(out[worst])
    return np.array(scores), (np.array(probs) if probs else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--prevalence", type=float, default=None)
    ap.add_argument("--calibrate", type=float, default=None, metavar="TARGET")
    ap.add_argument("--edge-threshold", type=float, default=None)
    ap.add_argument("--edge", default=os.path.join(MODELS, "prescreen.toml"))
    ap.add_argument("--cloud", default=os.path.join(MODELS, "full.toml"))
    ap.add_argument("--cloud-threshold", type=float, default=None)
    ap.add_argument("--cloud-fa", type=float, default=None, metavar="SHARE")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with open(args.edge, "rb") as f:
        pm = tomllib.load(f)
    with open(args.cloud, "rb") as f:
        fm = tomllib.load(f)
    classes = fm["output"]["classes"]
    with open(os.path.join(args.dir, "labels.csv")) as f:
        rows = list(csv.DictReader(f))
    sizes = np.array([os.path.getsize(os.path.join(args.dir, r["file"])) for r in rows], float)
    if args.cache and os.path.exists(args.cache):
        c = np.load(args.cache)
        edge, cloud_score, probs = c["edge"], c["cloud"], c["probs"]
    else:
        edge, _ = frame_scores(args.edge, rows, args.dir)
        cloud_score, probs = frame_scores(args.cloud, rows, args.dir)
        if args.cache:
            np.savez(args.cache, edge=edge, cloud=cloud_score, probs=probs)
    truth = np.array([r["label"] for r in rows])
    surface = np.array([r.get("surface", "-") for r in rows])
    if args.cloud_fa is not None:
        g = np.sort(cloud_score[truth == "good"])[::-1]
        k = int(math.floor(args.cloud_fa * len(g) + 1e-9))
        t = float(np.nextafter(np.float32(g[k]), np.float32(1))) if k < len(g) else 0.0
        print(f"cloud threshold {t:.6f}: flags {np.mean(cloud_score[truth == 'good'] >= t):.4f} of good "
              f"frames, {np.mean(cloud_score[truth != 'good'] >= t):.4f} of defective frames")
        for c in classes[1:]:
            sel = truth == c
            print(f"  {c:8s} {np.mean(cloud_score[sel] >= t):.4f} of {sel.sum()}")
        return
    cthr = args.cloud_threshold if args.cloud_threshold is not None else fm["output"]["threshold"]
    cloud_def = cloud_score >= cthr
    masked = probs.copy()
    masked[:, 0] = -1
    cloud_label = np.where(cloud_def, np.array(classes)[masked.argmax(axis=1)], "good")

    if args.calibrate is not None:
        s = np.sort(edge[cloud_def])
        n = len(s)
        k = int(math.floor((1 - args.calibrate) * n + 1e-9))
        t = float(s[min(k, n - 1)])
        kept = int(np.sum(s >= t))
        print(f"calibrate: threshold {t:.6f}, forwards {kept}/{n} cloud flags = {kept / n:.4f}, "
              f"Wilson 95 % lower {wilson_lower(kept, n):.4f}, forwards {np.mean(edge >= t):.4f} of frames")
        return

    t = args.edge_threshold if args.edge_threshold is not None else pm["output"]["threshold"]
    good = truth == "good"
    p_s = 1 - good.mean()
    w = np.ones(len(rows))
    if args.prevalence is not None:
        w = np.where(good, (1 - args.prevalence) / (1 - p_s), args.prevalence / p_s)
    fwd = edge >= t
    casc = np.where(fwd, cloud_label, "good")

    def rate(sel, hit):
        return float(np.sum(w[sel & hit]) / max(np.sum(w[sel]), 1e-12)), int(np.sum(sel & hit)), int(np.sum(sel))

    def counted(sel, hit):
        r, h, n = rate(sel, hit)
        return {"hits": h, "total": n, "rate": r, "wilson95_lower": wilson_lower(h, n)}

    allsel = np.ones(len(rows), bool)
    passed = ~(fwd & cloud_def)
    rep = {
        "frames": len(rows), "defective_frames": int((~good).sum()),
        "prevalence": args.prevalence, "edge_threshold": t, "cloud_threshold": cthr,
        "edge_recall_vs_cloud": counted(cloud_def, fwd),
        "edge_recall_vs_true_defects_cloud_catches": counted(~good & cloud_def, fwd),
        "edge_recall_vs_truth": counted(~good, fwd),
        "forwarded_frames": rate(allsel, fwd)[0],
        "forwarded_bytes": float(np.sum(w * sizes * fwd) / np.sum(w * sizes)),
        "cloud_recall_vs_truth": counted(~good, cloud_def),
        "cloud_false_alarms": counted(good, cloud_def),
        "cascade_escapes": counted(~good, passed),
        "cascade_false_rejects": counted(good, fwd & cloud_def),
        "cloud_accuracy": rate(allsel, cloud_label == truth)[0],
        "cascade_accuracy": rate(allsel, casc == truth)[0],
        "cloud_binary_accuracy": rate(allsel, cloud_def == ~good)[0],
        "cascade_binary_accuracy": rate(allsel, (fwd & cloud_def) == ~good)[0],
        "classes": {}, "surfaces": {},
    }
    rep["accuracy_delta_points"] = 100 * (rep["cascade_accuracy"] - rep["cloud_accuracy"])
    for c in classes:
        sel = truth == c
        if sel.any():
            rep["classes"][c] = {
                "frames": int(sel.sum()), "edge_forwarded": float(fwd[sel].mean()),
                "cloud_flagged": float(cloud_def[sel].mean()),
                "cloud_correct": float((cloud_label[sel] == c).mean()),
                "cascade_flagged": float((fwd & cloud_def)[sel].mean()),
                "cascade_correct": float((casc[sel] == c).mean())}
    for sf in np.unique(surface):
        sel = surface == sf
        g, d = sel & good, sel & ~good
        rep["surfaces"][str(sf)] = {
            "good_frames": int(g.sum()), "defective_frames": int(d.sum()),
            "good_forwarded": float(fwd[g].mean()) if g.any() else None,
            "good_cloud_flagged": float(cloud_def[g].mean()) if g.any() else None,
            "defects_forwarded": float(fwd[d].mean()) if d.any() else None,
            "defects_cloud_flagged": float(cloud_def[d].mean()) if d.any() else None,
            "defects_escaped": float(passed[d].mean()) if d.any() else None}
    if args.json:
        print(json.dumps(rep, indent=2))
        return

    def line(name, c):
        return (f"{name} {c['rate']:.4f} ({c['hits']}/{c['total']}, "
                f"Wilson 95 % lower {c['wilson95_lower']:.4f})")

    print(f"{len(rows)} frames ({rep['defective_frames']} defective), prevalence "
          f"{args.prevalence if args.prevalence is not None else round(p_s, 4)}, edge threshold {t:.6f}, "
          f"cloud threshold {cthr:.6f}")
    print(line("edge recall vs cloud flags ", rep["edge_recall_vs_cloud"]))
    print(line("edge recall vs true defects the cloud catches", rep["edge_recall_vs_true_defects_cloud_catches"]))
    print(line("edge recall vs ground truth", rep["edge_recall_vs_truth"]))
    print(f"forwarded frames {rep['forwarded_frames']:.4f}, bytes {rep['forwarded_bytes']:.4f}")
    print(line("cloud recall vs ground truth", rep["cloud_recall_vs_truth"]))
    print(line("cloud false alarms on good frames", rep["cloud_false_alarms"]))
    print(line("cascade escapes (defective frames passed)", rep["cascade_escapes"]))
    print(line("cascade false rejects (good frames failed)", rep["cascade_false_rejects"]))
    print(f"accuracy class: cloud-only {rep['cloud_accuracy']:.4f}, cascade {rep['cascade_accuracy']:.4f} "
          f"({rep['accuracy_delta_points']:+.2f} points); good/defective: cloud-only "
          f"{rep['cloud_binary_accuracy']:.4f}, cascade {rep['cascade_binary_accuracy']:.4f}")
    print(f"{'class':10s} {'frames':>6s} {'edge fwd':>9s} {'cloud flag':>10s} {'cloud ok':>9s} "
          f"{'casc flag':>10s} {'cascade ok':>10s}")
    for c, r in rep["classes"].items():
        print(f"{c:10s} {r['frames']:6d} {r['edge_forwarded']:9.4f} {r['cloud_flagged']:10.4f} "
              f"{r['cloud_correct']:9.4f} {r['cascade_flagged']:10.4f} {r['cascade_correct']:10.4f}")
    for sf, r in rep["surfaces"].items():
        f = lambda v: "   -  " if v is None else f"{v:.4f}"  # noqa: E731
        print(f"surface {sf:8s} good fwd {f(r['good_forwarded'])} good cloud-flagged "
              f"{f(r['good_cloud_flagged'])}  defects fwd {f(r['defects_forwarded'])} cloud-flagged "
              f"{f(r['defects_cloud_flagged'])} escaped {f(r['defects_escaped'])}")


if __name__ == "__main__":
    main()
