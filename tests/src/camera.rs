//! Real camera servers for the camera tests: the GStreamer RTSP server (`tests/camera/rtsp_server.py`, a
//! separate process that can be killed and restarted on its port) and an HTTP camera in the test process
//! (MJPEG stream and snapshots), both serving synthetic surfaces with known defects.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Writes `n` synthetic frames `frame-00000.jpg`… into `dir`; returns each frame's truth (`good`, `scratch`…).
pub fn write_frames(
    dir: &Path,
    n: u64,
    seed: u64,
    defect_rate: f64,
    w: u32,
    h: u32,
) -> Vec<String> {
    std::fs::create_dir_all(dir).expect("frames dir");
    (0..n)
        .map(|i| {
            let f = tierline_edge::synth::render(seed, i, w, h, defect_rate);
            let jpeg = f.to_jpeg(90).expect("encode");
            std::fs::write(dir.join(format!("frame-{i:05}.jpg")), jpeg).expect("write frame");
            f.truth.as_str().to_string()
        })
        .collect()
}

/// `n` good synthetic frames as JPEG bytes, for the HTTP camera.
pub fn jpeg_frames(n: u64, seed: u64, w: u32, h: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            tierline_edge::synth::render(seed, i, w, h, 0.0)
                .to_jpeg(90)
                .expect("encode")
        })
        .collect()
}

/// `n` synthetic frames as JPEG bytes, the even ones good and the odd ones each with a defect, and each
/// frame's truth (`good`, `scratch`…).
pub fn alternating_jpeg_frames(n: u64, seed: u64, w: u32, h: u32) -> (Vec<Vec<u8>>, Vec<String>) {
    (0..n)
        .map(|i| {
            let f = tierline_edge::synth::render(seed, i, w, h, (i % 2) as f64);
            let jpeg = f.to_jpeg(90).expect("encode");
            (jpeg, f.truth.as_str().to_string())
        })
        .unzip()
}

/// The GStreamer RTSP server, serving `/h264`, `/h265`, `/mjpeg` and `/vp8` from a folder of frames, and
/// `/audio` (no video).
pub struct RtspServer {
    child: Child,
    port: u16,
    args: Vec<String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("camera/rtsp_server.py")
}

impl RtspServer {
    /// Starts it on a free port with `args` (e.g. `--frames DIR --fps 10`); waits for it to listen.
    pub fn start(args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, port) = spawn(&args, 0);
        Self { child, port, args }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtsp://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{path}", self.port)
    }

    /// Kills it (SIGKILL: a camera losing power).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port (a camera rebooting).
    pub fn restart(&mut self) {
        self.kill();
        let (child, port) = spawn(&self.args, self.port);
        assert_eq!(port, self.port);
        self.child = child;
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(args: &[String], port: u16) -> (Child, u16) {
    for attempt in 0..50 {
        let mut child = Command::new("/usr/bin/python3")
            .arg(script())
            .args(args)
            .args(["--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/camera/rtsp_server.py with /usr/bin/python3 (scripts/setup installs GStreamer and python3-gi)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        if let Some(p) = line.trim().strip_prefix("READY ") {
            return (child, p.parse().expect("port"));
        }
        // The port may still be held by the killed server: try again shortly.
        let _ = child.kill();
        let _ = child.wait();
        assert!(attempt < 49, "RTSP server did not start: {line:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    unreachable!()
}

/// An HTTP camera in the test process: `GET /mjpeg` streams the frames as `multipart/x-mixed-replace` at
/// `fps`, `GET /snapshot.jpg` answers the next frame, `GET /page` answers HTML (a URL that is no camera).
pub struct HttpCamera {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Parts sent on MJPEG streams, and snapshots answered.
    pub served: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl HttpCamera {
    /// Serves `frames` (JPEG files' bytes) at `fps`; every `corrupt_every`-th MJPEG part (0: none) is cut
    /// short (a truncated JPEG).
    pub async fn start(frames: Vec<Vec<u8>>, fps: f64, corrupt_every: u64) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let frames = Arc::new(frames);
        tokio::spawn({
            let (served, stop) = (served.clone(), stop.clone());
            async move {
                loop {
                    let (mut sock, _) = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                    };
                    let (frames, served, stop) = (frames.clone(), served.clone(), stop.clone());
                    tokio::spawn(async move {
                        let mut req = vec![0u8; 4096];
                        let n = sock.read(&mut req).await.unwrap_or(0);
                        let req = String::from_utf8_lossy(&req[..n]).to_string();
                        let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                        let interval = Duration::from_secs_f64(1.0 / fps);
                        match path.as_str() {
                            "/mjpeg" => {
                                let head = "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frameboundary\r\nConnection: close\r\n\r\n";
                                if sock.write_all(head.as_bytes()).await.is_err() {
                                    return;
                                }
                                let mut i = 0u64;
                                loop {
                                    let f = &frames[(i as usize) % frames.len()];
                                    let body: &[u8] = if corrupt_every > 0
                                        && i % corrupt_every == corrupt_every - 1
                                    {
                                        &f[..f.len() / 2]
                                    } else {
                                        f
                                    };
                                    let part = format!(
                                        "--frameboundary\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                                        body.len()
                                    );
                                    let ok = sock.write_all(part.as_bytes()).await.is_ok()
                                        && sock.write_all(body).await.is_ok()
                                        && sock.write_all(b"\r\n").await.is_ok();
                                    if !ok {
                                        return;
                                    }
                                    served.fetch_add(1, Ordering::Relaxed);
                                    i += 1;
                                    tokio::select! {
                                        _ = stop.cancelled() => return,
                                        _ = tokio::time::sleep(interval) => {}
                                    }
                                }
                            }
                            "/snapshot.jpg" => {
                                let i = served.fetch_add(1, Ordering::Relaxed);
                                let f = &frames[(i as usize) % frames.len()];
                                let head = format!(
                                    "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                    f.len()
                                );
                                let _ = sock.write_all(head.as_bytes()).await;
                                let _ = sock.write_all(f).await;
                            }
                            _ => {
                                let body = "<html>not a camera</html>";
                                let head = format!(
                                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                    body.len()
                                );
                                let _ = sock.write_all(head.as_bytes()).await;
                            }
                        }
                    });
                }
            }
        });
        Self { addr, served, stop }
    }
}

impl Drop for HttpCamera {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
