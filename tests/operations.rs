//! Operations: request ids, probes at DEBUG, JSON logs, log files, metrics,
//! compression and the graceful shutdown, mostly through the real binary.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{day, Backend, TestApp, DASHBOARD_PASSWORD, MASTER_KEY};
use reqwest::StatusCode;
use serde_json::{json, Value};

const STRONG_PASSWORD: &str = "operations-test-password";

/// The real binary, running on a free port with a temporary SQLite file.
struct Service {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Service {
    fn start(vars: &[(&str, &str)]) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_kpi-service"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/kpi.db", dir.path().display()),
            )
            .env("PORT", port.to_string())
            .env("CENTER_API_KEY", MASTER_KEY)
            .env("DASHBOARD_PASSWORD", STRONG_PASSWORD)
            .envs(vars.iter().copied())
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let service = Service { child, port, dir };
        service.wait_until_up();
        service
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the service did not start on port {}", self.port);
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code and stdout.
    fn wait(&mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stdout = String::new();
                self.child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut stdout)
                    .unwrap();
                return (status.code(), stdout);
            }
            assert!(Instant::now() < deadline, "the service did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) -> String {
        self.terminate();
        self.wait().1
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn blocking_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn submit_body(code: &str) -> Value {
    json!({"center_code": code, "date": day(0), "total_orders": 4})
}

/// Registers center HVC with the master key.
fn register(service: &Service) {
    let response = blocking_client()
        .put(service.url("/kpi/centers/HVC"))
        .header("X-API-Key", MASTER_KEY)
        .json(&json!({"name": "Central"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

both_backends!(
    request_id_echoed_and_in_problems,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;

        let given = app
            .client
            .post(format!("{}/kpi/submit", app.base_url))
            .header("X-Request-Id", "support-call-42")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let echoed = given.headers()["x-request-id"].to_str().unwrap().to_owned();
        let (_, problem) = common::read(given).await;
        let generated = app
            .client
            .get(format!("{}/health", app.base_url))
            .send()
            .await
            .unwrap();
        let generated_id = generated.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();

        assert_eq!(echoed, "support-call-42");
        assert_eq!(problem["request_id"], "support-call-42");
        assert_eq!(generated_id.len(), 36, "a UUID: {generated_id}");
    }
);

both_backends!(metrics_count_traffic, |backend: Backend| async move {
    let app = TestApp::spawn_with(backend, &[("RATE_LIMIT_EVENTS", "1/minute")]).await;
    let key = app.center_with_key("HVC", "Central").await;
    app.post("/kpi/submit", Some(&key), &submit_body("HVC"))
        .await;
    let event = json!({"center_code": "HVC", "event_type": "order_created",
                       "timestamp": format!("{}T10:00:00Z", day(0)), "data": {}});
    app.post("/kpi/events", Some(&key), &event).await;
    let (refused, _) = app.post("/kpi/events", Some(&key), &event).await;

    let unauthenticated = app
        .client
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap()
        .status();
    let response = app.get_as_admin("/metrics").await;
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();

    assert_eq!(refused, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(unauthenticated, StatusCode::UNAUTHORIZED);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let expected = [
        r#"kpi_http_requests_total{method="POST",route="/kpi/submit",status="201"} 1"#,
        r#"kpi_http_requests_total{method="POST",route="/kpi/events",status="429"} 1"#,
        r#"kpi_batches_ingested_total{center_code="HVC",kind="submit"} 1"#,
        r#"kpi_events_ingested_total{center_code="HVC",event_type="order_created"} 1"#,
        r#"kpi_rate_limited_total{group="events"} 1"#,
        r#"kpi_http_request_duration_seconds_count{method="POST",route="/kpi/submit"} 1"#,
        r#"kpi_db_pool_connections{state="max"}"#,
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
    let begins: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("kpi_db_begin_wait_seconds_count "))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no begin wait count\n{text}"));
    assert!(
        begins >= 2,
        "the batch and the event each began a transaction: {begins}"
    );
});

both_backends!(
    responses_over_a_kib_compressed,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.center_with_key("HVC", "Central").await;
        let page = |encoding: &'static str| {
            app.client
                .get(format!("{}/", app.base_url))
                .basic_auth("admin", Some(DASHBOARD_PASSWORD))
                .header("Accept-Encoding", encoding)
                .send()
        };

        let gzip = page("gzip").await.unwrap();
        let brotli = page("br").await.unwrap();
        let plain = page("identity").await.unwrap();
        let small = app
            .client
            .get(format!("{}/health", app.base_url))
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .unwrap();

        assert_eq!(gzip.headers()["content-encoding"], "gzip");
        assert_eq!(brotli.headers()["content-encoding"], "br");
        assert!(plain.headers().get("content-encoding").is_none());
        assert!(
            small.headers().get("content-encoding").is_none(),
            "responses under 1 KiB stay plain"
        );
    }
);

#[test]
fn production_logs_are_json_lines() {
    let mut service = Service::start(&[("ENVIRONMENT", "production"), ("LOG_LEVEL", "INFO")]);
    register(&service);
    let response = blocking_client()
        .post(service.url("/kpi/submit"))
        .header("X-Request-Id", "json-log-check")
        .header("X-API-Key", MASTER_KEY)
        .json(&submit_body("HVC"))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    let stdout = service.stop();

    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect();
    assert!(lines.len() >= 3, "{stdout}");
    for line in &lines {
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["level"].is_string(), "{line}");
        assert!(line["target"].is_string(), "{line}");
        assert!(line["message"].is_string(), "{line}");
    }
    let finished = lines
        .iter()
        .find(|line| {
            line["message"] == "request finished" && line["span"]["request_id"] == "json-log-check"
        })
        .unwrap_or_else(|| panic!("no request line with its id: {stdout}"));
    assert_eq!(finished["span"]["route"], "/kpi/submit");
    assert_eq!(finished["span"]["center_code"], "HVC");
    assert_eq!(finished["status"], 201);
    assert!(!stdout.contains(MASTER_KEY), "no key in the log");
    assert!(!stdout.contains(STRONG_PASSWORD), "no password in the log");
}

#[test]
fn probes_log_at_debug() {
    let mut service = Service::start(&[("LOG_LEVEL", "INFO")]);
    let client = blocking_client();
    for _ in 0..3 {
        assert_eq!(
            client.get(service.url("/health")).send().unwrap().status(),
            StatusCode::OK
        );
        assert_eq!(
            client
                .get(service.url("/health/ready"))
                .send()
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    client.get(service.url("/kpi/centers")).send().unwrap();

    let stdout = service.stop();

    assert!(!stdout.contains("route=/health"), "{stdout}");
    assert!(stdout.contains("route=/kpi/centers"), "{stdout}");
}

#[test]
fn log_dir_gets_daily_files() {
    let logs = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let log_dir = logs.path().to_str().unwrap();
    let mut service = Service::start(&[("LOG_DIR", log_dir)]);
    blocking_client()
        .get(service.url("/kpi/centers"))
        .send()
        .unwrap();
    service.stop();
    // A second start on a port in use fails, and that error reaches the errors file.
    let dir = tempfile::tempdir().unwrap();
    let failed = Command::new(env!("CARGO_BIN_EXE_kpi-service"))
        .env_clear()
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/kpi.db", dir.path().display()),
        )
        .env("PORT", &busy_port)
        .env("LOG_DIR", log_dir)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!failed.status.success());

    let read_prefix = |prefix: &str| -> String {
        std::fs::read_dir(logs.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| file_name(path).starts_with(prefix))
            .map(|path| std::fs::read_to_string(path).unwrap())
            .collect()
    };
    let all = read_prefix("kpi-service.");
    let errors = read_prefix("errors.");
    assert!(all.contains("service started"), "{all}");
    assert!(all.contains("route=/kpi/centers"), "{all}");
    assert!(errors.contains("cannot listen"), "{errors}");
    assert!(
        errors.lines().all(|line| line.contains("ERROR")),
        "{errors}"
    );
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn metrics_port_serves_without_credentials() {
    let port = free_port();
    let mut service = Service::start(&[("METRICS_PORT", &port.to_string())]);
    let client = blocking_client();

    let main = client
        .get(service.url("/metrics"))
        .basic_auth("admin", Some(STRONG_PASSWORD))
        .send()
        .unwrap();
    let separate = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .unwrap();

    assert_eq!(main.status(), StatusCode::NOT_FOUND);
    assert_eq!(separate.status(), StatusCode::OK);
    assert!(separate.text().unwrap().contains("kpi_http_requests_total"));
    service.stop();
}

/// A batch whose body is still arriving when SIGTERM comes is completed and
/// stored, and the process then exits 0.
#[test]
fn shutdown_finishes_requests_in_flight() {
    let mut service = Service::start(&[]);
    register(&service);
    let body = serde_json::to_vec(&submit_body("HVC")).unwrap();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(("127.0.0.1", service.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        stream,
        "POST /kpi/submit HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         X-API-Key: {MASTER_KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(head).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    service.terminate();
    std::thread::sleep(Duration::from_millis(300));
    let refused_new = TcpStream::connect(("127.0.0.1", service.port)).is_err();
    stream.write_all(tail).unwrap();
    let mut status_line = String::new();
    BufReader::new(&stream).read_line(&mut status_line).unwrap();
    let database = service.dir.path().join("kpi.db");
    let (code, stdout) = service.wait();

    assert!(status_line.starts_with("HTTP/1.1 201"), "{status_line}");
    assert!(refused_new, "no new connections after SIGTERM");
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("service stopped"), "{stdout}");
    let stored: Vec<i64> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let url = format!("sqlite://{}", database.display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT total_orders FROM daily_metrics")
            .fetch_all(&pool)
            .await
            .unwrap()
    });
    assert_eq!(stored, [4]);
}
