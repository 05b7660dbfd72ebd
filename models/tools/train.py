#!/usr/bin/env python3
"""Train the prescreen and full models with JAX (CPU) and export them as hand-written ONNX graphs.

    python tools/train.py --data train.npz --out models/ [--model prescreen|full|both] [--epochs N]

Both models take the runtime's tensor: grey 128x128, (pixel / 255 - 0.5) / 0.25, NCHW.

prescreen2 (prescreen 1.1.0) the full model's trunk at half width: Conv3x3/2 1->8, Conv3x3 8->8,
           Conv3x3/2 8->16, Conv3x3 16->16, Conv3x3/2 16->32, Conv3x3 32->32 (ReLU);
           GlobalMaxPool ++ GlobalAveragePool; Gemm 64->1; Sigmoid. Output `score` [N,1]. With
           --teacher it is distilled: soft targets 1 - p(good) of the full model's ONNX file.
prescreen  Conv3x3/2 1->8, Conv3x3/2 8->16, Conv3x3/2 16->16 (ReLU), Conv1x1 16->1 = a 16x16
           map of defect logits; GlobalMaxPool; Sigmoid. Output `score` [N,1].
full       Conv3x3/2 1->16, Conv3x3 16->16, Conv3x3/2 16->32, Conv3x3 32->32, Conv3x3/2 32->64,
           Conv3x3 64->64 (ReLU); GlobalMaxPool ++ GlobalAveragePool; Gemm 128->6; Softmax over
           synth.CLASSES. Output `probs` [N,6].

Writes <name>-<version>.onnx and prints a JSON line per model with its parameters, FLOPs,
training time and validation numbers. Deterministic for a given --seed (JAX on CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth  # noqa: E402

VERSION = "1.0.0"  # --version overrides
OPSET = 17
IR_VERSION = 8
SIZE = 128
MEAN, STD = 0.5, 0.25

# (kernel, stride, c_in, c_out) per conv layer; every layer but the prescreen's last has a ReLU.
ARCH = {
    "prescreen": [(3, 2, 1, 8), (3, 2, 8, 16), (3, 2, 16, 16), (1, 1, 16, 1)],
    "full": [(3, 2, 1, 16), (3, 1, 16, 16), (3, 2, 16, 32), (3, 1, 32, 32),
             (3, 2, 32, 64), (3, 1, 64, 64)],
    "prescreen2": [(3, 2, 1, 8), (3, 1, 8, 8), (3, 2, 8, 16), (3, 1, 16, 16),
                   (3, 2, 16, 32), (3, 1, 32, 32)],
}
N_CLASSES = len(synth.CLASSES)
EPOCHS_RUN = 0
# Models with a GlobalMaxPool ++ GlobalAveragePool -> Gemm head: number of outputs.
HEAD = {"full": N_CLASSES, "prescreen2": 1}


def feat_dim(name: str) -> int:
    return 2 * ARCH[name][-1][3]


def init_params(name: str, key):
    import jax
    params = []
    for k, s, ci, co in ARCH[name]:
        key, sub = jax.random.split(key)
        w = jax.random.normal(sub, (co, ci, k, k)) * math.sqrt(2.0 / (ci * k * k))
        params.append((w, np.zeros((co,), np.float32)))
    if name in HEAD:
        key, sub = jax.random.split(key)
        fd = feat_dim(name)
        w = jax.random.normal(sub, (fd, HEAD[name])) * math.sqrt(1.0 / fd)
        params.append((w, np.zeros((HEAD[name],), np.float32)))
    return params


def forward(name: str, params, x):
    """x: [N,1,H,W] normalised. prescreen, prescreen2 -> logit [N]; full -> logits [N,C]."""
    import jax
    import jax.numpy as jnp
    h = x
    convs = ARCH[name]
    for i, (k, s, _, _) in enumerate(convs):
        w, b = params[i]
        pad = (k - 1) // 2
        h = jax.lax.conv_general_dilated(h, w, (s, s), ((pad, pad), (pad, pad)),
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        h = h + b[None, :, None, None]
        if not (name == "prescreen" and i == len(convs) - 1):
            h = jax.nn.relu(h)
    if name == "prescreen":
        return jnp.max(h, axis=(1, 2, 3))
    feat = jnp.concatenate([jnp.max(h, axis=(2, 3)), jnp.mean(h, axis=(2, 3))], axis=1)
    w, b = params[-1]
    out = feat @ w + b
    return out[:, 0] if name == "prescreen2" else out


def flops(name: str) -> int:
    """Multiply-adds x 2 of the conv and dense layers at 128x128."""
    total, size = 0, SIZE
    for k, s, ci, co in ARCH[name]:
        size = (size + 2 * ((k - 1) // 2) - k) // s + 1
        total += 2 * size * size * co * ci * k * k
    if name in HEAD:
        total += 2 * feat_dim(name) * HEAD[name]
    return total


def n_params(name: str) -> int:
    n = sum(co * ci * k * k + co for k, _, ci, co in ARCH[name])
    return n + ((feat_dim(name) + 1) * HEAD[name] if name in HEAD else 0)


def normalise(x_u8: np.ndarray) -> np.ndarray:
    return ((x_u8.astype(np.float32) / 255.0 - MEAN) / STD)[:, None, :, :]


def train(name: str, x: np.ndarray, y: np.ndarray, epochs: int, seed: int, batch: int = 64,
          lr: float = 2e-3, pos_weight: float = 2.0, soft=None, budget: float | None = None):
    """soft: optional teacher defect scores [n, 4], one column per flip (h + 2 * v), for
    distillation (binary models only). budget: wall seconds; after the first epoch the number
    of epochs is cut to fit it (the cosine schedule is stretched to the new total)."""
    import jax
    import jax.numpy as jnp

    def loss_fn(params, xb, yb):
        out = forward(name, params, xb)
        if name == "prescreen2" or (name == "prescreen" and soft is not None):
            t = yb  # teacher's 1 - p(good) (soft) or 0/1
            l = t * jax.nn.softplus(-out) + (1 - t) * jax.nn.softplus(out)
            return jnp.mean(l)
        if name == "prescreen":
            t = (yb > 0).astype(jnp.float32)
            # Recall first: missed defects cost pos_weight times a false alarm.
            l = pos_weight * t * jax.nn.softplus(-out) + (1 - t) * jax.nn.softplus(out)
            return jnp.mean(l)
        logp = jax.nn.log_softmax(out)
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

    @jax.jit
    def step(params, m, v, t, xb, yb, lr_t):
        loss, g = jax.value_and_grad(loss_fn)(params, xb, yb)
        b1, b2 = 0.9, 0.999
        m = jax.tree.map(lambda a, b: b1 * a + (1 - b1) * b, m, g)
        v = jax.tree.map(lambda a, b: b2 * a + (1 - b2) * b * b, v, g)
        mh = jax.tree.map(lambda a: a / (1 - b1 ** t), m)
        vh = jax.tree.map(lambda a: a / (1 - b2 ** t), v)
        params = jax.tree.map(lambda p, a, b: p - lr_t * a / (jnp.sqrt(b) + 1e-8), params, mh, vh)
        return params, m, v, loss

    key = jax.random.PRNGKey(seed)
    params = init_params(name, key)
    m = jax.tree.map(jnp.zeros_like, params)
    v = jax.tree.map(jnp.zeros_like, params)
    rng = np.random.default_rng(seed)
    n = len(x)
    steps_per_epoch = n // batch
    total = epochs * steps_per_epoch
    t = 0
    started = time.time()
    for ep in range(10 ** 6):
        if ep >= epochs:
            break
        order = rng.permutation(n)
        losses = []
        for i in range(steps_per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            xb = x[idx]
            # Flips keep the defect classes (every defect kind is symmetric under flips).
            flip = 0
            if rng.random() < 0.5:
                xb = xb[:, :, :, ::-1]
                flip += 1
            if rng.random() < 0.5:
                xb = xb[:, :, ::-1, :]
                flip += 2
            if soft is not None:
                yb = soft[idx, flip].astype(np.float32)
            elif name == "prescreen2":
                yb = (y[idx] > 0).astype(np.float32)
            else:
                yb = y[idx]
            t += 1
            lr_t = lr * 0.5 * (1 + math.cos(math.pi * min(t, total) / total))
            params, m, v, loss = step(params, m, v, t, jnp.asarray(np.ascontiguousarray(xb)),
                                      jnp.asarray(yb), lr_t)
            losses.append(float(loss))
        print(f"{name} epoch {ep + 1}/{epochs} loss {np.mean(losses):.4f} "
              f"({time.time() - started:.0f} s)", flush=True)
        if budget is not None and ep == 0:
            fit = max(1, int(budget // (time.time() - started)))
            if fit < epochs:
                print(f"{name}: time budget {budget:.0f} s fits {fit} epochs, not {epochs}",
                      flush=True)
                epochs = fit
                total = epochs * steps_per_epoch
        if ep + 1 >= epochs:
            break
    global EPOCHS_RUN
    EPOCHS_RUN = epochs  # after a --time-budget cut
    return [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in params], \
        time.time() - started


def predict(name: str, params, x: np.ndarray, batch: int = 256) -> np.ndarray:
    import jax
    f = jax.jit(lambda p, xb: forward(name, p, xb))
    outs = [np.asarray(f(params, x[i:i + batch])) for i in range(0, len(x), batch)]
    out = np.concatenate(outs)
    if name in ("prescreen", "prescreen2"):
        return 1.0 / (1.0 + np.exp(-out))
    e = np.exp(out - out.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def export(name: str, params, path: str) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits = [], []
    h = "image"
    convs = ARCH[name]
    for i, (k, s, _, _) in enumerate(convs):
        w, b = params[i]
        pad = (k - 1) // 2
        inits += [numpy_helper.from_array(w, f"conv{i}_w"), numpy_helper.from_array(b, f"conv{i}_b")]
        nodes.append(helper.make_node("Conv", [h, f"conv{i}_w", f"conv{i}_b"], [f"conv{i}"],
                                      kernel_shape=[k, k], strides=[s, s], pads=[pad] * 4))
        h = f"conv{i}"
        if not (name == "prescreen" and i == len(convs) - 1):
            nodes.append(helper.make_node("Relu", [h], [f"relu{i}"]))
            h = f"relu{i}"
    if name == "prescreen":
        nodes += [helper.make_node("GlobalMaxPool", [h], ["peak4"]),
                  helper.make_node("Flatten", ["peak4"], ["logit"]),
                  helper.make_node("Sigmoid", ["logit"], ["score"])]
        out = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])
        doc = "Edge prescreen: defect probability (sigmoid of the peak of a 16x16 defect-logit map)."
    elif name == "prescreen2":
        w, b = params[-1]
        inits += [numpy_helper.from_array(w.T.copy(), "head_w"), numpy_helper.from_array(b, "head_b")]
        nodes += [helper.make_node("GlobalMaxPool", [h], ["gmax4"]),
                  helper.make_node("GlobalAveragePool", [h], ["gavg4"]),
                  helper.make_node("Concat", ["gmax4", "gavg4"], ["feat4"], axis=1),
                  helper.make_node("Flatten", ["feat4"], ["feat"]),
                  helper.make_node("Gemm", ["feat", "head_w", "head_b"], ["logit"], transB=1),
                  helper.make_node("Sigmoid", ["logit"], ["score"])]
        out = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])
        doc = ("Edge prescreen: defect probability (sigmoid of a linear head over the global max and "
               "mean of a reduced-width copy of the full model's conv trunk), distilled from the full model.")
    else:
        w, b = params[-1]
        inits += [numpy_helper.from_array(w.T.copy(), "head_w"), numpy_helper.from_array(b, "head_b")]
        nodes += [helper.make_node("GlobalMaxPool", [h], ["gmax4"]),
                  helper.make_node("GlobalAveragePool", [h], ["gavg4"]),
                  helper.make_node("Concat", ["gmax4", "gavg4"], ["feat4"], axis=1),
                  helper.make_node("Flatten", ["feat4"], ["feat"]),
                  helper.make_node("Gemm", ["feat", "head_w", "head_b"], ["logits"], transB=1),
                  helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
        out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", N_CLASSES])
        doc = "Cloud classifier: softmax over " + ", ".join(synth.CLASSES) + "."
    graph = helper.make_graph(
        nodes, "prescreen" if name == "prescreen2" else name,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
        [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tierline-models", producer_version=VERSION,
                              doc_string=doc)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())


def onnx_outputs(path: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"image": x[i:i + 256]})[0] for i in range(0, len(x), 256)])


def teacher_scores(path: str, x: np.ndarray) -> np.ndarray:
    """1 - p(good) of the full model's ONNX file for each crop and each flip (h + 2 * v): [n, 4]."""
    cols = []
    for flip in range(4):
        xf = x
        if flip & 1:
            xf = xf[:, :, :, ::-1]
        if flip & 2:
            xf = xf[:, :, ::-1, :]
        probs = onnx_outputs(path, np.ascontiguousarray(xf))
        cols.append(1.0 - probs[:, synth.CLASSES.index("good")])
    return np.stack(cols, axis=1).astype(np.float32)


def main() -> None:
    global VERSION
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--model", choices=("prescreen", "full", "both", "prescreen2"), default="both")
    ap.add_argument("--width", type=int, nargs=3, default=None, metavar=("C1", "C2", "C3"),
                    help="prescreen2 channels per stage (default 8 16 32, half the full model)")
    ap.add_argument("--version", default=VERSION, help="version in the file name and producer_version")
    ap.add_argument("--teacher", default=None,
                    help="full model ONNX file: distill the binary model on its 1 - p(good)")
    ap.add_argument("--teacher-threshold", type=float, default=0.68,
                    help="the teacher's flag threshold, for the numbers printed at the end")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="wall seconds for training; cuts epochs after the first one")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (cosine decay)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--val-pairs", type=int, default=300,
                    help="pairs held back from training for the numbers printed at the end")
    args = ap.parse_args()

    d = np.load(args.data)
    x, y, pair = normalise(d["x"]), d["y"].astype(np.int32), d["pair"]
    val = pair >= pair.max() + 1 - args.val_pairs
    names = ("prescreen", "full") if args.model == "both" else (args.model,)
    VERSION = args.version
    if args.width:
        c1, c2, c3 = args.width
        ARCH["prescreen2"] = [(3, 2, 1, c1), (3, 1, c1, c1), (3, 2, c1, c2), (3, 1, c2, c2),
                              (3, 2, c2, c3), (3, 1, c3, c3)]
    soft = None
    if args.teacher:
        t0 = time.time()
        soft = teacher_scores(args.teacher, x)
        print(f"teacher scores for {len(x)} crops x 4 flips in {time.time() - t0:.0f} s; "
              f"flagged at {args.teacher_threshold}: "
              f"good {np.mean(soft[y == 0, 0] >= args.teacher_threshold):.3f}, "
              f"defective {np.mean(soft[y > 0, 0] >= args.teacher_threshold):.3f}", flush=True)
    for name in names:
        epochs = args.epochs or {"prescreen": 24, "full": 6, "prescreen2": 12}[name]
        lr = args.lr or {"prescreen": 5e-3, "full": 2e-3, "prescreen2": 3e-3}[name]
        batch = args.batch or {"prescreen": 32, "full": 64, "prescreen2": 32}[name]
        use_soft = soft[~val] if (soft is not None and name != "full") else None
        params, secs = train(name, x[~val], y[~val], epochs, args.seed, batch=batch, lr=lr,
                             soft=use_soft, budget=args.time_budget)
        np.savez(os.path.join(args.out, f"{name}-{VERSION}-params.npz"),
                 **{f"p{i}_{j}": a for i, pb in enumerate(params) for j, a in enumerate(pb)})
        fname = "prescreen" if name == "prescreen2" else name
        path = os.path.join(args.out, f"{fname}-{VERSION}.onnx")
        export(name, params, path)
        got = onnx_outputs(path, x[val])
        ref = predict(name, params, x[val])
        ref = ref[:, None] if name in ("prescreen", "prescreen2") else ref
        yv = y[val]
        if name in ("prescreen", "prescreen2"):
            s = got[:, 0]
            good = s[yv == 0]
            bad = s[yv > 0]
            # Threshold at 99.5 % recall of defects on the held-back pairs (calibrate refines it).
            thr = float(np.quantile(bad, 0.005))
            summary = {"fpr_at_995_recall": float(np.mean(good >= thr)), "threshold": thr}
            if soft is not None and (soft[val, 0] >= args.teacher_threshold).any():
                flag = soft[val, 0] >= args.teacher_threshold
                tthr = float(np.quantile(s[flag], 0.005))
                summary.update({"teacher_flags": int(flag.sum()),
                                "threshold_995_of_teacher_flags": tthr,
                                "forwarded_good_at_that": float(np.mean(good >= tthr)),
                                "forwarded_unflagged_at_that": float(np.mean(s[~flag] >= tthr))})
        else:
            pred = got.argmax(axis=1)
            summary = {"accuracy": float(np.mean(pred == yv)),
                       "binary_accuracy": float(np.mean((pred > 0) == (yv > 0)))}
        print(json.dumps({"model": name, "file": path, "params": n_params(name),
                          "flops": flops(name), "train_seconds": round(secs, 1),
                          "epochs": EPOCHS_RUN, "lr": lr, "batch": batch, "onnx_vs_jax_max_abs": float(np.abs(got - ref).max()),
                          "val": summary}), flush=True)


if __name__ == "__main__":
    main()
