#!/usr/bin/env python3
"""Check the shipped models through their manifests and measure them on fresh frames.

    python tools/check.py [--frames 2000] [--seed 1000] [--p-defect 0.5]

1. For each manifest (prescreen.toml, full.toml): the .onnx sha256 matches and
   every golden is classified as expected.
2. Renders --frames camera frames (JPEG q90) from the synthetic spec and prints,
   per model, recall / false-positive rate / accuracy at the manifest threshold,
   per-class detection rates, and for softmax models the confusion matrix.
Exits non-zero if a manifest or golden check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tomllib

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth  # noqa: E402
from build_placeholders import Runner  # noqa: E402

MODELS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 50


def load(manifest_path: str) -> tuple[dict, Runner]:
    with open(manifest_path, "rb") as f:
        m = tomllib.load(f)
    path = os.path.join(os.path.dirname(manifest_path), m["file"])
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    if sha != m["sha256"]:
        raise SystemExit(f"{manifest_path}: sha256 mismatch ({sha})")
    return m, Runner(path, m["input"], m["output"]["kind"])


def predict(m: dict, out: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Defect scores and predicted labels ("good"/"defect" or a class name)."""
    o = m["output"]
    score = Runner.defect_score(o["kind"], out)
    labels = []
    for s, row in zip(score, out):
        if s < o["threshold"]:
            labels.append("good")
        elif o["kind"] == "softmax":
            p = row.copy()
            p[o["good_class"]] = -1.0
            labels.append(o["classes"][int(np.argmax(p))])
        else:
            labels.append("defect")
    return score, labels


def check_goldens(name: str, m: dict, runner: Runner, base: str) -> bool:
    ok = True
    for g in m.get("golden", []):
        out = runner.run([Image.open(os.path.join(base, g["file"]))])
        score, (label,) = predict(m, out)
        want = g["expect"]
        good = label == want or (want == "defect" and label != "good")
        ok &= good
        print(f"  {name} golden {g['file']:24s} expect {want:8s} got {label:8s} "
              f"score {score[0]:.4f} {'ok' if good else 'FAIL'}")
    return ok


def report(name: str, m: dict, truth: list[str], score: np.ndarray, pred: list[str]) -> None:
    truth_a = np.array(truth)
    flag = score >= m["output"]["threshold"]
    good = truth_a == "good"
    tp, fn = int(np.sum(flag & ~good)), int(np.sum(~flag & ~good))
    fp, tn = int(np.sum(flag & good)), int(np.sum(~flag & good))
    print(f"{name}: threshold {m['output']['threshold']}")
    print(f"  defect recall        {tp / max(tp + fn, 1):.4f}  ({tp}/{tp + fn})")
    print(f"  false-positive rate  {fp / max(fp + tn, 1):.4f}  ({fp}/{fp + tn})")
    print(f"  binary accuracy      {(tp + tn) / len(truth):.4f}")
    print(f"  precision            {tp / max(tp + fp, 1):.4f}")
    for c in synth.CLASSES:
        sel = truth_a == c
        rate = float(np.mean(flag[sel])) if sel.any() else float("nan")
        s = score[sel]
        print(f"  {c:8s} n={int(sel.sum()):5d}  flagged {rate:.4f}  "
              f"score min {s.min():.4f} median {np.median(s):.4f} max {s.max():.4f}")
    if m["output"]["kind"] == "softmax":
        classes = m["output"]["classes"]
        pred_a = np.array(pred)
        print(f"  {len(classes)}-class accuracy     {float(np.mean(pred_a == truth_a)):.4f}")
        print("  confusion (rows truth, cols predicted): " + " ".join(classes))
        for c in classes:
            counts = [int(np.sum((truth_a == c) & (pred_a == p))) for p in classes]
            print(f"    {c:8s} " + " ".join(f"{n:6d}" for n in counts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--p-defect", type=float, default=0.5)
    ap.add_argument("--dir", default=MODELS_DIR)
    args = ap.parse_args()

    models = {}
    ok = True
    for name in ("prescreen", "full"):
        path = os.path.join(args.dir, f"{name}.toml")
        m, runner = load(path)
        print(f"{name}: {m['file']} sha256 ok")
        ok &= check_goldens(name, m, runner, args.dir)
        models[name] = (m, runner)
    if not ok:
        raise SystemExit("golden check failed")

    print(f"\nevaluating on {args.frames} frames: seed {args.seed}, "
          f"p_defect {args.p_defect}, 640x480, JPEG q{synth.JPEG_QUALITY}")
    truth: list[str] = []
    outs: dict[str, list[np.ndarray]] = {n: [] for n in models}
    for start in range(0, args.frames, BATCH):
        jpegs = []
        for i in range(start, min(start + BATCH, args.frames)):
            data, label = synth.camera_frame(args.seed, i, p_defect=args.p_defect)
            jpegs.append(data)
            truth.append(label)
        for n, (_, runner) in models.items():
            outs[n].append(runner.run(jpegs))

    flags = {}
    for n, (m, _) in models.items():
        score, pred = predict(m, np.concatenate(outs[n]))
        flags[n] = score >= m["output"]["threshold"]
        print()
        report(n, m, truth, score, pred)

    # Tiered decision: a frame is reported defective if the prescreen forwards
    # it and the full model confirms it.
    good = np.array(truth) == "good"
    tier = flags["prescreen"] & flags["full"]
    fwd = float(np.mean(flags["prescreen"]))
    print(f"\ntiered (prescreen then full): forwarded {fwd:.4f} of frames, "
          f"recall {np.mean(tier[~good]):.4f}, false-positive rate {np.mean(tier[good]):.4f}")


if __name__ == "__main__":
    main()
