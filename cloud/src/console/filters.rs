//! The queue's filters as a form sends them (`GET /?edge=…&class=…&apply=1`), and back into the form.
//! Times are `datetime-local` values, read as UTC.

use crate::store::FrameFilter;
use serde::Deserialize;

/// The filter form's fields; empty means "all".
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct FilterQuery {
    /// Present when the form was submitted (so a plain `GET /` keeps the session's filter).
    pub apply: Option<String>,
    /// Edge id.
    pub edge: String,
    /// Production line.
    pub line: String,
    /// Camera id.
    pub camera: String,
    /// The cloud model's class.
    pub class: String,
    /// Model version, of the prescreen or the cloud model.
    pub model: String,
    /// Captured at or after, `YYYY-MM-DDTHH:MM` UTC.
    pub since: String,
    /// Captured before, `YYYY-MM-DDTHH:MM` UTC.
    pub until: String,
}

impl FilterQuery {
    /// The store filter. A time that does not parse is left out (the form shows what was kept).
    pub fn to_filter(&self) -> FrameFilter {
        FrameFilter {
            edge_id: self.edge.trim().into(),
            line: self.line.trim().into(),
            camera_id: self.camera.trim().into(),
            label: self.class.trim().into(),
            model_version: self.model.trim().into(),
            since_us: parse_time(&self.since).unwrap_or(0),
            until_us: parse_time(&self.until).unwrap_or(0),
            ..FrameFilter::default()
        }
    }

    /// The form's values for a store filter.
    pub fn from_filter(f: &FrameFilter) -> Self {
        Self {
            apply: None,
            edge: f.edge_id.clone(),
            line: f.line.clone(),
            camera: f.camera_id.clone(),
            class: f.label.clone(),
            model: f.model_version.clone(),
            since: format_time(f.since_us),
            until: format_time(f.until_us),
        }
    }

    /// Whether any filter is set.
    pub fn is_set(&self) -> bool {
        [
            &self.edge,
            &self.line,
            &self.camera,
            &self.class,
            &self.model,
            &self.since,
            &self.until,
        ]
        .iter()
        .any(|v| !v.is_empty())
    }
}

/// `YYYY-MM-DDTHH:MM[:SS]` as UTC, µs since the epoch (whole seconds).
fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let full = if s.len() == 16 {
        format!("{s}:00Z")
    } else {
        format!("{s}Z")
    };
    let t = humantime::parse_rfc3339(&full).ok()?;
    // Whole seconds: the form shows no fractions, so what it shows back filters the same.
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000))
        .filter(|us| *us > 0)
}

/// µs since the epoch as `YYYY-MM-DDTHH:MM` UTC, with `:SS` when the seconds are not zero, so the form
/// shows back exactly the time it filters on ("" for 0; sub-second parts never come from the form).
fn format_time(us: i64) -> String {
    if us <= 0 {
        return String::new();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us as u64);
    let text = humantime::format_rfc3339_seconds(t).to_string();
    let keep = if text.get(17..19) == Some("00") {
        16
    } else {
        19
    };
    text.chars().take(keep).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_goes_into_the_form_and_back() {
        let q = FilterQuery {
            apply: Some("1".into()),
            edge: " edge-1 ".into(),
            class: "scratch".into(),
            since: "2026-12-03T08:30".into(),
            until: "not a time".into(),
            ..Default::default()
        };
        let f = q.to_filter();
        assert_eq!(f.edge_id, "edge-1");
        assert_eq!(f.label, "scratch");
        assert_eq!(f.since_us, 1_796_286_600_000_000);
        assert_eq!(f.until_us, 0, "an unreadable time is left out");
        let back = FilterQuery::from_filter(&f);
        assert_eq!(back.since, "2026-12-03T08:30");
        assert_eq!(back.until, "");
        assert!(back.is_set() && !FilterQuery::default().is_set());
    }

    proptest::proptest! {
        /// A filter shown back in the form and submitted again selects the same frames (times with seconds
        /// included), whatever the query string held (the fuzz target `console_forms` runs the same check on arbitrary bytes).
        #[test]
        fn the_filter_form_round_trips(
            edge in ".{0,20}",
            since in "(20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9](:[0-5][0-9])?)|.{0,20}",
            until in ".{0,20}",
        ) {
            let query = format!(
                "edge={}&since={}&until={}&apply=1",
                urlencode(&edge),
                urlencode(&since),
                urlencode(&until)
            );
            let q: FilterQuery = serde_urlencoded::from_str(&query).unwrap();
            let applied = q.to_filter();
            let again = FilterQuery::from_filter(&applied).to_filter();
            proptest::prop_assert_eq!(
                (applied.since_us, applied.until_us, applied.edge_id),
                (again.since_us, again.until_us, again.edge_id)
            );
        }
    }

    fn urlencode(s: &str) -> String {
        s.bytes().map(|b| format!("%{b:02X}")).collect()
    }
}
