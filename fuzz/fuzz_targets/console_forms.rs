//! The review console's form and cookie parsing on arbitrary request bytes: the queue's filter form as axum
//! reads it (`application/x-www-form-urlencoded`), and the `Cookie` header. Never a panic; a filter shown
//! back in the form and submitted again selects the same frames, and a cookie value found is the value of
//! one `name=value` pair of the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tierline_cloud::console::filters::FilterQuery;
use tierline_cloud::console::session::{LOGIN_COOKIE, SESSION_COOKIE, cookie};

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = serde_urlencoded::from_bytes::<FilterQuery>(data) {
        let (applied, shown) = (q.to_filter(), FilterQuery::from_filter(&q.to_filter()));
        let again = shown.to_filter();
        assert_eq!(
            (applied.since_us, applied.until_us, &applied.edge_id, &applied.label),
            (again.since_us, again.until_us, &again.edge_id, &again.label),
            "the filter form does not round-trip: {q:?}"
        );
    }
    if let Ok(header) = std::str::from_utf8(data) {
        for name in [SESSION_COOKIE, LOGIN_COOKIE, ""] {
            if let Some(v) = cookie(Some(header), name) {
                // The value of a `name=value` pair of the header, nothing of the pairs around it.
                assert!(!v.is_empty() && !v.contains(';'));
                assert!(header.contains(&format!("{name}={v}")), "{header:?}");
            }
        }
    }
});
