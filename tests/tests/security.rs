//! Security with the shipped broker files (`deploy/mosquitto/mosquitto.conf` and `acl`): TLS with a CA
//! made by rcgen, logins, per-edge ACLs, and the cloud's own check of envelopes against topics.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tierline_cloud::stats::get;
use tierline_shared::mqtt::MqttConfig;
use tierline_shared::tls::TlsConfig;
use tierline_shared::wire::{self, FrameEnvelope, Verdict};
use tierline_tests::oracle::Stored;
use tierline_tests::{pipeline, shipped};

const USERS: &[(&str, &str)] = &[
    ("edge-a", "pw-a"),
    ("edge-b", "pw-b"),
    ("tierline-cloud", "pw-cloud"),
];

fn tls_login(port: u16, ca: &Path, user: &str, password: &str) -> MqttConfig {
    MqttConfig {
        host: "127.0.0.1".into(),
        port,
        username: Some(user.into()),
        password: Some(password.into()),
        tls: Some(TlsConfig {
            ca: ca.to_path_buf(),
            cert: None,
            key: None,
        }),
        ..Default::default()
    }
}

/// Connects once and returns the first outcome: Ok on CONNACK, or the connection error.
async fn connect_once(mqtt: &MqttConfig, id: &str) -> Result<(), rumqttc::ConnectionError> {
    let (_client, mut eventloop) = tierline_shared::mqtt::client(mqtt.options(id).unwrap(), 8);
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    first.expect("the broker neither accepted nor refused within 10 s")
}

fn envelope(edge: &str, seq: u64) -> FrameEnvelope {
    FrameEnvelope {
        protocol_version: wire::PROTOCOL_VERSION,
        edge_id: edge.into(),
        site: "plant".into(),
        line: "l1".into(),
        seq,
        frame_id: wire::frame_id(edge, seq),
        image: std::fs::read(pipeline::models_dir().join("samples/frame-01.jpg")).unwrap(),
        ..FrameEnvelope::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_right_ca_connects_and_a_wrong_ca_or_login_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let b = shipped::start(dir.path(), USERS);
    let right = tls_login(b.tls_port, &b.pki.ca, "edge-a", "pw-a");
    connect_once(&right, "tls-right").await.unwrap();

    // A CA that did not sign the broker's certificate.
    let other = shipped::make_pki(&dir.path().join("other"), "impostor");
    let wrong = tls_login(b.tls_port, &other.ca, "edge-a", "pw-a");
    let e = connect_once(&wrong, "tls-wrong").await.unwrap_err();
    let why = wrong.explain(&e);
    println!("wrong CA: {why}");
    assert!(matches!(e, rumqttc::ConnectionError::Tls(_)), "{e:?}");
    assert!(
        why.contains("mqtt.tls.ca") && why.contains("UnknownIssuer"),
        "{why}"
    );

    // Right CA, wrong password; and no login at all on the loopback listener.
    let bad_login = tls_login(b.tls_port, &b.pki.ca, "edge-a", "guess");
    let e = connect_once(&bad_login, "bad-login").await.unwrap_err();
    let why = bad_login.explain(&e);
    println!("wrong password: {why}");
    assert!(
        why.contains("refused the login") && why.contains("edge-a"),
        "{why}"
    );
    let anonymous = MqttConfig {
        port: b.broker.port(),
        ..Default::default()
    };
    let e = connect_once(&anonymous, "anonymous").await.unwrap_err();
    assert!(
        anonymous.explain(&e).contains("no credentials set"),
        "{e:?}"
    );

    // Plain MQTT to the TLS port is not MQTT to it.
    let plain_to_tls = MqttConfig {
        port: b.tls_port,
        username: Some("edge-a".into()),
        password: Some("pw-a".into()),
        ..Default::default()
    };
    assert!(connect_once(&plain_to_tls, "plain-to-tls").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_confines_each_edge_and_the_cloud_rejects_forged_envelopes() {
    let dir = tempfile::tempdir().unwrap();
    let b = shipped::start(dir.path(), USERS);
    let mut cloud_config = pipeline::cloud_config(b.tls_port, dir.path(), "w1");
    cloud_config.mqtt = tls_login(b.tls_port, &b.pki.ca, "tierline-cloud", "pw-cloud");
    let cloud = pipeline::start_cloud(cloud_config);
    let c = cloud.stats.clone();
    pipeline::wait_until(
        "cloud subscribed through the ACL",
        Duration::from_secs(20),
        || c.link_up.load(Ordering::Relaxed),
        || format!("{:?}", c.link_error.get()),
    )
    .await;

    // Edge B listens for verdicts on its own topic: none may arrive.
    let mqtt_b = tls_login(b.tls_port, &b.pki.ca, "edge-b", "pw-b");
    let (client_b, mut events_b) =
        tierline_shared::mqtt::client(mqtt_b.options("tierline-edge-edge-b").unwrap(), 16);
    client_b
        .subscribe(
            "tierline/v1/plant/l1/edge-b/verdicts",
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let b_verdicts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let poller_b = tokio::spawn({
        let n = b_verdicts.clone();
        async move {
            while let Ok(ev) = events_b.poll().await {
                if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) = ev {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });

    let mqtt_a = tls_login(b.tls_port, &b.pki.ca, "edge-a", "pw-a");
    let (client_a, mut events_a) =
        tierline_shared::mqtt::client(mqtt_a.options("tierline-edge-edge-a").unwrap(), 16);
    client_a
        .subscribe(
            "tierline/v1/plant/l1/edge-a/verdicts",
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    // Edge A also tries to read edge B's verdicts.
    client_a
        .subscribe(
            "tierline/v1/plant/l1/edge-b/verdicts",
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let (verdicts_tx, mut verdicts_rx) =
        tokio::sync::mpsc::unbounded_channel::<(String, Verdict)>();
    let poller_a = tokio::spawn(async move {
        while let Ok(ev) = events_a.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev {
                let v: Verdict = wire::decode(&p.payload, 1 << 22).unwrap();
                let _ = verdicts_tx.send((p.topic.clone(), v));
            }
        }
    });
    let qos = rumqttc::QoS::AtLeastOnce;
    // 1. Into edge B's topic with edge B's envelope: the broker drops it (ACL).
    client_a
        .publish(
            "tierline/v1/plant/l1/edge-b/frames",
            qos,
            false,
            wire::encode(&envelope("edge-b", 1), 1 << 22).unwrap(),
        )
        .await
        .unwrap();
    // 2. Into edge A's own topic, claiming to be edge B: the cloud rejects it.
    client_a
        .publish(
            "tierline/v1/plant/l1/edge-a/frames",
            qos,
            false,
            wire::encode(&envelope("edge-b", 2), 1 << 22).unwrap(),
        )
        .await
        .unwrap();
    // 3. Edge A's presence under edge B's prefix: dropped by the broker too.
    client_a
        .publish(
            "tierline/v1/plant/l1/edge-b/presence",
            qos,
            true,
            b"forged".to_vec(),
        )
        .await
        .unwrap();
    // 4. The control: a genuine frame of edge A is judged and answered.
    client_a
        .publish(
            "tierline/v1/plant/l1/edge-a/frames",
            qos,
            false,
            wire::encode(&envelope("edge-a", 3), 1 << 22).unwrap(),
        )
        .await
        .unwrap();

    let (topic, verdict) = tokio::time::timeout(Duration::from_secs(20), verdicts_rx.recv())
        .await
        .expect("edge A's genuine frame must get a verdict")
        .unwrap();
    assert_eq!(topic, "tierline/v1/plant/l1/edge-a/verdicts");
    assert_eq!((verdict.edge_id.as_str(), verdict.seq), ("edge-a", 3));
    pipeline::wait_until(
        "the forged envelope counted",
        Duration::from_secs(10),
        || get(&c.rejected_forged) == 1,
        || format!("forged {}", get(&c.rejected_forged)),
    )
    .await;
    // Give anything that slipped through time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get(&c.frames_received),
        2,
        "the broker must drop edge A's publish into edge B's topic; the cloud saw only the forged and the genuine frame"
    );
    assert!(
        verdicts_rx.try_recv().is_err(),
        "edge A must not read any other verdict"
    );
    assert_eq!(b_verdicts.load(Ordering::Relaxed), 0);
    poller_a.abort();
    poller_b.abort();
    cloud.stop().await.unwrap();

    let stored = Stored::read(&dir.path().join("cloud.db")).await;
    let keys: Vec<_> = stored.verdicts.keys().cloned().collect();
    assert_eq!(
        keys,
        vec![("edge-a".to_string(), 3)],
        "only the genuine frame is stored"
    );
    assert_eq!(stored.verdicts[&("edge-a".to_string(), 3)], 1);

    // The broker's retained presence for edge B is not edge A's forgery.
    let mut watcher = tls_login(b.tls_port, &b.pki.ca, "tierline-cloud", "pw-cloud");
    watcher.keep_alive = Duration::from_secs(5);
    let (w, mut we) = tierline_shared::mqtt::client(watcher.options("presence-check").unwrap(), 8);
    w.subscribe("tierline/v1/plant/l1/edge-b/presence", qos)
        .await
        .unwrap();
    let retained = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(ev) = we.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev {
                return Some(p.payload);
            }
        }
        None
    })
    .await;
    assert!(
        !matches!(retained, Ok(Some(ref p)) if p.as_ref() == b"forged"),
        "edge A's forged presence was retained for edge B"
    );
}
