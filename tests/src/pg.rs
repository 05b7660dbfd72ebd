//! A fresh PostgreSQL database per test, dropped afterwards. The server comes from `TIERLINE_TEST_PG`
//! (default `postgres://postgres@127.0.0.1:5432/test`); the test creates `tierline_<tag>_<pid>_<n>` beside the
//! database named there.

use std::sync::atomic::{AtomicU64, Ordering};

/// Default server URL for tests.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The server URL tests use.
pub fn server_url() -> String {
    std::env::var("TIERLINE_TEST_PG").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let prefix = match head.split_once("://") {
        Some((_, rest)) if rest.contains('/') => &head[..head.rfind('/').unwrap_or(head.len())],
        _ => head,
    };
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

/// A database that exists until this is dropped.
pub struct TestDb {
    admin: String,
    name: String,
    /// Its URL.
    pub url: String,
}

impl TestDb {
    /// Creates an empty database. Panics with a hint when the server is unreachable.
    pub async fn create(tag: &str) -> Self {
        let admin = server_url();
        let name = format!(
            "tierline_{tag}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin} is unreachable ({e}); start it or set TIERLINE_TEST_PG")
        });
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&pool)
            .await
            .expect("drop old test database");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .expect("create test database");
        pool.close().await;
        let url = with_database(&admin, &name);
        Self { admin, name, url }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime; a separate thread gets its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&pool)
                        .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
