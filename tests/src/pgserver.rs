//! A PostgreSQL server owned by one test: `initdb` into a temporary directory, `pg_ctl` to start, stop and
//! restart it, on a free 127.0.0.1 port with trust authentication, and one database created for the test.
//! Unlike [`crate::pg::TestDb`] (a database on a shared server), the test may stop, restart or SIGKILL it.
//!
//! The binaries come from `/usr/lib/postgresql/<version>/bin` (the newest version present). `initdb` and
//! the server refuse to run as root, so when the tests run as root the server runs as the `postgres` system
//! user (`runuser -u postgres --`), which owns the data directory.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Name of the database created for the test.
pub const DATABASE: &str = "tierline";

/// A PostgreSQL server process tree that exists until this is dropped.
pub struct PgServer {
    bin: PathBuf,
    /// As whom the server runs: `Some("postgres")` when the tests run as root.
    run_as: Option<String>,
    /// Owned by the server's user: holds the data directory, its socket and its log.
    home: PathBuf,
    port: u16,
    running: bool,
    /// The temporary directory; removed on drop, after the server stopped.
    _dir: tempfile::TempDir,
}

/// The newest `/usr/lib/postgresql/*/bin` that has `initdb` and `pg_ctl`.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin: \
             install the server (apt-get install postgresql) to run this test"
        ),
    }
}

/// The effective uid of this process (the owner of `/proc/self`).
fn euid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// uid and gid of a system user, from `id`.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(user).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl PgServer {
    /// Creates a cluster (`initdb`, trust authentication) on a free port, starts it and creates the test's
    /// database. Panics, naming what to install, when PostgreSQL or the `postgres` user is missing.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`Self::start`] with extra `postgresql.conf` settings, which override the defaults set here (e.g.
    /// `("commit_delay", "100000")` for slow commits).
    pub fn start_with(settings: &[(&str, &str)]) -> Self {
        let bin = bin_dir();
        let run_as = if euid() == 0 {
            Some("postgres".to_string())
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("tierline-pg")
            .tempdir()
            .expect("temporary directory");
        let home = dir.path().join("pg");
        std::fs::create_dir(&home).expect("server directory");
        if let Some(user) = &run_as {
            let Some((uid, gid)) = user_ids(user) else {
                panic!(
                    "the tests run as root and PostgreSQL refuses root, but there is no `{user}` system user \
                     to run the server as: install the server package (apt-get install postgresql), which \
                     creates it"
                );
            };
            // The server's user must reach its directory through the temporary one (created 0700).
            set_mode(dir.path(), 0o755);
            std::os::unix::fs::chown(&home, Some(uid), Some(gid)).expect("chown server directory");
        }
        set_mode(&home, 0o700);
        let port = tierline_demo::broker::free_port().expect("free port");
        let mut server = Self {
            bin,
            run_as,
            home,
            port,
            running: false,
            _dir: dir,
        };
        let data = server.data();
        let out = server.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        // Only TCP on 127.0.0.1 and a socket in our own directory: nothing shared with a system server.
        // `fsync = off` only matters if the machine crashes; a SIGKILLed server loses nothing it committed.
        let conf = format!(
            "\n# tierline test server\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{}'\nmax_connections = 100\nfsync = off\nfull_page_writes = off\n\
             logging_collector = off\nlog_min_messages = warning\n",
            server.home.display()
        );
        let conf_path = data.join("postgresql.conf");
        let mut text_conf = std::fs::read_to_string(&conf_path).expect("postgresql.conf");
        text_conf.push_str(&conf);
        for (name, value) in settings {
            text_conf.push_str(&format!("{name} = '{value}'\n"));
        }
        std::fs::write(&conf_path, text_conf).expect("write postgresql.conf");
        server.start_server();
        let out = server.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                DATABASE,
            ],
        );
        assert!(out.status.success(), "createdb failed: {}", text(&out));
        server
    }

    /// The URL of the test's database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether it is running (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops it with `pg_ctl stop`: `fast` disconnects clients and aborts their transactions; otherwise
    /// `smart` waits for clients to disconnect (at most 30 s, then fails).
    pub fn stop(&mut self, fast: bool) {
        let mode = if fast { "fast" } else { "smart" };
        let out = self.pg_ctl(&["stop", "-m", mode, "-t", "30"]);
        assert!(
            out.status.success(),
            "pg_ctl stop -m {mode} failed: {}\nserver log:\n{}",
            text(&out),
            self.log()
        );
        self.running = false;
    }

    /// Starts it again after [`Self::stop`] or [`Self::kill9`] (crash recovery after a kill); waits until it
    /// accepts connections.
    pub fn start_again(&mut self) {
        assert!(!self.running, "the server is already running");
        self.start_server();
    }

    /// `pg_ctl restart -m fast`: clients are disconnected, the server stops and starts again.
    pub fn restart(&mut self) {
        let log = self.log_path().display().to_string();
        let out = self.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60", "-l", &log]);
        assert!(
            out.status.success(),
            "pg_ctl restart failed: {}\nserver log:\n{}",
            text(&out),
            self.log()
        );
        self.running = true;
        self.wait_ready();
    }

    /// Kills the postmaster with SIGKILL, as the OOM killer would, and waits until the backends it leaves
    /// behind noticed and exited (a new postmaster refuses to start while they hold the shared memory).
    /// Backends still there after 10 s are killed too. Returns how many backends had to be killed.
    pub fn kill9(&mut self) -> usize {
        let Some(pid) = self.postmaster_pid() else {
            panic!("no postmaster.pid: the server is not running");
        };
        let children = children_of(pid);
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        self.running = false;
        let left = wait_gone(&children, Duration::from_secs(10));
        for c in &left {
            let _ = Command::new("kill")
                .args(["-KILL", &c.to_string()])
                .status();
        }
        let still = wait_gone(&left, Duration::from_secs(10));
        assert!(still.is_empty(), "backends {still:?} survive SIGKILL");
        // The dead postmaster stays a zombie until whoever adopted it reaps it, and a new postmaster refuses
        // to start while the pid in `postmaster.pid` exists. Once every backend is gone (checked above, so
        // the shared-memory interlock has nothing left to protect), a lock file naming a zombie is stale.
        let started = Instant::now();
        while exists(pid) && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if exists(pid) && self.postmaster_pid() == Some(pid) {
            let _ = std::fs::remove_file(self.data().join("postmaster.pid"));
        }
        left.len()
    }

    fn data(&self) -> PathBuf {
        self.home.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.home.join("server.log")
    }

    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    fn start_server(&mut self) {
        let log = self.log_path().display().to_string();
        let out = self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log]);
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\nserver log:\n{}",
            text(&out),
            self.log()
        );
        self.running = true;
        self.wait_ready();
    }

    /// Waits until the server accepts TCP connections on its port.
    fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            let out = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args(["-d", "postgres", "-q"])
                .output()
                .expect("pg_isready");
            if out.status.success() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "PostgreSQL on port {} not ready after 60 s; server log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.data().display().to_string();
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    /// Runs one of the server's binaries as the server's user.
    fn run(&self, name: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(name);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args)
            .current_dir(&self.home)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()))
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Processes whose parent is `pid`, from `/proc`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Whether `pid` is a live process (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether `pid` names a process, zombies included.
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits up to `timeout` for every pid to be gone; returns those still alive.
fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let started = Instant::now();
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || started.elapsed() > timeout {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.postmaster_pid().is_some_and(alive) {
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-t", "30"]);
        }
    }
}
