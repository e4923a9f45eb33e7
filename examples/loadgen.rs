//! Load generator for the benchmark that `bench/run.sh` runs.
//!
//! `run` drives one scenario against a running service: N tasks, each with
//! its own HTTP client and so its own keep-alive connection, send requests
//! back to back for a warm-up and then for a measured duration. It prints
//! requests per second, p50 and p99 latency and the errors by status, and
//! appends the same figures as one JSON line to `--out`.
//!
//! `startup` starts the service, polls `GET /health/ready` every millisecond
//! and reports the time from process start to the first 200.
//! `report` prints the tables of a whole run from the JSON lines, with the
//! service/pgbench ratios and the targets.
//!
//! Run: `cargo run --release --example loadgen -- run --help`.
//! The write scenarios read the master key from `CENTER_API_KEY`; the
//! dashboard scenario reads `DASHBOARD_USERNAME` (default `admin`) and
//! `DASHBOARD_PASSWORD`.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Load generator and report for the KPI service benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drives one scenario at a fixed number of connections.
    Run(RunArgs),
    /// Starts the service and measures the time to the first ready probe.
    Startup(StartupArgs),
    /// Prints a free TCP port on 127.0.0.1.
    FreePort,
    /// Prints the body of a GET request, sent with the dashboard credentials.
    Fetch {
        #[arg(long)]
        url: String,
    },
    /// Prints the tables of a run from its JSON lines.
    Report {
        /// The JSON lines file that `run`, `startup` and `bench/run.sh` wrote.
        results: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// `POST /kpi/events`, a mix of the four event types.
    Events,
    /// `POST /kpi/submit` with a full day batch.
    Submit,
    /// `POST /kpi/submit/enhanced` with the same batch.
    SubmitEnhanced,
    /// `GET /health`.
    Health,
    /// `GET /` with the dashboard credentials.
    Dashboard,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Events => "events",
            Scenario::Submit => "submit",
            Scenario::SubmitEnhanced => "submit-enhanced",
            Scenario::Health => "health",
            Scenario::Dashboard => "dashboard",
        }
    }

    fn writes(self) -> bool {
        matches!(
            self,
            Scenario::Events | Scenario::Submit | Scenario::SubmitEnhanced
        )
    }
}

#[derive(Parser)]
struct RunArgs {
    /// Base URL of the service.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Concurrent connections, one task and one keep-alive connection each.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Measured duration in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Number of centers the writes are spread over (codes BENCH01, BENCH02, ...).
    #[arg(long, default_value_t = 8)]
    centers: usize,
    /// Number of days the events are spread over, ending today.
    #[arg(long, default_value_t = 30)]
    event_days: u64,
    /// Number of past days the batches cycle over, ending yesterday.
    #[arg(long, default_value_t = 365)]
    batch_days: u64,
    /// Send a unique `event_id` with each event.
    #[arg(long)]
    event_ids: bool,
    /// Seed of the generated bodies. Task i uses seed + i.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds before a request counts as a timeout error.
    #[arg(long, default_value_t = 10.0)]
    request_timeout: f64,
    /// Label of the service's database in the output, such as `postgres`.
    #[arg(long, default_value = "unknown")]
    backend: String,
    /// Process id of the service, to report the CPU time it used.
    #[arg(long)]
    service_pid: Option<u32>,
    /// PostgreSQL database of the service: the CPU time of other databases'
    /// client backends is left out of PostgreSQL's share.
    #[arg(long)]
    pg_database: Option<String>,
    /// File that the result is appended to, as one JSON line.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Parser)]
struct StartupArgs {
    /// The readiness URL to poll.
    #[arg(long, default_value = "http://127.0.0.1:8000/health/ready")]
    ready_url: String,
    /// Milliseconds between two polls.
    #[arg(long, default_value_t = 1)]
    interval_ms: u64,
    /// Seconds to wait for readiness before giving up.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// File that receives the service's stdout and stderr.
    #[arg(long)]
    log: PathBuf,
    /// Working directory of the service.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Leave the service running and write its process id to `--pid-file`.
    /// Without it, the service gets SIGTERM once it is ready.
    #[arg(long, requires = "pid_file")]
    keep: bool,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Label of the service's database in the output, such as `sqlite`.
    #[arg(long, default_value = "unknown")]
    backend: String,
    /// Label of the database state: `fresh` or `existing`.
    #[arg(long, default_value = "fresh")]
    database: String,
    /// File that the result is appended to, as one JSON line.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The service's command line, after `--`.
    #[arg(trailing_var_arg = true, required = true)]
    command: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Startup(args) => startup(args).await,
        Command::FreePort => free_port(),
        Command::Fetch { url } => fetch(&url).await,
        Command::Report { results } => report(&results),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("loadgen: {message}");
            ExitCode::FAILURE
        }
    }
}

fn free_port() -> Result<(), String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|err| format!("cannot bind a port on 127.0.0.1: {err}"))?;
    let address = listener
        .local_addr()
        .map_err(|err| format!("cannot read the bound address: {err}"))?;
    println!("{}", address.port());
    Ok(())
}

async fn fetch(url: &str) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|err| format!("cannot build the HTTP client: {err}"))?;
    let mut request = client.get(url);
    if let Ok(password) = std::env::var("DASHBOARD_PASSWORD") {
        let user = std::env::var("DASHBOARD_USERNAME").unwrap_or_else(|_| "admin".into());
        request = request.basic_auth(user, Some(password));
    }
    let response = request
        .send()
        .await
        .map_err(|err| format!("GET {url} failed: {err}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|err| format!("cannot read the body of GET {url}: {err}"))?;
    if !status.is_success() {
        return Err(format!("GET {url} returned {status}: {body}"));
    }
    print!("{body}");
    Ok(())
}

// ---------------------------------------------------------------------------
// Generated traffic

/// Test codes and names of a veterinary laboratory, for batches and orders.
const TESTS: [(&str, &str); 36] = [
    ("GLU", "Glucose"),
    ("BUN", "Blood urea nitrogen"),
    ("CREA", "Creatinine"),
    ("SDMA", "Symmetric dimethylarginine"),
    ("ALT", "Alanine aminotransferase"),
    ("AST", "Aspartate aminotransferase"),
    ("ALP", "Alkaline phosphatase"),
    ("GGT", "Gamma-glutamyl transferase"),
    ("TBIL", "Total bilirubin"),
    ("TP", "Total protein"),
    ("ALB", "Albumin"),
    ("GLOB", "Globulin"),
    ("CHOL", "Cholesterol"),
    ("TRIG", "Triglycerides"),
    ("CA", "Calcium"),
    ("PHOS", "Phosphorus"),
    ("NA", "Sodium"),
    ("K", "Potassium"),
    ("CL", "Chloride"),
    ("LIPA", "Lipase"),
    ("AMYL", "Amylase"),
    ("CK", "Creatine kinase"),
    ("FRU", "Fructosamine"),
    ("T4", "Total thyroxine"),
    ("CORT", "Cortisol"),
    ("HCT", "Hematocrit"),
    ("HGB", "Hemoglobin"),
    ("RBC", "Red blood cells"),
    ("WBC", "White blood cells"),
    ("PLT", "Platelets"),
    ("RETIC", "Reticulocytes"),
    ("UA", "Urinalysis"),
    ("UPC", "Urine protein:creatinine ratio"),
    ("FELV", "Feline leukemia virus antigen"),
    ("FIV", "Feline immunodeficiency virus antibody"),
    ("HW", "Heartworm antigen"),
];

/// Species and some of their breeds, as clinic software names them.
const SPECIES: [(&str, &[&str]); 3] = [
    (
        "Canino",
        &[
            "Labrador Retriever",
            "Pastor Alemán",
            "Golden Retriever",
            "Bulldog Francés",
            "Beagle",
            "Mestizo",
        ],
    ),
    ("Felino", &["Siamés", "Persa", "Maine Coon", "Mestizo"]),
    ("Exótico", &["Conejo", "Hurón", "Cobayo"]),
];

const MODULES: [&str; 4] = ["Laboratorio", "Consultas", "Farmacia", "Hospitalización"];
const PAYMENT_METHODS: [&str; 4] = ["Efectivo", "Tarjeta", "Transferencia", "Seguro"];

/// Clinic offset of event timestamps, as in the Dominican Republic.
const CLINIC_OFFSET: &str = "-04:00";

fn center_code(index: usize) -> String {
    format!("BENCH{:02}", index + 1)
}

/// Generator of one task's request bodies. The same seed gives the same bodies.
struct Traffic {
    rng: StdRng,
    task: usize,
    connections: usize,
    centers: usize,
    event_days: u64,
    batch_days: u64,
    /// Event ids are `{run_id}-{task}-{sequence}`, unique across runs.
    run_id: String,
    event_ids: bool,
    today: NaiveDate,
    sequence: u64,
}

impl Traffic {
    fn new(args: &RunArgs, task: usize, run_id: &str) -> Self {
        Self {
            rng: StdRng::seed_from_u64(args.seed.wrapping_add(task as u64)),
            task,
            connections: args.connections,
            centers: args.centers.max(1),
            event_days: args.event_days.max(1),
            batch_days: args.batch_days.max(1),
            run_id: run_id.to_owned(),
            event_ids: args.event_ids,
            today: Utc::now().date_naive(),
            sequence: 0,
        }
    }

    fn random_center(&mut self) -> String {
        center_code(self.rng.gen_range(0..self.centers))
    }

    fn days_ago(&self, days: u64) -> NaiveDate {
        self.today
            .checked_sub_days(Days::new(days))
            .unwrap_or(self.today)
    }

    /// Builds one event: half are orders with one to four tests, species
    /// and breed, the rest results, new pets and new owners.
    fn event(&mut self) -> Value {
        self.sequence += 1;
        let back = self.rng.gen_range(0..self.event_days);
        let day = self.days_ago(back);
        let timestamp = format!(
            "{day}T{:02}:{:02}:{:02}{CLINIC_OFFSET}",
            self.rng.gen_range(7..23),
            self.rng.gen_range(0..60),
            self.rng.gen_range(0..60),
        );
        let (species, breeds) = *SPECIES.choose(&mut self.rng).expect("SPECIES is not empty");
        let breed = *breeds
            .choose(&mut self.rng)
            .expect("every species has breeds");
        let roll = self.rng.gen_range(0..100);
        let (event_type, data) = if roll < 50 {
            let count = self.rng.gen_range(1..=4);
            let tests: Vec<&str> = TESTS
                .choose_multiple(&mut self.rng, count)
                .map(|(code, _)| *code)
                .collect();
            let data = json!({
                "order_id": self.rng.gen_range(1..10_000_000),
                "pet_id": self.rng.gen_range(1..1_000_000),
                "tests": tests,
                "test_count": count,
                "species": species,
                "breed": breed,
            });
            ("order_created", data)
        } else if roll < 80 {
            let data = json!({
                "result_id": self.rng.gen_range(1..10_000_000),
                "order_id": self.rng.gen_range(1..10_000_000),
            });
            ("result_created", data)
        } else if roll < 90 {
            let data = json!({
                "pet_id": self.rng.gen_range(1..1_000_000),
                "owner_id": self.rng.gen_range(1..1_000_000),
                "species": species,
                "breed": breed,
            });
            ("pet_created", data)
        } else {
            let data = json!({"owner_id": self.rng.gen_range(1..1_000_000)});
            ("owner_created", data)
        };
        let mut body = json!({
            "center_code": self.random_center(),
            "event_type": event_type,
            "timestamp": timestamp,
            "data": data,
        });
        if self.event_ids {
            body["event_id"] = json!(format!("{}-{}-{}", self.run_id, self.task, self.sequence));
        }
        body
    }

    /// Builds one day batch with every part: totals, 24 to 36 tests, the
    /// species and breeds, performance, modules, system usage and payment
    /// methods. Task i sends days i, i + N, i + 2N, ... before yesterday, so
    /// concurrent batches rarely meet on one day.
    fn batch(&mut self) -> Value {
        let day_index =
            (self.task as u64 + self.sequence * self.connections as u64) % self.batch_days;
        self.sequence += 1;
        let day = self.days_ago(day_index + 1);
        let orders: u32 = self.rng.gen_range(40..160);
        let (species, breeds) = self.batch_species_and_breeds();
        json!({
            "center_code": self.random_center(),
            "date": day,
            "total_orders": orders,
            "total_results": orders - self.rng.gen_range(0..10),
            "total_pets": self.rng.gen_range(20..90),
            "total_owners": self.rng.gen_range(15..70),
            "tests": self.batch_tests(),
            "species": species,
            "breeds": breeds,
            "performance": self.batch_performance(),
            "modules": self.batch_modules(),
            "system_usage": self.batch_system_usage(),
            "payment_methods": self.batch_payment_methods(),
        })
    }

    fn batch_tests(&mut self) -> Vec<Value> {
        let count = self.rng.gen_range(24..=TESTS.len());
        let chosen: Vec<(&str, &str)> = TESTS
            .choose_multiple(&mut self.rng, count)
            .copied()
            .collect();
        chosen
            .into_iter()
            .map(|(code, name)| {
                json!({"code": code, "name": name, "count": self.rng.gen_range(1..40)})
            })
            .collect()
    }

    fn batch_species_and_breeds(&mut self) -> (Vec<Value>, Vec<Value>) {
        let mut species = Vec::new();
        let mut breeds = Vec::new();
        for (name, breed_names) in SPECIES {
            species.push(json!({"species": name, "count": self.rng.gen_range(5..60)}));
            for breed in breed_names {
                let count = self.rng.gen_range(1..15);
                breeds.push(json!({"breed": breed, "species": name, "count": count}));
            }
        }
        (species, breeds)
    }

    fn batch_performance(&mut self) -> Value {
        json!({
            "avg_order_processing_time": self.rng.gen_range(20..300),
            "peak_hour": self.rng.gen_range(8..19),
            "peak_hour_orders": self.rng.gen_range(5..30),
            "completion_rate": self.rng.gen_range(70..=100),
            "same_day_completion": self.rng.gen_range(10..120),
            "morning_orders": self.rng.gen_range(10..60),
            "afternoon_orders": self.rng.gen_range(10..60),
            "evening_orders": self.rng.gen_range(0..30),
            "night_orders": self.rng.gen_range(0..8),
        })
    }

    fn batch_modules(&mut self) -> Vec<Value> {
        MODULES
            .iter()
            .map(|name| {
                json!({
                    "module_name": name,
                    "operations_count": self.rng.gen_range(10..400),
                    "active_users": self.rng.gen_range(1..12),
                    "total_revenue": self.rng.gen_range(10_000..2_000_000),
                    "avg_transaction": self.rng.gen_range(500..20_000),
                })
            })
            .collect()
    }

    fn batch_system_usage(&mut self) -> Value {
        json!({
            "total_active_users": self.rng.gen_range(2..15),
            "peak_concurrent_users": self.rng.gen_range(1..10),
            "avg_session_duration": self.rng.gen_range(15..240),
            "web_access_count": self.rng.gen_range(10..300),
            "mobile_access_count": self.rng.gen_range(0..80),
            "desktop_access_count": self.rng.gen_range(5..200),
            "total_workstations": self.rng.gen_range(1..10),
        })
    }

    fn batch_payment_methods(&mut self) -> Vec<Value> {
        PAYMENT_METHODS
            .iter()
            .map(|name| {
                json!({
                    "payment_method": name,
                    "transaction_count": self.rng.gen_range(1..120),
                    "total_amount": self.rng.gen_range(10_000..3_000_000),
                })
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Load

/// Credentials and endpoint of one scenario, shared by its tasks.
#[derive(Clone)]
struct Target {
    url: String,
    scenario: Scenario,
    api_key: Option<String>,
    dashboard: Option<(String, String)>,
    request_timeout: Duration,
}

/// Requests sent before `measure_from` or finished after `end` are not counted.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

/// Measurements of one task.
#[derive(Default)]
struct TaskResult {
    /// Latency of every HTTP response in the window, in nanoseconds.
    latencies: Vec<u64>,
    /// Latency of the 2xx responses only.
    ok_latencies: Vec<u64>,
    /// Failed requests by status code, or by `timeout`, `connect` or `transport`.
    errors: BTreeMap<String, u64>,
}

async fn run(args: RunArgs) -> Result<(), String> {
    if args.connections == 0 || args.duration <= 0.0 || args.warmup < 0.0 {
        return Err("--connections and --duration must be positive, --warmup at least 0".into());
    }
    let target = Target {
        url: args.url.trim_end_matches('/').to_owned(),
        scenario: args.scenario,
        api_key: std::env::var("CENTER_API_KEY").ok(),
        dashboard: std::env::var("DASHBOARD_PASSWORD").ok().map(|password| {
            let user = std::env::var("DASHBOARD_USERNAME").unwrap_or_else(|_| "admin".into());
            (user, password)
        }),
        request_timeout: Duration::from_secs_f64(args.request_timeout),
    };
    if args.scenario.writes() && target.api_key.is_none() {
        return Err("CENTER_API_KEY is not set; the write scenarios need the master key".into());
    }
    if args.scenario == Scenario::Dashboard && target.dashboard.is_none() {
        return Err("DASHBOARD_PASSWORD is not set; the dashboard scenario needs it".into());
    }
    if args.scenario.writes() {
        register_centers(&target, args.centers).await?;
    }

    let run_id = format!(
        "bench-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos())
            .unwrap_or_default()
    );
    let start = Instant::now();
    let window = Window {
        measure_from: start + Duration::from_secs_f64(args.warmup),
        end: start + Duration::from_secs_f64(args.warmup + args.duration),
    };
    let mut tasks = Vec::new();
    for task in 0..args.connections {
        let traffic = Traffic::new(&args, task, &run_id);
        tasks.push(tokio::spawn(drive(target.clone(), traffic, window)));
    }

    // CPU time is sampled at the window's edges, so it covers the measurement.
    tokio::time::sleep_until(window.measure_from.into()).await;
    let cpu_before = cpu_sample(args.service_pid, args.pg_database.as_deref());
    tokio::time::sleep_until(window.end.into()).await;
    let cpu_after = cpu_sample(args.service_pid, args.pg_database.as_deref());

    let mut total = TaskResult::default();
    for task in tasks {
        let result = task
            .await
            .map_err(|err| format!("load task failed: {err}"))?;
        total.latencies.extend(result.latencies);
        total.ok_latencies.extend(result.ok_latencies);
        for (kind, count) in result.errors {
            *total.errors.entry(kind).or_default() += count;
        }
    }
    let record = summarize(&args, total, cpu_before, cpu_after);
    println!("{}", load_line(&record));
    if let Some(path) = &args.out {
        append_line(path, &record)?;
    }
    Ok(())
}

/// Registers the benchmark centers with the master key, so that batches,
/// which need a registered center, find them.
async fn register_centers(target: &Target, centers: usize) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(target.request_timeout)
        .build()
        .map_err(|err| format!("cannot build the HTTP client: {err}"))?;
    let key = target.api_key.as_deref().unwrap_or_default();
    for index in 0..centers.max(1) {
        let code = center_code(index);
        let body = json!({
            "name": format!("Benchmark clinic {}", index + 1),
            "city": "Santo Domingo",
            "country": "República Dominicana",
        });
        let response = client
            .put(format!("{}/kpi/centers/{code}", target.url))
            .header("x-api-key", key)
            .json(&body)
            .send()
            .await
            .map_err(|err| format!("cannot register center {code}: {err}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(format!(
                "registering center {code} failed with {status}: {text}"
            ));
        }
    }
    Ok(())
}

/// Sends requests on one connection until the window ends.
async fn drive(target: Target, mut traffic: Traffic, window: Window) -> TaskResult {
    let mut result = TaskResult::default();
    let client = match reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(target.request_timeout)
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            eprintln!("cannot build the HTTP client: {err}");
            result.errors.insert("client".into(), 1);
            return result;
        }
    };
    loop {
        if Instant::now() >= window.end {
            break;
        }
        let request = build_request(&client, &target, &mut traffic);
        let sent = Instant::now();
        let outcome = match request.send().await {
            // The body is read in full, so that the connection can be reused.
            Ok(response) => {
                let status = response.status();
                match response.bytes().await {
                    Ok(_) => Ok(status),
                    Err(err) => Err(err),
                }
            }
            Err(err) => Err(err),
        };
        let done = Instant::now();
        if sent < window.measure_from || done > window.end {
            continue;
        }
        let nanos = u64::try_from((done - sent).as_nanos()).unwrap_or(u64::MAX);
        match outcome {
            Ok(status) => {
                result.latencies.push(nanos);
                if status.is_success() {
                    result.ok_latencies.push(nanos);
                } else {
                    *result
                        .errors
                        .entry(status.as_u16().to_string())
                        .or_default() += 1;
                }
            }
            Err(err) => {
                let kind = if err.is_timeout() {
                    "timeout"
                } else if err.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                *result.errors.entry(kind.into()).or_default() += 1;
            }
        }
    }
    result
}

fn build_request(
    client: &reqwest::Client,
    target: &Target,
    traffic: &mut Traffic,
) -> reqwest::RequestBuilder {
    let key = target.api_key.as_deref().unwrap_or_default();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{}{path}", target.url))
            .header("content-type", "application/json")
            .header("x-api-key", key)
            .body(body.to_string())
    };
    match target.scenario {
        Scenario::Events => post("/kpi/events", traffic.event()),
        Scenario::Submit => post("/kpi/submit", traffic.batch()),
        Scenario::SubmitEnhanced => post("/kpi/submit/enhanced", traffic.batch()),
        Scenario::Health => client.get(format!("{}/health", target.url)),
        Scenario::Dashboard => {
            let (user, password) = target.dashboard.clone().unwrap_or_default();
            client
                .get(format!("{}/", target.url))
                .basic_auth(user, Some(password))
        }
    }
}

/// Clock ticks of CPU time used so far by the service, by this process and
/// by the PostgreSQL processes that [`serves_database`] selects, and the
/// machine's busy and total ticks.
#[derive(Clone, Copy)]
struct CpuSample {
    service: Option<u64>,
    load: Option<u64>,
    postgres: u64,
    machine: Option<(u64, u64)>,
}

fn cpu_sample(service_pid: Option<u32>, pg_database: Option<&str>) -> CpuSample {
    CpuSample {
        service: service_pid.and_then(|pid| process_ticks(Path::new(&format!("/proc/{pid}")))),
        load: process_ticks(Path::new("/proc/self")),
        postgres: postgres_ticks(pg_database),
        machine: machine_ticks(),
    }
}

/// Reads a process's user and system clock ticks, fields 14 and 15 of
/// `/proc/PID/stat`. They include the threads that have ended.
fn process_ticks(pid_dir: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(pid_dir.join("stat")).ok()?;
    // The command name is in brackets and may contain spaces, so the fields
    // are counted from the last closing bracket, which ends field 2.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn process_name(pid_dir: &Path) -> Option<String> {
    let stat = std::fs::read_to_string(pid_dir.join("stat")).ok()?;
    let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
    Some(name.to_owned())
}

/// Tells whether a `postgres` process works for `database`. Client backends
/// of other databases do not, while the database's own backends and the
/// server's shared processes (WAL writer, checkpointer and so on) do.
/// PostgreSQL titles a client backend `postgres: CLUSTER: USER DATABASE HOST(PORT) STATE`.
fn serves_database(pid_dir: &Path, database: Option<&str>) -> bool {
    let Some(database) = database else {
        return true;
    };
    let title = std::fs::read(pid_dir.join("cmdline")).unwrap_or_default();
    let title = String::from_utf8_lossy(&title).replace('\0', " ");
    let words: Vec<&str> = title.split_whitespace().collect();
    let is_client = words
        .iter()
        .any(|word| word.contains('(') || *word == "[local]");
    !is_client || words.contains(&database)
}

/// Sums the clock ticks of the `postgres` processes that [`serves_database`]
/// selects. A backend that ended between two samples is missing from the
/// second, so the difference is an estimate.
fn postgres_ticks(database: Option<&str>) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let pid_dir = entry.path();
        if process_name(&pid_dir).as_deref() != Some("postgres")
            || !serves_database(&pid_dir, database)
        {
            continue;
        }
        total += process_ticks(&pid_dir).unwrap_or(0);
    }
    total
}

/// Reads the busy and total clock ticks of all CPUs from the `cpu` line of
/// `/proc/stat`. Idle, iowait and steal (time the hypervisor gave to other
/// guests) count as not busy.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // The fields are user, nice, system, idle, iowait, irq, softirq, steal,
    // then guest times that are already part of user and nice.
    let total: u64 = ticks.iter().take(8).sum();
    let not_busy = ticks.get(3)? + ticks.get(4).unwrap_or(&0) + ticks.get(7).unwrap_or(&0);
    Some((total - not_busy, total))
}

/// CPU use between two samples, in percent of one CPU, so that 2 busy CPUs
/// read 200.
struct CpuShares {
    service: Option<f64>,
    postgres: f64,
    load: Option<f64>,
    /// The rest of the machine's busy time: other programs and kernel
    /// threads. Without CONFIG_IRQ_TIME_ACCOUNTING, the kernel charges
    /// interrupt time to whichever process was running.
    other: f64,
    machine: f64,
}

fn cpu_shares(before: &CpuSample, after: &CpuSample) -> Option<CpuShares> {
    let (busy_before, total_before) = before.machine?;
    let (busy_after, total_after) = after.machine?;
    let total = total_after.checked_sub(total_before).filter(|&t| t > 0)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let percent = |ticks: u64| ticks as f64 / total as f64 * cpus as f64 * 100.0;
    let between =
        |before: Option<u64>, after: Option<u64>| Some(percent(after?.saturating_sub(before?)));
    let service = between(before.service, after.service);
    let load = between(before.load, after.load);
    let postgres = percent(after.postgres.saturating_sub(before.postgres));
    let machine = percent(busy_after.saturating_sub(busy_before));
    let explained = service.unwrap_or(0.0) + load.unwrap_or(0.0) + postgres;
    Some(CpuShares {
        service,
        postgres,
        load,
        other: (machine - explained).max(0.0),
        machine,
    })
}

/// Returns the nearest-rank percentile of sorted nanoseconds, in milliseconds.
fn percentile_ms(sorted: &[u64], fraction: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[index] as f64 / 1e6)
}

fn summarize(args: &RunArgs, mut total: TaskResult, before: CpuSample, after: CpuSample) -> Value {
    total.latencies.sort_unstable();
    total.ok_latencies.sort_unstable();
    let seconds = args.duration;
    let responses = total.latencies.len() as f64;
    let ok = total.ok_latencies.len() as f64;
    let error_count: u64 = total.errors.values().sum();

    let shares = cpu_shares(&before, &after);

    json!({
        "kind": "load",
        "backend": args.backend,
        "scenario": args.scenario.name(),
        "event_ids": args.event_ids && args.scenario == Scenario::Events,
        "connections": args.connections,
        "duration_s": seconds,
        "warmup_s": args.warmup,
        "centers": args.centers,
        "responses": total.latencies.len(),
        "ok": total.ok_latencies.len(),
        "rps": responses / seconds,
        "ok_rps": ok / seconds,
        "p50_ms": percentile_ms(&total.latencies, 0.50),
        "p99_ms": percentile_ms(&total.latencies, 0.99),
        "max_ms": percentile_ms(&total.latencies, 1.0),
        "ok_p50_ms": percentile_ms(&total.ok_latencies, 0.50),
        "ok_p99_ms": percentile_ms(&total.ok_latencies, 0.99),
        "error_count": error_count,
        "errors": total.errors,
        "service_cpu_percent": shares.as_ref().and_then(|s| s.service),
        "postgres_cpu_percent": shares.as_ref().map(|s| s.postgres),
        "loadgen_cpu_percent": shares.as_ref().and_then(|s| s.load),
        "other_cpu_percent": shares.as_ref().map(|s| s.other),
        "machine_cpu_percent": shares.as_ref().map(|s| s.machine),
        "service_vm_hwm_kib": args.service_pid.and_then(vm_hwm_kib),
    })
}

fn append_line(path: &Path, record: &Value) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|err| format!("cannot open {}: {err}", path.display()))?;
    writeln!(file, "{record}").map_err(|err| format!("cannot write {}: {err}", path.display()))
}

// ---------------------------------------------------------------------------
// Start-up time

async fn startup(args: StartupArgs) -> Result<(), String> {
    let log = std::fs::File::create(&args.log)
        .map_err(|err| format!("cannot create {}: {err}", args.log.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|err| format!("cannot open {} for stderr: {err}", args.log.display()))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|err| format!("cannot build the HTTP client: {err}"))?;
    let mut command = std::process::Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    if let Some(dir) = &args.dir {
        command.current_dir(dir);
    }

    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", args.command[0]))?;
    let deadline = started + Duration::from_secs(args.timeout);
    let interval = Duration::from_millis(args.interval_ms);
    let mut polls = 0u64;
    let ready_ms = loop {
        polls += 1;
        let ready = matches!(
            client.get(&args.ready_url).send().await,
            Ok(response) if response.status() == reqwest::StatusCode::OK
        );
        if ready {
            break started.elapsed().as_secs_f64() * 1e3;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the service exited with {status} before it was ready; see {}",
                args.log.display()
            ));
        }
        if Instant::now() >= deadline {
            stop(&mut child).await;
            return Err(format!(
                "the service was not ready within {} s; see {}",
                args.timeout,
                args.log.display()
            ));
        }
        tokio::time::sleep(interval).await;
    };
    let rss_kib = vm_hwm_kib(child.id());
    let record = json!({
        "kind": "startup",
        "backend": args.backend,
        "database": args.database,
        "ready_ms": ready_ms,
        "polls": polls,
        "vm_hwm_at_ready_kib": rss_kib,
    });
    println!(
        "{:<9} start, {:<8} database: ready after {ready_ms:.1} ms ({polls} polls)",
        args.backend, args.database
    );
    if let Some(path) = &args.out {
        append_line(path, &record)?;
    }
    if args.keep {
        if let Some(path) = &args.pid_file {
            std::fs::write(path, child.id().to_string())
                .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        }
    } else {
        stop(&mut child).await;
    }
    Ok(())
}

/// Reads the peak resident set size (`VmHWM`) of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Sends SIGTERM and waits up to 30 s for the service to stop, then kills it.
async fn stop(child: &mut Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "the service (pid {}) did not stop within 30 s of SIGTERM, so it gets SIGKILL",
        child.id()
    );
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------
// Report

/// Events at 8 connections reach at least this share of pgbench running the
/// same statements.
const TARGET_EVENTS_SHARE: f64 = 0.80;
/// p99 latency at 8 connections stays below this, in milliseconds.
const TARGET_P99_MS: f64 = 10.0;
/// Peak resident set size of the service stays below 50 MB (10^6 bytes).
const TARGET_RSS_BYTES: f64 = 50e6;
/// An SQLite service is ready this many milliseconds after it starts.
const TARGET_SQLITE_READY_MS: f64 = 200.0;

fn report(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path)
        .map_err(|err| format!("cannot open {}: {err}", path.display()))?;
    let mut records = Vec::new();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Value = serde_json::from_str(&line)
            .map_err(|err| format!("{}:{}: invalid JSON: {err}", path.display(), number + 1))?;
        records.push(record);
    }
    let of_kind =
        |kind: &str| -> Vec<&Value> { records.iter().filter(|r| r["kind"] == kind).collect() };
    let loads = of_kind("load");
    let pgbenches = of_kind("pgbench");
    let startups = of_kind("startup");
    let peaks = of_kind("rss");

    for info in of_kind("run") {
        println!(
            "Run {} of commit {}, {} s per scenario after {} s of warm-up",
            text(&info["date"]),
            text(&info["commit"]),
            text(&info["duration_s"]),
            text(&info["warmup_s"]),
        );
        println!(
            "{} CPUs ({}), {} KiB memory, kernel {}, PostgreSQL {}, {}; load average at start {}",
            text(&info["nproc"]),
            text(&info["cpu"]),
            text(&info["memory_kib"]),
            text(&info["kernel"]),
            text(&info["postgres"]),
            text(&info["rustc"]),
            text(&info["loadavg"]),
        );
    }
    println!();
    print_load_table(&loads);
    print_pgbench_table(&pgbenches);
    print_ratios(&loads, &pgbenches);
    print_start_and_memory(&startups, &peaks);
    print_targets(&loads, &pgbenches, &startups, &peaks);
    Ok(())
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn number(value: &Value) -> Option<f64> {
    value.as_f64()
}

fn fixed(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

fn scenario_label(record: &Value) -> String {
    let scenario = text(&record["scenario"]);
    if record["event_ids"] == true {
        format!("{scenario} (ids)")
    } else {
        scenario
    }
}

fn error_text(record: &Value) -> String {
    let count = record["error_count"].as_u64().unwrap_or(0);
    if count == 0 {
        return "0".into();
    }
    let parts: Vec<String> = record["errors"]
        .as_object()
        .map(|errors| {
            errors
                .iter()
                .map(|(kind, n)| format!("{kind}: {n}"))
                .collect()
        })
        .unwrap_or_default();
    format!("{count} ({})", parts.join(", "))
}

fn load_line(record: &Value) -> String {
    format!(
        "{:<9} {:<16} {:>5} {:>10} {:>10} {:>8} {:>8} {:>5} {:>5} {:>5} {:>5} {:>7}  {}",
        text(&record["backend"]),
        scenario_label(record),
        text(&record["connections"]),
        fixed(number(&record["rps"]), 1),
        fixed(number(&record["ok_rps"]), 1),
        fixed(number(&record["p50_ms"]), 2),
        fixed(number(&record["p99_ms"]), 2),
        fixed(number(&record["service_cpu_percent"]), 0),
        fixed(number(&record["postgres_cpu_percent"]), 0),
        fixed(number(&record["loadgen_cpu_percent"]), 0),
        fixed(number(&record["other_cpu_percent"]), 0),
        fixed(
            number(&record["service_vm_hwm_kib"]).map(|kib| kib * 1024.0 / 1e6),
            1
        ),
        error_text(record),
    )
}

fn print_load_table(loads: &[&Value]) {
    println!("Service under load. Latency is over every HTTP response. CPU is in % of one core:");
    println!("svc% the service, pg% PostgreSQL, load% the load client, oth% other programs,");
    println!("kernel threads and interrupts. peak MB is the service's VmHWM after the scenario.");
    println!(
        "{:<9} {:<16} {:>5} {:>10} {:>10} {:>8} {:>8} {:>5} {:>5} {:>5} {:>5} {:>7}  errors",
        "backend",
        "scenario",
        "conns",
        "req/s",
        "2xx/s",
        "p50 ms",
        "p99 ms",
        "svc%",
        "pg%",
        "load%",
        "oth%",
        "peak MB"
    );
    for record in loads {
        println!("{}", load_line(record));
    }
    println!();
}

fn print_pgbench_table(pgbenches: &[&Value]) {
    if pgbenches.is_empty() {
        return;
    }
    println!("pgbench, the service's statements directly on PostgreSQL (one event or batch per transaction)");
    println!(
        "{:<18} {:>7} {:>10} {:>8} {:>8} {:>8} {:>7}",
        "script", "clients", "tps", "avg ms", "p50 ms", "p99 ms", "failed"
    );
    for record in pgbenches {
        println!(
            "{:<18} {:>7} {:>10} {:>8} {:>8} {:>8} {:>7}",
            text(&record["script"]),
            text(&record["clients"]),
            fixed(number(&record["tps"]), 1),
            fixed(number(&record["latency_avg_ms"]), 2),
            fixed(number(&record["p50_ms"]), 2),
            fixed(number(&record["p99_ms"]), 2),
            text(&record["failed"]),
        );
    }
    println!();
}

fn find_load<'a>(
    loads: &[&'a Value],
    backend: &str,
    scenario: &str,
    event_ids: bool,
    connections: u64,
) -> Option<&'a Value> {
    loads.iter().copied().find(|r| {
        r["backend"] == backend
            && r["scenario"] == scenario
            && r["event_ids"] == event_ids
            && r["connections"].as_u64() == Some(connections)
    })
}

fn find_pgbench<'a>(pgbenches: &[&'a Value], script: &str, clients: u64) -> Option<&'a Value> {
    pgbenches
        .iter()
        .copied()
        .find(|r| r["script"] == script && r["clients"].as_u64() == Some(clients))
}

/// Pairs of a service scenario on PostgreSQL and the pgbench script it is
/// compared with.
const RATIO_PAIRS: [(&str, &str, bool, &str); 5] = [
    ("events", "events", false, "event"),
    ("events", "events", false, "event-no-sync"),
    ("events (ids)", "events", true, "event-receipt"),
    ("submit", "submit", false, "batch"),
    (
        "submit-enhanced",
        "submit-enhanced",
        false,
        "batch-enhanced",
    ),
];

fn connection_counts(loads: &[&Value]) -> Vec<u64> {
    let mut counts: Vec<u64> = loads
        .iter()
        .filter_map(|r| r["connections"].as_u64())
        .collect();
    counts.sort_unstable();
    counts.dedup();
    counts
}

fn print_ratios(loads: &[&Value], pgbenches: &[&Value]) {
    if pgbenches.is_empty() {
        return;
    }
    println!("Service on PostgreSQL / pgbench, 2xx per second over transactions per second");
    let counts = connection_counts(loads);
    let header: Vec<String> = counts.iter().map(|c| format!("{c:>8}")).collect();
    println!(
        "{:<36} {}",
        "service scenario / pgbench script",
        header.join(" ")
    );
    for (label, scenario, event_ids, script) in RATIO_PAIRS {
        let cells: Vec<String> = counts
            .iter()
            .map(|&count| {
                let service = find_load(loads, "postgres", scenario, event_ids, count)
                    .and_then(|r| number(&r["ok_rps"]));
                let pgbench =
                    find_pgbench(pgbenches, script, count).and_then(|r| number(&r["tps"]));
                let ratio = match (service, pgbench) {
                    (Some(s), Some(p)) if p > 0.0 => Some(s / p),
                    _ => None,
                };
                format!("{:>8}", fixed(ratio, 2))
            })
            .collect();
        println!("{:<36} {}", format!("{label} / {script}"), cells.join(" "));
    }
    println!();
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

fn ready_values(startups: &[&Value], backend: &str, database: &str) -> Vec<f64> {
    startups
        .iter()
        .filter(|r| r["backend"] == backend && r["database"] == database)
        .filter_map(|r| number(&r["ready_ms"]))
        .collect()
}

fn peak_rss(peaks: &[&Value], backend: &str) -> Option<f64> {
    peaks
        .iter()
        .find(|r| r["backend"] == backend)
        .and_then(|r| number(&r["vm_hwm_kib"]))
}

fn backends(startups: &[&Value], peaks: &[&Value]) -> Vec<String> {
    let mut names: Vec<String> = startups
        .iter()
        .chain(peaks)
        .map(|r| text(&r["backend"]))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn print_start_and_memory(startups: &[&Value], peaks: &[&Value]) {
    let names = backends(startups, peaks);
    if names.is_empty() {
        return;
    }
    println!("Start-up time from process start to the first 200 from /health/ready (median, then every start), and peak RSS");
    println!(
        "{:<9} {:>12} {:>12}  {:<26} {:<26}",
        "backend", "fresh ms", "existing ms", "fresh starts", "existing starts"
    );
    for backend in &names {
        let mut fresh = ready_values(startups, backend, "fresh");
        let mut existing = ready_values(startups, backend, "existing");
        let all = |values: &[f64]| {
            values
                .iter()
                .map(|v| format!("{v:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let (fresh_all, existing_all) = (all(&fresh), all(&existing));
        println!(
            "{:<9} {:>12} {:>12}  {:<26} {:<26}",
            backend,
            fixed(median(&mut fresh), 1),
            fixed(median(&mut existing), 1),
            fresh_all,
            existing_all,
        );
    }
    println!();
    println!("{:<9} {:>16} {:>12}", "backend", "peak RSS (KiB)", "MB");
    for backend in &names {
        let kib = peak_rss(peaks, backend);
        println!(
            "{:<9} {:>16} {:>12}",
            backend,
            fixed(kib, 0),
            fixed(kib.map(|k| k * 1024.0 / 1e6), 1)
        );
    }
    println!();
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    }
}

fn print_targets(loads: &[&Value], pgbenches: &[&Value], startups: &[&Value], peaks: &[&Value]) {
    println!("Targets");
    let service =
        find_load(loads, "postgres", "events", false, 8).and_then(|r| number(&r["ok_rps"]));
    let ceiling = find_pgbench(pgbenches, "event", 8).and_then(|r| number(&r["tps"]));
    let share = match (service, ceiling) {
        (Some(s), Some(c)) if c > 0.0 => Some(s / c),
        _ => None,
    };
    println!(
        "  events at 8 connections >= {:.0}% of pgbench (script event): {} -> {}",
        TARGET_EVENTS_SHARE * 100.0,
        share.map_or("-".into(), |s| format!("{:.0}%", s * 100.0)),
        verdict(share.map(|s| s >= TARGET_EVENTS_SHARE)),
    );
    for record in loads
        .iter()
        .filter(|r| r["connections"].as_u64() == Some(8))
    {
        let p99 = number(&record["p99_ms"]);
        let errors = record["error_count"].as_u64().unwrap_or(0);
        let note = if errors > 0 {
            format!(" ({errors} errors among the responses)")
        } else {
            String::new()
        };
        println!(
            "  p99 < {TARGET_P99_MS} ms at 8 connections, {} {}: {} ms -> {}{note}",
            text(&record["backend"]),
            scenario_label(record),
            fixed(p99, 2),
            verdict(p99.map(|p| p < TARGET_P99_MS)),
        );
    }
    for backend in backends(startups, peaks) {
        let bytes = peak_rss(peaks, &backend).map(|kib| kib * 1024.0);
        println!(
            "  peak RSS < 50 MB, {backend}: {} MB -> {}",
            fixed(bytes.map(|b| b / 1e6), 1),
            verdict(bytes.map(|b| b < TARGET_RSS_BYTES)),
        );
    }
    for database in ["fresh", "existing"] {
        let mut values = ready_values(startups, "sqlite", database);
        let worst = values.iter().copied().reduce(f64::max);
        let typical = median(&mut values);
        println!(
            "  ready < {TARGET_SQLITE_READY_MS} ms on SQLite, {database} database: median {} ms, slowest {} ms -> {}",
            fixed(typical, 1),
            fixed(worst, 1),
            verdict(worst.map(|w| w < TARGET_SQLITE_READY_MS)),
        );
    }
}
