//! Security with the shipped broker files (`deploy/mosquitto/mosquitto.conf` and `acl`): TLS with a CA
//! made by rcgen, logins, the separate edge and cloud listeners, client ids bound to logins (no takeover of
//! another edge's session), per-edge ACLs, and the cloud's own check of envelopes against topics.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;
use tierline_cloud::stats::get;
use tierline_shared::mqtt::MqttConfig;
use tierline_shared::tls::TlsConfig;
use tierline_shared::topics::EdgeAddress;
use tierline_shared::wire::{self, FrameEnvelope, Presence, PresenceState, Verdict};
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
async fn connect_once(
    mqtt: &MqttConfig,
    id: &str,
) -> Result<(), tierline_shared::mqtt::ConnectionError> {
    let (_client, mut eventloop) = tierline_shared::mqtt::client(mqtt.options(id).unwrap(), 8);
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(tierline_shared::mqtt::Event::Incoming(
                    tierline_shared::mqtt::Packet::ConnAck(_),
                )) => return Ok(()),
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
    assert!(
        matches!(e, tierline_shared::mqtt::ConnectionError::Tls(_)),
        "{e:?}"
    );
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
    let mut cloud_config = pipeline::cloud_config(b.cloud_port, dir.path(), "w1");
    cloud_config.mqtt = tls_login(b.cloud_port, &b.pki.ca, "tierline-cloud", "pw-cloud");
    let cloud = pipeline::start_cloud(cloud_config);
    let c = cloud.stats.clone();
    pipeline::wait_subscribed(
        &c,
        "cloud subscribed through the ACL",
        Duration::from_secs(20),
    )
    .await;

    // Edge B listens for verdicts on its own topic: only the one for its own genuine frame may arrive.
    let mqtt_b = tls_login(b.tls_port, &b.pki.ca, "edge-b", "pw-b");
    let (client_b, mut events_b) =
        tierline_shared::mqtt::client(mqtt_b.options("tierline-edge-edge-b").unwrap(), 16);
    client_b
        .subscribe(
            "tierline/v1/plant/l1/edge-b/verdicts",
            tierline_shared::mqtt::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let (b_tx, mut b_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Verdict)>();
    let poller_b = tokio::spawn(async move {
        while let Ok(ev) = events_b.poll().await {
            if let tierline_shared::mqtt::Event::Incoming(tierline_shared::mqtt::Packet::Publish(
                p,
            )) = ev
            {
                let v: Verdict = wire::decode(&p.payload, 1 << 22).unwrap();
                let _ = b_tx.send((String::from_utf8_lossy(&p.topic).into_owned(), v));
            }
        }
    });

    let mqtt_a = tls_login(b.tls_port, &b.pki.ca, "edge-a", "pw-a");
    let (client_a, mut events_a) =
        tierline_shared::mqtt::client(mqtt_a.options("tierline-edge-edge-a").unwrap(), 16);
    client_a
        .subscribe(
            "tierline/v1/plant/l1/edge-a/verdicts",
            tierline_shared::mqtt::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    // Edge A also tries to read edge B's verdicts.
    client_a
        .subscribe(
            "tierline/v1/plant/l1/edge-b/verdicts",
            tierline_shared::mqtt::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let (verdicts_tx, mut verdicts_rx) =
        tokio::sync::mpsc::unbounded_channel::<(String, Verdict)>();
    let poller_a = tokio::spawn(async move {
        while let Ok(ev) = events_a.poll().await {
            if let tierline_shared::mqtt::Event::Incoming(tierline_shared::mqtt::Packet::Publish(
                p,
            )) = ev
            {
                let v: Verdict = wire::decode(&p.payload, 1 << 22).unwrap();
                let _ = verdicts_tx.send((String::from_utf8_lossy(&p.topic).into_owned(), v));
            }
        }
    });
    let qos = tierline_shared::mqtt::QoS::AtLeastOnce;
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

    // 5. Edge B, with its own login, sends a genuine frame; the cloud answers on B's verdict topic. Edge A's
    // subscriptions were in place before its own verdict arrived (the broker handles one client's packets in
    // order), so A is subscribed to B's verdict topic when this verdict is published.
    client_b
        .publish(
            "tierline/v1/plant/l1/edge-b/frames",
            qos,
            false,
            wire::encode(&envelope("edge-b", 4), 1 << 22).unwrap(),
        )
        .await
        .unwrap();
    let (topic, verdict) = tokio::time::timeout(Duration::from_secs(20), b_rx.recv())
        .await
        .expect("edge B's genuine frame must get a verdict on B's topic")
        .unwrap();
    assert_eq!(topic, "tierline/v1/plant/l1/edge-b/verdicts");
    assert_eq!((verdict.edge_id.as_str(), verdict.seq), ("edge-b", 4));

    // Give anything that slipped through time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get(&c.frames_received),
        3,
        "the broker must drop edge A's publish into edge B's topic; the cloud saw only the forged frame and the two genuine ones"
    );
    let mut leaked = Vec::new();
    while let Ok((topic, v)) = verdicts_rx.try_recv() {
        leaked.push((topic, v.edge_id, v.seq));
    }
    assert!(
        leaked.is_empty(),
        "edge A must not read any other verdict, in particular not edge B's (edge-b, 4) it subscribed to: {leaked:?}"
    );
    let mut more_for_b = Vec::new();
    while let Ok((topic, v)) = b_rx.try_recv() {
        more_for_b.push((topic, v.edge_id, v.seq));
    }
    assert!(
        more_for_b.is_empty(),
        "edge B gets only the verdict for its own genuine frame: {more_for_b:?}"
    );
    poller_a.abort();
    poller_b.abort();
    cloud.stop().await.unwrap();

    let stored = Stored::read(&dir.path().join("cloud.db")).await;
    let keys: Vec<_> = stored.verdicts.keys().cloned().collect();
    assert_eq!(
        keys,
        vec![("edge-a".to_string(), 3), ("edge-b".to_string(), 4)],
        "only the genuine frames are stored"
    );
    assert_eq!(stored.verdicts[&("edge-a".to_string(), 3)], 1);
    assert_eq!(stored.verdicts[&("edge-b".to_string(), 4)], 1);

    // The broker's retained presence for edge B is not edge A's forgery.
    let mut watcher = tls_login(b.cloud_port, &b.pki.ca, "tierline-cloud", "pw-cloud");
    watcher.keep_alive = Duration::from_secs(5);
    let (w, mut we) = tierline_shared::mqtt::client(watcher.options("presence-check").unwrap(), 8);
    w.subscribe("tierline/v1/plant/l1/edge-b/presence", qos)
        .await
        .unwrap();
    let retained = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(ev) = we.poll().await {
            if let tierline_shared::mqtt::Event::Incoming(tierline_shared::mqtt::Packet::Publish(
                p,
            )) = ev
            {
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

/// Polls `events` until CONNACK; panics with the broker's log on an error or after 10 s.
async fn connected(
    events: &mut tierline_shared::mqtt::EventLoop,
    who: &str,
    broker: &shipped::ShippedBroker,
) {
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(tierline_shared::mqtt::Event::Incoming(
                    tierline_shared::mqtt::Packet::ConnAck(_),
                )) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match first {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!(
            "{who} could not connect: {e}; broker log:\n{}",
            broker.broker.log()
        ),
        Err(_) => panic!(
            "{who} got no CONNACK within 10 s; broker log:\n{}",
            broker.broker.log()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_cannot_take_over_another_edges_client_id() {
    let dir = tempfile::tempdir().unwrap();
    let b = shipped::start(dir.path(), USERS);
    let qos = tierline_shared::mqtt::QoS::AtLeastOnce;

    // The cloud's view of edge B's presence: its OFFLINE last will would show up here.
    let watch = tls_login(b.cloud_port, &b.pki.ca, "tierline-cloud", "pw-cloud");
    let (w, mut watch_events) =
        tierline_shared::mqtt::client(watch.options("tierline-cloud-watch").unwrap(), 16);
    w.subscribe("tierline/v1/plant/l1/edge-b/presence", qos)
        .await
        .unwrap();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let (presence_tx, mut presence_rx) = tokio::sync::mpsc::unbounded_channel::<Presence>();
    let watcher = tokio::spawn(async move {
        let mut subscribed = Some(subscribed_tx);
        while let Ok(ev) = watch_events.poll().await {
            match ev {
                tierline_shared::mqtt::Event::Incoming(tierline_shared::mqtt::Packet::SubAck(
                    _,
                )) => {
                    if let Some(tx) = subscribed.take() {
                        let _ = tx.send(());
                    }
                }
                tierline_shared::mqtt::Event::Incoming(tierline_shared::mqtt::Packet::Publish(
                    p,
                )) => {
                    let _ = presence_tx.send(wire::decode(&p.payload, 1 << 20).unwrap());
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .expect("the presence watcher subscribed within 10 s")
        .unwrap();

    // Edge B connects as the edge does: persistent session, OFFLINE last will.
    let addr_b = EdgeAddress::new("plant", "l1", "edge-b").unwrap();
    let mqtt_b = tls_login(b.tls_port, &b.pki.ca, "edge-b", "pw-b");
    let (_client_b, mut events_b) = tierline_shared::mqtt::client(
        tierline_edge::link::options(&mqtt_b, &addr_b, "pre-1").unwrap(),
        16,
    );
    connected(&mut events_b, "edge B", &b).await;
    let (b_down_tx, mut b_down_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let poller_b = tokio::spawn(async move {
        loop {
            match events_b.poll().await {
                Ok(tierline_shared::mqtt::Event::Incoming(
                    tierline_shared::mqtt::Packet::Disconnect(_),
                )) => {
                    let _ = b_down_tx.send("the broker sent DISCONNECT".into());
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = b_down_tx.send(e.to_string());
                    return;
                }
            }
        }
    });

    // Edge A logs in with its own credentials but edge B's client id (and a persistent session, to try for
    // B's queued verdicts too). The broker accepts the login, under client id edge-a.
    let mqtt_a = tls_login(b.tls_port, &b.pki.ca, "edge-a", "pw-a");
    let mut options_a = mqtt_a
        .options(&tierline_edge::link::client_id("edge-b"))
        .unwrap();
    options_a.set_clean_start(false);
    options_a.set_session_expiry_interval(Some(3600));
    let (_client_a, mut events_a) = tierline_shared::mqtt::client(options_a, 16);
    connected(&mut events_a, "edge A", &b).await;
    let poller_a = tokio::spawn(async move { while events_a.poll().await.is_ok() {} });

    // B stays connected and no OFFLINE presence is published for it.
    if let Ok(Some(why)) = tokio::time::timeout(Duration::from_secs(3), b_down_rx.recv()).await {
        panic!(
            "edge A's connection with edge B's client id disconnected edge B ({why}); broker log:\n{}",
            b.broker.log()
        );
    }
    let mut offline = Vec::new();
    while let Ok(p) = presence_rx.try_recv() {
        if p.state == PresenceState::Offline as i32 {
            offline.push(p.edge_id);
        }
    }
    assert!(
        offline.is_empty(),
        "edge B's OFFLINE last will was published while B was up: {offline:?}; broker log:\n{}",
        b.broker.log()
    );
    poller_a.abort();
    poller_b.abort();
    watcher.abort();

    // The cloud listener, whose client ids are not bound to logins, takes only the cloud login: an edge
    // cannot use it to pick another edge's client id. And the cloud login is not valid for the edges'
    // listener, where all workers would share one client id.
    let edge_on_cloud_port = tls_login(b.cloud_port, &b.pki.ca, "edge-a", "pw-a");
    let e = connect_once(&edge_on_cloud_port, "edge-b")
        .await
        .unwrap_err();
    assert!(
        edge_on_cloud_port.explain(&e).contains("refused the login"),
        "{e:?}"
    );
    let cloud_on_edge_port = tls_login(b.tls_port, &b.pki.ca, "tierline-cloud", "pw-cloud");
    let e = connect_once(&cloud_on_edge_port, "tierline-cloud-w9")
        .await
        .unwrap_err();
    assert!(
        cloud_on_edge_port.explain(&e).contains("refused the login"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_workers_sharing_the_cloud_login_do_not_disconnect_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let b = shipped::start(dir.path(), USERS);
    let login = tls_login(b.cloud_port, &b.pki.ca, "tierline-cloud", "pw-cloud");
    let (_c1, mut e1) =
        tierline_shared::mqtt::client(login.options("tierline-cloud-w1").unwrap(), 8);
    connected(&mut e1, "worker w1", &b).await;
    let (_c2, mut e2) =
        tierline_shared::mqtt::client(login.options("tierline-cloud-w2").unwrap(), 8);
    connected(&mut e2, "worker w2", &b).await;
    let first = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            tokio::select! {
                r = e1.poll() => if let Err(e) = r { return format!("w1: {e}") },
                r = e2.poll() => if let Err(e) = r { return format!("w2: {e}") },
            }
        }
    })
    .await;
    if let Ok(why) = first {
        panic!(
            "two workers with the same login disconnected each other ({why}); broker log:\n{}",
            b.broker.log()
        );
    }
}
