#!/usr/bin/python3
"""Fake RTSP camera for Tierline's integration tests and benchmarks.

Serves a directory of JPEG frames (played in file-name order, looped forever,
paced in real time at --fps) as two live RTSP streams:

  rtsp://HOST:PORT/h264   frames decoded and re-encoded with x264 (RTP/H.264)
  rtsp://HOST:PORT/h265   frames re-encoded with x265 (RTP/H.265, RFC 7798),
                          where GStreamer has x265enc
  rtsp://HOST:PORT/mjpeg  the JPEG files themselves (RTP/JPEG, RFC 2435);
                          re-encoded only if RTP/JPEG cannot carry them as
                          they are, or if --width/--height scale them
  rtsp://HOST:PORT/vp8    frames re-encoded with libvpx (RTP/VP8), a video
                          codec the edge does not decode
  rtsp://HOST:PORT/audio  a live sine tone as G.711 mu-law (RTP/PCMU), a
                          stream with no video at all

Run it with Debian's interpreter (it needs python3-gi and GstRtspServer):

  /usr/bin/python3 tests/camera/rtsp_server.py --frames DIR --port 0 [--fps 10]

Once listening it prints exactly one line, `READY <port>`, to stdout; all
diagnostics go to stderr. SIGTERM or SIGINT stops it. See README.md here.
"""

import argparse
import fractions
import os
import signal
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer, GstVideo  # noqa: E402

PROG = "rtsp_server"


def log(msg):
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"error: {msg}")
    sys.exit(1)


# --- JPEG inspection ---------------------------------------------------------
#
# RTP/JPEG (RFC 2435, rtpjpegpay) carries neither Huffman tables nor sampling
# factors: the receiver rebuilds the header with the standard tables of
# ITU T.81 Annex K and assumes 4:2:0 or 4:2:2. A file that is progressive, uses
# other subsampling (e.g. the 4:4:4 of Rust's `image` crate) or optimised
# Huffman tables (ffmpeg's default) would be decoded as garbage, so such
# frames are decoded and re-encoded with jpegenc instead.

# Standard tables as (Tc<<4 | Th) -> BITS(16) + HUFFVAL, hex.
_STD_DHT = {
    0x00: "00010501010101010100000000000000000102030405060708090a0b",
    0x01: "00030101010101010101010000000000000102030405060708090a0b",
    0x10: "0002010303020403050504040000017d01020300041105122131410613516107"
          "227114328191a1082342b1c11552d1f02433627282090a161718191a25262728"
          "292a3435363738393a434445464748494a535455565758595a63646566676869"
          "6a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7"
          "a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2"
          "e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa",
    0x11: "00020102040403040705040400010277000102031104052131061241510761711322"
          "328108144291a1b1c109233352f0156272d10a162434e125f11718191a262728"
          "292a35363738393a434445464748494a535455565758595a636465666768696a"
          "737475767778797a82838485868788898a92939495969798999aa2a3a4a5a6a7"
          "a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3"
          "e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9fa",
}
_STD_DHT = {k: bytes.fromhex(v) for k, v in _STD_DHT.items()}


def inspect_jpeg(path):
    """Return (width, height, problem) where problem is None if the file can
    go out as RTP/JPEG unchanged, else a short reason. Raises ValueError if
    the file is not a JPEG at all."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no SOI marker)")
    i, size, problem, scan = 2, None, None, False
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"corrupt marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        seg = data[i + 4:i + 2 + length]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(seg[1:3], "big")
            width = int.from_bytes(seg[3:5], "big")
            size = (width, height)
            ncomp = seg[5]
            samp = [seg[6 + 3 * c + 1] for c in range(ncomp)]
            if marker != 0xC0:
                problem = problem or f"not baseline (SOF{marker - 0xC0})"
            elif seg[0] != 8:
                problem = problem or f"{seg[0]}-bit samples"
            elif ncomp != 3 or samp[0] not in (0x22, 0x21) or samp[1:] != [0x11, 0x11]:
                problem = problem or ("unsupported chroma subsampling "
                                      + "/".join(f"{s >> 4}x{s & 15}" for s in samp))
            if max(width, height) > 2040:
                problem = problem or "larger than RTP/JPEG's 2040 pixels"
        elif marker == 0xC4:
            j = 0
            while j + 17 <= len(seg):
                tcth = seg[j]
                n = sum(seg[j + 1:j + 17])
                table = seg[j + 1:j + 17 + n]
                if _STD_DHT.get(tcth) != table:
                    problem = problem or "non-standard Huffman tables"
                j += 17 + n
        elif marker == 0xDA:
            scan = True
            ncomp = seg[0]
            sel = [seg[2 + 2 * c] for c in range(ncomp)]
            if sel and (sel[0] != 0x00 or any(s != 0x11 for s in sel[1:])):
                problem = problem or "unusual Huffman table selection"
            break
        i += 2 + length
    if size is None or not scan:
        raise ValueError("no SOF or SOS marker (not a complete JPEG image)")
    return size[0], size[1], problem


def scan_frames(directory):
    try:
        names = sorted(n for n in os.listdir(directory)
                       if n.lower().endswith((".jpg", ".jpeg")))
    except OSError as e:
        die(f"--frames {directory}: {e.strerror}")
    if not names:
        die(f"--frames {directory}: no .jpg/.jpeg files")
    paths = [os.path.join(directory, n) for n in names]
    sizes, problems = set(), set()
    for p in paths:
        try:
            w, h, problem = inspect_jpeg(p)
        except (OSError, ValueError) as e:
            die(f"{p}: {e}")
        sizes.add((w, h))
        if problem:
            problems.add(problem)
    w, h, _ = inspect_jpeg(paths[0])
    if len(sizes) > 1:
        problems.add("frames of different sizes")
    return paths, (w, h), sorted(problems)


# --- frame feeding -----------------------------------------------------------


class Feeder:
    """Pushes one buffer per frame period into a live appsrc.

    Ticks are scheduled against the monotonic clock, so the average rate is
    exactly the frame rate, and buffers are stamped on an exact grid of
    frame periods in the pipeline's running time (timer jitter would
    otherwise give some frames near-identical timestamps)."""

    def __init__(self, name, appsrc, frame_source, fr, start_index):
        self.name = name
        self.appsrc = appsrc
        self.frame_source = frame_source  # index -> (bytes, is_delta)
        self.fr = fr
        self.index = start_index
        self.base = None  # (monotonic seconds, running time ns) of frame n=0
        self.n = 0
        self.stopped = False
        GLib.timeout_add(0, self._tick, priority=GLib.PRIORITY_HIGH)

    def stop(self):
        self.stopped = True

    def _offset_ns(self, n):
        return n * Gst.SECOND * self.fr.denominator // self.fr.numerator

    def _rebase(self):
        clock = self.appsrc.get_clock()
        running = clock.get_time() - self.appsrc.get_base_time()
        self.base, self.n = (time.monotonic(), running), 0

    def _tick(self):
        if self.stopped:
            return False
        if self.appsrc.get_state(0)[1] != Gst.State.PLAYING:
            # Media still starting (no clock yet); a pre-encoded stream also
            # must not lose its first frame, the IDR, to the leaky queue.
            GLib.timeout_add(5, self._tick, priority=GLib.PRIORITY_HIGH)
            return False
        if self.base is None:
            self._rebase()
        try:
            data, is_delta = self.frame_source(self.index)
        except OSError as e:
            log(f"{self.name}: cannot read frame {self.index}: {e}")
            data = None
        if data is not None:
            buf = Gst.Buffer.new_wrapped(data)
            buf.pts = buf.dts = self.base[1] + self._offset_ns(self.n)
            buf.duration = self._offset_ns(self.n + 1) - self._offset_ns(self.n)
            if is_delta:
                buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
            ret = self.appsrc.emit("push-buffer", buf)
            if ret not in (Gst.FlowReturn.OK, Gst.FlowReturn.FLUSHING):
                log(f"{self.name}: push-buffer returned {ret.value_nick}")
        self.index += 1
        self.n += 1
        now = time.monotonic()
        deadline = self.base[0] + self._offset_ns(self.n) / Gst.SECOND
        if deadline < now - 1.0:  # stalled (e.g. suspended process): resync
            log(f"{self.name}: frame timer fell {now - deadline:.1f} s behind; resyncing")
            self._rebase()
            deadline = now
        delay_ms = max(0, int((deadline - now) * 1000))
        GLib.timeout_add(delay_ms, self._tick, priority=GLib.PRIORITY_HIGH)
        return False


# --- pipelines ---------------------------------------------------------------


def raw_convert(width, height):
    return ("jpegdec ! videoconvert ! videoscale add-borders=false ! "
            f"video/x-raw,format=I420,width={width},height={height},"
            "pixel-aspect-ratio=1/1")


def x264_encoder(args):
    # x264's ultrafast preset turns off CABAC and 8x8 transforms, so the SPS
    # would say Constrained Baseline whatever the caps ask for: turn the
    # features that define Main and High back on.
    extra = {"baseline": "", "main": " cabac=true",
             "high": " cabac=true dct8x8=true"}[args.profile]
    return (f"x264enc name=enc tune=zerolatency speed-preset=ultrafast key-int-max={args.keyint}"
            f" bitrate={args.bitrate}{extra} ! "
            f"video/x-h264,profile={args.profile}")


def pre_encode(args, paths, size, fr):
    """Encode --pre-encode seconds of H.264 once; returns (caps, [(au, delta)])."""
    count = max(1, round(args.pre_encode * args.fps))
    count = -(-count // args.keyint) * args.keyint  # whole GOPs only
    desc = (f"appsrc name=src format=time caps=image/jpeg,framerate={fr} ! "
            f"{raw_convert(*size)} ! {x264_encoder(args)},"
            "stream-format=byte-stream,alignment=au ! "
            "appsink name=sink sync=false max-buffers=64")
    pipeline = Gst.parse_launch(desc)
    src, sink = pipeline.get_by_name("src"), pipeline.get_by_name("sink")
    duration = Gst.SECOND * fr.denominator // fr.numerator
    state = {"k": 0}

    def need_data(appsrc, _length):
        k = state["k"]
        if k >= count:
            appsrc.emit("end-of-stream")
            return
        with open(paths[k % len(paths)], "rb") as f:
            buf = Gst.Buffer.new_wrapped(f.read())
        buf.pts = k * duration
        buf.duration = duration
        state["k"] = k + 1
        appsrc.emit("push-buffer", buf)

    src.connect("need-data", need_data)
    bus = pipeline.get_bus()
    started = time.monotonic()
    pipeline.set_state(Gst.State.PLAYING)
    aus, caps = [], None
    while True:
        sample = sink.emit("try-pull-sample", 100 * Gst.MSECOND)
        if sample is not None:
            buf = sample.get_buffer()
            caps = sample.get_caps()
            aus.append((buf.extract_dup(0, buf.get_size()),
                        buf.has_flags(Gst.BufferFlags.DELTA_UNIT)))
            continue
        msg = bus.pop_filtered(Gst.MessageType.ERROR)
        if msg is not None:
            err, dbg = msg.parse_error()
            pipeline.set_state(Gst.State.NULL)
            die(f"pre-encoding failed: {err.message} ({dbg})")
        if sink.get_property("eos"):
            break
    pipeline.set_state(Gst.State.NULL)
    if not aus or aus[0][1]:
        die("pre-encoding produced no keyframe")
    total = sum(len(a) for a, _ in aus)
    log(f"pre-encoded {len(aus)} frames ({len(aus) / args.fps:.1f} s, "
        f"{total / 1e6:.1f} MB, {total * 8 / (len(aus) / args.fps) / 1e3:.0f} kbit/s) "
        f"in {time.monotonic() - started:.1f} s")
    return caps.to_string(), aus


# SPS/PPS go in-band before every IDR. h264parse does the insertion because
# rtph264pay's own config-interval=-1 (GStreamer 1.22) repeats them before
# every IDR *slice*; x264's zerolatency tune encodes one slice per thread, and
# SPS/PPS between two slices of one picture make ffmpeg split it in two frames
# ("concealing ... errors in I frame").
H264_PAY = "h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96"
# The same for H.265: VPS/SPS/PPS in-band before every IRAP picture.
H265_PAY = "h265parse config-interval=-1 ! rtph265pay name=pay0 pt=96"


def x265_encoder(args):
    return (f"x265enc name=enc tune=zerolatency speed-preset=ultrafast key-int-max={args.keyint}"
            f" bitrate={args.bitrate}")


def appsrc_desc(caps):
    # Live source: GstRtspServer then keeps the shared pipeline PLAYING, never
    # seeks it for a newly joining client, and RTP timestamps follow the clock.
    return (f'appsrc name=src is-live=true format=time '
            f'max-buffers=60 leaky-type=downstream min-latency=0 max-latency={Gst.SECOND} '
            f'caps="{caps}"')


class Mount:
    # frame_source and start_index are None for a mount with its own live
    # source instead of an appsrc fed with the frames.
    def __init__(self, path, launch, frame_source, start_index):
        self.path = path
        self.launch = launch
        self.frame_source = frame_source
        self.start_index = start_index


# --- main --------------------------------------------------------------------


def parse_args():
    p = argparse.ArgumentParser(
        description="Serve a directory of JPEG frames as live RTSP streams "
                    "at /h264, /h265, /mjpeg, /vp8 and /audio.")
    p.add_argument("--frames", required=True, metavar="DIR",
                   help="directory of .jpg files, streamed in name order and looped")
    p.add_argument("--port", type=int, default=8554,
                   help="RTSP port; 0 picks a free one (default 8554)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1)")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate (default 10)")
    p.add_argument("--width", type=int, help="scale frames to this width")
    p.add_argument("--height", type=int, help="scale frames to this height")
    p.add_argument("--profile", choices=("baseline", "main", "high"), default="main",
                   help="H.264 profile (default main)")
    p.add_argument("--keyint", type=int,
                   help="H.264 GOP length in frames (default 2*fps)")
    p.add_argument("--bitrate", type=int, default=2048,
                   help="H.264 bitrate in kbit/s (default 2048)")
    p.add_argument("--pre-encode", type=float, default=0.0, metavar="SECONDS",
                   help="encode this many seconds of H.264 once at start-up and "
                        "loop them instead of encoding live (saves CPU)")
    p.add_argument("--jpeg-quality", type=int, default=85,
                   help="quality when /mjpeg has to re-encode (default 85)")
    p.add_argument("--user", help="require RTSP authentication with this user")
    p.add_argument("--password", help="password for --user")
    p.add_argument("--auth", choices=("basic", "digest"), default="basic",
                   help="authentication scheme with --user (default basic)")
    args = p.parse_args()
    if args.fps <= 0:
        p.error("--fps must be positive")
    if args.keyint is None:
        args.keyint = max(1, round(2 * args.fps))
    if args.keyint < 1:
        p.error("--keyint must be at least 1")
    if (args.user is None) != (args.password is None):
        p.error("--user and --password go together")
    for name in ("width", "height"):
        v = getattr(args, name)
        if v is not None and (v < 16 or v % 2):
            p.error(f"--{name} must be an even number >= 16")
    if not 0 <= args.port <= 65535:
        p.error("--port must be 0..65535")
    return args


def main():
    # Until the main loop runs, let SIGINT kill quietly like SIGTERM does.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    args = parse_args()
    Gst.init(None)
    for element in ("appsrc", "jpegdec", "jpegenc", "videoconvert", "videoscale",
                    "x264enc", "h264parse", "rtph264pay", "rtpjpegpay"):
        if Gst.ElementFactory.find(element) is None:
            die(f"GStreamer element {element} missing (see tests/camera/README.md)")

    paths, (src_w, src_h), problems = scan_frames(args.frames)
    if args.width and args.height:
        size = (args.width, args.height)
    elif args.width or args.height:  # keep the aspect ratio, round to even
        size = (args.width or round(args.height * src_w / src_h / 2) * 2,
                args.height or round(args.width * src_h / src_w / 2) * 2)
    else:
        size = (src_w, src_h)
    fr = fractions.Fraction(args.fps).limit_denominator(1001)
    fps_caps = f"{fr.numerator}/{fr.denominator}"
    jpeg_caps = f"image/jpeg,framerate={fps_caps}"

    def read_frame(index):
        with open(paths[index % len(paths)], "rb") as f:
            return f.read(), False

    # Frame index from the server's start time, so every mount (and every
    # re-created media) shows "the same camera" at a given moment.
    t_start = time.monotonic()

    def wall_index():
        return int((time.monotonic() - t_start) * args.fps)

    mounts = []
    if args.pre_encode > 0:
        h264_caps, aus = pre_encode(args, paths, size, fr)
        mounts.append(Mount(
            "/h264",
            f"( {appsrc_desc(h264_caps)} ! {H264_PAY} )",
            lambda i: aus[i % len(aus)], lambda: 0))  # must start on the IDR
    else:
        mounts.append(Mount(
            "/h264",
            f"( {appsrc_desc(jpeg_caps)} ! {raw_convert(*size)} ! {x264_encoder(args)} ! "
            f"{H264_PAY} )",
            read_frame, wall_index))

    if all(Gst.ElementFactory.find(e) for e in ("x265enc", "h265parse", "rtph265pay")):
        mounts.append(Mount(
            "/h265",
            f"( {appsrc_desc(jpeg_caps)} ! {raw_convert(*size)} ! {x265_encoder(args)} ! "
            f"{H265_PAY} )",
            read_frame, wall_index))
    else:
        log("no /h265: GStreamer's x265enc, h265parse or rtph265pay is missing "
            "(gstreamer1.0-plugins-bad)")

    if size != (src_w, src_h):
        problems.append(f"scaling {src_w}x{src_h} to {size[0]}x{size[1]}")
    if problems:
        log("/mjpeg re-encodes the frames: " + "; ".join(problems))
        mjpeg = (f"{appsrc_desc(jpeg_caps)} ! {raw_convert(*size)} ! "
                 f"jpegenc quality={args.jpeg_quality} ! ")
    else:
        mjpeg = (f"{appsrc_desc(jpeg_caps + f',width={src_w},height={src_h}')} ! ")
    mounts.append(Mount("/mjpeg", f"( {mjpeg}rtpjpegpay name=pay0 pt=26 )",
                        read_frame, wall_index))

    # Streams the edge cannot decode, for its wrong-codec handling.
    if all(Gst.ElementFactory.find(e) for e in ("vp8enc", "rtpvp8pay")):
        mounts.append(Mount(
            "/vp8",
            f"( {appsrc_desc(jpeg_caps)} ! {raw_convert(*size)} ! "
            f"vp8enc deadline=1 keyframe-max-dist={args.keyint} ! rtpvp8pay name=pay0 pt=96 )",
            read_frame, wall_index))
    else:
        log("no /vp8: GStreamer's vp8enc or rtpvp8pay is missing (gstreamer1.0-plugins-good)")
    if all(Gst.ElementFactory.find(e) for e in ("audiotestsrc", "mulawenc", "rtppcmupay")):
        mounts.append(Mount(
            "/audio",
            "( audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! "
            "audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay0 pt=0 )",
            None, None))
    else:
        log("no /audio: GStreamer's audiotestsrc, mulawenc or rtppcmupay is missing "
            "(gstreamer1.0-plugins-base, gstreamer1.0-plugins-good)")

    # Fail before READY rather than on the first client if a pipeline is bad.
    for m in mounts:
        try:
            Gst.parse_launch(m.launch[1:-1]).set_state(Gst.State.NULL)
        except GLib.Error as e:
            die(f"{m.path}: bad pipeline: {e.message}\n  {m.launch}")

    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    if args.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "camera-user")
        if args.auth == "digest":
            auth.add_digest(args.user, args.password, token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        else:
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        server.set_auth(auth)
    role = Gst.Structure.new_from_string(
        "camera-user, media.factory.access=(boolean)true, "
        "media.factory.construct=(boolean)true")

    feeders = set()

    def on_media_configure(_factory, media, mount):
        if mount.frame_source is None:
            log(f"{mount.path}: started")
            return
        appsrc = media.get_element().get_by_name("src")
        feeder = Feeder(mount.path, appsrc, mount.frame_source, fr,
                        mount.start_index())
        feeders.add(feeder)

        def on_unprepared(_media):
            feeder.stop()
            feeders.discard(feeder)
            log(f"{mount.path}: stopped (no clients)")

        def on_message(_media, msg):
            if msg.type == Gst.MessageType.ERROR:
                err, dbg = msg.parse_error()
                log(f"{mount.path}: GStreamer error from {msg.src.get_name()}: "
                    f"{err.message} ({dbg})")
            elif msg.type == Gst.MessageType.WARNING:
                err, dbg = msg.parse_warning()
                log(f"{mount.path}: GStreamer warning from {msg.src.get_name()}: "
                    f"{err.message}")
            return True

        media.connect("unprepared", on_unprepared)
        media.connect("handle-message", on_message)
        log(f"{mount.path}: started")

    mount_points = server.get_mount_points()
    for m in mounts:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(m.launch)
        # One pipeline per mount, shared by all clients: every client joins
        # the live stream (H.264 clients start decoding at the next IDR).
        factory.set_shared(True)
        if args.user is not None:
            factory.add_role_from_structure(role)
        factory.connect("media-configure", on_media_configure, m)
        mount_points.add_factory(m.path, factory)

    def on_play(_client, ctx):
        # A client joining a shared live H.264 stream could otherwise wait
        # up to --keyint frames for an IDR: ask x264 for one now, as many
        # cameras do. (Not possible with --pre-encode.)
        media = ctx.media or (ctx.sessmedia.get_media() if ctx.sessmedia else None)
        bin_ = media.get_element() if media is not None else None
        if bin_ is not None and bin_.get_by_name("enc") is not None:
            pad = bin_.get_by_name("pay0").get_static_pad("sink")
            pad.push_event(GstVideo.video_event_new_upstream_force_key_unit(
                Gst.CLOCK_TIME_NONE, True, 0))

    def on_client(_server, client):
        conn = client.get_connection()
        peer = conn.get_ip() if conn is not None else "?"
        log(f"client connected from {peer}")
        client.connect("play-request", on_play)

    server.connect("client-connected", on_client)

    try:
        if server.attach(None) == 0:
            die(f"cannot listen on {args.address}:{args.port}")
    except GLib.Error as e:
        die(f"cannot listen on {args.address}:{args.port}: {e.message}")
    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, loop.quit)

    port = server.get_bound_port()
    log(f"serving {len(paths)} frames from {args.frames} at {args.fps:g} fps, "
        f"{size[0]}x{size[1]}, H.264 {args.profile} keyint {args.keyint}"
        f"{' (pre-encoded)' if args.pre_encode > 0 else ''}: "
        f"rtsp://{args.address}:{port}/" + ", /".join(m.path[1:] for m in mounts) +
        f"{f' ({args.auth} auth)' if args.user is not None else ''}")
    print(f"READY {port}", flush=True)
    loop.run()

    log("shutting down")
    for feeder in list(feeders):
        feeder.stop()
    server.client_filter(lambda _s, _c: GstRtspServer.RTSPFilterResult.REMOVE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
