//! `tierline-review models` against a real review API with a model registry, and the bundle server's
//! downloads: only operators publish and steer targets; a bundle signed by an untrusted key, or altered,
//! is refused with the reason; a target goes back to an older bundle only by an explicit rollback; a
//! download by byte ranges reassembles the archive exactly (checked against the file on disk).

#![allow(clippy::unwrap_used)]

use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tierline_shared::bundle::{SignedStatement, SigningKey, TrustedKeys, archive};
use tierline_tests::bundles::prescreen_variant;
use tierline_tests::http::get_bytes;
use tierline_tests::review::{OTHER_TOKEN, TOKEN, start_registry};

mod common;

fn cli(addr: SocketAddr, token: &str, args: &[&str]) -> (i32, String, String) {
    common::cli(addr, Some(token), args)
}

/// Packs the shipped prescreen as `version`, signs it with `key` at `sequence`, and writes the bundle and
/// its `.sig` into `dir`; returns the bundle's path and hash.
fn signed_bundle(dir: &Path, version: &str, sequence: u64, key: &SigningKey) -> (PathBuf, String) {
    let manifest = prescreen_variant(dir, version, |t| t);
    let packed = archive::pack(&manifest).unwrap();
    let signed = SignedStatement::sign(&packed.statement(sequence), key).unwrap();
    let path = dir.join(format!("prescreen-{version}.bundle"));
    std::fs::write(&path, &packed.bytes).unwrap();
    std::fs::write(
        dir.join(format!("prescreen-{version}.bundle.sig")),
        signed.to_json(),
    )
    .unwrap();
    (path, packed.sha256)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_publish_target_and_roll_back_and_edges_download_by_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let ops = SigningKey::generate().unwrap();
    let stranger = SigningKey::generate().unwrap();
    let server = start_registry(TrustedKeys::new(vec![ops.public()])).await;
    let (v1, sha1) = signed_bundle(dir.path(), "1.1.0", 1, &ops);
    let (v2, sha2) = signed_bundle(dir.path(), "1.2.0", 2, &ops);
    let (rogue, _) = signed_bundle(dir.path(), "6.6.6", 3, &stranger);
    assert_ne!(sha1, sha2);
    let api = server.api;
    let (v1c, v2c, roguec) = (v1.clone(), v2.clone(), rogue.clone());
    let (sha1c, sha2c) = (sha1.clone(), sha2.clone());
    let tampered = dir.path().join("tampered.bundle");
    let tamperedc = tampered.clone();
    let v2_sig = dir.path().join("prescreen-1.2.0.bundle.sig");
    tokio::task::spawn_blocking(move || {
        // A reviewer who is not an operator may not publish.
        let (code, _, err) = cli(api, TOKEN, &["models", "publish", s(&v1c)]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("PermissionDenied") && err.contains("not an operator"),
            "{err}"
        );

        let (code, out, err) = cli(api, OTHER_TOKEN, &["models", "publish", s(&v1c)]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.starts_with("published prescreen 1.1.0 sequence 1") && out.contains(&sha1c),
            "{out}"
        );
        let (code, out, err) = cli(api, OTHER_TOKEN, &["models", "publish", s(&v1c)]);
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("already published:"), "{out}");
        let (code, _, err) = cli(api, OTHER_TOKEN, &["models", "publish", s(&v2c)]);
        assert_eq!(code, 0, "{err}");

        // Signed by a key the registry does not trust: refused, naming the key.
        let (code, _, err) = cli(api, OTHER_TOKEN, &["models", "publish", s(&roguec)]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("not trusted here"), "{err}");
        // One byte changed in a signed archive: refused.
        let mut bytes = std::fs::read(&v2c).unwrap();
        let at = bytes.len() - 2000;
        bytes[at] ^= 1;
        std::fs::write(&tamperedc, &bytes).unwrap();
        let (code, _, err) = cli(
            api,
            OTHER_TOKEN,
            &[
                "models",
                "publish",
                s(&tamperedc),
                "--signature",
                s(&v2_sig),
            ],
        );
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("does not match its signed statement"), "{err}");

        // Targets: up to the newer bundle, never back without saying it is a rollback.
        let (code, out, err) = cli(
            api,
            OTHER_TOKEN,
            &["models", "target", "edges/line-3", &sha1c[..10]],
        );
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&sha1c), "{out}");
        let (code, _, err) = cli(
            api,
            TOKEN,
            &["models", "target", "edges/line-3", &sha2c[..10]],
        );
        assert_eq!(code, 1, "{err}");
        let (code, out, err) = cli(
            api,
            OTHER_TOKEN,
            &["models", "target", "edges/line-3", &sha2c[..10]],
        );
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("was {}", &sha1c[..12])), "{out}");
        let (code, _, err) = cli(
            api,
            OTHER_TOKEN,
            &["models", "target", "edges/line-3", &sha1c[..10]],
        );
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("FailedPrecondition") && err.contains("--rollback"),
            "{err}"
        );
        let (code, _, err) = cli(
            api,
            OTHER_TOKEN,
            &["models", "target", "workers", &sha1c[..10]],
        );
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("edges/<group>"), "{err}");
        let (code, out, err) = cli(
            api,
            OTHER_TOKEN,
            &[
                "models",
                "rollback",
                "edges/line-3",
                &sha1c[..10],
                "--reason",
                "dent recall dropped",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("rollback"), "{out}");

        let (code, out, err) = cli(api, OTHER_TOKEN, &["--json", "models", "list"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let seqs: Vec<u64> = v["bundles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["sequence"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [2, 1]);
        assert_eq!(v["targets"][0]["sha256"], sha1c.as_str());
        assert_eq!(v["targets"][0]["previous"], sha2c.as_str());
        assert_eq!(v["targets"][0]["rollback"], true);

        let (code, out, err) = cli(api, OTHER_TOKEN, &["--json", "models", "events"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let events: Vec<(String, String)> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["event"].as_str().unwrap().to_string(),
                    e["actor"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let ana = || "ana".to_string();
        assert_eq!(
            events,
            [
                ("published".into(), ana()),
                ("published".into(), ana()),
                ("targeted".into(), ana()),
                ("targeted".into(), ana()),
                ("rolled-back".into(), ana()),
            ]
        );
    })
    .await
    .unwrap();

    // Downloads: the whole archive, then a cut-off download resumed by range, both equal to the file.
    let on_disk = std::fs::read(&v1).unwrap();
    let path = format!("/v1/bundles/{sha1}");
    let (status, head, body) = get_bytes(server.bundles, &path, &[]).await.unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("accept-ranges: bytes"),
        "{head}"
    );
    assert_eq!(body, on_disk);
    let half = on_disk.len() / 2;
    let (status, _, first) = get_bytes(
        server.bundles,
        &path,
        &[("Range", &format!("bytes=0-{}", half - 1))],
    )
    .await
    .unwrap();
    assert_eq!(status, 206);
    let (status, head, rest) = get_bytes(
        server.bundles,
        &path,
        &[("Range", &format!("bytes={half}-"))],
    )
    .await
    .unwrap();
    assert_eq!(status, 206);
    assert!(
        head.contains(&format!(
            "bytes {half}-{}/{}",
            on_disk.len() - 1,
            on_disk.len()
        )),
        "{head}"
    );
    let joined = [first, rest].concat();
    assert_eq!(hex(&Sha256::digest(&joined)), sha1);
    let (status, head, _) = get_bytes(
        server.bundles,
        &path,
        &[("Range", &format!("bytes={}-", on_disk.len()))],
    )
    .await
    .unwrap();
    assert_eq!(status, 416, "{head}");
    let (status, _, _) = get_bytes(
        server.bundles,
        &format!("/v1/bundles/{}", "0".repeat(64)),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
    let (status, _, _) = get_bytes(server.bundles, "/v1/bundles/../../etc/passwd", &[])
        .await
        .unwrap();
    assert!(status == 400 || status == 404, "{status}");

    // The statement served verifies with the operator's key; the targets list carries it.
    let (status, _, body) = get_bytes(server.bundles, &format!("{path}/statement"), &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let signed = SignedStatement::parse(&String::from_utf8(body).unwrap()).unwrap();
    let statement = signed
        .verify(&TrustedKeys::new(vec![ops.public()]))
        .unwrap();
    assert_eq!(statement.sha256, sha1);
    let (status, _, body) = get_bytes(server.bundles, "/v1/targets", &[]).await.unwrap();
    assert_eq!(status, 200);
    let targets: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(targets[0]["target"], "edges/line-3");
    assert_eq!(targets[0]["sha256"], sha1.as_str());
    assert_eq!(targets[0]["rollback"], true);
    let _ = (v2, rogue, tampered);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
