//! The console's pages, rendered on the server with maud (which escapes every value it inserts).

use super::filters::FilterQuery;
use crate::store::{ClaimRow, EdgeRow, FrameRow, ReviewRow, Urgency};
use maud::{DOCTYPE, Markup, html};

/// The frame of every page: title, stylesheet, script, and the reviewer's bar when signed in.
fn layout(title: &str, signed_in: Option<(&str, &str)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Tierline review" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "Tierline review" }
                    @if signed_in.is_some() {
                        nav.main {
                            a href="/" { "Queue" }
                            a href="/fleet" { "Fleet" }
                            a href="/export" { "Export labels" }
                        }
                    }
                    @if let Some((reviewer, csrf)) = signed_in {
                        span.who { "Signed in as " strong { (reviewer) } }
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The sign-in form; `problem` is shown above it.
pub fn login(csrf: &str, problem: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(p) = problem { p.problem role="alert" { (p) } }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { "Your reviewer token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Sign in" }
            }
            p.hint { "The token is the one your administrator set for you in the cloud worker's "
                code { "[[api.reviewers]]" } "." }
        },
    )
}

/// A refused request, with what to do.
pub fn refused(title: &str, what: &str) -> Markup {
    layout(
        title,
        None,
        html! {
            h1 { (title) }
            p.problem role="alert" { (what) }
            p { a href="/" { "Back to the review queue" } }
        },
    )
}

fn action_of(row: &FrameRow) -> &str {
    if row.edge_local_action.is_empty() {
        "cloud"
    } else {
        &row.edge_local_action
    }
}

/// Why a frame is in the queue, most urgent first.
pub fn why(row: &FrameRow) -> &'static str {
    match row.urgency() {
        Urgency::Disagreement => "edge and cloud disagree",
        Urgency::AuditMiss => "audit miss: passed by the edge, defective for the cloud",
        Urgency::LowConfidence => "low-confidence verdict",
        Urgency::Other => "not reviewed",
    }
}

/// What the queue page shows.
pub struct QueuePage<'a> {
    /// The signed-in reviewer.
    pub reviewer: &'a str,
    /// Their session's CSRF token.
    pub csrf: &'a str,
    /// The frames to review, most urgent first.
    pub rows: &'a [FrameRow],
    /// The reviewer's filter, as the form shows it.
    pub filter: &'a FilterQuery,
    /// Frames other reviewers have open.
    pub claims: &'a [ClaimRow],
}

/// The filter form of the queue and export pages.
fn filter_form(f: &FilterQuery, action: &str) -> Markup {
    html! {
        form.filters method="get" action=(action) {
            input type="hidden" name="apply" value="1";
            label { "edge " input type="text" name="edge" value=(f.edge) size="10"; }
            label { "line " input type="text" name="line" value=(f.line) size="8"; }
            label { "camera " input type="text" name="camera" value=(f.camera) size="8"; }
            label { "class " input type="text" name="class" value=(f.class) size="8"; }
            label { "model version " input type="text" name="model" value=(f.model) size="8"; }
            label { "from (UTC) " input type="datetime-local" name="since" value=(f.since); }
            label { "to (UTC) " input type="datetime-local" name="until" value=(f.until); }
            button type="submit" { "Filter" }
            @if f.is_set() { a href=(format!("{action}?apply=1")) { "clear" } }
        }
    }
}

/// The review queue: frames to judge, most urgent first, with who has which open.
pub fn queue(p: &QueuePage<'_>) -> Markup {
    let held = |row: &FrameRow| {
        p.claims
            .iter()
            .find(|c| {
                c.edge_id == row.edge_id && c.incarnation == row.incarnation && c.seq == row.seq
            })
            .map(|c| c.reviewer.as_str())
    };
    layout(
        "Review queue",
        Some((p.reviewer, p.csrf)),
        html! {
            h1 { "Review queue" }
            (filter_form(p.filter, "/"))
            @if p.rows.is_empty() {
                p.empty { "Nothing to review." @if p.filter.is_set() { " (under this filter)" } }
            } @else {
                p { (p.rows.len()) " frames to review: disagreements between the edge and the cloud first, then audit misses, then low-confidence verdicts. "
                    a.start href="/next" { "Start with the next free frame (Enter)" } }
                table.queue {
                    thead { tr {
                        th { "frame" } th { "why" } th { "camera" } th { "part" } th { "edge score" }
                        th { "cloud" } th { "line action" } th { "captured" } th { "open by" }
                    } }
                    tbody {
                        @for row in p.rows {
                            tr.disagreement[row.urgency() != Urgency::Other] {
                                td { a href=(frame_href(row)) { (row.frame_id) } }
                                td { (why(row)) }
                                td { (row.camera_id) }
                                td { (row.part_id) }
                                td { (format!("{:.3}", row.edge_score)) }
                                td { (row.label) " " (format!("{:.3}", row.defect_score)) }
                                td { (action_of(row)) }
                                td { time { (format_time(row.capture_time_us)) } }
                                td.claim { @if let Some(r) = held(row) { (r) } }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The fleet: every edge the cloud knows, from its presence and heartbeats.
pub fn fleet(reviewer: &str, csrf: &str, edges: &[EdgeRow], now_us: i64) -> Markup {
    layout(
        "Fleet",
        Some((reviewer, csrf)),
        html! {
            h1 { "Fleet" }
            @if edges.is_empty() {
                p.empty { "No edge has reported yet." }
            } @else {
                table.fleet {
                    thead { tr {
                        th { "edge" } th { "site / line" } th { "presence" } th { "last seen" }
                        th { "backlog" } th { "oldest in backlog" } th { "prescreen" } th { "forwarded" } th { "cameras" }
                    } }
                    tbody {
                        @for e in edges {
                            tr.offline[!e.online] {
                                td { (e.edge_id) }
                                td { (e.site) " / " (e.line) }
                                td { @if e.online { "online" } @else { "offline" } }
                                td { @if e.last_seen_us > 0 { (ago(now_us - e.last_seen_us)) " ago" } }
                                td { (e.backlog_frames) " frames" }
                                td { @if e.backlog_frames > 0 { (ago(e.oldest_backlog_age_ms.saturating_mul(1000))) } }
                                td { (e.edge_model_version) }
                                td { (forwarded_share(e)) }
                                td.cameras {
                                    @for c in e.cameras() {
                                        span.camera.down[!c.up && !c.ended] title=(c.error) {
                                            (c.id) " "
                                            @if c.ended { "finished" }
                                            @else if c.up { "up, " (format!("{:.1}", c.fps)) " fps" }
                                            @else { "down" @if c.age_s >= 0.0 { ", last frame " (ago((c.age_s * 1e6) as i64)) " ago" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                p.hint { "Backlog, model and forwarded share come from each edge's last heartbeat; forwarded counts run since the edge process started." }
            }
        },
    )
}

/// The share of seen frames an edge forwarded, since its process started.
fn forwarded_share(e: &EdgeRow) -> String {
    if e.frames_seen <= 0 {
        return "–".into();
    }
    format!(
        "{:.1} % of {}",
        100.0 * e.frames_forwarded as f64 / e.frames_seen as f64,
        e.frames_seen
    )
}

/// A duration in µs, for people.
fn ago(us: i64) -> String {
    let s = us.max(0) / 1_000_000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d", s / 86400),
    }
}

/// The labels export: how many reviewed frames the filter selects, and the download.
pub fn export(reviewer: &str, csrf: &str, count: usize, filter: &FilterQuery) -> Markup {
    layout(
        "Export labels",
        Some((reviewer, csrf)),
        html! {
            h1 { "Export labels" }
            (filter_form(filter, "/export"))
            p { (count) " reviewed frames under this filter"
                @if count >= super::export::MAX_FRAMES { " (the most one export holds; narrow the filter for the rest)" } "." }
            @if count > 0 {
                p { a.download #download href="/export.tar" download { "Download tierline-labels.tar" } }
            }
            p.hint { "Unpacked, the folder holds one image per frame and a labels.csv with the latest human label of each, "
                "which " code { "tierline-models eval" } " and " code { "tierline-models calibrate" } " read as it is: "
                code { "tar xf tierline-labels.tar && tierline-models eval tierline-labels" } }
        },
    )
}

/// The link to a frame's page.
pub fn frame_href(row: &FrameRow) -> String {
    format!("/frames/{}/{}", url_part(&row.edge_id), row.seq)
}

fn url_part(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A capture or review time for people. Times come from edges: one the formatter cannot show (before 1970,
/// after 9999) is shown as its number, never a failed page.
fn format_time(us: i64) -> String {
    use std::fmt::Write;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64);
    let mut out = String::new();
    match write!(out, "{}", humantime::format_rfc3339_millis(t)) {
        Ok(()) if us >= 0 => out,
        _ => format!("{us} µs since 1970 (not a calendar time)"),
    }
}

/// What a frame page shows besides the frame itself.
pub struct FramePage<'a> {
    /// The signed-in reviewer.
    pub reviewer: &'a str,
    /// Their session's CSRF token.
    pub csrf: &'a str,
    /// The frame.
    pub row: &'a FrameRow,
    /// Image size in pixels, when the image is stored and readable.
    pub size: Option<(u32, u32)>,
    /// Its reviews, oldest first.
    pub reviews: &'a [ReviewRow],
    /// The labels a reviewer can give (the model's classes).
    pub labels: &'a [String],
    /// The frame this reviewer looked at before.
    pub previous: Option<String>,
    /// Another reviewer who has this frame open (the label form is then not offered).
    pub held_by: Option<&'a str>,
}

/// One frame: the image with the cloud model's regions drawn over it, every score, and the label form.
pub fn frame(p: &FramePage<'_>) -> Markup {
    let row = p.row;
    layout(
        &row.frame_id,
        Some((p.reviewer, p.csrf)),
        html! {
            nav.pager {
                @if let Some(prev) = &p.previous { a #previous href=(prev) { "← previous (p)" } }
                a href="/" { "queue" }
                a #next href="/next" { "next (n) →" }
            }
            h1 { (row.frame_id) " " small { (why(row)) } }
            div.frame {
                @match p.size {
                    Some((w, h)) => {
                        figure {
                            svg.shot viewBox=(format!("0 0 {w} {h}")) role="img" aria-label=(format!("frame {}", row.frame_id)) {
                                image href=(format!("{}/image", frame_href(row))) width=(w) height=(h) {}
                                @for r in row.regions() {
                                    g.region {
                                        rect x=(r.x) y=(r.y) width=(r.width) height=(r.height) {}
                                        // Sized to the image, so a label reads the same on any frame size.
                                        text x=(r.x) y=((r.y - 4.0).max(12.0)) font-size=((w / 45).max(10)) { (r.class_name) " " (format!("{:.2}", r.score)) }
                                    }
                                }
                            }
                        }
                    }
                    None => p.problem { "The image of this frame is no longer stored (retention) or cannot be read." }
                }
                section.facts {
                    dl {
                        dt { "edge" } dd { (row.edge_id) " · " (row.site) " / " (row.line) }
                        dt { "camera" } dd { (row.camera_id) }
                        @if !row.part_id.is_empty() { dt { "part" } dd { (row.part_id) } }
                        @if !row.origin.is_empty() { dt { "from" } dd { (row.origin) } }
                        dt { "captured" } dd { (format_time(row.capture_time_us)) " (" (row.capture_clock) " clock)" }
                        dt { "edge score" } dd { (format!("{:.4}", row.edge_score)) " · " (row.edge_model_version) }
                        dt { "line action" } dd { (action_of(row)) }
                        dt { "cloud" } dd { (row.label) " · defect score " (format!("{:.4}", row.defect_score)) " · " (row.cloud_model_version) }
                        dt { "deliveries" } dd { (row.deliveries) }
                    }
                    table.scores {
                        thead { tr { th { "class" } th { "cloud score" } } }
                        tbody {
                            @for s in row.scores() {
                                tr { td { (s.class_name) } td { (format!("{:.4}", s.probability)) } }
                            }
                        }
                    }
                }
            }
            @if let Some(other) = p.held_by {
                p.problem role="status" { (other) " has this frame open; it is theirs to label. Press n for the next free frame." }
            } @else {
            form.review method="post" action=(format!("{}/review", frame_href(row))) {
                // Enter in the note field submits the form with its first submit button: this disabled one,
                // so typing a note never gives a label by itself.
                button type="submit" disabled hidden aria-hidden="true" {}
                input type="hidden" name="csrf" value=(p.csrf);
                fieldset {
                    legend { "Your label (keys 1–" (p.labels.len()) ")" }
                    @for (i, label) in p.labels.iter().enumerate() {
                        button type="submit" name="label" value=(label) data-key=(i + 1) {
                            kbd { (i + 1) } " " (label)
                        }
                    }
                }
                label for="note" { "Note (optional)" }
                input #note type="text" name="note" maxlength="500";
            }
            }
            section.history {
                h2 { "Reviews" }
                @if p.reviews.is_empty() {
                    p { "None yet." }
                } @else {
                    ol {
                        @for r in p.reviews {
                            li { (r.label) " by " strong { (r.reviewer) } " at " (format_time(r.time_us))
                                @if !r.note.is_empty() { " — " (r.note) } }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_time_an_edge_sends_is_shown_without_failing() {
        assert_eq!(format_time(1_000_000), "1970-01-01T00:00:01.000Z");
        for us in [i64::MAX, i64::MIN, -5, 253_402_300_800_000_000] {
            assert!(format_time(us).contains("not a calendar time"), "{us}");
        }
    }
}
