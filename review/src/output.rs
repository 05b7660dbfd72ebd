//! Output: plain tables for people (columns padded to their widest cell, no lines drawn), JSON for scripts,
//! and the time formats both use.

use crate::pb;
use comfy_table::{Table, presets};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Header of the frame tables (`list`, `watch`), matching [`frame_cells`].
pub const FRAME_HEADER: [&str; 12] = [
    "EDGE", "SEQ", "CAPTURED", "LINE", "PART", "REASON", "EDGE", "LABEL", "DEFECT", "LOCAL",
    "DISAGREE", "REVIEW",
];

/// A time in microseconds since the Unix epoch as RFC 3339 with milliseconds; `-` when unset.
pub fn time(us: i64) -> String {
    if us <= 0 {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_micros(us as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// How long ago a time in microseconds since the Unix epoch was, e.g. `3m 12s ago`; `never` when unset.
pub fn ago(us: i64) -> String {
    if us <= 0 {
        return "never".into();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let secs = ((now - us).max(0) / 1_000_000) as u64;
    format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(secs))
    )
}

/// Prints rows as a table with a header: columns padded to their widest cell and two spaces apart, no
/// borders, no trailing spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    println!("{}", render(header, rows));
}

/// The text [`table`] prints, without the final newline.
fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_header(header.to_vec())
        .add_rows(rows.iter().cloned());
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
    }
    t.trim_fmt()
}

/// A frame as a JSON object (the `--json` form of `list`, `show` and `watch`).
pub fn frame_json(f: &pb::FrameSummary) -> Value {
    json!({
        "edge_id": f.edge_id, "seq": f.seq, "frame_id": f.frame_id, "site": f.site, "line": f.line,
        "camera_id": f.camera_id, "capture_time_us": f.capture_time_us, "reason": f.reason,
        "edge_score": f.edge_score, "edge_model_version": f.edge_model_version,
        "edge_local_action": f.edge_local_action, "label": f.label, "defective": f.defective,
        "defect_score": f.defect_score, "cloud_model_version": f.cloud_model_version,
        "verdict_time_us": f.verdict_time_us, "disagreement": f.disagreement,
        "review_label": f.review_label, "deliveries": f.deliveries, "has_image": f.has_image,
        "part_id": f.part_id, "origin": f.origin, "capture_clock": f.capture_clock,
    })
}

/// `s`, or `-` when it is empty.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

/// A frame as a table row under [`FRAME_HEADER`].
pub fn frame_cells(f: &pb::FrameSummary) -> Vec<String> {
    vec![
        f.edge_id.clone(),
        f.seq.to_string(),
        time(f.capture_time_us),
        f.line.clone(),
        or_dash(&f.part_id),
        f.reason.clone(),
        format!("{:.2}", f.edge_score),
        f.label.clone(),
        format!("{:.2}", f.defect_score),
        if f.edge_local_action.is_empty() {
            "-".into()
        } else {
            f.edge_local_action.clone()
        },
        if f.disagreement { "yes" } else { "" }.into(),
        if f.review_label.is_empty() {
            "-".into()
        } else {
            f.review_label.clone()
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(row: &[&str]) -> Vec<String> {
        row.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn tables_are_padded_to_the_widest_cell_without_trailing_spaces() {
        let rows = [
            cells(&[
                "edge-07",
                "4133",
                "2026-12-01T18:40:12.512Z",
                "l1",
                "P-1187",
                "suspect",
                "1.00",
                "good",
                "0.08",
                "reject",
                "yes",
                "-",
            ]),
            cells(&[
                "edge-07",
                "4108",
                "2026-12-01T18:40:11.201Z",
                "l1",
                "-",
                "suspect",
                "1.00",
                "scratch",
                "0.97",
                "-",
                "",
                "-",
            ]),
        ];
        assert_eq!(
            render(&FRAME_HEADER, &rows),
            "\
EDGE     SEQ   CAPTURED                  LINE  PART    REASON   EDGE  LABEL    DEFECT  LOCAL   DISAGREE  REVIEW
edge-07  4133  2026-12-01T18:40:12.512Z  l1    P-1187  suspect  1.00  good     0.08    reject  yes       -
edge-07  4108  2026-12-01T18:40:11.201Z  l1    -       suspect  1.00  scratch  0.97    -                 -"
        );
    }

    #[test]
    fn a_table_without_rows_is_its_header_and_empty_last_cells_leave_no_spaces() {
        assert_eq!(render(&["CLASS", "PROBABILITY"], &[]), "CLASS  PROBABILITY");
        assert_eq!(
            render(
                &["FIELD", "VALUE"],
                &[
                    cells(&["frame", "edge-a-1"]),
                    cells(&["edge local action", ""])
                ]
            ),
            "FIELD              VALUE\nframe              edge-a-1\nedge local action"
        );
    }
}
