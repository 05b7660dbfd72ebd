//! The review console's handlers, through its router, on a seeded SQLite store: sign-in with a reviewer's
//! token, sessions and CSRF on every form, the queue's order, the frame page, and reviews recorded under the
//! session's reviewer, claims that keep two reviewers off one frame, filters, the fleet page and the labels
//! export. Pages are read with an HTML parser, not searched as text.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use scraper::{Html, Selector};
use std::time::Duration;
use tierline_cloud::config::Credential;
use tierline_cloud::store::Store;
use tierline_shared::wire::pb::Region;
use tierline_tests::review::{
    OTHER_REVIEWER, OTHER_TOKEN, REVIEWER, SHARED_TOKEN, TOKEN, frame, verdict,
};
use tower::ServiceExt;

/// A reply: status, `Location`, `Set-Cookie` values, the content security policy and the body.
struct Reply {
    status: StatusCode,
    location: Option<String>,
    cookies: Vec<String>,
    policy: Option<String>,
    body: String,
}

impl Reply {
    fn html(&self) -> Html {
        Html::parse_document(&self.body)
    }

    /// The `name=value` part of the cookie `name` this reply sets.
    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(|c| c.split(';').next().unwrap().to_string())
    }
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_string());
    let cookies = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let policy = response
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        location,
        cookies,
        policy,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(app: &Router, path: &str, cookie: Option<&str>) -> Reply {
    let mut r = Request::get(path);
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    send(app, r.body(Body::empty()).unwrap()).await
}

async fn post(app: &Router, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Reply {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut r =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    send(app, r.body(Body::from(body)).unwrap()).await
}

fn select<'a>(html: &'a Html, css: &str) -> Vec<scraper::ElementRef<'a>> {
    html.select(&Selector::parse(css).unwrap()).collect()
}

/// The value of the hidden `csrf` input of the first form matching `form`.
fn csrf(html: &Html, form: &str) -> String {
    select(html, &format!("{form} input[name=csrf]"))
        .first()
        .unwrap_or_else(|| panic!("no csrf field in {form}:\n{}", html.html()))
        .value()
        .attr("value")
        .unwrap()
        .to_string()
}

/// A console on a store seeded like the review API's tests: edge-a seqs 1..=5, seq 2 rejected locally but
/// good (a disagreement); seq 5 has a real 64×48 PNG and a region.
async fn console(dir: &std::path::Path) -> (Router, Store) {
    let store = Store::open(
        &format!("sqlite://{}", dir.join("cloud.db").display()),
        true,
    )
    .await
    .unwrap();
    for seq in 1..=5u64 {
        let local = if seq == 2 { "reject" } else { "" };
        let label = if seq % 2 == 0 { "good" } else { "scratch" };
        let mut f = frame("edge-a", seq, 1_000_000 * seq as i64, local);
        let mut v = verdict("edge-a", seq, label);
        if seq == 5 {
            let mut png = Vec::new();
            image::RgbImage::new(64, 48)
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            f.image = png;
            v.regions = vec![Region {
                x: 10.0,
                y: 12.0,
                width: 20.0,
                height: 8.0,
                class_name: "scratch".into(),
                score: 0.9,
            }];
        }
        store.store(&f, &v).await.unwrap();
    }
    let credentials = [
        Credential {
            reviewer: REVIEWER.into(),
            token: TOKEN.into(),
        },
        Credential {
            reviewer: OTHER_REVIEWER.into(),
            token: OTHER_TOKEN.into(),
        },
        Credential {
            reviewer: tierline_cloud::config::SHARED_TOKEN_REVIEWER.into(),
            token: SHARED_TOKEN.into(),
        },
    ];
    let app =
        tierline_cloud::console::router(store.clone(), &credentials, Duration::from_secs(600));
    (app, store)
}

/// Signs in with `token`; returns the session cookie (`name=value`).
async fn sign_in(app: &Router, token: &str) -> String {
    let form = get(app, "/login", None).await;
    let login_cookie = form.cookie("tierline_login").unwrap();
    let token_csrf = csrf(&form.html(), "form[action='/login']");
    let r = post(
        app,
        "/login",
        Some(&login_cookie),
        &[("token", token), ("csrf", &token_csrf)],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    r.cookie("tierline_console").expect("a session cookie")
}

#[tokio::test]
async fn nothing_is_shown_or_taken_without_signing_in() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = console(dir.path()).await;
    for path in ["/", "/frames/edge-a/5", "/frames/edge-a/5/image"] {
        let r = get(&app, path, None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.location.as_deref(), Some("/login"), "{path}");
        let r = get(&app, path, Some("tierline_console=forged")).await;
        assert_eq!(
            r.location.as_deref(),
            Some("/login"),
            "{path} with a forged session"
        );
    }
    let r = post(
        &app,
        "/frames/edge-a/1/review",
        Some("tierline_console=forged"),
        &[("csrf", "x"), ("label", "good")],
    )
    .await;
    assert_eq!(r.location.as_deref(), Some("/login"));
    assert!(
        store
            .get_frame("edge-a", 1)
            .await
            .unwrap()
            .unwrap()
            .2
            .is_empty()
    );
}

#[tokio::test]
async fn sign_in_needs_a_reviewer_token_and_the_forms_own_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _store) = console(dir.path()).await;
    let form = get(&app, "/login", None).await;
    assert_eq!(form.status, StatusCode::OK);
    let login_cookie = form.cookie("tierline_login").unwrap();
    let token_csrf = csrf(&form.html(), "form[action='/login']");
    assert_eq!(login_cookie, format!("tierline_login={token_csrf}"));
    assert!(form.cookies[0].contains("HttpOnly") && form.cookies[0].contains("SameSite=Strict"));

    // A wrong token, or the deprecated shared one (it names nobody): refused, said so, no session.
    for token in ["guess", SHARED_TOKEN] {
        let r = post(
            &app,
            "/login",
            Some(&login_cookie),
            &[("token", token), ("csrf", &token_csrf)],
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token}");
        assert!(r.cookie("tierline_console").is_none());
        let alert = select(&r.html(), "[role=alert]")[0]
            .text()
            .collect::<String>();
        assert!(alert.contains("not accepted"), "{alert}");
    }
    // The right token from a page that did not hand out this form (no cookie, or another token): refused.
    for cookie in [None, Some("tierline_login=0123")] {
        let r = post(
            &app,
            "/login",
            cookie,
            &[("token", TOKEN), ("csrf", &token_csrf)],
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{cookie:?}");
        assert!(r.cookie("tierline_console").is_none());
    }
    // The right token: a session cookie that scripts cannot read and other sites cannot send.
    let r = post(
        &app,
        "/login",
        Some(&login_cookie),
        &[("token", TOKEN), ("csrf", &token_csrf)],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location.as_deref(), Some("/"));
    let set = r
        .cookies
        .iter()
        .find(|c| c.starts_with("tierline_console="))
        .unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let session = r.cookie("tierline_console").unwrap();
    let queue = get(&app, "/", Some(&session)).await;
    assert_eq!(queue.status, StatusCode::OK);
    // Pages load nothing from elsewhere and cannot be framed by another site.
    for reply in [&queue, &form] {
        let policy = reply.policy.as_deref().unwrap();
        assert!(
            policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"),
            "{policy}"
        );
    }
    let who = select(&queue.html(), "header .who strong")[0]
        .text()
        .collect::<String>();
    assert_eq!(who, REVIEWER);
}

#[tokio::test]
async fn the_queue_puts_disagreements_first_and_drops_reviewed_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _store) = console(dir.path()).await;
    let session = sign_in(&app, TOKEN).await;
    let frames = |reply: &Reply| -> Vec<String> {
        select(&reply.html(), "table.queue tbody tr td:first-child a")
            .iter()
            .map(|a| a.text().collect())
            .collect()
    };
    let queue = get(&app, "/", Some(&session)).await;
    assert_eq!(
        frames(&queue),
        ["edge-a-2", "edge-a-5", "edge-a-4", "edge-a-3", "edge-a-1"]
    );
    // Reviewing the disagreement takes it out of the queue and leads to the next frame.
    let page = get(&app, "/frames/edge-a/2", Some(&session)).await;
    let token = csrf(&page.html(), "form.review");
    let r = post(
        &app,
        "/frames/edge-a/2/review",
        Some(&session),
        &[("csrf", &token), ("label", "good")],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location.as_deref(), Some("/next"));
    let next = get(&app, "/next", Some(&session)).await;
    assert_eq!(next.location.as_deref(), Some("/frames/edge-a/5"));
    let queue = get(&app, "/", Some(&session)).await;
    assert_eq!(
        frames(&queue),
        ["edge-a-5", "edge-a-4", "edge-a-3", "edge-a-1"]
    );
}

#[tokio::test]
async fn the_frame_page_draws_the_regions_over_the_image_and_offers_the_models_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _store) = console(dir.path()).await;
    let session = sign_in(&app, TOKEN).await;
    let page = get(&app, "/frames/edge-a/5", Some(&session)).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.html();
    let svg = select(&html, "svg.shot")[0];
    assert_eq!(svg.value().attr("viewBox"), Some("0 0 64 48"));
    let image = select(&html, "svg.shot image")[0];
    assert_eq!(image.value().attr("href"), Some("/frames/edge-a/5/image"));
    let rect = select(&html, "svg.shot g.region rect")[0].value();
    assert_eq!(
        ["x", "y", "width", "height"].map(|a| rect.attr(a).unwrap()),
        ["10", "12", "20", "8"]
    );
    // Enter in the note field submits with the form's first button: a disabled one, never a label.
    let first = select(&html, "form.review button")[0].value();
    assert!(first.attr("disabled").is_some() && first.attr("name").is_none());
    let labels: Vec<&str> = select(&html, "form.review button[name=label]")
        .iter()
        .map(|b| b.value().attr("value").unwrap())
        .collect();
    assert_eq!(labels, ["good", "scratch"]);
    let keys: Vec<&str> = select(&html, "form.review button[name=label]")
        .iter()
        .map(|b| b.value().attr("data-key").unwrap())
        .collect();
    assert_eq!(keys, ["1", "2"]);
    // The image itself, to the signed-in reviewer only.
    let img = get(&app, "/frames/edge-a/5/image", Some(&session)).await;
    assert_eq!(img.status, StatusCode::OK);
    // An unknown frame is a page that says so.
    let missing = get(&app, "/frames/edge-a/99", Some(&session)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_review_needs_the_sessions_csrf_token_and_is_recorded_under_the_sessions_reviewer() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = console(dir.path()).await;
    let bo = sign_in(&app, TOKEN).await;
    let ana = sign_in(&app, OTHER_TOKEN).await;
    let page = get(&app, "/frames/edge-a/3", Some(&bo)).await;
    let bo_csrf = csrf(&page.html(), "form.review");
    let ana_csrf = csrf(
        &get(&app, "/", Some(&ana)).await.html(),
        "form[action='/logout']",
    );
    assert_ne!(bo_csrf, ana_csrf);

    // Without a token, with another session's token: refused, nothing stored.
    for token in ["", ana_csrf.as_str()] {
        let r = post(
            &app,
            "/frames/edge-a/3/review",
            Some(&bo),
            &[("csrf", token), ("label", "good")],
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "csrf {token:?}");
    }
    // A label the model does not have: refused with the labels it has.
    let r = post(
        &app,
        "/frames/edge-a/3/review",
        Some(&bo),
        &[("csrf", &bo_csrf), ("label", "dent")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("good, scratch"), "{}", r.body);
    assert!(
        store
            .get_frame("edge-a", 3)
            .await
            .unwrap()
            .unwrap()
            .2
            .is_empty()
    );

    // A form that names another reviewer is recorded under the session's reviewer.
    let r = post(
        &app,
        "/frames/edge-a/3/review",
        Some(&bo),
        &[
            ("csrf", &bo_csrf),
            ("label", "good"),
            ("note", "scratch is a reflection"),
            ("reviewer", OTHER_REVIEWER),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let reviews = store.get_frame("edge-a", 3).await.unwrap().unwrap().2;
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].reviewer, REVIEWER);
    assert_eq!(reviews[0].label, "good");
    assert!(!reviews[0].defective);
    assert_eq!(reviews[0].note, "scratch is a reflection");
    // The history on the frame page names the reviewer.
    let page = get(&app, "/frames/edge-a/3", Some(&ana)).await;
    let history: String = select(&page.html(), "section.history li")[0]
        .text()
        .collect();
    assert!(history.contains("good by bo"), "{history}");
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _store) = console(dir.path()).await;
    let session = sign_in(&app, TOKEN).await;
    let token = csrf(
        &get(&app, "/", Some(&session)).await.html(),
        "form[action='/logout']",
    );
    // Without the token the session stays.
    let r = post(&app, "/logout", Some(&session), &[("csrf", "nope")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(get(&app, "/", Some(&session)).await.status, StatusCode::OK);
    let r = post(&app, "/logout", Some(&session), &[("csrf", &token)]).await;
    assert_eq!(r.location.as_deref(), Some("/login"));
    let after = get(&app, "/", Some(&session)).await;
    assert_eq!(after.location.as_deref(), Some("/login"));
}

/// The frame a `GET /next` leads to, as `/frames/<edge>/<seq>` (`None`: the queue is empty).
async fn next_frame(app: &Router, session: &str) -> Option<String> {
    let r = get(app, "/next", Some(session)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    r.location.filter(|l| l.starts_with("/frames/"))
}

/// Labels the frame at `href` (its page's CSRF token) as `label`.
async fn label(app: &Router, session: &str, href: &str, label: &str) -> Reply {
    let page = get(app, href, Some(session)).await;
    let token = csrf(&page.html(), "form[action='/logout']");
    post(
        app,
        &format!("{href}/review"),
        Some(session),
        &[("csrf", &token), ("label", label)],
    )
    .await
}

#[tokio::test]
async fn two_reviewers_are_never_handed_the_same_frame() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = console(dir.path()).await;
    let bo = sign_in(&app, TOKEN).await;
    let ana = sign_in(&app, OTHER_TOKEN).await;
    let mine = next_frame(&app, &bo).await.unwrap();
    assert_eq!(mine, "/frames/edge-a/2", "the disagreement first");
    let hers = next_frame(&app, &ana).await.unwrap();
    assert_ne!(hers, mine);
    // bo's frame, opened by ana: said whose it is, and no label form.
    let page = get(&app, &mine, Some(&ana)).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.html();
    assert!(select(&html, "form.review").is_empty());
    let status: String = select(&html, "[role=status]")[0].text().collect();
    assert!(status.contains(REVIEWER), "{status}");
    // A label posted for it anyway: refused, nothing stored.
    let r = label(&app, &ana, &mine, "good").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        store
            .get_frame("edge-a", 2)
            .await
            .unwrap()
            .unwrap()
            .2
            .is_empty()
    );
    // The queue shows who has what open.
    let queue = get(&app, "/", Some(&ana)).await;
    let claimed: Vec<String> = select(&queue.html(), "table.queue td.claim")
        .iter()
        .map(|td| td.text().collect::<String>())
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    // Working through the queue in turns: every frame is labelled once, by whoever held it.
    let mut served = vec![mine.clone(), hers.clone()];
    let (mut a, mut b) = (Some(mine), Some(hers));
    while a.is_some() || b.is_some() {
        if let Some(href) = a.take() {
            assert_eq!(
                label(&app, &bo, &href, "good").await.status,
                StatusCode::SEE_OTHER
            );
            a = next_frame(&app, &bo).await;
            served.extend(a.clone());
        }
        if let Some(href) = b.take() {
            assert_eq!(
                label(&app, &ana, &href, "scratch").await.status,
                StatusCode::SEE_OTHER
            );
            b = next_frame(&app, &ana).await;
            served.extend(b.clone());
        }
    }
    let unique: std::collections::BTreeSet<&String> = served.iter().collect();
    assert_eq!(
        unique.len(),
        served.len(),
        "a frame handed out twice: {served:?}"
    );
    assert_eq!(served.len(), 5);
    for seq in 1..=5 {
        let reviews = store.get_frame("edge-a", seq).await.unwrap().unwrap().2;
        assert_eq!(reviews.len(), 1, "frame {seq}: {reviews:?}");
    }
}

#[tokio::test]
async fn filters_narrow_the_queue_and_stay_with_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _store) = console(dir.path()).await;
    let session = sign_in(&app, TOKEN).await;
    let rows = |reply: &Reply| -> Vec<String> {
        select(&reply.html(), "table.queue tbody tr td:first-child a")
            .iter()
            .map(|a| a.text().collect())
            .collect()
    };
    let good = get(&app, "/?apply=1&class=good&edge=edge-a", Some(&session)).await;
    assert_eq!(rows(&good), ["edge-a-2", "edge-a-4"]);
    let form = good.html();
    let class = select(&form, "form.filters input[name=class]")[0]
        .value()
        .attr("value");
    assert_eq!(class, Some("good"), "the form shows the filter");
    // Kept for the session: the plain queue and the next frame follow it.
    assert_eq!(
        rows(&get(&app, "/", Some(&session)).await),
        ["edge-a-2", "edge-a-4"]
    );
    assert_eq!(
        next_frame(&app, &session).await.as_deref(),
        Some("/frames/edge-a/2")
    );
    // A time window (UTC): the frames were captured 1 to 5 s after the epoch, so none from a minute on.
    let window = get(&app, "/?apply=1&since=1970-01-01T00:01", Some(&session)).await;
    assert!(
        rows(&window).is_empty(),
        "a window after every frame holds none"
    );
    let window = get(&app, "/?apply=1&until=1970-01-01T00:01", Some(&session)).await;
    assert_eq!(
        rows(&window).len(),
        5,
        "a window around every frame holds all"
    );
    // Cleared.
    let all = get(&app, "/?apply=1", Some(&session)).await;
    assert_eq!(rows(&all).len(), 5);
}

#[tokio::test]
async fn the_fleet_page_shows_each_edge_from_its_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = console(dir.path()).await;
    let session = sign_in(&app, TOKEN).await;
    let hb = tierline_shared::wire::Heartbeat {
        protocol_version: 1,
        edge_id: "edge-a".into(),
        backlog_frames: 7,
        oldest_backlog_age_ms: 125_000,
        frames_seen: 400,
        frames_forwarded: 10,
        edge_model_version: "prescreen-1.1.0".into(),
        cameras: vec![
            tierline_shared::wire::pb::CameraState {
                camera_id: "cam-0".into(),
                up: true,
                fps: 29.94,
                last_frame_age_s: 0.03,
                ..Default::default()
            },
            tierline_shared::wire::pb::CameraState {
                camera_id: "cam-1".into(),
                up: false,
                last_frame_age_s: 95.0,
                error: "connection refused".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    store
        .record_heartbeat("plant", "line-1", &hb, tierline_shared::time::now_us())
        .await
        .unwrap();
    let page = get(&app, "/fleet", Some(&session)).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.html();
    let cells: Vec<String> = select(&html, "table.fleet tbody tr td")
        .iter()
        .map(|td| td.text().collect::<String>())
        .collect();
    assert_eq!(cells[0], "edge-a");
    assert_eq!(cells[1], "plant / line-1");
    assert_eq!(cells[2], "online");
    assert_eq!(cells[4], "7 frames");
    assert_eq!(cells[5], "2 min");
    assert_eq!(cells[6], "prescreen-1.1.0");
    assert_eq!(cells[7], "2.5 % of 400");
    let cameras: Vec<(String, bool, Option<String>)> = select(&html, "td.cameras span.camera")
        .iter()
        .map(|c| {
            (
                c.text().collect::<String>(),
                c.value().classes().any(|k| k == "down"),
                c.value().attr("title").map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        cameras,
        [
            ("cam-0 up, 29.9 fps".to_string(), false, Some(String::new())),
            (
                "cam-1 down, last frame 1 min ago".to_string(),
                true,
                Some("connection refused".to_string())
            ),
        ]
    );
    assert_eq!(
        get(&app, "/fleet", None).await.location.as_deref(),
        Some("/login")
    );
}

#[tokio::test]
async fn the_export_is_the_reviewed_frames_as_images_and_a_labels_csv_the_model_tools_read() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = console(dir.path()).await;
    let session = sign_in(&app, TOKEN).await;
    assert_eq!(
        get(&app, "/export.tar", None).await.location.as_deref(),
        Some("/login")
    );
    label(&app, &session, "/frames/edge-a/5", "good").await;
    label(&app, &session, "/frames/edge-a/3", "scratch").await;
    let page = get(&app, "/export", Some(&session)).await;
    let text: String = select(&page.html(), "main p")[0].text().collect();
    assert!(text.starts_with("2 reviewed frames"), "{text}");

    let response = app
        .clone()
        .oneshot(
            Request::get("/export.tar")
                .header(header::COOKIE, &session)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let out = dir.path().join("unpacked");
    tar::Archive::new(std::io::Cursor::new(bytes.to_vec()))
        .unpack(&out)
        .unwrap();
    let folder = out.join("tierline-labels");
    // What the model tools read: each image with the human label, not the cloud's.
    let samples = tierline_models::dataset::load(&folder, None).unwrap();
    let mut got: Vec<(String, String)> = samples
        .iter()
        .map(|s| {
            (
                s.path.file_name().unwrap().to_string_lossy().into_owned(),
                s.label.clone(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("edge-a-3.png".to_string(), "scratch".to_string()),
            ("edge-a-5.png".to_string(), "good".to_string()),
        ]
    );
    for s in &samples {
        let seq: u64 = if s.label == "good" { 5 } else { 3 };
        let stored = store
            .get_frame("edge-a", seq)
            .await
            .unwrap()
            .unwrap()
            .1
            .unwrap();
        assert_eq!(
            std::fs::read(&s.path).unwrap(),
            stored,
            "{}",
            s.path.display()
        );
    }
    let csv = std::fs::read_to_string(folder.join("labels.csv")).unwrap();
    assert!(
        csv.starts_with("file,label,edge_id,seq,camera_id,cloud_label,reviewer\n"),
        "{csv}"
    );
    assert!(csv.lines().all(|l| l.split(',').count() == 7), "{csv}");
    assert!(csv.contains(",bo\n"), "the reviewer is named: {csv}");
}
