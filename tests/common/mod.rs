//! Test harness: runs the real service on port 0 against a fresh database.
//!
//! Every behaviour is tested on both backends: SQLite in a temporary file,
//! and PostgreSQL in a new database created on the server that
//! `TEST_POSTGRES_URL` names (for example
//! `postgres://postgres@127.0.0.1:5432/test`). Without that variable the
//! PostgreSQL half is skipped with a notice.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod proxy;
pub mod replica;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Once};

use chrono::{DateTime, Utc};
use kpi_service::keys::{self, KeyHash};
use kpi_service::settings::Settings;
use kpi_service::store::{self, CenterChanges, NewKey, Store};
use kpi_service::AppState;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool, SqlitePool};
use tokio::sync::oneshot;

pub const POSTGRES_URL_VAR: &str = "TEST_POSTGRES_URL";
pub const MASTER_KEY: &str = "test-master-key-0123456789abcdef0123456789";
pub const DASHBOARD_USER: &str = "admin";
pub const DASHBOARD_PASSWORD: &str = "test-dashboard:password";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs one test body on a backend; see [`both_backends!`].
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* $name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn sqlite() {
                $crate::common::run($crate::common::Backend::Sqlite, $body);
            }

            #[test]
            fn postgres() {
                $crate::common::run($crate::common::Backend::Postgres, $body);
            }
        }
    };
}

/// Runs a test body on a multi-threaded runtime; a PostgreSQL run returns
/// at once when no server is configured.
pub fn run<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if backend == Backend::Postgres && postgres_url().is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(body(backend));
}

/// Returns the PostgreSQL server URL, or `None` after a one-time notice on stderr.
pub fn postgres_url() -> Option<String> {
    static NOTICE: Once = Once::new();
    let url = std::env::var(POSTGRES_URL_VAR)
        .ok()
        .filter(|url| !url.is_empty());
    if url.is_none() {
        NOTICE.call_once(|| {
            // Written to the stderr handle, not through eprintln!, so that the
            // test runner's output capture does not hide it.
            let _ = writeln!(
                std::io::stderr(),
                "NOTICE: PostgreSQL tests skipped; set {POSTGRES_URL_VAR}=postgres://postgres@127.0.0.1:5432/test to run them"
            );
        });
    }
    url
}

/// A database of the test's own, dropped with it.
pub enum TestDb {
    Sqlite {
        pool: SqlitePool,
        url: String,
        _dir: tempfile::TempDir,
    },
    Postgres {
        pool: PgPool,
        url: String,
        name: String,
        admin_url: String,
    },
}

impl TestDb {
    pub async fn create(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("kpi.db").display());
                let pool = SqlitePool::connect(&url).await.expect("open SQLite");
                TestDb::Sqlite {
                    pool,
                    url,
                    _dir: dir,
                }
            }
            Backend::Postgres => {
                let admin_url = postgres_url().expect("TEST_POSTGRES_URL is set");
                let name = format!("kpi_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|err| {
                        panic!("cannot reach PostgreSQL at {POSTGRES_URL_VAR}: {err}")
                    });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("create database");
                let url = database_url(&admin_url, &name);
                let pool = PgPool::connect(&url)
                    .await
                    .expect("connect to test database");
                TestDb::Postgres {
                    pool,
                    url,
                    name,
                    admin_url,
                }
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            TestDb::Sqlite { .. } => Backend::Sqlite,
            TestDb::Postgres { .. } => Backend::Postgres,
        }
    }

    /// Runs a statement (`$N` parameters, text or integer arguments).
    pub async fn execute(&self, sql: &str, args: &[Arg]) -> u64 {
        match self {
            TestDb::Sqlite { pool, .. } => {
                let mut query = sqlx::query(sql);
                for arg in args {
                    query = match arg {
                        Arg::Text(text) => query.bind(text.clone()),
                        Arg::Int(n) => query.bind(*n),
                    };
                }
                query.execute(pool).await.expect(sql).rows_affected()
            }
            TestDb::Postgres { pool, .. } => {
                let mut query = sqlx::query(sql);
                for arg in args {
                    query = match arg {
                        Arg::Text(text) => query.bind(text.clone()),
                        Arg::Int(n) => query.bind(*n),
                    };
                }
                query.execute(pool).await.expect(sql).rows_affected()
            }
        }
    }

    /// Runs a query whose columns are all integers or text (cast them in SQL)
    /// and returns the rows as JSON values.
    pub async fn rows(&self, sql: &str, args: &[Arg]) -> Vec<Vec<Value>> {
        use sqlx::{Row, TypeInfo, ValueRef};

        macro_rules! collect {
            ($pool:expr) => {{
                let mut query = sqlx::query(sql);
                for arg in args {
                    query = match arg {
                        Arg::Text(text) => query.bind(text.clone()),
                        Arg::Int(n) => query.bind(*n),
                    };
                }
                let rows = query.fetch_all($pool).await.expect(sql);
                rows.iter()
                    .map(|row| {
                        (0..row.columns().len())
                            .map(|i| {
                                let raw = row.try_get_raw(i).unwrap();
                                if raw.is_null() {
                                    return Value::Null;
                                }
                                let type_name = raw.type_info().name().to_ascii_uppercase();
                                if type_name.contains("INT") {
                                    let wide = row.try_get::<i64, _>(i);
                                    Value::from(
                                        wide.or_else(|_| row.try_get::<i32, _>(i).map(i64::from))
                                            .unwrap(),
                                    )
                                } else {
                                    Value::from(row.try_get::<String, _>(i).unwrap())
                                }
                            })
                            .collect()
                    })
                    .collect()
            }};
        }

        match self {
            TestDb::Sqlite { pool, .. } => collect!(pool),
            TestDb::Postgres { pool, .. } => collect!(pool),
        }
    }

    /// Runs a query returning one integer.
    pub async fn scalar(&self, sql: &str, args: &[Arg]) -> i64 {
        let rows = self.rows(sql, args).await;
        rows[0][0]
            .as_i64()
            .unwrap_or_else(|| panic!("{sql} returned {:?}", rows[0][0]))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres {
            name, admin_url, ..
        } = self
        {
            let (name, admin_url) = (name.clone(), admin_url.clone());
            // Drop runs inside the test's runtime, so the cleanup gets a thread
            // and a runtime of its own.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut admin)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

#[derive(Debug, Clone)]
pub enum Arg {
    Text(String),
    Int(i64),
}

impl From<&str> for Arg {
    fn from(text: &str) -> Self {
        Arg::Text(text.to_owned())
    }
}

impl From<i64> for Arg {
    fn from(n: i64) -> Self {
        Arg::Int(n)
    }
}

/// Replaces the database name in a PostgreSQL URL.
pub fn database_url(server_url: &str, database: &str) -> String {
    let (base, query) = server_url
        .split_once('?')
        .map_or((server_url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut url = format!("{}/{}", &base[..path_start], database);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// A running service with its database.
pub struct TestApp {
    pub base_url: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    pub store: Arc<dyn Store>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestApp {
    /// Starts the service on a fresh database with the master key set.
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, &[]).await
    }

    /// Starts the service with extra settings (name, value).
    pub async fn spawn_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
        let db = TestDb::create(backend).await;
        Self::spawn_on(db, extra).await
    }

    /// Starts the service on an existing database.
    pub async fn spawn_on(db: TestDb, extra: &[(&str, &str)]) -> TestApp {
        let mut vars: HashMap<String, String> = HashMap::from([
            ("DATABASE_URL".to_owned(), db.url().to_owned()),
            ("CENTER_API_KEY".to_owned(), MASTER_KEY.to_owned()),
            (
                "DASHBOARD_PASSWORD".to_owned(),
                DASHBOARD_PASSWORD.to_owned(),
            ),
        ]);
        for (name, value) in extra {
            vars.insert((*name).to_owned(), (*value).to_owned());
        }
        let settings =
            Settings::from_lookup(|name| vars.get(name).cloned()).expect("valid test settings");
        let store = store::connect_with(&settings.database_url, settings.pool_config())
            .await
            .expect("connect store");
        store.migrate().await.expect("migrate");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, signal) = oneshot::channel::<()>();
        let state = AppState::new(settings, store.clone());
        tokio::spawn(kpi_service::serve(listener, state, async {
            let _ = signal.await;
        }));
        TestApp {
            base_url,
            client: reqwest::Client::new(),
            db,
            store,
            shutdown: Some(shutdown),
        }
    }

    /// Sends a JSON request with optional API key and returns status and body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base_url, path));
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request sent");
        read(response).await
    }

    /// Sends a GET with the dashboard credentials and returns the response.
    pub async fn get_as_admin(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{}", self.base_url, path))
            .basic_auth(DASHBOARD_USER, Some(DASHBOARD_PASSWORD))
            .send()
            .await
            .expect("request sent")
    }

    /// Sends a GET with the dashboard credentials and returns status and JSON body.
    pub async fn admin_json(&self, path: &str) -> (StatusCode, Value) {
        read(self.get_as_admin(path).await).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, key, Some(body)).await
    }

    pub async fn put(&self, path: &str, key: Option<&str>, body: &Value) -> (StatusCode, Value) {
        self.send(Method::PUT, path, key, Some(body)).await
    }

    pub async fn delete(&self, path: &str, key: Option<&str>) -> (StatusCode, Value) {
        self.send(Method::DELETE, path, key, None).await
    }

    /// Registers a center with a key of its own and returns the key.
    pub async fn center_with_key(&self, code: &str, name: &str) -> String {
        self.center_with_key_expiring(code, name, None).await
    }

    pub async fn center_with_key_expiring(
        &self,
        code: &str,
        name: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> String {
        let key = keys::generate();
        let changes = CenterChanges {
            name: Some(name.to_owned()),
            ..CenterChanges::default()
        };
        let new_key = NewKey {
            hash: KeyHash::of(&key),
            expires_at,
        };
        self.store
            .create_center(&changes, code, &new_key)
            .await
            .expect("create center");
        key
    }

    /// Reads the stored day totals (orders, results, pets, owners) of a center.
    pub async fn day_totals(&self, code: &str, date: &str) -> Option<[i64; 4]> {
        let rows = self
            .db
            .rows(
                "SELECT d.total_orders, d.total_results, d.total_pets, d.total_owners FROM daily_metrics d \
                 JOIN centers c ON c.id = d.center_id WHERE c.code = $1 AND CAST(d.date AS TEXT) = $2",
                &[code.into(), Arg::Text(date.to_owned())],
            )
            .await;
        rows.first()
            .map(|row| std::array::from_fn(|i| row[i].as_i64().unwrap()))
    }

    /// Reads a day's rows of a table, sorted by their JSON text so that text
    /// sorts before null on both backends.
    pub async fn day_rows(
        &self,
        table: &str,
        columns: &str,
        code: &str,
        date: &str,
    ) -> Vec<Vec<Value>> {
        let sql = format!(
            "SELECT {columns} FROM {table} t JOIN centers c ON c.id = t.center_id \
             WHERE c.code = $1 AND CAST(t.date AS TEXT) = $2"
        );
        let mut rows = self
            .db
            .rows(&sql, &[code.into(), Arg::Text(date.to_owned())])
            .await;
        rows.sort_by_key(|row| Value::Array(row.clone()).to_string());
        rows
    }

    /// Counts the rows of `table` that belong to a center.
    pub async fn count_rows(&self, table: &str, code: &str) -> i64 {
        let sql = format!(
            "SELECT COUNT(*) FROM {table} t JOIN centers c ON c.id = t.center_id WHERE c.code = $1"
        );
        self.db.scalar(&sql, &[code.into()]).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Today in UTC as YYYY-MM-DD, offset by `days`.
pub fn day(days: i64) -> String {
    (Utc::now().date_naive() + chrono::Duration::days(days)).to_string()
}
