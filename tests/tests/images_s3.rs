//! Stored images in S3-compatible storage: the cloud store writes each kept image as an object of a bucket on
//! a real S3 API server (moto's standalone server, from the virtualenv `scripts/setup` makes in `.venv-s3/`),
//! reads it back for review, and retention deletes it. The oracle is the S3 API itself, asked over plain HTTP
//! without the code under test: which objects the bucket lists, and what each holds.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::Child;
use std::time::Duration;
use tierline_cloud::store::{Images, RetentionPolicy, Store};
use tierline_tests::review::{frame, verdict};

struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto() -> Server {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-s3/bin/moto_server");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/setup (it installs moto's S3 server in .venv-s3)",
        bin.display()
    );
    let (child, port) = tierline_tests::process::spawn_listening(
        &bin,
        |port| {
            ["-H", "127.0.0.1", "-p", &port.to_string()]
                .map(String::from)
                .to_vec()
        },
        Duration::from_secs(30),
    );
    Server(child, port)
}

/// A plain HTTP/1.1 request to the S3 server; the status code and the body. It names an access key but
/// carries no real signature: moto's server, as started here, does not check signatures, only that a request
/// is not anonymous (objects are private).
fn http(port: u16, method: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=tierline/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n\r\n"
    )
    .unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let head_end = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let status = String::from_utf8_lossy(&reply[9..12]).parse().unwrap();
    (status, reply[head_end..].to_vec())
}

/// The keys the bucket lists under `frames/`.
fn listed(port: u16) -> Vec<String> {
    let (status, body) = http(port, "GET", "/tierline?list-type=2&prefix=frames/");
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    text.split("<Key>")
        .skip(1)
        .map(|k| k.split("</Key>").next().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_go_to_an_s3_bucket_are_read_back_and_removed_by_retention() {
    let server = moto();
    let port = server.1;
    assert_eq!(http(port, "PUT", "/tierline").0, 200, "create the bucket");
    let options: Vec<(String, String)> = [
        ("aws_endpoint", format!("http://127.0.0.1:{port}")),
        ("aws_allow_http", "true".into()),
        ("aws_access_key_id", "tierline".into()),
        ("aws_secret_access_key", "tierline-secret".into()),
        ("aws_region", "us-east-1".into()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &format!("sqlite://{}", dir.path().join("cloud.db").display()),
        true,
    )
    .await
    .unwrap()
    .with_images(Images::open_with("s3://tierline/frames", &options).unwrap());
    let mut images = Vec::new();
    for seq in 1..=4u64 {
        let mut f = frame("edge-s", seq, seq as i64 * 1_000, "");
        f.image = format!("image {seq} of edge-s").into_bytes();
        f.image_sha256 = tierline_shared::wire::image_sha256(&f.image);
        store
            .store(&f, &verdict("edge-s", seq, "scratch"))
            .await
            .unwrap();
        images.push((Images::key(&f), f.image));
    }
    let mut keys = listed(port);
    keys.sort();
    let mut want: Vec<String> = images.iter().map(|(k, _)| format!("frames/{k}")).collect();
    want.sort();
    assert_eq!(keys, want, "one object per frame, under the prefix");
    for (seq, (key, bytes)) in (1u64..).zip(&images) {
        let (status, body) = http(port, "GET", &format!("/tierline/frames/{key}"));
        assert_eq!((status, &body), (200, bytes), "{key}");
        let (row, read, _) = store.get_frame("edge-s", seq).await.unwrap().unwrap();
        assert!(row.has_image);
        assert_eq!(read.as_ref(), Some(bytes), "read back for review");
    }
    // Retention by age removes every object; the verdicts stay.
    let now = tierline_shared::time::now_us() + 2 * 3_600_000_000;
    let lease = store
        .try_acquire_lease("retention", "w1", Duration::from_secs(60), now)
        .await
        .unwrap()
        .unwrap();
    let policy = RetentionPolicy {
        max_age: Some(Duration::from_secs(3600)),
        max_bytes: None,
    };
    assert_eq!(
        store
            .prune_images(&lease, &policy, now)
            .await
            .unwrap()
            .images,
        4
    );
    assert!(listed(port).is_empty(), "retention deleted the objects");
    assert_eq!(
        http(port, "GET", &format!("/tierline/frames/{}", images[0].0)).0,
        404
    );
    let (row, read, _) = store.get_frame("edge-s", 1).await.unwrap().unwrap();
    assert!(!row.has_image && read.is_none());
    assert_eq!(row.label, "scratch");
}
