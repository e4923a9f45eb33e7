//! Client connections: the header-read timeout closes connections that send
//! no request, slowly or at all, and `MAX_CONNECTIONS` caps how many are
//! served at once.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestApp};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longer than any timeout these tests set: a connection still open after
/// this long was never going to be closed.
const NEVER: Duration = Duration::from_secs(10);

async fn app(header_read_timeout: &str, max_connections: &str) -> TestApp {
    TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("HEADER_READ_TIMEOUT", header_read_timeout),
            ("MAX_CONNECTIONS", max_connections),
            // Metrics are read in a loop.
            ("RATE_LIMIT_DASHBOARD", "1000/minute"),
        ],
    )
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    let address = app.base_url.trim_start_matches("http://");
    TcpStream::connect(address).await.unwrap()
}

/// Reads until the service closes `stream`, and returns what it sent, or
/// `None` when it is still open after [`NEVER`].
async fn read_until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(NEVER, stream.read_to_end(&mut received)).await;
    match read {
        Ok(Ok(_)) => Some(received),
        // A reset also means the service closed the connection.
        Ok(Err(_)) => Some(received),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_closed_after_timeout() {
    let app = app("1", "1000").await;
    let mut stream = connect(&app).await;
    let started = Instant::now();

    let received = read_until_closed(&mut stream).await;

    let received = received.expect("a connection that sent nothing stayed open");
    assert!(received.is_empty(), "{received:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_closed_after_timeout() {
    // One byte of a header every 100 ms keeps the connection busy, but the
    // headers never end, so the timeout closes it.
    let app = app("1", "1000").await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: kpi\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < NEVER {
        if stream.write_all(b"x").await.is_err() {
            closed = true;
            break;
        }
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => panic!("the service responded to headers that never ended"),
            Err(_) => {}
        }
    }

    assert!(
        closed,
        "slow headers kept the connection open for {NEVER:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_closed_after_timeout() {
    let app = app("1", "1000").await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: kpi\r\n\r\n")
        .await
        .unwrap();

    let received = read_until_closed(&mut stream).await;

    let received = received.expect("an idle keep-alive connection stayed open");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(!text.contains("connection: close"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_time_are_served() {
    // Headers split across writes, all within the timeout, get a response.
    let app = app("2", "1000").await;
    let mut stream = connect(&app).await;
    for part in [
        "GET /hea",
        "lth HTTP/1.1\r\nHo",
        "st: kpi\r\nConnection: close\r\n\r\n",
    ] {
        stream.write_all(part.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let received = read_until_closed(&mut stream).await.expect("no response");

    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_cap_wait() {
    let app = app("30", "2").await;
    let first = connect(&app).await;
    let _second = connect(&app).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let health = format!("{}/health", app.base_url);

    let while_full = client.get(&health).send().await;
    drop(first);
    let after_one_closed = client
        .get(&health)
        .timeout(NEVER)
        .send()
        .await
        .map(|response| response.status());

    let err = while_full.expect_err("a third connection was served over a cap of 2");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(after_one_closed.unwrap(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_in_metrics() {
    let app = app("30", "1000").await;
    let idle_connections = [
        connect(&app).await,
        connect(&app).await,
        connect(&app).await,
    ];

    // The three idle connections and the metrics request's own.
    let with_idle = open_connections_reaching(&app, 4).await;
    drop(idle_connections);
    let after = open_connections_reaching(&app, 1).await;

    assert_eq!(with_idle, 4);
    assert_eq!(after, 1);
}

/// Reads `kpi_http_connections_open` on a new connection each time until it
/// equals `expected` or [`NEVER`] passes, and returns the last value.
async fn open_connections_reaching(app: &TestApp, expected: i64) -> i64 {
    let started = Instant::now();
    loop {
        let client = reqwest::Client::new();
        let text = client
            .get(format!("{}/metrics", app.base_url))
            .basic_auth(common::DASHBOARD_USER, Some(common::DASHBOARD_PASSWORD))
            .header("Connection", "close")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let open: i64 = text
            .lines()
            .find_map(|line| line.strip_prefix("kpi_http_connections_open "))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no kpi_http_connections_open\n{text}"));
        if open == expected || started.elapsed() > NEVER {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
