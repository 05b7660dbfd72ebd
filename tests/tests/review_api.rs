//! The review API over a real tonic server and client: authentication (no token and a wrong token are
//! UNAUTHENTICATED), filters and paging, frames with images, reviews, watching verdicts, edges, health and
//! reflection. The `tierline-review` CLI runs against the same server (`tierline_tests::review`) in
//! `review/tests/cli.rs`.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;
use tierline_cloud::api::pb::{self, review_client::ReviewClient};
use tierline_tests::review::{TOKEN, frame, start, verdict};
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
                reviewer: "ana".into(),
                note: "hairline".into(),
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reviewed.review.unwrap().label, "scratch");
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
