//! The console's pages, rendered on the server with maud (which escapes every value it inserts).

use crate::store::{FrameRow, ReviewRow};
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
    if row.disagreement {
        "edge and cloud disagree"
    } else {
        "not reviewed"
    }
}

/// The review queue: frames to judge, most urgent first.
pub fn queue(reviewer: &str, csrf: &str, rows: &[FrameRow]) -> Markup {
    layout(
        "Review queue",
        Some((reviewer, csrf)),
        html! {
            h1 { "Review queue" }
            @if rows.is_empty() {
                p.empty { "Nothing to review." }
            } @else {
                p { (rows.len()) " frames to review; disagreements between the edge and the cloud first. "
                    a.start href=(frame_href(&rows[0])) { "Start with the first (Enter)" } }
                table.queue {
                    thead { tr {
                        th { "frame" } th { "why" } th { "camera" } th { "part" } th { "edge score" }
                        th { "cloud" } th { "line action" } th { "captured" }
                    } }
                    tbody {
                        @for row in rows {
                            tr.disagreement[row.disagreement] {
                                td { a href=(frame_href(row)) { (row.frame_id) } }
                                td { (why(row)) }
                                td { (row.camera_id) }
                                td { (row.part_id) }
                                td { (format!("{:.3}", row.edge_score)) }
                                td { (row.label) " " (format!("{:.3}", row.defect_score)) }
                                td { (action_of(row)) }
                                td { time { (format_time(row.capture_time_us)) } }
                            }
                        }
                    }
                }
            }
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
    /// The next and previous frames of the queue.
    pub next: Option<String>,
    /// See `next`.
    pub previous: Option<String>,
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
                @if let Some(next) = &p.next { a #next href=(next) { "next (n) →" } }
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
                                        text x=(r.x) y=((r.y - 4.0).max(12.0)) { (r.class_name) " " (format!("{:.2}", r.score)) }
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
