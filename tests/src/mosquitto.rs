//! A Mosquitto broker process for tests: its own config, port, persistence directory and log.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) Mosquitto process.
pub struct Mosquitto {
    port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(p).is_file() {
            return p.into();
        }
    }
    "mosquitto".into()
}

impl Mosquitto {
    /// Starts Mosquitto on a free port with persistence in `dir`, as plants run it (see `deploy/mosquitto/`).
    pub fn start(dir: &Path) -> Self {
        let port = tierline_demo::broker::free_port().expect("free port");
        let data = dir.join("mosquitto");
        std::fs::create_dir_all(&data).expect("mosquitto dir");
        let conf = data.join("mosquitto.conf");
        let log = data.join("mosquitto.log");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nset_tcp_nodelay true\nmax_packet_size 8388608\nmax_inflight_messages 128\nmax_queued_messages 100000\nlog_dest file {}\nlog_type error\nlog_type warning\nlog_type notice\n",
                data.display(),
                log.display()
            ),
        )
        .expect("mosquitto.conf");
        Self::from_config(port, conf, log)
    }

    /// Starts Mosquitto with the config file `conf` whose plain listener is on `port` and which logs to
    /// `log`.
    pub fn from_config(port: u16, conf: PathBuf, log: PathBuf) -> Self {
        let mut m = Self {
            port,
            conf,
            log,
            child: None,
        };
        m.restart();
        m
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// (Re)starts the process on the same port and persistence directory; waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "mosquitto is already running");
        let child = Command::new(binary())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (scripts/setup installs it)");
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "mosquitto did not listen on {} within 10 s; log: {}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it gracefully (SIGTERM: it saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// Kills it (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
