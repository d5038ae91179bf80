//! A fresh database per test, on the server of `TEST_DATABASE_URL`, dropped with its guard.

use sqlx::PgPool;
use sqlx::migrate::Migrator;

/// The PostgreSQL server tests use: `TEST_DATABASE_URL`, else `DATABASE_URL`, else the local
/// default. Only the server part matters: every test gets its own database on it.
pub fn database_server_url() -> String {
    crate::config::env_var("TEST_DATABASE_URL")
        .or_else(|| crate::config::env_var("DATABASE_URL"))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of its own for one test, dropped (with its connections) when the guard drops.
#[derive(Debug)]
pub struct TestDatabase {
    /// The database's URL.
    pub url: String,
    /// The database's name.
    pub name: String,
    server: String,
}

impl TestDatabase {
    /// Creates an empty database with a random name.
    pub async fn create() -> Self {
        let server = database_server_url();
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let url = with_database(&server, &name);
        crate::db::create_database_if_missing(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database on {server}: {e:#} (is PostgreSQL running? set TEST_DATABASE_URL)"));
        Self { url, name, server }
    }

    /// Creates a database with the messaging tables and `service`'s migrations, and a pool.
    pub async fn migrated(service: Option<&Migrator>) -> (Self, PgPool) {
        let db = Self::create().await;
        let pool = crate::db::connect(&db.url, 10)
            .await
            .expect("connect to the test database");
        match service {
            Some(m) => crate::db::migrate(&pool, m).await,
            None => crate::db::migrate(&pool, &Migrator::DEFAULT).await,
        }
        .expect("migrate the test database");
        (db, pool)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: use a thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use sqlx::{ConnectOptions as _, Connection as _};
                let Ok(options) = server.parse::<sqlx::postgres::PgConnectOptions>() else {
                    return;
                };
                if let Ok(mut conn) = options.database("postgres").connect().await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::query(&sql).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// Replaces the database of a PostgreSQL URL.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{database}?{q}"),
        None => format!("{host_part}/{database}"),
    }
}
