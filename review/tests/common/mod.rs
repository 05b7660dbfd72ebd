//! Shared by the CLI tests: runs the built `tierline-review` against a server.

use std::net::SocketAddr;
use std::process::Command;

/// Runs `tierline-review --server http://<addr> <args>` with `token` (none: no token) and without any
/// server or token from the environment; returns the exit code, stdout and stderr.
pub fn cli(addr: SocketAddr, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tierline-review"));
    c.arg("--server")
        .arg(format!("http://{addr}"))
        .args(args)
        .env_remove("TIERLINE_REVIEW_TOKEN")
        .env_remove("TIERLINE_REVIEW_SERVER");
    if let Some(t) = token {
        c.env("TIERLINE_REVIEW_TOKEN", t);
    }
    let out = c.output().expect("run tierline-review");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
