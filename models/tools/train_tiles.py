#!/usr/bin/env python3
"""Train the tiled 2.x models on tile crops (tools/tiles.py) with PyTorch on CPU, checkpointed, and
export them as hand-written ONNX graphs (opset 17, IR 8, symbolic batch N, standard operators only).

    python tools/train_tiles.py --data a.npz [b.npz ...] --model full|prescreen --epochs N \
        --ckpt /tmp/tl/full.ckpt --out models/ [--version 2.0.0] [--threads 1]

Both models take one tile of the runtime's tiling ([tiling] cols = 5, rows = 4, overlap = 16 on a
640x480 frame: 141x132 tiles) resized to 128x128, grey, (pixel / 255 - 0.5) / 0.25, NCHW.

full       Conv3x3/2 1->16, Conv3x3 16->16, Conv3x3/2 16->32, Conv3x3 32->32, Conv3x3/2 32->64,
           Conv3x3 64->64 (ReLU); GlobalMaxPool ++ GlobalAveragePool; Gemm 128->6; Softmax over
           synth.CLASSES. Output `probs` [N,6]. Softmax cross-entropy on the tile labels.
prescreen  Conv3x3/2 1->8, Conv3x3/2 8->16, Conv3x3/2 16->24, Conv3x3 24->24 (ReLU);
           GlobalMaxPool ++ GlobalAveragePool; Gemm 48->1; Sigmoid. Output `score` [N,1]. Binary
           cross-entropy on "the tile shows a defect".

An epoch is every defective tile, its clean twin (the same tile of the same frame without the
defect) and NEG_RATIO more clean tiles drawn at random from all frames (a new draw each epoch), so
the many good tiles are all seen over the run; --hard-surfaces (grass, brick: photographs with
defect-like texture) are drawn --hard-weight times as often, defective and clean. Random horizontal and vertical flips. Adam with a
cosine learning rate; --init-onnx starts from the weights of an earlier model of the same layout
(the full model 2.0.0 starts from full-1.0.0's, trained on whole squeezed frames). The last
--val-frames frames of the first data file are held back.

A checkpoint (weights, optimizer, random state, position) is written every --ckpt-every seconds
and at every epoch end; a rerun with the same --ckpt resumes where it stopped. The loss per epoch
and the wall time are kept in the checkpoint and printed in the final JSON line.
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

OPSET = 17
IR_VERSION = 8
SIZE = 128
MEAN, STD = 0.5, 0.25
NEG_RATIO = 2
N_CLASSES = len(synth.CLASSES)

# (kernel, stride, c_in, c_out); ReLU after every conv.
ARCH = {
    "full": [(3, 2, 1, 16), (3, 1, 16, 16), (3, 2, 16, 32), (3, 1, 32, 32),
             (3, 2, 32, 64), (3, 1, 64, 64)],
    "prescreen": [(3, 2, 1, 8), (3, 2, 8, 16), (3, 2, 16, 24), (3, 1, 24, 24)],
}
OUTPUTS = {"full": N_CLASSES, "prescreen": 1}


def flops(name: str, size: int = SIZE) -> int:
    """2 x multiply-adds of the conv and dense layers for one size x size input."""
    total = 0
    for k, s, ci, co in ARCH[name]:
        size = (size + 2 * ((k - 1) // 2) - k) // s + 1
        total += 2 * size * size * co * ci * k * k
    return total + 2 * 2 * ARCH[name][-1][3] * OUTPUTS[name]


def n_params(name: str) -> int:
    n = sum(co * ci * k * k + co for k, _, ci, co in ARCH[name])
    return n + (2 * ARCH[name][-1][3] + 1) * OUTPUTS[name]


def build(name: str):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList(
                nn.Conv2d(ci, co, k, stride=s, padding=(k - 1) // 2) for k, s, ci, co in ARCH[name])
            self.head = nn.Linear(2 * ARCH[name][-1][3], OUTPUTS[name])
            for c in self.convs:
                nn.init.kaiming_normal_(c.weight, nonlinearity="relu")
                nn.init.zeros_(c.bias)

        def forward(self, x):
            for c in self.convs:
                x = torch.relu(c(x))
            feat = torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)
            return self.head(feat)

    return Net()


def load_data(paths: list[str]):
    parts = [np.load(p) for p in paths]
    out = {}
    offset = 0
    for p in parts:
        for k in ("x", "y", "tile", "src", "frame", "surface"):
            v = p[k]
            if k == "frame":
                v = v + offset
            out.setdefault(k, []).append(v)
        offset = int(np.concatenate(out["frame"]).max()) + 1
    return {k: np.concatenate(v) for k, v in out.items()}


def normalise(x_u8: np.ndarray) -> np.ndarray:
    return ((x_u8.astype(np.float32) / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD))[:, None]


def epoch_indices(rng, pos: np.ndarray, twin: np.ndarray, neg: np.ndarray, hard: np.ndarray,
                  hard_weight: int) -> np.ndarray:
    """One epoch: the defective tiles and their clean twins (those on `hard` surfaces hard_weight
    times), and NEG_RATIO as many other clean tiles, hard-surface ones hard_weight times as likely."""
    hp = hard[pos]
    reps = np.where(hp, hard_weight, 1)
    p_ep, t_ep = np.repeat(pos, reps), np.repeat(twin, reps)
    w = np.where(hard[neg], float(hard_weight), 1.0)
    extra = rng.choice(neg, size=min(len(neg), NEG_RATIO * len(p_ep)), replace=False, p=w / w.sum())
    return rng.permutation(np.concatenate([p_ep, t_ep, extra]))


def save_ckpt(path: str, state: dict) -> None:
    import torch
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def export(name: str, model, path: str, version: str) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits = [], []
    h = "image"
    for i, ((k, s, _, _), conv) in enumerate(zip(ARCH[name], model.convs)):
        pad = (k - 1) // 2
        inits += [numpy_helper.from_array(conv.weight.detach().numpy().astype(np.float32), f"conv{i}_w"),
                  numpy_helper.from_array(conv.bias.detach().numpy().astype(np.float32), f"conv{i}_b")]
        nodes.append(helper.make_node("Conv", [h, f"conv{i}_w", f"conv{i}_b"], [f"conv{i}"],
                                      kernel_shape=[k, k], strides=[s, s], pads=[pad] * 4))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]))
        h = f"relu{i}"
    inits += [numpy_helper.from_array(model.head.weight.detach().numpy().astype(np.float32), "head_w"),
              numpy_helper.from_array(model.head.bias.detach().numpy().astype(np.float32), "head_b")]
    nodes += [helper.make_node("GlobalMaxPool", [h], ["gmax4"]),
              helper.make_node("GlobalAveragePool", [h], ["gavg4"]),
              helper.make_node("Concat", ["gmax4", "gavg4"], ["feat4"], axis=1),
              helper.make_node("Flatten", ["feat4"], ["feat"])]
    if name == "full":
        nodes += [helper.make_node("Gemm", ["feat", "head_w", "head_b"], ["logits"], transB=1),
                  helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
        out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", N_CLASSES])
        doc = ("Cloud classifier for one 128x128 tile of a 5x4 tiling: softmax over "
               + ", ".join(synth.CLASSES) + ".")
    else:
        nodes += [helper.make_node("Gemm", ["feat", "head_w", "head_b"], ["logit"], transB=1),
                  helper.make_node("Sigmoid", ["logit"], ["score"])]
        out = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])
        doc = "Edge prescreen for one 128x128 tile of a 5x4 tiling: defect probability."
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
        [out], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="tierline-models", producer_version=version, doc_string=doc)
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m, full_check=True)
    with open(path, "wb") as f:
        f.write(m.SerializeToString())


def onnx_outputs(path: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"image": x[i:i + 256]})[0] for i in range(0, len(x), 256)])


def torch_outputs(name: str, model, x: np.ndarray) -> np.ndarray:
    import torch
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), 256):
            o = model(torch.from_numpy(x[i:i + 256]))
            outs.append((torch.softmax(o, 1) if name == "full" else torch.sigmoid(o)).numpy())
    return np.concatenate(outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--model", choices=tuple(ARCH), required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--version", default="2.0.0")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--val-frames", type=int, default=200)
    ap.add_argument("--ckpt-every", type=float, default=120.0, help="seconds between checkpoints")
    ap.add_argument("--hard-surfaces", default="",
                    help="comma list of surfaces whose tiles are drawn --hard-weight times as often")
    ap.add_argument("--hard-weight", type=int, default=1)
    ap.add_argument("--init-onnx", default=None,
                    help="start from the weights of an ONNX file of the same layout (e.g. full-1.0.0.onnx)")
    ap.add_argument("--extend", action="store_true",
                    help="on resume, raise the planned epochs of a finished run to --epochs")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="training seconds: after each epoch, the planned epochs are cut to what fits "
                         "(the cosine schedule is stretched or shrunk to the new total)")
    ap.add_argument("--stop-at", type=float, default=None,
                    help="Unix time: checkpoint and export the model as it is at this time")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    d = load_data(args.data)
    first_frames = np.load(args.data[0])["frame"]
    val_from = int(first_frames.max()) + 1 - args.val_frames
    val = d["frame"] >= val_from if args.val_frames else np.zeros(len(d["y"]), bool)
    train_idx = np.flatnonzero(~val)
    y = d["y"]
    pos = train_idx[d["src"][train_idx] == 1]
    # The clean twin of every defective tile: same frame, same tile, clean copy.
    key = d["frame"].astype(np.int64) * 64 + d["tile"]
    clean = train_idx[d["src"][train_idx] == 0]
    clean_by_key = dict(zip(key[clean].tolist(), clean.tolist()))
    twin = np.array([clean_by_key[k] for k in key[pos].tolist()], dtype=np.int64)
    neg = np.setdiff1d(clean, twin)
    hard = np.isin(d["surface"], [h for h in args.hard_surfaces.split(",") if h])
    n_ep_pos = int(np.where(hard[pos], args.hard_weight, 1).sum())
    print(f"{args.model}: {len(train_idx)} training tiles ({len(pos)} defective, {len(clean)} clean), "
          f"{int(val.sum())} held back; epoch = {n_ep_pos * (2 + NEG_RATIO)} tiles", flush=True)

    model = build(args.model)
    if args.init_onnx:
        import onnx
        from onnx import numpy_helper
        w = {t.name: numpy_helper.to_array(t) for t in onnx.load(args.init_onnx).graph.initializer}
        with torch.no_grad():
            for i, conv in enumerate(model.convs):
                conv.weight.copy_(torch.from_numpy(w[f"conv{i}_w"].copy()))
                conv.bias.copy_(torch.from_numpy(w[f"conv{i}_b"].copy()))
            model.head.weight.copy_(torch.from_numpy(w["head_w"].copy()))
            model.head.bias.copy_(torch.from_numpy(w["head_b"].copy()))
        print(f"initialised from {args.init_onnx}", flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = n_ep_pos * (2 + NEG_RATIO) // args.batch
    state = {"epochs": args.epochs, "epoch": 0, "step_in_epoch": 0, "t": 0, "seconds": 0.0, "losses": [],
             "rng": np.random.default_rng(args.seed).bit_generator.state, "order": None}
    if os.path.exists(args.ckpt):
        ck = torch.load(args.ckpt, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        print(f"resumed at epoch {state['epoch'] + 1}, step {state['step_in_epoch']}, "
              f"{state['seconds']:.0f} s trained", flush=True)
        if args.extend and args.epochs > state["epochs"]:
            # More epochs after a finished run: the cosine schedule is stretched to the new total
            # (the learning rate steps back up to where the longer schedule would be).
            print(f"extended from {state['epochs']} to {args.epochs} epochs", flush=True)
            state["epochs"] = args.epochs
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    total = state["epochs"] * steps_per_epoch

    def checkpoint():
        state["rng"] = rng.bit_generator.state
        save_ckpt(args.ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "state": state})

    started = time.time() - state["seconds"]
    last_ckpt = time.time()
    stopped_early = False
    while state["epoch"] < state["epochs"]:
        if state["order"] is None:
            state["order"] = epoch_indices(rng, pos, twin, neg, hard, args.hard_weight)
            state["epoch_losses"] = []
        order = state["order"]
        model.train()
        n_steps = len(order) // args.batch
        for i in range(state["step_in_epoch"], n_steps):
            idx = np.sort(order[i * args.batch:(i + 1) * args.batch])
            xb = normalise(d["x"][idx])
            if rng.random() < 0.5:
                xb = xb[:, :, :, ::-1]
            if rng.random() < 0.5:
                xb = xb[:, :, ::-1, :]
            xb = torch.from_numpy(np.ascontiguousarray(xb))
            state["t"] += 1
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * min(state["t"], total) / total))
            for g in opt.param_groups:
                g["lr"] = lr
            out = model(xb)
            if args.model == "full":
                loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y[idx].astype(np.int64)))
            else:
                t = torch.from_numpy((y[idx] > 0).astype(np.float32))[:, None]
                loss = torch.nn.functional.binary_cross_entropy_with_logits(out, t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            state["epoch_losses"].append(loss.item())
            state["step_in_epoch"] = i + 1
            state["seconds"] = time.time() - started
            if time.time() - last_ckpt > args.ckpt_every:
                checkpoint()
                last_ckpt = time.time()
                ls = state["epoch_losses"]
                print(f"  epoch {state['epoch'] + 1} step {i + 1}/{n_steps} "
                      f"loss {np.mean(ls[-200:]):.4f} ({state['seconds']:.0f} s)", flush=True)
            if args.stop_at is not None and time.time() >= args.stop_at:
                stopped_early = True
                break
        if stopped_early:
            checkpoint()
            print(f"stopped by --stop-at in epoch {state['epoch'] + 1} at step "
                  f"{state['step_in_epoch']}/{n_steps}", flush=True)
            break
        state["losses"].append(float(np.mean(state["epoch_losses"])))
        state["epoch"] += 1
        state["step_in_epoch"] = 0
        state["order"] = None
        last_ckpt = time.time()
        if args.time_budget is not None:
            per_epoch = state["seconds"] / state["epoch"]
            fit = state["epoch"] + int((args.time_budget - state["seconds"]) // per_epoch)
            fit = max(state["epoch"], min(args.epochs, fit))
            if fit != state["epochs"]:
                print(f"{args.model}: time budget fits {fit} epochs", flush=True)
                state["epochs"] = fit
                total = fit * steps_per_epoch
        checkpoint()
        print(f"{args.model} epoch {state['epoch']}/{state['epochs']} loss {state['losses'][-1]:.4f} "
              f"({state['seconds']:.0f} s)", flush=True)

    model.eval()
    path = os.path.join(args.out, f"{args.model}-{args.version}.onnx")
    export(args.model, model, path, args.version)
    summary = {}
    if val.any():
        xv = normalise(d["x"][val])
        got = onnx_outputs(path, xv)
        ref = torch_outputs(args.model, model, xv)
        yv = y[val]
        srcv = d["src"][val]
        score = 1.0 - got[:, 0] if args.model == "full" else got[:, 0]
        good = score[srcv == 0]
        # Tile threshold at 0.1 % false alarms on held-back clean tiles.
        thr = float(np.quantile(good, 0.999))
        summary = {"onnx_vs_torch_max_abs": float(np.abs(got - ref).max()),
                   "val_tiles": int(val.sum()), "tile_threshold_at_0.1pct_fa": thr,
                   "defective_tile_recall_at_that": float(np.mean(score[srcv == 1] >= thr))}
        if args.model == "full":
            summary["class_accuracy_defective_tiles"] = float(np.mean(got[srcv == 1].argmax(1) == yv[srcv == 1]))
            for c in range(1, N_CLASSES):
                sel = (srcv == 1) & (yv == c)
                summary[f"recall_{synth.CLASSES[c]}"] = float(np.mean(score[sel] >= thr))
    print(json.dumps({"model": args.model, "file": path, "params": n_params(args.model),
                      "flops_per_tile": flops(args.model), "flops_per_frame_5x4": 20 * flops(args.model),
                      "epochs_done": state["epoch"], "epochs_planned": state["epochs"],
                      "stopped_early": stopped_early, "train_seconds": round(state["seconds"], 1),
                      "epoch_losses": [round(v, 4) for v in state["losses"]],
                      "lr": args.lr, "batch": args.batch, **summary}), flush=True)


if __name__ == "__main__":
    main()
