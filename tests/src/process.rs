//! Running the edge binary as a separate process, so tests can `kill -9` it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A workspace binary, built by `cargo test --workspace` (cargo builds a package's binaries when that package
/// has integration tests: `tierline-edge` does, in `edge/tests/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the workspace tests (cargo test --workspace)",
        path.display()
    );
    path
}

/// Starts `tierline-edge --config <config>`, logging to `log` (appended).
pub fn spawn_edge(config: &Path, log: &Path) -> Child {
    spawn_edge_with(config, log, &[])
}

/// Starts `tierline-edge --config <config>` with extra environment variables, logging to `log` (appended).
pub fn spawn_edge_with(config: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    spawn(
        "tierline-edge",
        "warn,tierline_edge=info,tierline_shared=info",
        config,
        log,
        env,
    )
}

fn spawn(name: &str, filter: &str, config: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("process log");
    Command::new(binary(name))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", filter)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"))
}

/// Sends SIGTERM and waits.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

/// A small seeded generator for fault timing (xorshift64*); the seed is printed by the tests that use it.
pub struct Rng(u64);

impl Rng {
    /// From `TIERLINE_TEST_SEED` if set, else from the clock. Prints the seed.
    pub fn from_env(test: &str) -> Self {
        let seed = std::env::var("TIERLINE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{test}: seed {seed} (rerun with TIERLINE_TEST_SEED={seed})");
        Self(seed | 1)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % (hi - lo).max(1)
    }
}

/// Seqs currently held in an edge outbox (the edge must not be running, or must be between commits).
pub async fn outbox_seqs(db: &Path) -> Vec<u64> {
    held(db, "SELECT seq FROM outbox").await
}

/// Seqs of suspects (not audit samples) currently held in an edge outbox.
pub async fn outbox_suspects(db: &Path) -> Vec<u64> {
    held(db, "SELECT seq FROM outbox WHERE reason = 1").await
}

/// The seqs `sql` selects from the outbox at `db` (none when there is no outbox file). A read that fails
/// (the edge holds a write lock) is tried again; one that keeps failing panics rather than pass for an
/// empty outbox.
async fn held(db: &Path, sql: &str) -> Vec<u64> {
    if !db.exists() {
        return Vec::new();
    }
    let url = format!("sqlite://{}", db.display());
    let mut last = String::new();
    for _ in 0..50 {
        match sqlx::SqlitePool::connect(&url).await {
            Ok(pool) => {
                let seqs: Result<Vec<i64>, _> = sqlx::query_scalar(sql).fetch_all(&pool).await;
                pool.close().await;
                match seqs {
                    Ok(seqs) => return seqs.into_iter().map(|s| s as u64).collect(),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("cannot read the outbox {}: {last}", db.display())
}

/// A cloud worker configuration (TOML) for worker `worker` on the broker at `port`, storing at `db_url`,
/// with `extra` TOML appended. The review API is off unless `extra` turns it on.
pub fn cloud_worker_toml(port: u16, worker: &str, db_url: &str, extra: &str) -> String {
    format!(
        "[cloud]\nworker_id = \"{worker}\"\nconcurrency = 16\n[mqtt]\nport = {port}\nreconnect_delay = \"100ms\"\n\
         [model]\nmanifest = {:?}\nmax_wait = \"2ms\"\n[store]\nurl = \"{db_url}\"\n[api]\nenabled = false\n[admin]\nlisten = \"127.0.0.1:0\"\n{extra}",
        crate::pipeline::models_dir().join("full.toml"),
    )
}

/// Starts `tierline-cloud --config <config>`, logging to `log` (appended).
pub fn spawn_cloud(config: &Path, log: &Path) -> Child {
    spawn_cloud_with(config, log, &[])
}

/// Starts `tierline-cloud --config <config>` with extra environment variables, logging to `log` (appended).
pub fn spawn_cloud_with(config: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    spawn(
        "tierline-cloud",
        "warn,tierline_cloud=info,tierline_shared=info",
        config,
        log,
        env,
    )
}

/// Waits up to `timeout` for a child to exit; `None` if it is still running then.
pub fn wait_exit(
    child: &mut Child,
    timeout: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let started = std::time::Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if started.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Kills a process with SIGKILL and reaps it.
pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts a local server on a free loopback port: `args` gets the port and returns the command's arguments.
/// Waits until the port accepts connections (at most `within`); returns the child and the port.
pub fn spawn_listening(
    program: &Path,
    args: impl FnOnce(u16) -> Vec<String>,
    within: std::time::Duration,
) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(program)
        .args(args(port))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < within,
            "{} did not listen on {port} within {within:?}",
            program.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (child, port)
}
