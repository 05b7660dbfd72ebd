//! The review API over a real tonic server and client: authentication (no token and a wrong token are
//! UNAUTHENTICATED), reviews recorded under the token's owner, the refusal of an exposed listener without
//! tokens and TLS, filters and paging, frames with images, reviews, watching verdicts, edges, health and
//! reflection. The `tierline-review` CLI runs against the same server (`tierline_tests::review`) in
//! `review/tests/cli.rs`.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;
use tierline_cloud::api::ReviewApi;
use tierline_cloud::api::pb::{self, review_client::ReviewClient};
use tierline_cloud::config::{ApiConfig, ReviewerConfig};
use tierline_cloud::store::Store;
use tierline_tests::review::{
    OTHER_REVIEWER, OTHER_TOKEN, REVIEWER, SHARED_TOKEN, TOKEN, frame, start, verdict,
};
use tonic::transport::Channel;

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_right_token_are_unauthenticated() {
    let s = start().await;
    let mut client = ReviewClient::new(channel(s.addr).await);
    let none = client
        .list_edges(pb::ListEdgesRequest {})
        .await
        .unwrap_err();
    assert_eq!(none.code(), tonic::Code::Unauthenticated, "{none:?}");
    assert!(none.message().contains("authorization"), "{none:?}");
    let wrong = client
        .list_frames(authed(pb::ListFramesRequest::default(), "s3cret-tokeN"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    let ok = client
        .list_edges(authed(pb::ListEdgesRequest {}, TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.edges.len(), 1);
    assert!(ok.edges[0].online);
    // Health is open to probes and follows the database.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(s.addr).await);
    let started = std::time::Instant::now();
    loop {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: tierline_cloud::api::SERVICE_NAME.into(),
            })
            .await;
        if let Ok(r) = r
            && r.into_inner().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "health never SERVING"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_review_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let s = start().await;
    let mut client = ServerReflectionClient::new(channel(s.addr).await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer {resp:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"tierline.review.v1.Review"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_listed_shown_reviewed_and_watched() {
    let s = start().await;
    let mut client = ReviewClient::new(channel(s.addr).await);
    // Paging: 2 + 2 + 1, newest first.
    let mut seqs = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_frames(authed(
                pb::ListFramesRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
                TOKEN,
            ))
            .await
            .unwrap()
            .into_inner();
        seqs.extend(page.frames.iter().map(|f| f.seq));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seqs, [5, 4, 3, 2, 1]);
    let bad = client
        .list_frames(authed(
            pb::ListFramesRequest {
                page_token: "nonsense".into(),
                ..Default::default()
            },
            TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let disputed = client
        .list_frames(authed(
            pb::ListFramesRequest {
                disagreement: true,
                ..Default::default()
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(disputed.frames.len(), 1);
    assert_eq!(disputed.frames[0].seq, 2);
    // Show with image, then review, then the unreviewed filter drops it.
    let shown = client
        .get_frame(authed(
            pb::GetFrameRequest {
                edge_id: "edge-a".into(),
                seq: 2,
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.image, vec![0x89, b'P', b'N', b'G', 2]);
    assert_eq!(shown.image_encoding, "png");
    assert_eq!(shown.scores[0].class_name, "good");
    let reviewed = client
        .submit_review(authed(
            pb::SubmitReviewRequest {
                edge_id: "edge-a".into(),
                seq: 2,
                label: "scratch".into(),
                defective: true,
                reviewer: String::new(),
                note: "hairline".into(),
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .review
        .unwrap();
    assert_eq!(
        (reviewed.label.as_str(), reviewed.reviewer.as_str()),
        ("scratch", REVIEWER)
    );
    let open = client
        .list_frames(authed(
            pb::ListFramesRequest {
                unreviewed: true,
                ..Default::default()
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        open.frames.iter().map(|f| f.seq).collect::<Vec<_>>(),
        [5, 4, 3, 1]
    );
    let missing = client
        .get_frame(authed(
            pb::GetFrameRequest {
                edge_id: "edge-a".into(),
                seq: 99,
            },
            TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let empty_label = client
        .submit_review(authed(
            pb::SubmitReviewRequest {
                edge_id: "edge-a".into(),
                seq: 1,
                ..Default::default()
            },
            TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(empty_label.code(), tonic::Code::InvalidArgument);
    // Watch: a verdict stored after the call arrives on the stream; older ones do not.
    let mut stream = client
        .watch_verdicts(authed(pb::WatchVerdictsRequest::default(), TOKEN))
        .await
        .unwrap()
        .into_inner();
    s.store
        .store(&frame("edge-b", 7, 9, ""), &verdict("edge-b", 7, "dent"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a watched verdict within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.edge_id.as_str(), got.seq, got.label.as_str()),
        ("edge-b", 7, "dent")
    );
}

fn review(seq: u64, label: &str, reviewer: &str) -> pb::SubmitReviewRequest {
    pb::SubmitReviewRequest {
        edge_id: "edge-a".into(),
        seq,
        label: label.into(),
        defective: label != "good",
        reviewer: reviewer.into(),
        note: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_are_recorded_under_the_owner_of_the_token() {
    let s = start().await;
    let mut client = ReviewClient::new(channel(s.addr).await);
    // Who reviewed comes from the token; the request need not say.
    let by_ana = client
        .submit_review(authed(review(4, "dent", ""), OTHER_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .review
        .unwrap();
    assert_eq!(by_ana.reviewer, OTHER_REVIEWER);
    // Naming oneself is fine.
    let by_bo = client
        .submit_review(authed(review(4, "scratch", REVIEWER), TOKEN))
        .await
        .unwrap()
        .into_inner()
        .review
        .unwrap();
    assert_eq!(by_bo.reviewer, REVIEWER);
    // Naming someone else is refused, and nothing is recorded.
    let impostor = client
        .submit_review(authed(review(4, "good", REVIEWER), OTHER_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(
        impostor.code(),
        tonic::Code::PermissionDenied,
        "{impostor:?}"
    );
    assert!(
        impostor.message().contains(REVIEWER) && impostor.message().contains(OTHER_REVIEWER),
        "{impostor:?}"
    );
    // A wrong token is refused before anything else.
    let wrong = client
        .submit_review(authed(review(4, "good", ""), "not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated, "{wrong:?}");
    // The deprecated shared token works, and says so in the record.
    let shared = client
        .submit_review(authed(review(4, "good", ""), SHARED_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .review
        .unwrap();
    assert_eq!(
        shared.reviewer,
        tierline_cloud::config::SHARED_TOKEN_REVIEWER
    );
    let shown = client
        .get_frame(authed(
            pb::GetFrameRequest {
                edge_id: "edge-a".into(),
                seq: 4,
            },
            OTHER_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let history: Vec<_> = shown
        .reviews
        .iter()
        .map(|r| (r.reviewer.as_str(), r.label.as_str()))
        .collect();
    assert_eq!(
        history,
        [
            (OTHER_REVIEWER, "dent"),
            (REVIEWER, "scratch"),
            ("api.token", "good")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_listener_needs_tokens_and_tls_unless_insecure_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cloud.db").display());
    let store = Store::open(&url, true).await.unwrap();
    let token_file = dir.path().join("ana.token");
    std::fs::write(&token_file, "t-ana").unwrap();
    let reviewers = vec![ReviewerConfig {
        name: "ana".into(),
        token: None,
        token_file: Some(token_file),
    }];
    let exposed = ApiConfig {
        listen: ([0, 0, 0, 0], 0).into(),
        ..ApiConfig::default()
    };
    let tls = ApiConfig {
        tls_cert: Some(dir.path().join("api.crt")),
        tls_key: Some(dir.path().join("api.key")),
        ..exposed.clone()
    };
    for (what, config) in [
        ("no token, no TLS", exposed.clone()),
        (
            "tokens without TLS",
            ApiConfig {
                reviewers: reviewers.clone(),
                ..exposed.clone()
            },
        ),
        ("TLS without tokens", tls.clone()),
    ] {
        let Err(e) = ReviewApi::bind(config, store.clone()).await else {
            panic!("{what}: the review API listened on 0.0.0.0");
        };
        let e = e.to_string();
        println!("{what}: {e}");
        for named in [
            "api.listen",
            "api.reviewers",
            "api.token",
            "api.tls_cert",
            "api.insecure = true",
        ] {
            assert!(e.contains(named), "{what}: {e}");
        }
    }
    // Tokens and TLS, or the explicit switch, and it listens. (TLS files are read when it starts serving.)
    let secured = ReviewApi::bind(
        ApiConfig {
            reviewers,
            ..tls.clone()
        },
        store.clone(),
    )
    .await
    .unwrap();
    assert!(secured.addr().ip().is_unspecified());
    let insecure = ReviewApi::bind(
        ApiConfig {
            insecure: true,
            ..exposed
        },
        store.clone(),
    )
    .await
    .unwrap();
    assert!(insecure.addr().ip().is_unspecified());
    // Loopback needs neither.
    let local = ApiConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        ..ApiConfig::default()
    };
    ReviewApi::bind(local, store).await.unwrap();
}
