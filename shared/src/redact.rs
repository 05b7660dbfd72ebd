//! Hiding secrets in connection strings and camera URLs before they reach logs, `/readyz` or API answers.

use url::Url;

/// What replaces a hidden secret.
const HIDDEN: &str = "***";

/// `url` with the password of its user info, and the values of query parameters whose name contains
/// `password`, `secret` or `token` (any case), replaced by `***`. A string that is not a URL (a bare path)
/// comes back unchanged, and so does a URL with nothing to hide.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        // The parser saw the password the text shows, or the text shows none.
        Ok(mut parsed) if parsed.password().is_some() || !shows_password(url) => {
            let mut changed =
                parsed.password().is_some() && parsed.set_password(Some(HIDDEN)).is_ok();
            if let Some(query) = parsed.query().and_then(redact_query) {
                parsed.set_query(Some(&query));
                changed = true;
            }
            if changed {
                parsed.into()
            } else {
                url.to_string()
            }
        }
        // Not a URL, or one the parser reads otherwise than a person would (a password with an unescaped
        // `#` or `/`, several `host:port` pairs): hidden by its text, so that no password leaks into a log.
        _ => redact_text(url),
    }
}

/// Whether `url` has the shape `scheme://user:password@…`.
fn shows_password(url: &str) -> bool {
    url.split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// [`redact`] for text the URL parser refuses or misreads: the password is everything between the first `:`
/// after `://` and the last `@`. Without `://` the text is no URL and comes back unchanged.
fn redact_text(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((userinfo, rest)) => match userinfo.split_once(':') {
            Some((user, _)) => (format!("{user}:{HIDDEN}@"), rest),
            None => (format!("{userinfo}@"), rest),
        },
        None => (String::new(), rest),
    };
    let rest = match rest.split_once('?') {
        Some((before, query)) => {
            let query = redact_query(query).unwrap_or_else(|| query.to_string());
            format!("{before}?{query}")
        }
        None => rest.to_string(),
    };
    format!("{scheme}://{userinfo}{rest}")
}

/// `query` (without its `?`) with the values of secret parameters replaced by `***` and the other parameters
/// left byte for byte; `None` when no parameter is secret.
fn redact_query(query: &str) -> Option<String> {
    let mut changed = false;
    let parts: Vec<String> = query
        .split('&')
        .map(|part| match part.split_once('=') {
            Some((key, value)) if !value.is_empty() && is_secret_key(key) => {
                changed = true;
                format!("{key}={HIDDEN}")
            }
            _ => part.to_string(),
        })
        .collect();
    changed.then(|| parts.join("&"))
}

/// Whether a query parameter name (still percent-encoded) names a secret.
fn is_secret_key(key: &str) -> bool {
    url::form_urlencoded::parse(key.as_bytes()).any(|(key, _)| {
        let key = key.to_ascii_lowercase();
        ["password", "secret", "token"]
            .iter()
            .any(|word| key.contains(word))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/t"),
            "postgres://u:***@db:5432/t"
        );
        assert_eq!(redact("postgres://u@db/t"), "postgres://u@db/t");
        assert_eq!(
            redact("rtsp://admin:cam%21pass@10.0.0.5:554/stream1"),
            "rtsp://admin:***@10.0.0.5:554/stream1"
        );
    }

    #[test]
    fn query_secrets_are_redacted_and_the_rest_is_kept() {
        assert_eq!(
            redact("postgres://u@db/t?sslmode=require&password=hunter2"),
            "postgres://u@db/t?sslmode=require&password=***"
        );
        assert_eq!(
            redact("postgresql://u:pw@db:5432/t?SSLPassword=k3y&application_name=cloud%20a"),
            "postgresql://u:***@db:5432/t?SSLPassword=***&application_name=cloud%20a"
        );
        assert_eq!(
            redact("postgres://db/t?client_secret=s&Access_Token=t&sslmode=disable"),
            "postgres://db/t?client_secret=***&Access_Token=***&sslmode=disable"
        );
        // Nothing to hide: unchanged, byte for byte.
        for url in [
            "sqlite://x.db?mode=rwc",
            "sqlite:verdicts.db",
            "postgres://u@DB/t?password=",
            "postgres://db/t?sslmode=require",
        ] {
            assert_eq!(redact(url), url);
        }
    }

    #[test]
    fn strings_that_are_no_url_come_back_unchanged() {
        for s in [
            "/var/lib/tierline/verdicts.db",
            "verdicts.db",
            "",
            "C:/tierline/verdicts.db",
        ] {
            assert_eq!(redact(s), s);
        }
    }

    #[test]
    fn urls_the_parser_refuses_or_misreads_still_hide_their_secrets() {
        // The parser reads `u:123` as host and port and the rest as the fragment.
        assert_eq!(redact("postgres://u:123#x@db/t"), "postgres://u:***@db/t");
        let shown = redact("postgres://u:pa#ss@db/t");
        assert_eq!(shown, "postgres://u:***@db/t");
        let shown = redact("postgres://u:pw@h1:5432,h2:5432/t?sslpassword=k");
        assert_eq!(shown, "postgres://u:***@h1:5432,h2:5432/t?sslpassword=***");
    }
}
