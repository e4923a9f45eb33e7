//! The `kpi-service` binary's administration commands (`centers`,
//! `migrate`) and its start-up checks, run as a child process against the
//! test database, with keys checked over HTTP on a service started on the
//! same database.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{day, Backend, TestApp, TestDb};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const BINARY: &str = env!("CARGO_BIN_EXE_kpi-service");

/// How long one run of the binary may take before the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A runner of the binary in an empty working directory, so that no `.env`
/// file or default SQLite file is found, with only the given environment.
struct Binary {
    working_dir: tempfile::TempDir,
    database_url: String,
}

impl Binary {
    fn new(database_url: &str) -> Self {
        Self {
            working_dir: tempfile::tempdir().expect("temporary directory"),
            database_url: database_url.to_owned(),
        }
    }

    /// Runs with `DATABASE_URL` set to the test database.
    async fn run(&self, args: &[&str]) -> Output {
        self.run_with(&[("DATABASE_URL", &self.database_url)], args)
            .await
    }

    /// Runs with `PATH`, debug logging and `vars` as the whole environment.
    /// Debug logging makes a key leaked into any log line show in the output.
    async fn run_with(&self, vars: &[(&str, &str)], args: &[&str]) -> Output {
        let mut command = tokio::process::Command::new(BINARY);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LOG_LEVEL", "DEBUG")
            .current_dir(self.working_dir.path())
            .kill_on_drop(true);
        for (name, value) in vars {
            command.env(name, value);
        }
        tokio::time::timeout(RUN_TIMEOUT, command.output())
            .await
            .unwrap_or_else(|_| panic!("kpi-service {args:?} still running after {RUN_TIMEOUT:?}"))
            .expect("start kpi-service")
    }

    /// Runs a command that must succeed and returns its standard output.
    async fn succeed(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "kpi-service {args:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }
}

/// Joins standard output and standard error into one text.
fn all_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Extracts the key that `centers add` or `centers rotate-key` printed: the
/// last word of the line that starts with "api key".
fn printed_key(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|line| line.starts_with("api key"))
        .unwrap_or_else(|| panic!("missing key line in output {stdout:?}"));
    line.split_whitespace().last().unwrap().to_owned()
}

fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Starts the service on a fresh database and returns it with a runner of
/// the binary on the same database.
async fn service_and_binary(backend: Backend) -> (TestApp, Binary) {
    let db = TestDb::create(backend).await;
    let binary = Binary::new(db.url());
    (TestApp::spawn_on(db, &[]).await, binary)
}

async fn submit(app: &TestApp, code: &str, key: &str) -> (StatusCode, Value) {
    let body = json!({"center_code": code, "date": day(0), "total_orders": 3});
    app.post("/kpi/submit", Some(key), &body).await
}

async fn add_center(binary: &Binary, code: &str) -> String {
    let stdout = binary
        .succeed(&["centers", "add", code, "--name", "Hospital Central"])
        .await;
    printed_key(&stdout)
}

both_backends!(add_prints_working_key, |backend: Backend| async move {
    let (app, binary) = service_and_binary(backend).await;

    let output = binary
        .run(&[
            "centers",
            "add",
            "HVC",
            "--name",
            "Hospital Veterinario Central",
            "--city",
            "Caracas",
            "--country",
            "Venezuela",
        ])
        .await;

    assert!(output.status.success(), "{}", all_output(&output));
    let key = printed_key(&String::from_utf8_lossy(&output.stdout));
    assert!(key.len() >= 43, "{key:?} is too short");
    assert!(
        key.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
        "{key:?} is not URL-safe"
    );
    assert_eq!(all_output(&output).matches(key.as_str()).count(), 1);
    assert!(!all_output(&output).contains(&sha256_hex(&key)));
    let (status, body) = submit(&app, "HVC", &key).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["center"], "Hospital Veterinario Central");
    let stored = app
        .db
        .rows(
            "SELECT name, city, country, is_active FROM centers WHERE code = 'HVC'",
            &[],
        )
        .await;
    assert_eq!(
        stored,
        vec![vec![
            json!("Hospital Veterinario Central"),
            json!("Caracas"),
            json!("Venezuela"),
            json!(1)
        ]]
    );
});

both_backends!(add_rejects_existing_code, |backend: Backend| async move {
    let (app, binary) = service_and_binary(backend).await;
    let key = add_center(&binary, "HVC").await;

    let output = binary
        .run(&["centers", "add", "HVC", "--name", "Another"])
        .await;

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("center HVC already exists"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("api key"),
        "no key is printed for a rejected center"
    );
    let keys = app
        .db
        .scalar(
            "SELECT COUNT(*) FROM center_api_keys k JOIN centers c ON c.id = k.center_id \
             WHERE c.code = 'HVC'",
            &[],
        )
        .await;
    assert_eq!(keys, 1);
    let (status, body) = submit(&app, "HVC", &key).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["center"], "Hospital Central");
});

both_backends!(list_hides_keys, |backend: Backend| async move {
    let (_app, binary) = service_and_binary(backend).await;
    let stdout = binary
        .succeed(&[
            "centers",
            "add",
            "HVC",
            "--name",
            "Hospital Veterinario Central",
            "--city",
            "Caracas",
        ])
        .await;
    let key = printed_key(&stdout);

    let output = binary.run(&["centers", "list"]).await;

    assert!(output.status.success(), "{}", all_output(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let row = stdout
        .lines()
        .find(|line| line.starts_with("HVC "))
        .unwrap_or_else(|| panic!("missing HVC row in output {stdout}"));
    assert!(row.contains("Hospital Veterinario Central"), "{row}");
    assert!(row.contains("Caracas"), "{row}");
    let text = all_output(&output);
    assert!(!text.contains(&key), "the key is listed");
    assert!(
        !text.contains(&sha256_hex(&key)),
        "the key's digest is listed"
    );
});

both_backends!(rotate_key_with_grace, |backend: Backend| async move {
    let (app, binary) = service_and_binary(backend).await;
    let old_key = add_center(&binary, "HVC").await;

    let stdout = binary
        .succeed(&["centers", "rotate-key", "HVC", "--grace", "1h"])
        .await;

    let new_key = printed_key(&stdout);
    assert_ne!(new_key, old_key);
    let (status, body) = submit(&app, "HVC", &new_key).await;
    assert_eq!(status, StatusCode::CREATED, "new key: {body}");
    let (status, body) = submit(&app, "HVC", &old_key).await;
    assert_eq!(status, StatusCode::CREATED, "old key: {body}");
});

both_backends!(rotate_key_without_grace, |backend: Backend| async move {
    let (app, binary) = service_and_binary(backend).await;
    let old_key = add_center(&binary, "HVC").await;

    let stdout = binary
        .succeed(&["centers", "rotate-key", "HVC", "--grace", "0s"])
        .await;

    let new_key = printed_key(&stdout);
    let (status, _) = submit(&app, "HVC", &old_key).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "old key");
    let (status, body) = submit(&app, "HVC", &new_key).await;
    assert_eq!(status, StatusCode::CREATED, "new key: {body}");
});

both_backends!(
    rotate_key_of_unknown_center,
    |backend: Backend| async move {
        let (_app, binary) = service_and_binary(backend).await;

        let output = binary.run(&["centers", "rotate-key", "NOPE"]).await;

        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("center NOPE not found"), "{stderr}");
        assert!(!String::from_utf8_lossy(&output.stdout).contains("api key"));
    }
);

both_backends!(expired_key_is_rejected, |backend: Backend| async move {
    let (app, binary) = service_and_binary(backend).await;
    let stdout = binary
        .succeed(&[
            "centers",
            "add",
            "HVC",
            "--name",
            "Central",
            "--expires-in",
            "1s",
        ])
        .await;
    let key = printed_key(&stdout);
    assert!(
        stdout.contains("expires at"),
        "the expiry is printed: {stdout}"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = submit(&app, "HVC", &key).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("expired"), "{body}");
});

both_backends!(deactivate_and_activate, |backend: Backend| async move {
    let (app, binary) = service_and_binary(backend).await;
    let key = add_center(&binary, "HVC").await;

    binary.succeed(&["centers", "deactivate", "HVC"]).await;
    let (inactive, body) = submit(&app, "HVC", &key).await;
    binary.succeed(&["centers", "activate", "HVC"]).await;
    let (active, _) = submit(&app, "HVC", &key).await;

    assert_eq!(inactive, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "Invalid center code or API key");
    assert_eq!(active, StatusCode::CREATED);
});

both_backends!(migrate_is_idempotent, |backend: Backend| async move {
    let db = TestDb::create(backend).await;
    let binary = Binary::new(db.url());
    let applied = "SELECT CAST(version AS TEXT), CAST(installed_on AS TEXT) \
                   FROM _sqlx_migrations ORDER BY version";

    binary.succeed(&["migrate"]).await;
    let first = db.rows(applied, &[]).await;
    binary.succeed(&["migrate"]).await;
    let second = db.rows(applied, &[]).await;

    let folder = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let files = std::fs::read_dir(format!(
        "{}/migrations/{folder}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("migrations folder")
    .count();
    assert_eq!(first.len(), files);
    assert_eq!(second, first);
    let centers = db.scalar("SELECT COUNT(*) FROM centers", &[]).await;
    assert_eq!(centers, 0);
});

/// Runs the binary's default command (`serve`) with one invalid setting
/// and returns its output. The database URL is valid unless overridden.
async fn start_with(name: &str, value: &str) -> Output {
    let working_dir = tempfile::tempdir().expect("temporary directory");
    let sqlite_url = format!(
        "sqlite://{}?mode=rwc",
        working_dir.path().join("kpi.db").display()
    );
    let binary = Binary::new(&sqlite_url);
    let mut vars = vec![("DATABASE_URL", sqlite_url.as_str())];
    vars.retain(|(var, _)| *var != name);
    vars.push((name, value));
    // Port 0 keeps a binary that wrongly starts serving from taking a fixed port.
    if name != "PORT" {
        vars.push(("PORT", "0"));
    }
    binary.run_with(&vars, &[]).await
}

fn assert_one_line_naming(output: &Output, name: &str) {
    assert!(!output.status.success());
    assert!(
        output.status.code().is_some(),
        "exited by signal: {}",
        output.status
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(name), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
}

#[tokio::test]
async fn invalid_port_stops_start() {
    let output = start_with("PORT", "abc").await;

    assert_one_line_naming(&output, "PORT");
}

#[tokio::test]
async fn unsupported_database_stops_start() {
    let output = start_with("DATABASE_URL", "mysql://kpi:hunter2@127.0.0.1/kpi").await;

    assert_one_line_naming(&output, "DATABASE_URL");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("hunter2"),
        "the password is shown: {stderr}"
    );
}

/// Migrations run over `DATABASE_DIRECT_URL` when it is set: here
/// `DATABASE_URL` names a role that may not create tables, as an
/// application role behind a pooler often is.
#[tokio::test]
async fn migrate_uses_direct_url() {
    let Some(server_url) = common::postgres_url() else {
        return;
    };
    let db = TestDb::create(Backend::Postgres).await;
    let TestDb::Postgres { name, .. } = &db else {
        unreachable!("a PostgreSQL database was asked for")
    };
    let role = format!("{name}_app");
    db.execute(&format!("CREATE ROLE {role} LOGIN"), &[]).await;
    let app_url =
        common::database_url(&server_url, name).replacen("postgres@", &format!("{role}@"), 1);
    assert!(app_url.contains(&role), "the URL names the role: {app_url}");
    let binary = Binary::new(&app_url);

    let without_direct = binary.run(&["migrate"]).await;
    let with_direct = binary
        .run_with(
            &[
                ("DATABASE_URL", &app_url),
                ("DATABASE_DIRECT_URL", db.url()),
            ],
            &["migrate"],
        )
        .await;

    assert!(
        !without_direct.status.success(),
        "the application role cannot create tables"
    );
    assert!(with_direct.status.success(), "{}", all_output(&with_direct));
    let applied = db
        .scalar("SELECT COUNT(*) FROM _sqlx_migrations", &[])
        .await;
    assert!(applied >= 2, "{applied} migrations applied");
    db.execute(&format!("DROP OWNED BY {role}"), &[]).await;
    db.execute(&format!("DROP ROLE {role}"), &[]).await;
}

#[tokio::test]
async fn unreachable_database_names_address() {
    // A port that was just free: nothing listens there, so every
    // connection is refused, and sqlx retries until the acquire timeout.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let url = format!("postgres://kpi:hunter2@127.0.0.1:{port}/kpi");
    let binary = Binary::new(&url);

    let output = binary
        .run_with(
            &[("DATABASE_URL", &url), ("DATABASE_ACQUIRE_TIMEOUT", "1")],
            &["migrate"],
        )
        .await;

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("cannot reach PostgreSQL at 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(last.to_lowercase().contains("refused"), "{stderr}");
    assert!(!last.contains("pool timed out"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password is shown: {stderr}"
    );
}

#[tokio::test]
async fn database_error_printed_once() {
    let Some(server_url) = common::postgres_url() else {
        return;
    };
    let url = common::database_url(&server_url, "kpi_no_such_database");
    let binary = Binary::new(&url);

    let output = binary.run(&["migrate"]).await;

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("kpi-service: "), "{stderr}");
    assert_eq!(last.matches("does not exist").count(), 1, "{stderr}");
}

#[tokio::test]
async fn migrate_logs_result_at_info() {
    // A second run meets the migrations table that the first made, which
    // PostgreSQL reports with a notice. A filter that drops the notice
    // through an `enabled!` check can also drop the next line, so the
    // outcome must still show at the default level.
    if common::postgres_url().is_none() {
        return;
    }
    let db = TestDb::create(Backend::Postgres).await;
    let binary = Binary::new(db.url());
    let info = [("DATABASE_URL", db.url()), ("LOG_LEVEL", "INFO")];

    binary.succeed(&["migrate"]).await;
    let again = binary.run_with(&info, &["migrate"]).await;

    assert!(again.status.success(), "{}", all_output(&again));
    assert!(
        all_output(&again).contains("migrations applied"),
        "{}",
        all_output(&again)
    );
}

#[tokio::test]
async fn direct_url_needs_postgres() {
    let output = start_with(
        "DATABASE_DIRECT_URL",
        "postgres://kpi:hunter2@127.0.0.1/kpi",
    )
    .await;

    assert_one_line_naming(&output, "DATABASE_DIRECT_URL");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("hunter2"),
        "the password is shown: {stderr}"
    );
}

both_backends!(
    deactivation_elsewhere_applies_within_a_second,
    |backend: Backend| async move {
        let (app, binary) = service_and_binary(backend).await;
        let key = add_center(&binary, "HVC").await;
        let (before, _) = submit(&app, "HVC", &key).await;

        binary.succeed(&["centers", "deactivate", "HVC"]).await;
        tokio::time::sleep(kpi_service::center_cache::TTL + Duration::from_millis(100)).await;
        let (after, _) = submit(&app, "HVC", &key).await;

        assert_eq!(before, StatusCode::CREATED);
        assert_eq!(after, StatusCode::UNAUTHORIZED);
    }
);
