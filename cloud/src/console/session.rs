//! Sign-in sessions of the review console: a random session id in an `HttpOnly`, `SameSite=Strict` cookie,
//! the reviewer it belongs to, and a per-session CSRF token every form must carry.
//!
//! Sessions live in the worker's memory: a restart signs everybody out, and behind a load balancer a
//! reviewer's requests must reach the worker that signed them in (sticky sessions).

use crate::store::FrameFilter;
use rand::{RngCore, SeedableRng};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie.
pub const SESSION_COOKIE: &str = "tierline_console";
/// The cookie that carries the sign-in form's CSRF token before there is a session (double submit).
pub const LOGIN_COOKIE: &str = "tierline_login";

/// A signed-in reviewer.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who signed in (the name of their `[[api.reviewers]]` entry).
    pub reviewer: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// The reviewer's queue filter.
    pub filter: FrameFilter,
    /// Frame pages visited, oldest first (at most [`TRAIL`]): "previous" goes back along it.
    pub trail: Vec<String>,
    expires: Instant,
}

/// Frame pages remembered per session for "previous".
pub const TRAIL: usize = 100;

/// The sessions of one worker.
pub struct Sessions {
    ttl: Duration,
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Sessions that last `ttl` from sign-in.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    /// Signs `reviewer` in; returns the new session id (for the cookie).
    pub fn open(&self, reviewer: &str) -> String {
        let id = random_token();
        let session = Session {
            reviewer: reviewer.into(),
            csrf: random_token(),
            filter: FrameFilter::default(),
            trail: Vec::new(),
            expires: Instant::now() + self.ttl,
        };
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        map.insert(id.clone(), session);
        id
    }

    /// The live session with this id.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.lock();
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Changes the live session with this id.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut Session)) {
        if let Some(s) = self.lock().get_mut(id) {
            change(s);
        }
    }

    /// Signs a session out.
    pub fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic elsewhere while holding the lock leaves a map that is still whole.
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// 32 random bytes (a generator seeded from the OS for each token), as hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::StdRng::from_os_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Equal, in time that depends only on the lengths.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name && !v.is_empty()).then_some(v)
    })
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, `Secure` when the page is served over TLS; an empty
/// value with `max_age` zero clears it.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_close() {
        let s = Sessions::new(Duration::from_millis(30));
        let id = s.open("ana");
        let got = s.get(&id).unwrap();
        assert_eq!(got.reviewer, "ana");
        assert_eq!(got.csrf.len(), 64);
        assert_ne!(got.csrf, id);
        std::thread::sleep(Duration::from_millis(40));
        assert!(s.get(&id).is_none());
        let id = s.open("ben");
        s.close(&id);
        assert!(s.get(&id).is_none());
        assert!(s.get("forged").is_none());
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = Some("a=1; tierline_console=abc; tierline_console_x=zzz");
        assert_eq!(cookie(h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(Some("tierline_console_x=zzz"), SESSION_COOKIE), None);
        assert_eq!(cookie(Some("tierline_console="), SESSION_COOKIE), None);
        assert_eq!(cookie(None, SESSION_COOKIE), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
