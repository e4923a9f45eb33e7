//! Sentry error reporting, checked against a stand-in for Sentry on
//! 127.0.0.1. The real binary reports a storage failure, and no envelope
//! carries a key, a password, a request header, a query string or a body. A
//! handler panic is reported although CatchPanicLayer turns it into a 500.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::{day, Backend, TestDb, DASHBOARD_PASSWORD, DASHBOARD_USER, MASTER_KEY};
use kpi_service::keys::{self, KeyHash};
use kpi_service::settings::Settings;
use kpi_service::store::{CenterChanges, NewKey};
use kpi_service::{error_reporting, AppState};
use reqwest::StatusCode;
use sentry::protocol::{Context, EnvelopeItem, Event, Transaction, Value};
use sentry::{Envelope, Level};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_kpi-service");

/// How long the service may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an envelope may take to reach the stand-in.
const ENVELOPE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body the stand-in reads.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

const ENVIRONMENT: &str = "staging";
const APP_VERSION: &str = "9.8.7-sentry-test";

/// Strings sent only in the request that fails. None of them may reach Sentry.
const BODY_MARKER: &str = "body-marker-7f3a9c";
const QUERY_MARKER: &str = "query-marker-51d2e8";
const COOKIE_MARKER: &str = "cookie-marker-0b6e44";
const FORWARDED_IP: &str = "203.0.113.77";

/// One request that the stand-in received.
struct Received {
    /// The request target, such as `/api/1/envelope/`.
    target: String,
    body: Vec<u8>,
}

/// A stand-in for Sentry on 127.0.0.1 that records every request and
/// responds with `200 {}`. It reads bodies by `Content-Length`, which is how the
/// SDK's reqwest transport sends envelopes.
struct SentryStandIn {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl SentryStandIn {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&received);
        // The accept loop ends with the test's runtime.
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(record_requests(stream, Arc::clone(&recorded)));
            }
        });
        Self { port, received }
    }

    fn dsn(&self) -> String {
        format!("http://publickey@127.0.0.1:{}/1", self.port)
    }

    /// Returns every received body as text, for searching.
    fn bodies(&self) -> Vec<String> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .map(|request| String::from_utf8_lossy(&request.body).into_owned())
            .collect()
    }

    /// Returns the received envelopes, checking that each went to the envelope endpoint.
    fn envelopes(&self) -> Vec<Envelope> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .map(|request| {
                assert_eq!(request.target, "/api/1/envelope/");
                Envelope::from_slice(&request.body).unwrap_or_else(|err| {
                    panic!(
                        "invalid envelope ({err}): {}",
                        String::from_utf8_lossy(&request.body)
                    )
                })
            })
            .collect()
    }

    /// Polls until `done` accepts the received envelopes, for at most
    /// [`ENVELOPE_TIMEOUT`]. The failure message names the wait by `what`.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Envelope]) -> bool) {
        let deadline = Instant::now() + ENVELOPE_TIMEOUT;
        while Instant::now() < deadline {
            if done(&self.envelopes()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "timed out after {ENVELOPE_TIMEOUT:?} waiting for {what}; received: {:?}",
            self.bodies()
        );
    }
}

/// Reads HTTP/1.1 requests from one connection until the client closes it.
async fn record_requests(stream: TcpStream, received: Arc<Mutex<Vec<Received>>>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut content_length = 0;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        if content_length > MAX_BODY_BYTES {
            return;
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let target = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        received.lock().unwrap().push(Received { target, body });
        let response =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        if reader.get_mut().write_all(response).await.is_err() {
            return;
        }
    }
}

fn events(envelopes: &[Envelope]) -> Vec<&Event<'static>> {
    envelopes
        .iter()
        .flat_map(|envelope| envelope.items())
        .filter_map(|item| match item {
            EnvelopeItem::Event(event) => Some(event.as_ref()),
            _ => None,
        })
        .collect()
}

fn transactions(envelopes: &[Envelope]) -> Vec<&Transaction<'static>> {
    envelopes
        .iter()
        .flat_map(|envelope| envelope.items())
        .filter_map(|item| match item {
            EnvelopeItem::Transaction(transaction) => Some(transaction.as_ref()),
            _ => None,
        })
        .collect()
}

fn has_event(envelopes: &[Envelope], message: &str) -> bool {
    events(envelopes)
        .iter()
        .any(|event| event.message.as_deref() == Some(message))
}

fn has_transaction(envelopes: &[Envelope], name: &str) -> bool {
    transactions(envelopes)
        .iter()
        .any(|transaction| transaction.name.as_deref() == Some(name))
}

/// Returns an event's log fields, which the tracing integration stores in a context.
fn tracing_fields<'a>(event: &'a Event<'static>) -> &'a sentry::protocol::Map<String, Value> {
    match event.contexts.get("Rust Tracing Fields") {
        Some(Context::Other(fields)) => fields,
        other => panic!("no tracing fields in event: {other:?}"),
    }
}

/// The real binary, serving on a port the system chose, with its output
/// collected line by line.
struct Service {
    child: Child,
    base_url: String,
    output: Arc<Mutex<Vec<String>>>,
    _working_dir: tempfile::TempDir,
}

impl Service {
    /// Starts the binary with `PATH`, the database, a loopback address and
    /// `vars` as its whole environment, and waits for its address.
    async fn start(database_url: &str, vars: &[(&str, &str)]) -> Service {
        let working_dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(BINARY)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .envs(vars.iter().copied())
            .current_dir(working_dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start kpi-service");
        let output = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stdout.take().unwrap(), Arc::clone(&output));
        collect_lines(child.stderr.take().unwrap(), Arc::clone(&output));
        let mut service = Service {
            child,
            base_url: String::new(),
            output,
            _working_dir: working_dir,
        };
        let started = service.wait_for_line("service started").await;
        let address =
            field_value(&started, "address").unwrap_or_else(|| panic!("no address in {started:?}"));
        service.base_url = format!("http://{address}");
        service
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Waits for an output line containing `text` and returns it.
    async fn wait_for_line(&mut self, text: &str) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            let found = self
                .output
                .lock()
                .unwrap()
                .iter()
                .find(|line| line.contains(text))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("kpi-service exited with {status}: {:?}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no line containing {text:?} within {START_TIMEOUT:?}: {:?}",
            self.output()
        );
    }

    fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    async fn stop(mut self) {
        self.child.kill().await.expect("stop kpi-service");
    }
}

fn collect_lines(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    output: Arc<Mutex<Vec<String>>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            output.lock().unwrap().push(line);
        }
    });
}

/// Returns the value of `name=value` in a plain-text log line.
fn field_value(line: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&prefix))
        .map(str::to_owned)
}

/// Registers a center with a key of its own directly in the database and returns the key.
async fn add_center(db: &TestDb, code: &str) -> String {
    let vars = HashMap::from([("DATABASE_URL", db.url())]);
    let settings = Settings::from_lookup(|name| vars.get(name).map(|v| v.to_string())).unwrap();
    let store = kpi_service::store::connect(&settings.database_url)
        .await
        .expect("connect store");
    store.migrate().await.expect("migrate");
    let key = keys::generate();
    let changes = CenterChanges {
        name: Some("Hospital Central".to_owned()),
        ..CenterChanges::default()
    };
    let new_key = NewKey {
        hash: KeyHash::of(&key),
        expires_at: None,
    };
    store
        .create_center(&changes, code, &new_key)
        .await
        .expect("create center");
    store.close().await;
    key
}

/// Breaks the service's storage under it: every query on `centers` fails.
async fn break_storage(db: &TestDb) {
    db.execute("ALTER TABLE centers RENAME TO centers_moved", &[])
        .await;
}

fn basic_authorization(password: &str) -> String {
    let credentials = BASE64.encode(format!("{DASHBOARD_USER}:{password}"));
    format!("Basic {credentials}")
}

/// Sends a KPI batch that carries the markers in its body, query string,
/// cookie and forwarding header, and returns its status and request id.
async fn submit_with_markers(
    service: &Service,
    api_key: &str,
    authorization: &str,
) -> (StatusCode, String) {
    let body = json!({
        "center_code": "HVC",
        "date": day(0),
        "total_orders": 3,
        "tests": [{"code": "T1", "name": BODY_MARKER, "count": 1}],
    });
    let response = reqwest::Client::new()
        .post(service.url(&format!("/kpi/submit?note={QUERY_MARKER}")))
        .header("X-API-Key", api_key)
        .header("Authorization", authorization)
        .header("Cookie", format!("session={COOKIE_MARKER}"))
        .header("X-Forwarded-For", FORWARDED_IP)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (response.status(), request_id)
}

/// Asserts that no received body contains any of `secrets` (name, value).
fn assert_not_sent(bodies: &[String], secrets: &[(&str, &str)]) {
    for (name, secret) in secrets {
        for body in bodies {
            assert!(
                !body.contains(secret),
                "the {name} was sent to Sentry: {body}"
            );
        }
    }
}

fn assert_request_scrubbed(request: Option<&sentry::protocol::Request>, path: &str) {
    let request = request.expect("request details");
    let url = request.url.as_ref().expect("request URL");
    assert_eq!(url.path(), path);
    assert_eq!(url.query(), None);
    assert_eq!(url.username(), "");
    assert!(request.headers.is_empty(), "{:?}", request.headers);
    assert!(request.env.is_empty(), "{:?}", request.env);
    assert_eq!(request.query_string, None);
    assert_eq!(request.cookies, None);
    assert_eq!(request.data, None);
}

both_backends!(
    storage_failure_reported_without_secrets,
    |backend: Backend| async move {
        let sentry = SentryStandIn::start().await;
        let db = TestDb::create(backend).await;
        let center_key = add_center(&db, "HVC").await;
        let dsn = sentry.dsn();
        let service = Service::start(
            db.url(),
            &[
                ("SENTRY_DSN", &dsn),
                ("CENTER_API_KEY", MASTER_KEY),
                ("DASHBOARD_PASSWORD", DASHBOARD_PASSWORD),
                ("ENVIRONMENT", ENVIRONMENT),
                ("APP_VERSION", APP_VERSION),
            ],
        )
        .await;
        let authorization = basic_authorization(DASHBOARD_PASSWORD);

        let metrics = reqwest::Client::new()
            .get(service.url("/kpi/centers/HVC/metrics"))
            .header("Authorization", &authorization)
            .send()
            .await
            .unwrap()
            .status();
        break_storage(&db).await;
        let (status, request_id) = submit_with_markers(&service, &center_key, &authorization).await;
        sentry
            .wait_for(
                "the storage error and the submit transaction",
                |envelopes| {
                    has_event(envelopes, "storage operation failed")
                        && has_event(envelopes, "request finished")
                        && has_transaction(envelopes, "POST /kpi/submit")
                },
            )
            .await;
        service.stop().await;

        assert_eq!(metrics, StatusCode::OK);
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "storage failures are 503"
        );
        let credentials = authorization.trim_start_matches("Basic ");
        assert_not_sent(
            &sentry.bodies(),
            &[
                ("center key", &center_key),
                ("master key", MASTER_KEY),
                ("dashboard password", DASHBOARD_PASSWORD),
                ("Authorization header", &authorization),
                ("Basic credentials", credentials),
                ("request body", BODY_MARKER),
                ("query string", QUERY_MARKER),
                ("cookie", COOKIE_MARKER),
                ("forwarded client address", FORWARDED_IP),
            ],
        );

        let envelopes = sentry.envelopes();
        let all_events = events(&envelopes);
        let storage_errors: Vec<_> = all_events
            .iter()
            .filter(|event| event.message.as_deref() == Some("storage operation failed"))
            .collect();
        assert_eq!(storage_errors.len(), 1, "one failed request, one event");
        let event = storage_errors[0];
        assert_eq!(event.level, Level::Error);
        assert_eq!(event.environment.as_deref(), Some(ENVIRONMENT));
        let release = format!("kpi-service@{APP_VERSION}");
        assert_eq!(event.release.as_deref(), Some(release.as_str()));
        assert_eq!(event.transaction.as_deref(), Some("POST /kpi/submit"));
        assert_eq!(event.tags.get("request_id"), Some(&request_id));
        assert!(event.user.is_none(), "{:?}", event.user);
        assert_request_scrubbed(event.request.as_ref(), "/kpi/submit");
        let cause = tracing_fields(event)["error"].as_str().unwrap_or_default();
        assert!(
            cause.contains("centers"),
            "the cause names the table: {cause}"
        );

        let finished = all_events
            .iter()
            .find(|event| event.message.as_deref() == Some("request finished"))
            .unwrap();
        assert_eq!(finished.level, Level::Error);
        assert_eq!(tracing_fields(finished)["status"], Value::from(503));

        let all_transactions = transactions(&envelopes);
        assert!(
            has_transaction(&envelopes, "GET /kpi/centers/{code}/metrics"),
            "transactions are named by route template: {:?}",
            all_transactions.iter().map(|t| &t.name).collect::<Vec<_>>()
        );
        for transaction in &all_transactions {
            assert_eq!(transaction.environment.as_deref(), Some(ENVIRONMENT));
            assert_eq!(transaction.release.as_deref(), Some(release.as_str()));
            assert!(transaction.user.is_none(), "{:?}", transaction.user);
            let path = transaction.request.as_ref().and_then(|r| r.url.as_ref());
            let path = path.map(|url| url.path().to_owned()).unwrap_or_default();
            assert_request_scrubbed(transaction.request.as_ref(), &path);
        }
    }
);

/// Without `DASHBOARD_PASSWORD` the service logs a generated password at
/// WARN, which becomes a breadcrumb. The breadcrumb must not carry it.
#[test]
fn generated_password_not_in_breadcrumbs() {
    common::run(Backend::Sqlite, |backend| async move {
        let sentry = SentryStandIn::start().await;
        let db = TestDb::create(backend).await;
        let center_key = add_center(&db, "HVC").await;
        let dsn = sentry.dsn();
        let mut service = Service::start(
            db.url(),
            &[("SENTRY_DSN", &dsn), ("ENVIRONMENT", ENVIRONMENT)],
        )
        .await;
        let warning = service.wait_for_line("generated a password").await;
        let password = field_value(&warning, "password")
            .unwrap_or_else(|| panic!("no password in {warning:?}"));
        let authorization = basic_authorization(&password);

        break_storage(&db).await;
        let (status, _) = submit_with_markers(&service, &center_key, &authorization).await;
        sentry
            .wait_for("the storage error", |envelopes| {
                has_event(envelopes, "storage operation failed")
            })
            .await;
        service.stop().await;

        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_not_sent(
            &sentry.bodies(),
            &[
                ("generated password", &password),
                ("Authorization header", &authorization),
            ],
        );
        let envelopes = sentry.envelopes();
        let event = events(&envelopes)
            .into_iter()
            .find(|event| event.message.as_deref() == Some("storage operation failed"))
            .unwrap();
        let breadcrumb = event
            .breadcrumbs
            .iter()
            .find(|breadcrumb| {
                breadcrumb
                    .message
                    .as_deref()
                    .is_some_and(|message| message.contains("generated a password"))
            })
            .expect("the warning is a breadcrumb of the error");
        assert_eq!(breadcrumb.data["password"], Value::from("[Filtered]"));
        assert_eq!(breadcrumb.data["username"], Value::from("[Filtered]"));
    });
}

#[test]
fn invalid_dsn_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let value = "not-a-dsn-but-maybe-a-secret";
    let output = std::process::Command::new(BINARY)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/kpi.db", dir.path().display()),
        )
        .env("SENTRY_DSN", value)
        .current_dir(dir.path())
        .output()
        .expect("run kpi-service");
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SENTRY_DSN"), "{stderr}");
    assert!(!stderr.contains(value), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// Records envelopes in memory in place of the HTTP transport.
#[derive(Default)]
struct RecordingTransport {
    envelopes: Mutex<Vec<Envelope>>,
}

impl sentry::Transport for RecordingTransport {
    fn send_envelope(&self, envelope: Envelope) {
        self.envelopes.lock().unwrap().push(envelope);
    }
}

const PANIC_MESSAGE: &str = "handler failed on purpose";

/// Returns whether `event` is the test handler's panic rather than a failing
/// test's panic, which the panic hook reports too.
fn is_handler_panic(event: &Event<'static>) -> bool {
    event.exception.iter().any(|exception| {
        exception.ty == "panic" && exception.value.as_deref() == Some(PANIC_MESSAGE)
    })
}

/// A panic inside a handler is reported by Sentry's panic hook, which runs
/// before CatchPanicLayer catches the unwinding panic. This test starts the
/// Sentry client in the test process, so it is the only test here that
/// builds the service in-process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_panic_reported() {
    let vars = HashMap::from([
        // Never contacted: the recording transport replaces HTTP.
        ("SENTRY_DSN", "http://publickey@127.0.0.1:9/1"),
        ("DASHBOARD_PASSWORD", DASHBOARD_PASSWORD),
        ("ENVIRONMENT", ENVIRONMENT),
    ]);
    let settings = Settings::from_lookup(|name| vars.get(name).map(|v| v.to_string())).unwrap();
    let recorder = Arc::new(RecordingTransport::default());
    let transport: Arc<dyn sentry::TransportFactory> = Arc::new(Arc::clone(&recorder));
    let _guard = error_reporting::init_with_transport(&settings, transport)
        .unwrap()
        .expect("a client for the DSN");
    let dir = tempfile::tempdir().unwrap();
    let database_url = kpi_service::settings::DatabaseUrl::Sqlite(format!(
        "sqlite://{}/kpi.db",
        dir.path().display()
    ));
    let store = kpi_service::store::connect(&database_url).await.unwrap();
    let state = AppState::new(settings, store);
    let routes = axum::Router::new().route(
        "/panic",
        get(|| async { panic!("{PANIC_MESSAGE}") as &str }),
    );
    let app = kpi_service::layers::wrap(routes, &state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });

    let status = reqwest::Client::new()
        .get(format!("{base_url}/panic?note={QUERY_MARKER}"))
        .header("Authorization", basic_authorization(DASHBOARD_PASSWORD))
        .send()
        .await
        .unwrap()
        .status();
    let deadline = Instant::now() + ENVELOPE_TIMEOUT;
    let panic_event = loop {
        let found = recorder
            .envelopes
            .lock()
            .unwrap()
            .iter()
            .filter_map(|envelope| envelope.event().cloned())
            .find(is_handler_panic);
        if let Some(event) = found {
            break event;
        }
        assert!(
            Instant::now() < deadline,
            "no panic event within {ENVELOPE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(panic_event.level, Level::Fatal);
    assert_eq!(panic_event.environment.as_deref(), Some(ENVIRONMENT));
    assert_eq!(panic_event.transaction.as_deref(), Some("GET /panic"));
    assert_request_scrubbed(panic_event.request.as_ref(), "/panic");
}
