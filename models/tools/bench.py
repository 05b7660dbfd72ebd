#!/usr/bin/env python3
"""Model-only throughput and latency on one core (ONNX Runtime, one intra-op thread, no spinning).

    python tools/bench.py prescreen-1.1.0.onnx [--seconds 5] [--batch 1 8]

Prints frames/s and the median and p99 time per call for each batch size, on
random input of the model's shape (the runtime's input: [N,1,128,128]).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(0)
    for b in args.batch:
        x = rng.standard_normal([b] + shape[1:]).astype(np.float32)
        for _ in range(20):
            sess.run(None, {name: x})
        times = []
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            t = time.perf_counter()
            sess.run(None, {name: x})
            times.append(time.perf_counter() - t)
        t = np.array(times)
        print(f"{args.model}: batch {b}: {b * len(t) / t.sum():.0f} frames/s, "
              f"per call p50 {1e3 * np.median(t):.3f} ms, p99 {1e3 * np.quantile(t, 0.99):.3f} ms")


if __name__ == "__main__":
    main()
