//! The shipped deployment files stay valid: the example configs load with the real (strict) loaders, and
//! Mosquitto starts with the shipped broker config.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn deploy(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

#[test]
fn example_configs_load_strictly() {
    let edge = tierline_edge::EdgeConfig::load(Some(&deploy("edge.example.toml"))).unwrap();
    assert!(!edge.cameras.is_empty());
    let cloud = tierline_cloud::CloudConfig::load(Some(&deploy("cloud.example.toml"))).unwrap();
    assert!(cloud.store.url.starts_with("sqlite:"));
}

#[test]
fn mosquitto_starts_with_the_shipped_config() {
    let dir = tempfile::tempdir().unwrap();
    let port = tierline_demo::broker::free_port().unwrap();
    // Same file, with the listener, files and user moved into the test's directory.
    let shipped = std::fs::read_to_string(deploy("mosquitto/mosquitto.conf")).unwrap();
    let conf: String = shipped
        .lines()
        .map(|l| match l.split_whitespace().next() {
            Some("listener") => format!("listener {port} 127.0.0.1"),
            Some("persistence_location") => {
                format!("persistence_location {}/", dir.path().display())
            }
            Some("password_file") => {
                format!("password_file {}", dir.path().join("passwd").display())
            }
            Some("pid_file") | Some("user") => String::new(),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.path().join("mosquitto.conf");
    std::fs::write(&path, conf).unwrap();
    std::fs::write(dir.path().join("passwd"), "").unwrap();
    let mut child = Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "mosquitto exited ({status}) with the shipped config: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "mosquitto did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
