//! Several replicas behind one load balancer: two processes of the real
//! binary on one PostgreSQL database and one Redis. Rate limits count across
//! them, an event retried on the other replica counts once, a Redis outage
//! leaves ingestion working, and replicas that start together migrate once.
//! The Redis scripts are also tested directly.
//!
//! Redis is the one at `TEST_REDIS_URL`, such as the local server at
//! `redis://127.0.0.1:6379`; without that variable the tests return at once,
//! with a notice. Every test writes under a key prefix of its own
//! and deletes its keys at the end, so that parallel tests and leftovers do
//! not interfere. The outage test starts and kills a `redis-server` of its
//! own. Tests of the binary need `TEST_POSTGRES_URL`, like the harness, and
//! return at once without it.

mod common;

use std::io::Write;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::replica::{client, free_port, Replica};
use common::{day, Backend, TestDb, DASHBOARD_PASSWORD, DASHBOARD_USER, MASTER_KEY};
use kpi_service::limits::{retry_after_secs, SharedLimiter, Verdict, MAX_FAILURES, WINDOW};
use kpi_service::settings::Quota;
use redis::Commands;
use reqwest::StatusCode;
use serde_json::{json, Value};

const TEST_REDIS_URL_VAR: &str = "TEST_REDIS_URL";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Returns the Redis URL, or `None` after a one-time notice on stderr.
fn redis_url() -> Option<String> {
    static NOTICE: std::sync::Once = std::sync::Once::new();
    let url = std::env::var(TEST_REDIS_URL_VAR)
        .ok()
        .filter(|url| !url.is_empty());
    if url.is_none() {
        NOTICE.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "NOTICE: Redis tests skipped; set {TEST_REDIS_URL_VAR}={DEFAULT_REDIS_URL} to run them"
            );
        });
    }
    url
}

fn quota(count: u32, seconds: u64) -> Quota {
    Quota {
        count,
        period: Duration::from_secs(seconds),
    }
}

/// A key prefix of one test in a Redis server, whose keys are deleted on drop.
struct Namespace {
    url: String,
    prefix: String,
}

impl Namespace {
    fn new(url: &str) -> Namespace {
        let namespace = Namespace {
            url: url.to_owned(),
            prefix: format!("kpi-test-{}:", uuid::Uuid::new_v4().simple()),
        };
        namespace.connection().unwrap_or_else(|err| {
            panic!("Redis at {url} is not reachable ({err}). Start redis-server or set {TEST_REDIS_URL_VAR}.")
        });
        namespace
    }

    /// Opens a namespace on the Redis at `TEST_REDIS_URL`, if it is set.
    fn local() -> Option<Namespace> {
        redis_url().map(|url| Namespace::new(&url))
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url.as_str())?.get_connection()
    }

    fn limiter(&self) -> SharedLimiter {
        SharedLimiter::new(&self.url, &self.prefix, Duration::from_secs(1)).unwrap()
    }

    /// Returns the keys under this prefix.
    fn keys(&self) -> Vec<String> {
        let mut connection = self.connection().unwrap();
        let keys: Vec<String> = connection
            .scan_match(format!("{}*", self.prefix))
            .unwrap()
            .filter_map(Result::ok)
            .collect();
        keys
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let Ok(mut connection) = self.connection() else {
            return;
        };
        let keys: Vec<String> = match connection.scan_match(format!("{}*", self.prefix)) {
            Ok(keys) => keys.filter_map(Result::ok).collect(),
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = connection.del(keys);
        }
    }
}

/// A `redis-server` of the test's own on a free port, without persistence.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is on PATH");
        let redis = OwnRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answered = redis::Client::open(redis.url().as_str())
                .and_then(|client| client.get_connection())
                .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection));
            if answered.is_ok() {
                return redis;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills this server, and only it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts two replicas with the same settings.
fn two_replicas(db: &TestDb, vars: &[(&str, &str)]) -> [Replica; 2] {
    [
        Replica::start(db.url(), vars),
        Replica::start(db.url(), vars),
    ]
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

fn order_event(code: &str) -> Value {
    json!({"center_code": code, "event_type": "order_created",
           "timestamp": format!("{}T10:00:00Z", day(0)), "data": {}})
}

fn batch(code: &str) -> Value {
    json!({"center_code": code, "date": day(0), "total_orders": 1})
}

/// Registers a center with the master key, which counts as one write
/// against the center's submit limit.
async fn register(replica: &Replica, code: &str) {
    let status = replica.register(code).await;
    assert_eq!(status, StatusCode::OK, "registering {code}");
}

async fn post_event(replica: &Replica, body: &Value) -> reqwest::Response {
    client()
        .post(replica.url("/kpi/events"))
        .header("X-API-Key", MASTER_KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Returns the orders stored for a center over all days.
async fn stored_orders(db: &TestDb, code: &str) -> i64 {
    db.scalar(
        "SELECT COALESCE(SUM(d.total_orders), 0) FROM daily_metrics d \
         JOIN centers c ON c.id = d.center_id WHERE c.code = $1",
        &[code.into()],
    )
    .await
}

async fn readiness(replica: &Replica) -> (StatusCode, Value) {
    common::read(
        client()
            .get(replica.url("/health/ready"))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn metrics_text(replica: &Replica) -> String {
    client()
        .get(replica.url("/metrics"))
        .basic_auth(DASHBOARD_USER, Some(DASHBOARD_PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Returns the value of a metric line without labels, such as `kpi_redis_up`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
}

/// Returns the sum of every series of a metric with labels.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

/// Creates a PostgreSQL database and a Redis namespace, or returns `None`
/// without `TEST_POSTGRES_URL`.
async fn postgres_and_redis() -> Option<(TestDb, Namespace)> {
    common::postgres_url()?;
    let namespace = Namespace::local()?;
    let db = TestDb::create(Backend::Postgres).await;
    Some((db, namespace))
}

// The GCRA and failure-window scripts, against the local Redis.

#[tokio::test]
async fn gcra_burst_then_refill() {
    let Some(namespace) = Namespace::local() else {
        return;
    };
    let limiter = namespace.limiter();
    let per_second = quota(3, 1);

    let mut burst = Vec::new();
    for _ in 0..3 {
        burst.push(limiter.check("events", "a", per_second).await.unwrap());
    }
    let rejected = limiter.check("events", "a", per_second).await.unwrap();

    let expected: Vec<Verdict> = (0..3)
        .rev()
        .map(|remaining| Verdict::Allowed { remaining })
        .collect();
    assert_eq!(burst, expected, "a burst of 3, then nothing left");
    let Verdict::Denied { wait } = rejected else {
        panic!("the fourth request conforms: {rejected:?}");
    };
    assert!(wait > Duration::ZERO, "{wait:?}");
    assert!(
        wait <= Duration::from_micros(333_333),
        "one request refills every 333 ms: {wait:?}"
    );

    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    let refilled = limiter.check("events", "a", per_second).await.unwrap();
    let again = limiter.check("events", "a", per_second).await.unwrap();

    assert_eq!(refilled, Verdict::Allowed { remaining: 0 });
    assert!(
        matches!(again, Verdict::Denied { .. }),
        "one request refilled, not two: {again:?}"
    );
}

#[tokio::test]
async fn gcra_rejection_is_not_counted() {
    let Some(namespace) = Namespace::local() else {
        return;
    };
    let limiter = namespace.limiter();
    let per_second = quota(2, 1);
    limiter.check("events", "a", per_second).await.unwrap();
    limiter.check("events", "a", per_second).await.unwrap();
    for _ in 0..5 {
        limiter.check("events", "a", per_second).await.unwrap();
    }

    tokio::time::sleep(Duration::from_millis(520)).await;
    let after_wait = limiter.check("events", "a", per_second).await.unwrap();

    assert_eq!(after_wait, Verdict::Allowed { remaining: 0 });
}

#[tokio::test]
async fn gcra_retry_after_rounds_up() {
    let Some(namespace) = Namespace::local() else {
        return;
    };
    let limiter = namespace.limiter();
    let per_minute = quota(1, 60);
    let per_second = quota(4, 1);

    limiter.check("submit", "a", per_minute).await.unwrap();
    let minute = limiter.check("submit", "a", per_minute).await.unwrap();
    for _ in 0..4 {
        limiter.check("submit", "b", per_second).await.unwrap();
    }
    let second = limiter.check("submit", "b", per_second).await.unwrap();

    let Verdict::Denied { wait } = minute else {
        panic!("the second request of 1/minute conforms: {minute:?}");
    };
    assert!(wait > Duration::from_secs(59), "{wait:?}");
    assert!(wait <= Duration::from_secs(60), "{wait:?}");
    assert_eq!(retry_after_secs(wait), 60);
    let Verdict::Denied { wait } = second else {
        panic!("the fifth request of 4/second conforms: {second:?}");
    };
    assert!(wait <= Duration::from_millis(250), "{wait:?}");
    assert_eq!(retry_after_secs(wait), 1, "at least 1 s");
}

#[tokio::test]
async fn gcra_keys_are_independent() {
    let Some(namespace) = Namespace::local() else {
        return;
    };
    let Some(other_namespace) = Namespace::local() else {
        return;
    };
    let limiter = namespace.limiter();
    let other_prefix = other_namespace.limiter();
    let once = quota(1, 60);

    let first = limiter.check("events", "198.51.100.7", once).await.unwrap();
    let repeated = limiter.check("events", "198.51.100.7", once).await.unwrap();
    let other_key = limiter.check("events", "198.51.100.8", once).await.unwrap();
    let other_limit = limiter.check("submit", "198.51.100.7", once).await.unwrap();
    let prefixed = other_prefix
        .check("events", "198.51.100.7", once)
        .await
        .unwrap();

    let allowed = Verdict::Allowed { remaining: 0 };
    assert_eq!(first, allowed);
    assert!(matches!(repeated, Verdict::Denied { .. }), "{repeated:?}");
    assert_eq!(other_key, allowed);
    assert_eq!(other_limit, allowed);
    assert_eq!(prefixed, allowed);
}

#[tokio::test]
async fn gcra_key_expires_when_refilled() {
    let Some(namespace) = Namespace::local() else {
        return;
    };
    let limiter = namespace.limiter();
    for _ in 0..3 {
        limiter.check("events", "a", quota(10, 60)).await.unwrap();
    }

    let key = format!("{}rl:events:a", namespace.prefix);
    let ttl_ms: i64 = namespace.connection().unwrap().pttl(&key).unwrap();

    assert_eq!(namespace.keys(), [key]);
    // Three requests of 6 s each: the burst is full again after 18 s.
    assert!(ttl_ms > 17_000, "{ttl_ms} ms");
    assert!(ttl_ms <= 18_000, "{ttl_ms} ms");
}

#[tokio::test]
async fn failure_window_blocks_at_max() {
    let Some(namespace) = Namespace::local() else {
        return;
    };
    let limiter = namespace.limiter();
    let address: IpAddr = "198.51.100.7".parse().unwrap();
    let other: IpAddr = "198.51.100.8".parse().unwrap();

    let mut counts = Vec::new();
    for _ in 0..MAX_FAILURES - 1 {
        counts.push(limiter.record_failure(address, WINDOW).await.unwrap());
    }
    let before_max = limiter.failure_block(address, MAX_FAILURES).await.unwrap();
    counts.push(limiter.record_failure(address, WINDOW).await.unwrap());
    let blocked = limiter.failure_block(address, MAX_FAILURES).await.unwrap();
    let other_blocked = limiter.failure_block(other, MAX_FAILURES).await.unwrap();

    assert_eq!(counts, (1..=MAX_FAILURES).collect::<Vec<_>>());
    assert_eq!(before_max, None);
    let blocked = blocked.expect("blocked after the maximum");
    assert!(blocked <= WINDOW, "{blocked:?}");
    assert!(blocked > WINDOW - Duration::from_secs(5), "{blocked:?}");
    assert_eq!(other_blocked, None);
}

// Two replicas of the binary on one PostgreSQL database and one Redis.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_limit_counts_across_replicas() {
    let Some((db, namespace)) = postgres_and_redis().await else {
        return;
    };
    let redis_url = namespace.url.clone();
    let replicas = two_replicas(
        &db,
        &[
            ("REDIS_URL", &redis_url),
            ("REDIS_KEY_PREFIX", &namespace.prefix),
            ("RATE_LIMIT_EVENTS", "10/minute"),
            ("RATE_LIMIT_CENTER_EVENTS", "1000/minute"),
            ("RATE_LIMIT_SUBMIT", "100/minute"),
        ],
    );
    register(&replicas[0], "HVC").await;

    let mut statuses = Vec::new();
    let mut remaining = Vec::new();
    for i in 0..10 {
        let response = post_event(&replicas[i % 2], &order_event("HVC")).await;
        statuses.push(response.status());
        remaining.push(header(&response, "x-ratelimit-remaining").unwrap_or_default());
    }
    let eleventh = post_event(&replicas[0], &order_event("HVC")).await;
    let twelfth = post_event(&replicas[1], &order_event("HVC")).await;

    assert_eq!(statuses, [StatusCode::ACCEPTED; 10]);
    let expected: Vec<String> = (0..10).rev().map(|n| n.to_string()).collect();
    assert_eq!(remaining, expected, "one quota for both replicas");
    assert_eq!(eleventh.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(twelfth.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = header(&eleventh, "retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=6).contains(&retry_after),
        "one event refills every 6 s: {retry_after}"
    );
    assert_eq!(
        header(&eleventh, "x-ratelimit-limit").as_deref(),
        Some("10")
    );
    let (_, problem) = common::read(eleventh).await;
    assert_eq!(problem["type"], "rate_limit_exceeded");
    assert_eq!(problem["instance"], "/kpi/events");
    assert_eq!(stored_orders(&db, "HVC").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn center_limit_counts_across_replicas() {
    let Some((db, namespace)) = postgres_and_redis().await else {
        return;
    };
    let redis_url = namespace.url.clone();
    // Each request comes from another forwarded address, so that only the
    // per-center limit can reject it.
    let replicas = two_replicas(
        &db,
        &[
            ("REDIS_URL", &redis_url),
            ("REDIS_KEY_PREFIX", &namespace.prefix),
            ("RATE_LIMIT_SUBMIT", "100/minute"),
            ("RATE_LIMIT_CENTER_SUBMIT", "4/minute"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
            ("CLIENT_IP_HEADER", "X-Forwarded-For"),
        ],
    );
    register(&replicas[0], "HVC").await;
    register(&replicas[1], "CVN").await;
    let submit = |replica: &Replica, code: &str, address: usize| {
        client()
            .post(replica.url("/kpi/submit"))
            .header("X-API-Key", MASTER_KEY)
            .header("X-Forwarded-For", format!("198.51.100.{address}"))
            .json(&batch(code))
            .send()
    };

    // The registration was the first of HVC's 4 writes.
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(
            submit(&replicas[(i + 1) % 2], "HVC", i)
                .await
                .unwrap()
                .status(),
        );
    }
    let fifth = submit(&replicas[0], "HVC", 10).await.unwrap();
    let sixth = submit(&replicas[1], "HVC", 11).await.unwrap();
    let other_center = submit(&replicas[0], "CVN", 12).await.unwrap();

    assert_eq!(statuses, [StatusCode::CREATED; 3]);
    assert_eq!(fifth.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sixth.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = header(&fifth, "retry-after").unwrap().parse().unwrap();
    assert!((1..=15).contains(&retry_after), "{retry_after}");
    assert_eq!(other_center.status(), StatusCode::CREATED);
    let refused = metrics_text(&replicas[0]).await;
    assert!(
        refused.contains(r#"kpi_rate_limited_total{group="center_submit"} 1"#),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_throttle_counts_across_replicas() {
    let Some((db, namespace)) = postgres_and_redis().await else {
        return;
    };
    let redis_url = namespace.url.clone();
    let replicas = two_replicas(
        &db,
        &[
            ("REDIS_URL", &redis_url),
            ("REDIS_KEY_PREFIX", &namespace.prefix),
            ("RATE_LIMIT_SUBMIT", "100/minute"),
        ],
    );
    register(&replicas[0], "HVC").await;
    let submit = |replica: &Replica, key: &str| {
        client()
            .post(replica.url("/kpi/submit"))
            .header("X-API-Key", key)
            .json(&batch("HVC"))
            .send()
    };

    let mut statuses = Vec::new();
    for i in 0..MAX_FAILURES as usize {
        let wrong_key = format!("wrong-key-{i}");
        statuses.push(submit(&replicas[i % 2], &wrong_key).await.unwrap().status());
    }
    let next_wrong = submit(&replicas[0], "wrong-key-next").await.unwrap();
    let right_key = submit(&replicas[1], MASTER_KEY).await.unwrap();
    let dashboard = client()
        .get(replicas[0].url("/kpi/centers"))
        .basic_auth(DASHBOARD_USER, Some(DASHBOARD_PASSWORD))
        .send()
        .await
        .unwrap();

    assert_eq!(
        statuses,
        vec![StatusCode::UNAUTHORIZED; MAX_FAILURES as usize]
    );
    assert_eq!(next_wrong.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        right_key.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the address is blocked on the other replica too"
    );
    let retry_after: u64 = header(&right_key, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(dashboard.status(), StatusCode::TOO_MANY_REQUESTS);
    let logs = format!("{}{}", replicas[0].log(), replicas[1].log());
    let warnings = logs
        .matches("too many failed authentication attempts")
        .count();
    assert_eq!(warnings, 1, "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_event_counts_once() {
    let Some((db, namespace)) = postgres_and_redis().await else {
        return;
    };
    let redis_url = namespace.url.clone();
    let replicas = two_replicas(
        &db,
        &[
            ("REDIS_URL", &redis_url),
            ("REDIS_KEY_PREFIX", &namespace.prefix),
            ("RATE_LIMIT_EVENTS", "100/minute"),
            ("RATE_LIMIT_SUBMIT", "100/minute"),
        ],
    );
    register(&replicas[0], "HVC").await;
    let mut with_body_id = order_event("HVC");
    with_body_id["event_id"] = json!("order-58213");
    let with_header_id = || {
        client()
            .post(replicas[1].url("/kpi/events"))
            .header("X-API-Key", MASTER_KEY)
            .header("Idempotency-Key", "order-58214")
            .json(&order_event("HVC"))
    };

    let first = post_event(&replicas[0], &with_body_id).await;
    let retried = post_event(&replicas[1], &with_body_id).await;
    let header_first = with_header_id().send().await.unwrap();
    let header_retried = client()
        .post(replicas[0].url("/kpi/events"))
        .header("X-API-Key", MASTER_KEY)
        .header("Idempotency-Key", "order-58214")
        .json(&order_event("HVC"))
        .send()
        .await
        .unwrap();

    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&first, "idempotent-replayed"), None);
    assert_eq!(retried.status(), StatusCode::ACCEPTED);
    assert_eq!(
        header(&retried, "idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(header_first.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&header_first, "idempotent-replayed"), None);
    assert_eq!(header_retried.status(), StatusCode::ACCEPTED);
    assert_eq!(
        header(&header_retried, "idempotent-replayed").as_deref(),
        Some("true")
    );
    let (_, first_body) = common::read(first).await;
    let (_, retried_body) = common::read(retried).await;
    assert_eq!(
        first_body, retried_body,
        "the repeat gets the first response"
    );
    assert_eq!(stored_orders(&db, "HVC").await, 2);
    let receipts = db.scalar("SELECT COUNT(*) FROM event_receipts", &[]).await;
    assert_eq!(receipts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_keeps_ingesting() {
    let Some(_) = common::postgres_url() else {
        return;
    };
    let db = TestDb::create(Backend::Postgres).await;
    let port = free_port();
    let mut redis = OwnRedis::start(port);
    let redis_url = redis.url();
    let replicas = two_replicas(
        &db,
        &[
            ("REDIS_URL", &redis_url),
            ("RATE_LIMIT_EVENTS", "6/minute"),
            ("RATE_LIMIT_CENTER_EVENTS", "1000/minute"),
            ("RATE_LIMIT_SUBMIT", "100/minute"),
        ],
    );
    register(&replicas[0], "HVC").await;
    let before = [
        post_event(&replicas[0], &order_event("HVC")).await.status(),
        post_event(&replicas[1], &order_event("HVC")).await.status(),
    ];
    let (ready_before, ready_body_before) = readiness(&replicas[0]).await;

    redis.kill();
    // Each replica counted one event in process, so it allows 5 more of 6.
    let mut during = [Vec::new(), Vec::new()];
    let mut slowest = Duration::ZERO;
    for (index, replica) in replicas.iter().enumerate() {
        for _ in 0..6 {
            let started = Instant::now();
            let status = post_event(replica, &order_event("HVC")).await.status();
            slowest = slowest.max(started.elapsed());
            during[index].push(status);
        }
    }
    let (ready_during, ready_body_during) = readiness(&replicas[0]).await;
    let metrics = metrics_text(&replicas[0]).await;

    assert_eq!(before, [StatusCode::ACCEPTED; 2]);
    assert_eq!(ready_before, StatusCode::OK);
    assert_eq!(
        ready_body_before["checks"],
        json!({"database": "ok", "redis": "ok"})
    );
    let mut expected = vec![StatusCode::ACCEPTED; 5];
    expected.push(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(during[0], expected, "replica 0 falls back to its own limit");
    assert_eq!(during[1], expected, "replica 1 falls back to its own limit");
    assert!(
        slowest < Duration::from_secs(2),
        "slowest event {slowest:?}"
    );
    assert_eq!(stored_orders(&db, "HVC").await, 12);
    assert_eq!(
        ready_during,
        StatusCode::OK,
        "Redis down leaves the service ready"
    );
    assert_eq!(ready_body_during["status"], "ready");
    assert_eq!(
        ready_body_during["checks"],
        json!({"database": "ok", "redis": "error"})
    );
    assert!(
        metric_sum(&metrics, "kpi_redis_errors_total") >= 1.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "kpi_redis_up"), Some(0.0), "{metrics}");
    let log = replicas[0].log();
    assert_eq!(log.matches("Redis call failed").count(), 1, "{log}");

    // A Redis that comes back is used again; its state starts empty.
    let _restarted = OwnRedis::start(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut recovered = Value::Null;
    while Instant::now() < deadline {
        let (_, body) = readiness(&replicas[0]).await;
        recovered = body["checks"]["redis"].clone();
        if recovered == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = post_event(&replicas[0], &order_event("HVC")).await;

    assert_eq!(recovered, "ok");
    assert_eq!(after.status(), StatusCode::ACCEPTED);
    assert_eq!(
        header(&after, "x-ratelimit-remaining").as_deref(),
        Some("5"),
        "Redis decides again, from an empty state"
    );
    assert!(
        replicas[0].log().contains("Redis is reachable again"),
        "{}",
        replicas[0].log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_migrate_once() {
    let Some(_) = common::postgres_url() else {
        return;
    };
    let migrations_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
    let migrations = std::fs::read_dir(migrations_dir)
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".sql")
        })
        .count() as i64;
    // Three rounds, each on a fresh database, make a lost race likelier to show.
    for round in 0..3 {
        let db = TestDb::create(Backend::Postgres).await;
        let mut replicas = [Replica::spawn(db.url(), &[]), Replica::spawn(db.url(), &[])];
        for replica in &mut replicas {
            replica.wait_until_up();
        }

        let rows = db
            .rows(
                "SELECT CAST(version AS BIGINT), CAST(success AS TEXT) FROM _sqlx_migrations ORDER BY version",
                &[],
            )
            .await;
        let distinct = db
            .scalar("SELECT COUNT(DISTINCT version) FROM _sqlx_migrations", &[])
            .await;
        let ready_first = readiness(&replicas[0]).await;
        let ready_second = readiness(&replicas[1]).await;

        assert_eq!(rows.len() as i64, migrations, "round {round}: {rows:?}");
        assert_eq!(distinct, migrations, "round {round}: each version once");
        for row in &rows {
            assert_eq!(row[1], "true", "round {round}: {row:?}");
        }
        assert_eq!(
            ready_first.0,
            StatusCode::OK,
            "round {round}: {ready_first:?}"
        );
        assert_eq!(
            ready_second.0,
            StatusCode::OK,
            "round {round}: {ready_second:?}"
        );
        assert_eq!(ready_first.1["checks"], json!({"database": "ok"}));
        let applied = format!("{}{}", replicas[0].log(), replicas[1].log());
        assert!(!applied.contains("ERROR"), "round {round}: {applied}");
    }
}
