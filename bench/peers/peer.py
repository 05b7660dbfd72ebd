#!/usr/bin/env python3
"""The cascade as a plant engineer would write it without Tierline, for side-by-side measurements.

Two peers, each an edge and a cloud written the straightforward way:

- ``mqtt``: Pillow + onnxruntime + paho-mqtt, with a SQLite outbox (WAL, synchronous=FULL) on the edge and
  a SQLite verdict store on the cloud. A suspect is committed to the outbox, published at QoS 1 and decided
  when its verdict arrives, or locally (reject) when the deadline passes first; the outbox keeps it until
  the verdict arrives and it is resent on reconnect.
- ``sedna``: KubeEdge Sedna's joint inference: the edge sends each hard example to the cloud with a blocking
  HTTP POST (timeout = the deadline) and falls back to its own answer when the call fails.

Commands (each prints one JSON object on its last line):

    peer.py throughput --frames DIR --model M.onnx --seconds S
    peer.py cloud-mqtt --port P --model M.onnx --db PATH
    peer.py cloud-http --port P --model M.onnx
    peer.py edge --kind mqtt|sedna --port P --frames DIR --model M.onnx --threshold T --fps F --seconds S
          --deadline-ms D --db PATH --log PATH

The edge writes one JSON line per frame decision to --log: seq, capture_time_us, decision_time_us, source.
"""

import argparse
import io
import json
import os
import sqlite3
import struct
import sys
import threading
import time
import urllib.request

import numpy as np
import onnxruntime as ort
from PIL import Image


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def preprocess(jpeg):
    img = Image.open(io.BytesIO(jpeg)).convert("L").resize((128, 128), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0
    return ((x - 0.5) / 0.25)[None, None, :, :]


def score(sess, jpeg):
    out = sess.run(None, {"image": preprocess(jpeg)})[0]
    return float(np.ravel(out)[-1])


def cloud_label(sess, jpeg):
    probs = np.ravel(sess.run(None, {"image": preprocess(jpeg)})[0])
    return int(np.argmax(probs))


def load_frames(folder):
    names = sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))
    return [open(os.path.join(folder, n), "rb").read() for n in names]


def now_us():
    return time.time_ns() // 1000


def cmd_throughput(a):
    sess = session(a.model)
    frames = load_frames(a.frames)
    for f in frames[:4]:
        score(sess, f)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < a.seconds:
        score(sess, frames[n % len(frames)])
        n += 1
    print(json.dumps({"frames_per_s": n / (time.perf_counter() - t0)}))


# Wire format of both peers: 8-byte seq + image (frames); 8-byte seq + 4-byte label (verdicts).


def cmd_cloud_mqtt(a):
    import paho.mqtt.client as mqtt

    sess = session(a.model)
    db = sqlite3.connect(a.db, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS verdicts (seq INTEGER PRIMARY KEY, label INTEGER)")

    def on_message(client, _userdata, msg):
        seq = struct.unpack(">Q", msg.payload[:8])[0]
        row = db.execute("SELECT label FROM verdicts WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            label = cloud_label(sess, msg.payload[8:])
            db.execute("INSERT OR IGNORE INTO verdicts VALUES (?, ?)", (seq, label))
        else:
            label = row[0]
        client.publish("peer/verdicts", struct.pack(">QI", seq, label), qos=1)

    def on_connect(client, _userdata, _flags, _rc, _props=None):
        client.subscribe("peer/frames", qos=1)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="peer-cloud", clean_session=False)
    client.on_message = on_message
    client.on_connect = on_connect
    client.reconnect_delay_set(0.1, 1)
    client.connect("127.0.0.1", a.port)
    print(json.dumps({"ready": True}), flush=True)
    client.loop_forever(retry_first_connection=True)


def cmd_cloud_http(a):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    sess = session(a.model)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                label = cloud_label(sess, body)
            out = json.dumps({"label": label}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(json.dumps({"ready": True}), flush=True)
    server.serve_forever()


class MqttUplink:
    """The outbox and the MQTT client of the ``mqtt`` peer's edge."""

    def __init__(self, port, db_path):
        import paho.mqtt.client as mqtt

        self.db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, image BLOB)")
        self.lock = threading.Lock()
        self.waiting = {}  # seq -> threading.Event, label
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="peer-edge", clean_session=False)
        self.client.on_message = self.on_message
        self.client.on_connect = self.on_connect
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def on_connect(self, client, _userdata, _flags, _rc, _props=None):
        client.subscribe("peer/verdicts", qos=1)
        with self.lock:
            rows = self.db.execute("SELECT seq, image FROM outbox ORDER BY seq").fetchall()
        for seq, image in rows:
            client.publish("peer/frames", struct.pack(">Q", seq) + image, qos=1)

    def on_message(self, _client, _userdata, msg):
        seq, label = struct.unpack(">QI", msg.payload[:12])
        with self.lock:
            self.db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            w = self.waiting.get(seq)
        if w is not None:
            w[1] = label
            w[0].set()

    def ask(self, seq, jpeg, deadline_s):
        with self.lock:
            self.db.execute("INSERT INTO outbox VALUES (?, ?)", (seq, jpeg))
            w = self.waiting[seq] = [threading.Event(), None]
        self.client.publish("peer/frames", struct.pack(">Q", seq) + jpeg, qos=1)
        got = w[0].wait(max(0.0, deadline_s))
        with self.lock:
            self.waiting.pop(seq, None)
        return w[1] if got else None

    def backlog(self):
        with self.lock:
            return self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]


class HttpUplink:
    """The ``sedna`` peer: one blocking POST per hard example."""

    def __init__(self, port):
        self.url = f"http://127.0.0.1:{port}/infer"

    def ask(self, _seq, jpeg, deadline_s):
        if deadline_s <= 0:
            return None
        try:
            req = urllib.request.Request(self.url, data=jpeg, method="POST")
            with urllib.request.urlopen(req, timeout=deadline_s) as r:
                return json.loads(r.read())["label"]
        except Exception:  # the cloud is unreachable or late: fall back to the edge's answer
            return None

    def backlog(self):
        return 0


def cmd_edge(a):
    sess = session(a.model)
    frames = load_frames(a.frames)
    uplink = MqttUplink(a.port, a.db) if a.kind == "mqtt" else HttpUplink(a.port)
    deadline = a.deadline_ms / 1000.0
    log = open(a.log, "w", buffering=1)
    period = 1.0 / a.fps
    t0, t0_us = time.monotonic(), now_us()
    seq = 0
    # The camera produces frame k at t0 + k * period; a frame taken late (the loop was busy waiting for a
    # verdict) keeps its production time, so the wait counts in its latency.
    while seq < int(a.seconds * a.fps):
        due = t0 + seq * period
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        captured_mono = due
        captured_us = t0_us + int(seq * period * 1e6)
        jpeg = frames[seq % len(frames)]
        s = score(sess, jpeg)
        source = "edge"
        if s >= a.threshold:
            left = deadline - (time.monotonic() - captured_mono)
            label = uplink.ask(seq, jpeg, left)
            source = "cloud" if label is not None else "local-fallback"
        log.write(json.dumps({"seq": seq, "capture_time_us": captured_us, "decision_time_us": now_us(),
                              "suspect": s >= a.threshold, "source": source}) + "\n")
        seq += 1
    drained_after = None
    t_end = time.monotonic()
    while uplink.backlog() > 0 and time.monotonic() - t_end < 120:
        time.sleep(0.05)
    if uplink.backlog() == 0:
        drained_after = time.monotonic() - t_end
    print(json.dumps({"frames": seq, "backlog": uplink.backlog(), "drained_after_s": drained_after}))
    os._exit(0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--frames", required=True)
    t.add_argument("--model", required=True)
    t.add_argument("--seconds", type=float, default=10.0)
    c = sub.add_parser("cloud-mqtt")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--model", required=True)
    c.add_argument("--db", required=True)
    h = sub.add_parser("cloud-http")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--model", required=True)
    e = sub.add_parser("edge")
    e.add_argument("--kind", choices=["mqtt", "sedna"], required=True)
    e.add_argument("--port", type=int, required=True)
    e.add_argument("--frames", required=True)
    e.add_argument("--model", required=True)
    e.add_argument("--threshold", type=float, required=True)
    e.add_argument("--fps", type=float, default=10.0)
    e.add_argument("--seconds", type=float, default=15.0)
    e.add_argument("--deadline-ms", type=float, default=500.0)
    e.add_argument("--db", default=":memory:")
    e.add_argument("--log", required=True)
    a = p.parse_args()
    {"throughput": cmd_throughput, "cloud-mqtt": cmd_cloud_mqtt, "cloud-http": cmd_cloud_http,
     "edge": cmd_edge}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
