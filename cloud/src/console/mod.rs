//! The review console: web pages, served by the cloud worker, for the people who judge disputed frames.
//!
//! ```text
//!  GET  /login ──► sign-in form (CSRF: double-submit cookie) ──► POST /login: reviewer token ──► session
//!  GET  /                       review queue: disagreements first, then frames nobody reviewed; filters
//!  GET  /next                   claim the next frame of the queue nobody else holds ──► its page
//!  GET  /frames/<edge>/<seq>    the frame (claimed while open), the cloud model's regions drawn over it
//!  POST /frames/<edge>/<seq>/review   a label from the session's reviewer (CSRF) ──► store ──► /next
//!  GET  /fleet                  every edge: presence, last seen, backlog, model, forwarded share
//!  GET  /export, /export.tar    reviewed frames as images + labels.csv (what tierline-models reads)
//!  POST /logout
//! ```
//!
//! - Sign-in: with the reviewer's own token from `[[api.reviewers]]` (the same identity as the gRPC API).
//!   A review is recorded under the session's reviewer; a form field cannot change it.
//! - Sessions: `HttpOnly`, `SameSite=Strict` cookie; every form carries the session's CSRF token, and a
//!   POST without it is refused. Pages are served over plain HTTP: the worker refuses an address other than
//!   loopback unless `console.insecure` is set (for a TLS-terminating proxy in front).
//! - Claims: a frame open in one reviewer's browser is handed to no other reviewer until it is labelled, the
//!   reviewer moves on, or the claim lapses ([`CLAIM_TTL`]); see [`crate::store::Claim`].
//! - No network beyond the plant's: the stylesheet and the script are files of this crate, served from
//!   `/static/`.

mod export;
pub mod filters;
mod pages;
pub mod session;

use crate::api::BearerAuth;
use crate::config::{ConsoleConfig, Credential, SHARED_TOKEN_REVIEWER};
use crate::store::{Claim, FrameFilter, FrameRow, ReviewRow, Store};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;
use session::{LOGIN_COOKIE, SESSION_COOKIE, Session, Sessions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tierline_shared::config::ConfigError;
use tokio_util::sync::CancellationToken;

/// Most frames listed in the queue.
const QUEUE_LENGTH: u32 = 200;

/// Errors that stop the console.
#[derive(Debug, Error)]
pub enum ConsoleError {
    /// The settings are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address cannot be bound.
    #[error(
        "review console cannot listen on {addr}: {source}; set console.listen to a free address, or remove it"
    )]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("review console: {0}")]
    Serve(std::io::Error),
}

/// What every handler shares.
struct Shared {
    store: Store,
    auth: BearerAuth,
    sessions: Sessions,
    /// Cookies only over HTTPS.
    secure: bool,
}

/// The console, bound and ready to serve.
pub struct Console {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    router: Router,
}

impl Console {
    /// Checks the settings and binds the listener. Reviewers sign in with the tokens of `credentials`.
    pub async fn bind(
        config: &ConsoleConfig,
        credentials: &[Credential],
        store: Store,
    ) -> Result<Self, ConsoleError> {
        let listen = config.validate(credentials)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ConsoleError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ConsoleError::Bind {
            addr: listen,
            source,
        })?;
        Ok(Self {
            listener,
            addr,
            router: router_with(
                store,
                credentials,
                config.session_ttl,
                config.secure_cookies,
            ),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ConsoleError> {
        tracing::info!(addr = %self.addr, "Review console listening: http://{}/", self.addr);
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(ConsoleError::Serve)
    }
}

/// The console's routes over `store`, signing in the reviewers of `credentials`, for plain HTTP.
pub fn router(store: Store, credentials: &[Credential], session_ttl: Duration) -> Router {
    router_with(store, credentials, session_ttl, false)
}

/// [`router`], with `Secure` session cookies when `secure` (served over HTTPS by a proxy).
pub fn router_with(
    store: Store,
    credentials: &[Credential],
    session_ttl: Duration,
    secure: bool,
) -> Router {
    let shared = Arc::new(Shared {
        store,
        auth: BearerAuth::new(credentials),
        sessions: Sessions::new(session_ttl),
        secure,
    });
    Router::new()
        .route("/", get(queue))
        .route("/next", get(next))
        .route("/fleet", get(fleet))
        .route("/export", get(export_page))
        .route("/export.tar", get(export::archive))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/frames/{edge}/{seq}", get(frame))
        .route("/frames/{edge}/{seq}/image", get(image))
        .route("/frames/{edge}/{seq}/review", post(review))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        .with_state(shared)
}

/// The handlers' shared state.
type SharedState = State<Arc<Shared>>;

/// What every page says about itself: not cached, not framed by other sites, nothing loaded from elsewhere.
const CONTENT_POLICY: &str = "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn page(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        Html(markup.into_string()),
    )
        .into_response()
}

fn cookie_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::COOKIE).and_then(|v| v.to_str().ok())
}

/// Why a request is not served.
enum Refused {
    /// No live session: sign in first.
    SignIn,
    /// A form post without this session's CSRF token.
    ForeignForm,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::SignIn => Redirect::to("/login").into_response(),
            Refused::ForeignForm => page(
                StatusCode::FORBIDDEN,
                pages::refused(
                    "Form refused",
                    "This form did not come from your signed-in page (its CSRF token does not match). Reload the page and submit it again.",
                ),
            ),
        }
    }
}

/// The signed-in session of a request.
fn session(shared: &Shared, headers: &HeaderMap) -> Result<Session, Refused> {
    session::cookie(cookie_header(headers), SESSION_COOKIE)
        .and_then(|id| shared.sessions.get(id))
        .ok_or(Refused::SignIn)
}

/// Changes the request's session.
fn update_session(shared: &Shared, headers: &HeaderMap, change: impl FnOnce(&mut Session)) {
    if let Some(id) = session::cookie(cookie_header(headers), SESSION_COOKIE) {
        shared.sessions.update(id, change);
    }
}

/// The session of a form post whose CSRF token matches.
fn checked(shared: &Shared, headers: &HeaderMap, csrf: &str) -> Result<Session, Refused> {
    let s = session(shared, headers)?;
    if session::same(&s.csrf, csrf) {
        Ok(s)
    } else {
        Err(Refused::ForeignForm)
    }
}

/// A store failure: the detail goes to the log, the page says what to do.
fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "Review console request failed in the store.");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::refused(
            "Store unavailable",
            "The verdict store did not answer. Try again in a moment; the cause is in the cloud worker's log (\"Review console request failed in the store\").",
        ),
    )
}

async fn login_form(headers: HeaderMap) -> Response {
    let token = session::cookie(cookie_header(&headers), LOGIN_COOKIE)
        .map(str::to_string)
        .unwrap_or_else(session::random_token);
    login_page(&token, None, StatusCode::OK)
}

fn login_page(csrf: &str, problem: Option<&str>, status: StatusCode) -> Response {
    let response = page(status, pages::login(csrf, problem));
    let cookie = session::set_cookie(
        LOGIN_COOKIE,
        csrf,
        "/login",
        Duration::from_secs(3600),
        false,
    );
    with_cookies(response, &[cookie])
}

/// `response` with a `Set-Cookie` header for each of `cookies`.
fn with_cookies(mut response: Response, cookies: &[String]) -> Response {
    for cookie in cookies {
        if let Ok(v) = HeaderValue::from_str(cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// The sign-in form's fields.
#[derive(Deserialize)]
struct LoginForm {
    token: String,
    csrf: String,
}

async fn login(
    State(shared): SharedState,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = session::cookie(cookie_header(&headers), LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !session::same(expected, &form.csrf) {
        return login_page(
            &session::random_token(),
            Some("The sign-in form had expired or did not come from this page; sign in again."),
            StatusCode::FORBIDDEN,
        );
    }
    let presented = format!("Bearer {}", form.token.trim());
    // Reviewers' own tokens only: the deprecated shared token says nothing about who reviews.
    let reviewer = match shared.auth.identify(Some(presented.as_bytes())) {
        Some(r) if shared.auth.required() && r.0 != SHARED_TOKEN_REVIEWER => r.0,
        _ => {
            tracing::info!("Review console sign-in refused: the token matches no reviewer.");
            return login_page(
                expected,
                Some("That token is not accepted. Use the token of your [[api.reviewers]] entry."),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    let id = shared.sessions.open(&reviewer);
    tracing::info!(reviewer = %reviewer, "Reviewer signed in to the console.");
    let ttl = shared.sessions.ttl();
    with_cookies(
        Redirect::to("/").into_response(),
        &[
            session::set_cookie(SESSION_COOKIE, &id, "/", ttl, shared.secure),
            session::set_cookie(LOGIN_COOKIE, "", "/login", Duration::ZERO, false),
        ],
    )
}

/// A form that carries only its CSRF token.
#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(shared): SharedState,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = checked(&shared, &headers, &form.csrf) {
        return refused.into_response();
    }
    if let Some(id) = session::cookie(cookie_header(&headers), SESSION_COOKIE) {
        shared.sessions.close(id);
    }
    with_cookies(
        Redirect::to("/login").into_response(),
        &[session::set_cookie(
            SESSION_COOKIE,
            "",
            "/",
            Duration::ZERO,
            shared.secure,
        )],
    )
}

/// The frames to review under `filter`, most urgent first: disagreements between the edge's local decision
/// and the cloud, audit misses, low-confidence verdicts, then the other frames nobody reviewed, newest first
/// within each.
async fn review_queue(
    store: &Store,
    filter: &FrameFilter,
) -> Result<Vec<FrameRow>, crate::store::StoreError> {
    let filter = |disagreement| FrameFilter {
        disagreement,
        unreviewed: true,
        reviewed: false,
        limit: QUEUE_LENGTH,
        after: None,
        ..filter.clone()
    };
    let mut rows = store.list_frames(&filter(true)).await?;
    for row in store.list_frames(&filter(false)).await? {
        if rows.len() >= QUEUE_LENGTH as usize {
            break;
        }
        if !row.disagreement {
            rows.push(row);
        }
    }
    // In the order frames are handed out (`Store::claim_next`): by urgency, the newest first within each.
    rows.sort_by_key(|r| r.urgency);
    Ok(rows)
}

async fn queue(
    State(shared): SharedState,
    headers: HeaderMap,
    Query(query): Query<filters::FilterQuery>,
) -> Response {
    let mut s = match session(&shared, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    if query.apply.is_some() {
        let filter = query.to_filter();
        update_session(&shared, &headers, |s| s.filter = filter.clone());
        s.filter = filter;
    }
    let now = tierline_shared::time::now_us();
    let rows = match review_queue(&shared.store, &s.filter).await {
        Ok(rows) => rows,
        Err(e) => return unavailable(e),
    };
    let claims = shared.store.claims(now).await.unwrap_or_default();
    page(
        StatusCode::OK,
        pages::queue(&pages::QueuePage {
            reviewer: &s.reviewer,
            csrf: &s.csrf,
            rows: &rows,
            filter: &filters::FilterQuery::from_filter(&s.filter),
            claims: &claims,
        }),
    )
}

/// Claims the next frame of the reviewer's queue and opens it.
async fn next(State(shared): SharedState, headers: HeaderMap) -> Response {
    let s = match session(&shared, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let now = tierline_shared::time::now_us();
    match shared
        .store
        .claim_next(&s.reviewer, &s.filter, now, claim_ttl_us())
        .await
    {
        Ok(Some(row)) => Redirect::to(&pages::frame_href(&row)).into_response(),
        Ok(None) => Redirect::to("/").into_response(),
        Err(e) => unavailable(e),
    }
}

/// How long a frame stays claimed by the reviewer who opened it.
const CLAIM_TTL: Duration = Duration::from_secs(300);

fn claim_ttl_us() -> i64 {
    CLAIM_TTL.as_micros() as i64
}

fn not_found(edge: &str, seq: &str) -> Response {
    page(
        StatusCode::NOT_FOUND,
        pages::refused(
            "No such frame",
            &format!("No frame {edge}-{seq} with a verdict is stored; pick one from the queue."),
        ),
    )
}

/// The labels a reviewer can give a frame: `good` and the classes the cloud model scored.
fn labels_of(row: &FrameRow) -> Vec<String> {
    let mut labels = vec!["good".to_string()];
    for s in row.scores() {
        if !labels.contains(&s.class_name) {
            labels.push(s.class_name);
        }
    }
    if !labels.contains(&row.label) && !row.label.is_empty() {
        labels.push(row.label.clone());
    }
    labels
}

async fn frame(
    State(shared): SharedState,
    headers: HeaderMap,
    Path((edge, seq)): Path<(String, String)>,
) -> Response {
    let s = match session(&shared, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let Ok(n) = seq.parse::<u64>() else {
        return not_found(&edge, &seq);
    };
    let (row, image, reviews) = match shared.store.get_frame(&edge, n).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(&edge, &seq),
        Err(e) => return unavailable(e),
    };
    let href = pages::frame_href(&row);
    let now = tierline_shared::time::now_us();
    let claim = match shared
        .store
        .claim(&s.reviewer, &row, now, claim_ttl_us())
        .await
    {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    let previous = s.trail.iter().rev().find(|h| **h != href).cloned();
    update_session(&shared, &headers, |s| {
        s.trail.retain(|h| *h != href);
        s.trail.push(href.clone());
        if s.trail.len() > session::TRAIL {
            s.trail.remove(0);
        }
    });
    let size = image
        .as_deref()
        .and_then(|bytes| {
            image::ImageReader::new(std::io::Cursor::new(bytes))
                .with_guessed_format()
                .ok()
        })
        .and_then(|reader| reader.into_dimensions().ok());
    let labels = labels_of(&row);
    page(
        StatusCode::OK,
        pages::frame(&pages::FramePage {
            reviewer: &s.reviewer,
            csrf: &s.csrf,
            row: &row,
            size,
            reviews: &reviews,
            labels: &labels,
            previous,
            held_by: match &claim {
                Claim::Mine => None,
                Claim::HeldBy { reviewer, .. } => Some(reviewer.as_str()),
            },
        }),
    )
}

async fn image(
    State(shared): SharedState,
    headers: HeaderMap,
    Path((edge, seq)): Path<(String, String)>,
) -> Response {
    if let Err(r) = session(&shared, &headers) {
        return r.into_response();
    }
    let Ok(n) = seq.parse::<u64>() else {
        return not_found(&edge, &seq);
    };
    match shared.store.get_frame(&edge, n).await {
        Ok(Some((row, Some(bytes), _))) => {
            let kind = if row.image_encoding == tierline_shared::wire::ImageEncoding::Png as i32 {
                "image/png"
            } else {
                "image/jpeg"
            };
            (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    (
                        header::X_CONTENT_TYPE_OPTIONS,
                        HeaderValue::from_static("nosniff"),
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        Ok(_) => not_found(&edge, &seq),
        Err(e) => unavailable(e),
    }
}

/// The label form's fields. A `reviewer` field, if a client sends one, is ignored: the session says who.
#[derive(Deserialize)]
struct ReviewForm {
    csrf: String,
    label: String,
    #[serde(default)]
    note: String,
}

async fn review(
    State(shared): SharedState,
    headers: HeaderMap,
    Path((edge, seq)): Path<(String, String)>,
    Form(form): Form<ReviewForm>,
) -> Response {
    let s = match checked(&shared, &headers, &form.csrf) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let Ok(n) = seq.parse::<u64>() else {
        return not_found(&edge, &seq);
    };
    let row = match shared.store.get_frame(&edge, n).await {
        Ok(Some((row, _, _))) => row,
        Ok(None) => return not_found(&edge, &seq),
        Err(e) => return unavailable(e),
    };
    let now = tierline_shared::time::now_us();
    match shared
        .store
        .claim(&s.reviewer, &row, now, claim_ttl_us())
        .await
    {
        Ok(Claim::Mine) => {}
        Ok(Claim::HeldBy { reviewer, .. }) => {
            return page(
                StatusCode::CONFLICT,
                pages::refused(
                    "Frame taken",
                    &format!(
                        "{reviewer} is reviewing {} right now; your label was not recorded. Take the next frame from the queue.",
                        row.frame_id
                    ),
                ),
            );
        }
        Err(e) => return unavailable(e),
    }
    let labels = labels_of(&row);
    if !labels.contains(&form.label) {
        return page(
            StatusCode::BAD_REQUEST,
            pages::refused(
                "Label refused",
                &format!(
                    "{:?} is not a label of this model; use one of {}.",
                    form.label,
                    labels.join(", ")
                ),
            ),
        );
    }
    let note: String = form.note.chars().take(500).collect();
    let review = ReviewRow {
        defective: form.label != "good",
        label: form.label,
        reviewer: s.reviewer.clone(),
        note,
        time_us: tierline_shared::time::now_us(),
    };
    if let Err(e) = shared.store.submit_review(&edge, n, &review).await {
        return unavailable(e);
    }
    tracing::info!(reviewer = %s.reviewer, frame = %row.frame_id, label = %review.label, "Frame reviewed in the console.");
    if let Err(e) = shared.store.release(&s.reviewer, &row).await {
        tracing::warn!(error = %e, frame = %row.frame_id, "Could not release a review claim; it lapses by itself.");
    }
    // On to the next frame of the queue, which no longer holds this one.
    Redirect::to("/next").into_response()
}

async fn fleet(State(shared): SharedState, headers: HeaderMap) -> Response {
    let s = match session(&shared, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    match shared.store.list_edges().await {
        Ok(edges) => page(
            StatusCode::OK,
            pages::fleet(
                &s.reviewer,
                &s.csrf,
                &edges,
                tierline_shared::time::now_us(),
            ),
        ),
        Err(e) => unavailable(e),
    }
}

async fn export_page(State(shared): SharedState, headers: HeaderMap) -> Response {
    let s = match session(&shared, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    match export::count(&shared.store, &s.filter).await {
        Ok(count) => page(
            StatusCode::OK,
            pages::export(
                &s.reviewer,
                &s.csrf,
                count,
                &filters::FilterQuery::from_filter(&s.filter),
            ),
        ),
        Err(e) => unavailable(e),
    }
}

async fn css() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/css; charset=utf-8"),
        )],
        include_str!("assets/console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        include_str!("assets/console.js"),
    )
        .into_response()
}
