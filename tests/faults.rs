//! Fault injection tests. On PostgreSQL: backends terminated under load, a
//! database that is unreachable or silent for seconds behind a proxy of the
//! test's own, and connections lost without a reset. On both backends: a
//! pool far smaller than the load. On SQLite: writers next to dashboard reads.
//!
//! Every response must be a 2xx or a 503 problem document with
//! `Retry-After`, and it must arrive before the client's timeout, which is
//! the service's request timeout plus a margin. The tests keep a ledger of
//! acknowledged requests and compare it with the tables: each acknowledged
//! event counts exactly once, and each acknowledged day contains the whole
//! of one batch. Events carry an `event_id`, so a retry of an event whose
//! first attempt was stored after all must count nothing.
//!
//! The PostgreSQL tests return at once without `TEST_POSTGRES_URL`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proxy::TcpProxy;
use common::{day, Backend, TestApp, TestDb, DASHBOARD_PASSWORD, DASHBOARD_USER};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

/// The service's `REQUEST_TIMEOUT` in these tests, in seconds.
const REQUEST_TIMEOUT: &str = "5";
/// How long a client waits for a response before it counts the request as
/// hung: the request timeout plus a margin of 3 seconds.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a client keeps retrying a request that got no 2xx.
const RETRY_WINDOW: Duration = Duration::from_secs(15);
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// A quota that no test here reaches, so that no request gets 429.
const NO_LIMIT: &str = "1000000/second";
const CENTER: &str = "HVC";
const CENTER_NAME: &str = "Central";

/// Returns the settings of every test here: no rate limits, a short request
/// timeout and the given pool.
fn fault_settings<'a>(pool_size: &'a str, acquire_timeout: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("RATE_LIMIT_SUBMIT", NO_LIMIT),
        ("RATE_LIMIT_EVENTS", NO_LIMIT),
        ("RATE_LIMIT_DASHBOARD", NO_LIMIT),
        ("RATE_LIMIT_CENTER_SUBMIT", NO_LIMIT),
        ("RATE_LIMIT_CENTER_EVENTS", NO_LIMIT),
        ("REQUEST_TIMEOUT", REQUEST_TIMEOUT),
        ("DATABASE_POOL_SIZE", pool_size),
        ("DATABASE_ACQUIRE_TIMEOUT", acquire_timeout),
    ]
}

// ---------------------------------------------------------------------------
// Outcomes of requests and their verdicts

/// The outcome of one request, as the client saw it.
#[derive(Debug)]
enum Outcome {
    Response {
        status: StatusCode,
        content_type: Option<String>,
        retry_after: Option<String>,
        body: Value,
        elapsed: Duration,
    },
    /// No response within [`CLIENT_TIMEOUT`].
    Hung,
    /// The connection to the service failed.
    Failed(String),
}

/// Sends a request, waiting at most [`CLIENT_TIMEOUT`] for the whole response.
async fn send(request: RequestBuilder) -> Outcome {
    let started = Instant::now();
    let response = match request.timeout(CLIENT_TIMEOUT).send().await {
        Ok(response) => response,
        Err(err) if err.is_timeout() => return Outcome::Hung,
        Err(err) => return Outcome::Failed(err.to_string()),
    };
    let status = response.status();
    let header = |name: reqwest::header::HeaderName| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap_or("(not text)").to_owned())
    };
    let content_type = header(reqwest::header::CONTENT_TYPE);
    let retry_after = header(reqwest::header::RETRY_AFTER);
    let text = match response.text().await {
        Ok(text) => text,
        Err(err) if err.is_timeout() => return Outcome::Hung,
        Err(err) => return Outcome::Failed(format!("reading the body failed: {err}")),
    };
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Outcome::Response {
        status,
        content_type,
        retry_after,
        body,
        elapsed: started.elapsed(),
    }
}

enum Verdict {
    Acknowledged(Value),
    /// A 503 problem document with `Retry-After`: the client may retry.
    Unavailable(Value),
    /// Anything else, described.
    Violation(String),
}

/// Judges an outcome against the rule that every request gets a 2xx or a
/// well-formed 503 in time.
fn judge(outcome: Outcome) -> Verdict {
    let (status, content_type, retry_after, body) = match outcome {
        Outcome::Hung => {
            return Verdict::Violation(format!("no response within {CLIENT_TIMEOUT:?}"));
        }
        Outcome::Failed(err) => return Verdict::Violation(format!("request failed: {err}")),
        Outcome::Response {
            status,
            content_type,
            retry_after,
            body,
            ..
        } => (status, content_type, retry_after, body),
    };
    if status.is_success() {
        return Verdict::Acknowledged(body);
    }
    if status != StatusCode::SERVICE_UNAVAILABLE {
        return Verdict::Violation(format!("status {status}, body {body}"));
    }
    if content_type.as_deref() != Some("application/problem+json") {
        return Verdict::Violation(format!("503 with content type {content_type:?}: {body}"));
    }
    if body["status"] != json!(503) || !body["detail"].is_string() {
        return Verdict::Violation(format!("503 with a malformed problem document: {body}"));
    }
    match retry_after.as_deref().map(str::parse::<u64>) {
        Some(Ok(_)) => Verdict::Unavailable(body),
        _ => Verdict::Violation(format!("503 with Retry-After {retry_after:?}: {body}")),
    }
}

/// Counts the verdicts of a test's requests and keeps the violations.
#[derive(Default)]
struct Tally {
    acknowledged: u64,
    unavailable: u64,
    violations: Vec<String>,
    slowest: Duration,
}

impl Tally {
    /// Judges and counts one outcome. `label` names the request in a violation.
    fn record(&mut self, label: &str, outcome: Outcome) -> Verdict {
        if let Outcome::Response { elapsed, .. } = &outcome {
            self.slowest = self.slowest.max(*elapsed);
        }
        let verdict = judge(outcome);
        match &verdict {
            Verdict::Acknowledged(_) => self.acknowledged += 1,
            Verdict::Unavailable(_) => self.unavailable += 1,
            Verdict::Violation(description) => {
                self.violations.push(format!("{label}: {description}"));
            }
        }
        verdict
    }

    /// Describes the counts, with the first five violations.
    fn summary(&self) -> String {
        let mut summary = format!(
            "{} acknowledged, {} got 503, {} violations, slowest response {:?}",
            self.acknowledged,
            self.unavailable,
            self.violations.len(),
            self.slowest
        );
        for violation in self.violations.iter().take(5) {
            summary.push_str("\n  ");
            summary.push_str(violation);
        }
        summary
    }

    fn assert_no_violations(&self) {
        let first_violations: Vec<&str> = self
            .violations
            .iter()
            .take(20)
            .map(String::as_str)
            .collect();
        assert!(
            self.violations.is_empty(),
            "{} requests got neither a 2xx nor a 503 problem document with Retry-After in time; the first ones:\n{}",
            self.violations.len(),
            first_violations.join("\n")
        );
    }
}

type SharedTally = Arc<Mutex<Tally>>;

/// Moves the value out of a shared cell, so that no lock is held across an await.
fn take<T: Default>(shared: &Arc<Mutex<T>>) -> T {
    std::mem::take(&mut *shared.lock().unwrap())
}

/// Sends a request built by `build` until it gets a 2xx, pausing between
/// attempts, for at most [`RETRY_WINDOW`]. Returns the acknowledged body, or
/// `None` after recording that the request was never acknowledged.
async fn send_until_acknowledged(
    build: impl Fn() -> RequestBuilder,
    tally: &SharedTally,
    label: &str,
) -> Option<Value> {
    let started = Instant::now();
    loop {
        let outcome = send(build()).await;
        let verdict = tally.lock().unwrap().record(label, outcome);
        if let Verdict::Acknowledged(body) = verdict {
            return Some(body);
        }
        if started.elapsed() > RETRY_WINDOW {
            tally.lock().unwrap().violations.push(format!(
                "{label}: not acknowledged within {RETRY_WINDOW:?} of retries"
            ));
            return None;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

// ---------------------------------------------------------------------------
// Requests

/// The service as a client sees it: its address and the center's key.
#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    base_url: String,
    key: String,
}

impl Target {
    fn new(app: &TestApp, key: String) -> Target {
        Target {
            client: reqwest::Client::new(),
            base_url: app.base_url.clone(),
            key,
        }
    }

    /// Builds an event request. With `id_in_header`, the event id goes in the
    /// `Idempotency-Key` header instead of the body's `event_id`.
    fn event(&self, event: &OrderEvent, date: &str, id_in_header: bool) -> RequestBuilder {
        let mut body = json!({
            "center_code": CENTER,
            "event_type": "order_created",
            "timestamp": format!("{date}T12:00:00Z"),
            "data": {"tests": event.tests, "species": event.species, "breed": event.breed},
        });
        let request = self
            .client
            .post(format!("{}/kpi/events", self.base_url))
            .header("X-API-Key", &self.key);
        if id_in_header {
            request.header("Idempotency-Key", &event.id).json(&body)
        } else {
            body["event_id"] = json!(event.id);
            request.json(&body)
        }
    }

    fn batch(&self, batch: &Batch, date: &str) -> RequestBuilder {
        self.client
            .post(format!("{}/kpi/submit", self.base_url))
            .header("X-API-Key", &self.key)
            .json(&batch.body(date))
    }

    fn dashboard_get(&self, path: &str) -> RequestBuilder {
        self.client
            .get(format!("{}{path}", self.base_url))
            .basic_auth(DASHBOARD_USER, Some(DASHBOARD_PASSWORD))
    }
}

/// An `order_created` event with known tests, species and breed.
#[derive(Debug, Clone)]
struct OrderEvent {
    id: String,
    tests: Vec<&'static str>,
    species: &'static str,
    breed: Option<&'static str>,
}

impl OrderEvent {
    /// Builds the event numbered `n`. The number picks its details, so that
    /// the day's summaries get several rows of different counts.
    fn new(id: String, n: usize) -> OrderEvent {
        let tests = match n % 3 {
            0 => vec!["GLU"],
            1 => vec!["GLU", "BUN"],
            _ => vec!["CRE", "BUN", "BUN"],
        };
        OrderEvent {
            id,
            tests,
            species: if n.is_multiple_of(2) {
                "Canino"
            } else {
                "Felino"
            },
            breed: n.is_multiple_of(4).then_some("Mestizo"),
        }
    }
}

/// The `n`th version of a day's batch. Each version has totals and list
/// rows of its own, so a row left over from another version shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batch {
    version: i64,
}

impl Batch {
    fn body(&self, date: &str) -> Value {
        let v = self.version;
        json!({
            "center_code": CENTER,
            "date": date,
            "total_orders": 100 + v,
            "total_results": 200 + v,
            "total_pets": 300 + v,
            "total_owners": 400 + v,
            "tests": [
                {"code": "GLU", "name": "Glucosa", "count": v},
                {"code": format!("T{v}"), "name": null, "count": 1},
            ],
            "species": [{"species": "Canino", "count": v}],
            "breeds": [{"breed": format!("Breed {v}"), "species": "Canino", "count": v}],
        })
    }

    /// Returns what a day contains after this batch.
    fn expected_day(&self) -> DaySnapshot {
        let v = self.version;
        DaySnapshot {
            totals: Some([100 + v, 200 + v, 300 + v, 400 + v]),
            tests: BTreeMap::from([("GLU".to_owned(), v), (format!("T{v}"), 1)]),
            species: BTreeMap::from([("Canino".to_owned(), v)]),
            breeds: BTreeMap::from([((format!("Breed {v}"), "Canino".to_owned()), v)]),
        }
    }
}

// ---------------------------------------------------------------------------
// The ledger and the tables

/// The contents of the center's day: the four totals, and the count of each
/// test code, species and (breed, species).
#[derive(Debug, Default, PartialEq, Eq)]
struct DaySnapshot {
    totals: Option<[i64; 4]>,
    tests: BTreeMap<String, i64>,
    species: BTreeMap<String, i64>,
    breeds: BTreeMap<(String, String), i64>,
}

impl DaySnapshot {
    /// Reads the center's day from the tables.
    async fn read(app: &TestApp, date: &str) -> DaySnapshot {
        let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        let count = |value: &Value| value.as_i64().expect("integer count");

        let tests = app
            .day_rows("test_summaries", "test_code, count", CENTER, date)
            .await;
        let species = app
            .day_rows("species_summaries", "species, count", CENTER, date)
            .await;
        let breeds = app
            .day_rows("breed_summaries", "breed, species, count", CENTER, date)
            .await;

        let mut snapshot = DaySnapshot {
            totals: app.day_totals(CENTER, date).await,
            ..DaySnapshot::default()
        };
        // A doubled row would add to the count of its key, so it still shows.
        for row in &tests {
            *snapshot.tests.entry(text(&row[0])).or_default() += count(&row[1]);
        }
        for row in &species {
            *snapshot.species.entry(text(&row[0])).or_default() += count(&row[1]);
        }
        for row in &breeds {
            let key = (text(&row[0]), text(&row[1]));
            *snapshot.breeds.entry(key).or_default() += count(&row[2]);
        }

        assert_eq!(
            (
                snapshot.tests.len(),
                snapshot.species.len(),
                snapshot.breeds.len()
            ),
            (tests.len(), species.len(), breeds.len()),
            "the day {date} has more than one row for a test code, species or breed"
        );
        snapshot
    }

    /// Returns what a day contains after the given events, on a day without a batch.
    fn after_events<'a>(events: impl IntoIterator<Item = &'a OrderEvent>) -> DaySnapshot {
        let mut snapshot = DaySnapshot::default();
        let mut orders = 0;
        for event in events {
            orders += 1;
            for code in &event.tests {
                *snapshot.tests.entry((*code).to_owned()).or_default() += 1;
            }
            *snapshot
                .species
                .entry(event.species.to_owned())
                .or_default() += 1;
            if let Some(breed) = event.breed {
                let key = (breed.to_owned(), event.species.to_owned());
                *snapshot.breeds.entry(key).or_default() += 1;
            }
        }
        if orders > 0 {
            snapshot.totals = Some([orders, 0, 0, 0]);
        }
        snapshot
    }
}

/// The requests that got a 2xx: events by id, and the last acknowledged
/// batch of each day.
#[derive(Default)]
struct Ledger {
    events: BTreeMap<String, OrderEvent>,
    batches: BTreeMap<String, Batch>,
}

type SharedLedger = Arc<Mutex<Ledger>>;

/// Checks the tables against the ledger: the events' day counts each
/// acknowledged event once, and each batch day contains its last batch whole.
async fn assert_ledger_stored(app: &TestApp, ledger: &Ledger, events_date: &str) {
    let stored = DaySnapshot::read(app, events_date).await;
    let expected = DaySnapshot::after_events(ledger.events.values());
    assert_eq!(
        stored,
        expected,
        "the events' day {events_date} does not count each of the {} acknowledged events exactly once",
        ledger.events.len()
    );
    for (date, batch) in &ledger.batches {
        let stored = DaySnapshot::read(app, date).await;
        assert_eq!(
            stored,
            batch.expected_day(),
            "the day {date} does not contain its last acknowledged batch, version {}",
            batch.version
        );
    }
}

// ---------------------------------------------------------------------------
// Load with retries

/// Event senders running at once during a fault.
const EVENT_WORKERS: usize = 6;
/// The maximum number of events one worker sends, so that load stays bounded.
const EVENTS_PER_WORKER: usize = 60;
const EVENT_PAUSE: Duration = Duration::from_millis(40);
/// The days that batches replace. Events count on today instead.
const BATCH_DAYS: [i64; 3] = [-1, -2, -3];
/// The maximum number of batch versions sent per day.
const BATCH_VERSIONS: i64 = 20;
const BATCH_PAUSE: Duration = Duration::from_millis(60);

/// Sends events and batches, each retried until acknowledged, until `stop`
/// is set or the caps are reached, and writes the acknowledged ones into the
/// ledger. A worker whose request is never acknowledged stops.
async fn run_load(
    target: Target,
    stop: Arc<AtomicBool>,
    ledger: SharedLedger,
    tally: SharedTally,
    id_in_header: bool,
) {
    let events_date = day(0);
    let mut workers = Vec::new();
    for worker in 0..EVENT_WORKERS {
        let (target, stop, ledger, tally) =
            (target.clone(), stop.clone(), ledger.clone(), tally.clone());
        let date = events_date.clone();
        workers.push(tokio::spawn(async move {
            for n in 0..EVENTS_PER_WORKER {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let event = OrderEvent::new(format!("w{worker}-e{n}"), worker + n);
                let label = format!("event {}", event.id);
                let build = || target.event(&event, &date, id_in_header);
                let Some(body) = send_until_acknowledged(build, &tally, &label).await else {
                    break;
                };
                let expected = json!({"message": "Event processed successfully",
                    "event_type": "order_created", "center": CENTER_NAME, "date": date});
                if body != expected {
                    let violation = format!("{label}: acknowledged with {body}");
                    tally.lock().unwrap().violations.push(violation);
                }
                ledger
                    .lock()
                    .unwrap()
                    .events
                    .insert(event.id.clone(), event);
                tokio::time::sleep(EVENT_PAUSE).await;
            }
        }));
    }
    workers.push(tokio::spawn(async move {
        'versions: for version in 1..=BATCH_VERSIONS {
            for offset in BATCH_DAYS {
                if stop.load(Ordering::Relaxed) {
                    break 'versions;
                }
                let date = day(offset);
                let batch = Batch { version };
                let label = format!("batch {version} of {date}");
                let build = || target.batch(&batch, &date);
                if send_until_acknowledged(build, &tally, &label)
                    .await
                    .is_none()
                {
                    break 'versions;
                }
                ledger.lock().unwrap().batches.insert(date, batch);
                tokio::time::sleep(BATCH_PAUSE).await;
            }
        }
    }));
    for worker in workers {
        worker.await.expect("load worker panicked");
    }
}

/// Checks that the service works again once the database is back:
/// `/health/ready` returns 200 within five seconds, then one event and one
/// batch are each acknowledged at the first attempt. Returns the problems
/// found, and writes the acknowledged requests into the ledger.
async fn probe_recovery(
    target: &Target,
    ledger: &SharedLedger,
    tally: &SharedTally,
) -> Vec<String> {
    let mut problems = Vec::new();
    let started = Instant::now();
    loop {
        let readiness = target
            .client
            .get(format!("{}/health/ready", target.base_url));
        let outcome = send(readiness).await;
        match outcome {
            Outcome::Response { status, .. } if status == StatusCode::OK => break,
            _ if started.elapsed() > Duration::from_secs(5) => {
                problems.push(format!("/health/ready after 5 seconds: {outcome:?}"));
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }

    let event = OrderEvent::new("after-recovery".to_owned(), 0);
    let outcome = send(target.event(&event, &day(0), false)).await;
    let verdict = tally
        .lock()
        .unwrap()
        .record("event after-recovery", outcome);
    match verdict {
        Verdict::Acknowledged(_) => {
            ledger
                .lock()
                .unwrap()
                .events
                .insert(event.id.clone(), event);
        }
        Verdict::Unavailable(body) => problems.push(format!("event after-recovery: 503 {body}")),
        Verdict::Violation(description) => {
            problems.push(format!("event after-recovery: {description}"));
        }
    }

    let date = day(BATCH_DAYS[0]);
    let batch = Batch { version: 1000 };
    let outcome = send(target.batch(&batch, &date)).await;
    let verdict = tally
        .lock()
        .unwrap()
        .record("batch after-recovery", outcome);
    match verdict {
        Verdict::Acknowledged(_) => {
            ledger.lock().unwrap().batches.insert(date, batch);
        }
        Verdict::Unavailable(body) => problems.push(format!("batch after-recovery: 503 {body}")),
        Verdict::Violation(description) => {
            problems.push(format!("batch after-recovery: {description}"));
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// PostgreSQL helpers

/// Returns the server address in a PostgreSQL URL, resolved.
async fn postgres_address(url: &str) -> SocketAddr {
    let options: PgConnectOptions = url.parse().expect("valid PostgreSQL URL");
    let mut addresses = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .expect("resolve the PostgreSQL host");
    addresses
        .next()
        .expect("the PostgreSQL host has an address")
}

/// Replaces the host and port of a PostgreSQL URL with 127.0.0.1 and `port`.
fn url_through_proxy(url: &str, port: u16) -> String {
    let authority_start = url.find("://").expect("URL with a scheme") + 3;
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let user_info = authority.rfind('@').map_or("", |at| &authority[..=at]);
    format!(
        "{}{user_info}127.0.0.1:{port}{}",
        &url[..authority_start],
        &rest[authority_end..]
    )
}

/// Starts the service on a new database, connected through a proxy that the
/// test controls. The returned app's `db` connects directly.
async fn spawn_behind_proxy(backend: Backend) -> (TcpProxy, TestApp) {
    let db = TestDb::create(backend).await;
    let proxy = TcpProxy::start(postgres_address(db.url()).await).await;
    let service_url = url_through_proxy(db.url(), proxy.port());
    let mut settings = fault_settings("10", "2");
    settings.push(("DATABASE_URL", &service_url));
    let app = TestApp::spawn_on(db, &settings).await;
    (proxy, app)
}

/// Terminates every backend connected to `database` (the test's own) except
/// the admin connection itself, `rounds` times with `pause` before each.
/// Returns how many backends were terminated.
async fn terminate_backends(admin_url: &str, database: &str, rounds: u32, pause: Duration) -> u64 {
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("admin connection to PostgreSQL");
    let mut terminated = 0;
    for _ in 0..rounds {
        tokio::time::sleep(pause).await;
        let results: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(database)
        .fetch_all(&mut admin)
        .await
        .expect("terminate backends");
        terminated += results.iter().filter(|done| **done).count() as u64;
    }
    terminated
}

// ---------------------------------------------------------------------------
// Tests

/// Terminates the service's PostgreSQL connections again and again while
/// events and batches arrive.
#[test]
fn postgres_backends_terminated_mid_load() {
    common::run(Backend::Postgres, |backend| async move {
        let settings = fault_settings("10", "2");
        let app = TestApp::spawn_with(backend, &settings).await;
        let key = app.center_with_key(CENTER, CENTER_NAME).await;
        let TestDb::Postgres {
            admin_url, name, ..
        } = &app.db
        else {
            unreachable!("a PostgreSQL test database");
        };
        let target = Target::new(&app, key);
        let ledger = SharedLedger::default();
        let tally = SharedTally::default();
        let stop = Arc::new(AtomicBool::new(false));

        let load = run_load(
            target.clone(),
            stop.clone(),
            ledger.clone(),
            tally.clone(),
            false,
        );
        let killer = async {
            let terminated =
                terminate_backends(admin_url, name, 12, Duration::from_millis(200)).await;
            stop.store(true, Ordering::Relaxed);
            terminated
        };
        let ((), terminated) = tokio::join!(load, killer);
        let recovery_problems = probe_recovery(&target, &ledger, &tally).await;

        let tally = take(&tally);
        let ledger = take(&ledger);
        eprintln!(
            "backends terminated: {terminated}; requests: {}",
            tally.summary()
        );
        assert!(
            terminated > 0,
            "no backend of the test database was terminated"
        );
        assert!(
            recovery_problems.is_empty(),
            "the service did not recover once the database was back:\n{}",
            recovery_problems.join("\n")
        );
        tally.assert_no_violations();
        assert_ledger_stored(&app, &ledger, &day(0)).await;
    });
}

/// Makes the database unreachable twice, for 3 and then 1.5 seconds, by
/// closing the proxy that the service's pool connects through.
#[test]
fn postgres_unreachable_then_back() {
    common::run(Backend::Postgres, |backend| async move {
        let (proxy, app) = spawn_behind_proxy(backend).await;
        let key = app.center_with_key(CENTER, CENTER_NAME).await;
        let target = Target::new(&app, key);
        let ledger = SharedLedger::default();
        let tally = SharedTally::default();
        let stop = Arc::new(AtomicBool::new(false));

        let load = run_load(
            target.clone(),
            stop.clone(),
            ledger.clone(),
            tally.clone(),
            true,
        );
        let outages = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            proxy.close();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let readiness = send(
                target
                    .client
                    .get(format!("{}/health/ready", target.base_url)),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            proxy.reopen().await;
            tokio::time::sleep(Duration::from_millis(1000)).await;
            proxy.close();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            proxy.reopen().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            stop.store(true, Ordering::Relaxed);
            readiness
        };
        let ((), readiness) = tokio::join!(load, outages);
        let recovery_problems = probe_recovery(&target, &ledger, &tally).await;

        let tally = take(&tally);
        let ledger = take(&ledger);
        eprintln!("requests: {}", tally.summary());
        let Outcome::Response { status, body, .. } = readiness else {
            panic!("/health/ready during the outage: {readiness:?}");
        };
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["checks"]["database"], json!("error"), "{body}");
        assert!(
            tally.unavailable > 0,
            "no request got 503 while the database was unreachable"
        );
        assert!(
            recovery_problems.is_empty(),
            "the service did not recover once the database was back:\n{}",
            recovery_problems.join("\n")
        );
        tally.assert_no_violations();
        assert_ledger_stored(&app, &ledger, &day(0)).await;
    });
}

/// Stops delivering any byte between the service and the database for 6
/// seconds, longer than the request timeout, with connections left open,
/// then delivers everything held.
#[test]
fn postgres_unresponsive_then_back() {
    common::run(Backend::Postgres, |backend| async move {
        let (proxy, app) = spawn_behind_proxy(backend).await;
        let key = app.center_with_key(CENTER, CENTER_NAME).await;
        let target = Target::new(&app, key);
        let ledger = SharedLedger::default();
        let tally = SharedTally::default();
        let stop = Arc::new(AtomicBool::new(false));

        let load = run_load(
            target.clone(),
            stop.clone(),
            ledger.clone(),
            tally.clone(),
            false,
        );
        let stall = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            proxy.stall();
            tokio::time::sleep(Duration::from_secs(6)).await;
            proxy.resume();
            tokio::time::sleep(Duration::from_millis(500)).await;
            stop.store(true, Ordering::Relaxed);
        };
        tokio::join!(load, stall);
        let recovery_problems = probe_recovery(&target, &ledger, &tally).await;

        let tally = take(&tally);
        let ledger = take(&ledger);
        eprintln!("requests: {}", tally.summary());
        assert!(
            tally.unavailable > 0,
            "no request got 503 while the database did not respond"
        );
        assert!(
            recovery_problems.is_empty(),
            "the service did not recover once the database was back:\n{}",
            recovery_problems.join("\n")
        );
        tally.assert_no_violations();
        assert_ledger_stored(&app, &ledger, &day(0)).await;
    });
}

/// Loses the service's database connections without a reset while an event
/// is being written: the database side closes, and the service's side stays
/// open and silent, as when a database host disappears. New connections
/// work, so the service must stop waiting on the lost ones and recover.
#[test]
fn postgres_connections_silently_lost() {
    common::run(Backend::Postgres, |backend| async move {
        let (proxy, app) = spawn_behind_proxy(backend).await;
        let key = app.center_with_key(CENTER, CENTER_NAME).await;
        let target = Target::new(&app, key);
        let ledger = SharedLedger::default();
        let tally = SharedTally::default();
        let date = day(0);

        // The lock keeps the event's transaction waiting inside PostgreSQL,
        // so that the connection is cut while the service awaits a reply.
        let lock = HeldLock::take(&app.db).await;
        let event = OrderEvent::new("in-flight".to_owned(), 0);
        let in_flight = tokio::spawn(send(target.event(&event, &date, false)));
        let TestDb::Postgres { name, .. } = &app.db else {
            unreachable!("a PostgreSQL test database");
        };
        wait_for_lock_waiter(&app.db, name).await;
        proxy.stall();
        proxy.cut_connections();
        lock.release().await;
        let outcome = in_flight.await.expect("request task panicked");
        tally.lock().unwrap().record("event in-flight", outcome);

        let recovery_problems = probe_recovery(&target, &ledger, &tally).await;
        // The cut transaction was rolled back, so the event's retry must count.
        let build = || target.event(&event, &date, false);
        if send_until_acknowledged(build, &tally, "event in-flight, retried")
            .await
            .is_some()
        {
            ledger
                .lock()
                .unwrap()
                .events
                .insert(event.id.clone(), event);
        }

        let tally = take(&tally);
        let ledger = take(&ledger);
        eprintln!("requests: {}", tally.summary());
        assert!(
            recovery_problems.is_empty(),
            "the service did not recover once the database was back:\n{}",
            recovery_problems.join("\n")
        );
        tally.assert_no_violations();
        assert_ledger_stored(&app, &ledger, &date).await;
    });
}

/// Waits until a backend of `database` waits for a lock, for at most five
/// seconds.
async fn wait_for_lock_waiter(db: &TestDb, database: &str) {
    let started = Instant::now();
    let sql =
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'";
    while db.scalar(sql, &[database.into()]).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no backend of {database} waits for the test's lock after 5 seconds"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Concurrent requests in the pool exhaustion test: three fifths events,
/// one fifth batches, one fifth dashboard reads.
const BURST: usize = 500;
/// How long the test blocks the service's writes at the start of the burst,
/// longer than the acquire timeout of 1 second.
const LOCK_HOLD: Duration = Duration::from_millis(2500);

/// A lock that the test holds on its own connection: on PostgreSQL an
/// exclusive lock of `daily_metrics`, which blocks reads and writes of it,
/// and on SQLite the write lock, which blocks every write.
enum HeldLock {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}

impl HeldLock {
    async fn take(db: &TestDb) -> HeldLock {
        match db {
            TestDb::Postgres { pool, .. } => {
                let mut transaction = pool.begin().await.expect("begin");
                sqlx::query("LOCK TABLE daily_metrics IN ACCESS EXCLUSIVE MODE")
                    .execute(&mut *transaction)
                    .await
                    .expect("lock daily_metrics");
                HeldLock::Postgres(transaction)
            }
            TestDb::Sqlite { pool, .. } => {
                let mut connection = pool.acquire().await.expect("SQLite connection");
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut *connection)
                    .await
                    .expect("take the SQLite write lock");
                HeldLock::Sqlite(connection)
            }
        }
    }

    async fn release(self) {
        match self {
            HeldLock::Postgres(transaction) => transaction.commit().await.expect("commit"),
            HeldLock::Sqlite(mut connection) => {
                sqlx::query("COMMIT")
                    .execute(&mut *connection)
                    .await
                    .expect("release the SQLite write lock");
            }
        }
    }
}

// Sends 500 requests at once to a service with a pool of 2 connections,
// while the test blocks the tables for 2.5 seconds, so that the pool stays
// exhausted for longer than the acquire timeout. SQLite gets a pool of 1:
// its writers queue in the service for one connection and its readers never
// wait for the write lock, so with 2 the reads could all get through.
both_backends!(pool_of_two_under_burst, |backend: Backend| async move {
    let pool_size = match backend {
        Backend::Postgres => "2",
        Backend::Sqlite => "1",
    };
    let settings = fault_settings(pool_size, "1");
    let app = TestApp::spawn_with(backend, &settings).await;
    let key = app.center_with_key(CENTER, CENTER_NAME).await;
    let target = Target::new(&app, key);
    let tally = SharedTally::default();
    let events_date = day(0);
    let lock = HeldLock::take(&app.db).await;
    let reads = [
        "/kpi/stats/summary?days=7",
        "/kpi/centers/HVC/metrics?days=7",
        "/?days=7",
    ];

    let mut requests = Vec::new();
    for n in 0..BURST {
        let (target, tally, date) = (target.clone(), tally.clone(), events_date.clone());
        requests.push(tokio::spawn(async move {
            let (label, request, event, batch) = match n % 5 {
                0..=2 => {
                    let event = OrderEvent::new(format!("burst-{n}"), n);
                    let request = target.event(&event, &date, false);
                    (format!("event {}", event.id), request, Some(event), None)
                }
                3 => {
                    let batch = Batch { version: n as i64 };
                    let date = day(BATCH_DAYS[n % BATCH_DAYS.len()]);
                    let request = target.batch(&batch, &date);
                    let label = format!("batch {n} of {date}");
                    (label, request, None, Some((date, batch)))
                }
                _ => {
                    let path = reads[n % reads.len()];
                    (
                        format!("GET {path}"),
                        target.dashboard_get(path),
                        None,
                        None,
                    )
                }
            };
            let outcome = send(request).await;
            let verdict = tally.lock().unwrap().record(&label, outcome);
            (matches!(verdict, Verdict::Acknowledged(_)), event, batch)
        }));
    }
    tokio::time::sleep(LOCK_HOLD).await;
    lock.release().await;
    let mut events = Vec::new();
    let mut batches: BTreeMap<String, Vec<(Batch, bool)>> = BTreeMap::new();
    for request in requests {
        let (acknowledged, event, batch) = request.await.expect("request task panicked");
        if let Some(event) = event {
            events.push((event, acknowledged));
        }
        if let Some((date, batch)) = batch {
            batches.entry(date).or_default().push((batch, acknowledged));
        }
    }
    let burst_summary = tally.lock().unwrap().summary();

    // Every event that got 503 is sent again with its id, so that all of
    // them are acknowledged and each must count once.
    for (event, acknowledged) in &events {
        if !acknowledged {
            let label = format!("retried event {}", event.id);
            let build = || target.event(event, &events_date, false);
            send_until_acknowledged(build, &tally, &label).await;
        }
    }

    let tally = take(&tally);
    eprintln!("burst: {burst_summary}; with retries: {}", tally.summary());
    assert!(
        tally.unavailable > 0,
        "no request got 503, so the pool was never exhausted"
    );
    tally.assert_no_violations();
    let stored = DaySnapshot::read(&app, &events_date).await;
    let expected = DaySnapshot::after_events(events.iter().map(|(event, _)| event));
    assert_eq!(
        stored,
        expected,
        "the events' day does not count each of the {} events once",
        events.len()
    );
    // Concurrent batches of one day have no order, and one that got 503
    // may still have been stored, so the day must contain one sent batch whole.
    for (date, sent) in &batches {
        let stored = DaySnapshot::read(&app, date).await;
        let acknowledged = sent
            .iter()
            .filter(|(_, acknowledged)| *acknowledged)
            .count();
        if acknowledged == 0 && stored == DaySnapshot::default() {
            continue;
        }
        assert!(
            sent.iter().any(|(batch, _)| batch.expected_day() == stored),
            "the day {date} contains no single batch of the {} sent: {stored:?}",
            sent.len()
        );
    }
});

/// SQLite writers running at once, each sending events in sequence.
const SQLITE_WRITERS: usize = 50;
const EVENTS_PER_WRITER: usize = 6;
/// The maximum number of dashboard reads, so that the reader stops even if the
/// writers hang.
const MAX_DASHBOARD_READS: usize = 200;

/// Fifty event writers on SQLite while a reader keeps loading the dashboard
/// and the summary: every request succeeds and every event counts.
#[test]
fn sqlite_writers_while_dashboard_reads() {
    common::run(Backend::Sqlite, |backend| async move {
        // The default pool: 10 connections, 5 seconds to acquire one.
        let settings = fault_settings("10", "5");
        let app = TestApp::spawn_with(backend, &settings).await;
        let key = app.center_with_key(CENTER, CENTER_NAME).await;
        let target = Target::new(&app, key);
        let tally = SharedTally::default();
        let date = day(0);
        let writers_done = Arc::new(AtomicBool::new(false));

        let reader = {
            let (target, tally, writers_done) =
                (target.clone(), tally.clone(), writers_done.clone());
            tokio::spawn(async move {
                let mut last_orders = 0;
                let mut reads = 0;
                while !writers_done.load(Ordering::Relaxed) && reads < MAX_DASHBOARD_READS {
                    let path = if reads.is_multiple_of(2) {
                        "/?days=7"
                    } else {
                        "/kpi/stats/summary?days=7"
                    };
                    reads += 1;
                    let outcome = send(target.dashboard_get(path)).await;
                    let label = format!("GET {path}");
                    let Outcome::Response { status, body, .. } = &outcome else {
                        tally.lock().unwrap().record(&label, outcome);
                        continue;
                    };
                    if *status != StatusCode::OK {
                        let violation = format!("{label}: status {status}, body {body}");
                        tally.lock().unwrap().violations.push(violation);
                        continue;
                    }
                    if let Some(orders) = body["total_orders"].as_i64() {
                        if orders < last_orders {
                            let violation = format!(
                                "{label}: total_orders fell from {last_orders} to {orders}"
                            );
                            tally.lock().unwrap().violations.push(violation);
                        }
                        last_orders = orders;
                    }
                    tally.lock().unwrap().record(&label, outcome);
                }
                reads
            })
        };

        let mut writers = Vec::new();
        for writer in 0..SQLITE_WRITERS {
            let (target, tally, date) = (target.clone(), tally.clone(), date.clone());
            writers.push(tokio::spawn(async move {
                let mut sent = Vec::new();
                for n in 0..EVENTS_PER_WRITER {
                    let event = OrderEvent::new(format!("writer{writer}-e{n}"), writer + n);
                    let outcome = send(target.event(&event, &date, false)).await;
                    let label = format!("event {}", event.id);
                    let verdict = tally.lock().unwrap().record(&label, outcome);
                    if let Verdict::Unavailable(_) = verdict {
                        let violation = format!("{label}: 503 on SQLite");
                        tally.lock().unwrap().violations.push(violation);
                    }
                    sent.push(event);
                }
                sent
            }));
        }
        let mut events = Vec::new();
        for writer in writers {
            events.extend(writer.await.expect("writer panicked"));
        }
        writers_done.store(true, Ordering::Relaxed);
        let reads = reader.await.expect("reader panicked");

        let tally = take(&tally);
        eprintln!("dashboard reads: {reads}; requests: {}", tally.summary());
        assert!(
            reads > 0,
            "the reader made no request while the writers ran"
        );
        tally.assert_no_violations();
        let stored = DaySnapshot::read(&app, &date).await;
        assert_eq!(
            stored,
            DaySnapshot::after_events(&events),
            "the day does not count each of the {} events once",
            events.len()
        );
    });
}
