//! The service behind PgBouncer, mostly in transaction mode, where the
//! pooler lends a server connection for one transaction at a time.
//!
//! Each test starts a `pgbouncer` of its own on a free port, in front of the
//! PostgreSQL server at `TEST_POSTGRES_URL`. In transaction mode it has two
//! server connections for the service's eight, so that transactions keep
//! changing server connections. PgBouncer does not run as root, so under
//! root it runs as `nobody`.
//!
//! Without `TEST_POSTGRES_URL`, or without PgBouncer installed, the tests
//! return at once with a notice. With `TEST_REQUIRE_PGBOUNCER=1`, which
//! `.ci/run` sets, a missing PgBouncer fails them instead.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::replica::{client, free_port, run_command, Replica};
use common::{day, Backend, TestDb, DASHBOARD_PASSWORD, DASHBOARD_USER, MASTER_KEY};
use futures::StreamExt;
use kpi_service::store::StoreError;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::migrate::MigrateError;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

const CENTERS: [&str; 4] = ["PB1", "PB2", "PB3", "PB4"];
/// Days of batches per center, from yesterday back.
const DAYS: usize = 6;
/// Event ids per center; each is sent twice.
const EVENT_IDS: usize = 25;
/// Reads per center.
const READS: usize = 24;
/// Requests in flight at once.
const IN_FLIGHT: usize = 16;

/// Finds the `pgbouncer` binary, or returns `None` after a notice.
fn pgbouncer_binary() -> Option<PathBuf> {
    let found = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists());
    if found.is_none() {
        assert!(
            std::env::var("TEST_REQUIRE_PGBOUNCER").as_deref() != Ok("1"),
            "TEST_REQUIRE_PGBOUNCER=1 but pgbouncer is not installed"
        );
        let _ = writeln!(
            std::io::stderr(),
            "NOTICE: PgBouncer tests skipped; install pgbouncer (apt-get install -y pgbouncer)"
        );
    }
    found
}

fn running_as_root() -> bool {
    let output = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

/// A PgBouncer of the test's own.
struct Bouncer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bouncer {
    /// Starts PgBouncer in `mode` (`transaction` or `session`) in front of
    /// the server that `server_url` names, with `servers` server connections
    /// per database. The rest of the configuration is PgBouncer's default.
    fn start(binary: &Path, server_url: &str, mode: &str, servers: u32) -> Bouncer {
        let server: PgConnectOptions = server_url.parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();

        let config = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &config,
            format!(
                "[databases]\n\
                 * = host={host} port={server_port} user={user}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = any\n\
                 pool_mode = {mode}\n\
                 default_pool_size = {servers}\n\
                 max_client_conn = 100\n",
                host = server.get_host(),
                server_port = server.get_port(),
                user = server.get_username(),
            ),
        )
        .unwrap();

        // The unprivileged user must read the configuration.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

        let log = dir.path().join("pgbouncer.log");
        let output = std::fs::File::create(&log).unwrap();
        let mut command = if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "nobody", "--"]).arg(binary);
            command
        } else {
            Command::new(binary)
        };
        let child = command
            .arg(&config)
            .stdout(Stdio::from(output.try_clone().unwrap()))
            .stderr(Stdio::from(output))
            .spawn()
            .unwrap();

        let mut bouncer = Bouncer {
            child,
            port,
            log,
            _dir: dir,
        };
        bouncer.wait_until_up();
        bouncer
    }

    fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("pgbouncer exited with {status}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "pgbouncer did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Returns the URL of `db` through this pooler.
    fn url(&self, db: &TestDb) -> String {
        let TestDb::Postgres { name, .. } = db else {
            panic!("PgBouncer serves PostgreSQL only");
        };
        let server: PgConnectOptions = db.url().parse().unwrap();
        format!(
            "postgres://{}@127.0.0.1:{}/{name}",
            server.get_username(),
            self.port
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        // Under runuser the child is runuser, which passes the signal on.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Creates a database and starts a PgBouncer in front of its server, or
/// returns `None` when the tests are skipped.
async fn database_and_bouncer(mode: &str, servers: u32) -> Option<(TestDb, Bouncer)> {
    let server_url = common::postgres_url()?;
    let binary = pgbouncer_binary()?;
    let db = TestDb::create(Backend::Postgres).await;
    let bouncer = Bouncer::start(&binary, &server_url, mode, servers);
    Some((db, bouncer))
}

/// Settings of a service behind the pooler, with limits out of the way.
fn service_vars<'a>(db: &'a TestDb, pooler: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DATABASE_DIRECT_URL", db.url()),
        ("DATABASE_TRANSACTION_POOLER", pooler),
        ("DATABASE_POOL_SIZE", "8"),
        ("RATE_LIMIT_SUBMIT", "100000/minute"),
        ("RATE_LIMIT_EVENTS", "100000/minute"),
        ("RATE_LIMIT_DASHBOARD", "100000/minute"),
        ("RATE_LIMIT_HEALTH", "100000/minute"),
    ]
}

fn orders_on(day_offset: i64) -> i64 {
    10 - day_offset
}

/// Sends request `index` of the mixed load and returns its method, path and status.
async fn send(replica: &Replica, index: usize) -> (String, StatusCode) {
    let http = client();
    let center = CENTERS[index % CENTERS.len()];
    let step = index / CENTERS.len();
    let request = if step < DAYS {
        // Batches for days -1 to -DAYS.
        let offset = -(step as i64) - 1;
        let body = json!({"center_code": center, "date": day(offset),
                              "total_orders": orders_on(offset), "tests": [{"code": "GLU", "count": 2}],
                              "species": [{"species": "Canino", "count": 3}]});
        http.post(replica.url("/kpi/submit"))
            .header("X-API-Key", MASTER_KEY)
            .json(&body)
    } else if step < DAYS + 2 * EVENT_IDS {
        // Each event id twice, on today.
        let id = (step - DAYS) % EVENT_IDS;
        let body = json!({"center_code": center, "event_type": "order_created",
                              "timestamp": format!("{}T10:00:00Z", day(0)), "data": {},
                              "event_id": format!("{center}-{id}")});
        http.post(replica.url("/kpi/events"))
            .header("X-API-Key", MASTER_KEY)
            .json(&body)
    } else {
        // Every read, while the writes run.
        let path = match step % 6 {
            0 => "/".to_owned(),
            1 => "/export.csv".to_owned(),
            2 => "/kpi/centers".to_owned(),
            3 => "/kpi/stats/summary".to_owned(),
            4 => format!("/kpi/centers/{center}/metrics"),
            _ => "/health/ready".to_owned(),
        };
        http.get(replica.url(&path))
            .basic_auth(DASHBOARD_USER, Some(DASHBOARD_PASSWORD))
    };
    let request = request.build().unwrap();
    let label = format!("{} {}", request.method(), request.url().path());
    let status = http.execute(request).await.unwrap().status();
    (label, status)
}

/// Registers the centers, then sends batches, repeated events and reads
/// together, `IN_FLIGHT` at a time. Returns every request with its status.
async fn mixed_load(replica: &Replica) -> Vec<(String, StatusCode)> {
    let mut answers = Vec::new();
    for code in CENTERS {
        let status = replica.register(code).await;
        answers.push((format!("PUT /kpi/centers/{code}"), status));
    }
    let requests = CENTERS.len() * (DAYS + 2 * EVENT_IDS + READS);
    // Stepping by a prime mixes batches, events and reads in one order
    // that every run repeats.
    let load = futures::stream::iter(0..requests)
        .map(|n| send(replica, n * 7919 % requests))
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    answers.extend(load);
    answers
}

/// Connects to PgBouncer at `url` without the start-up parameter that
/// PgBouncer rejects by default.
async fn pooler_connection(url: &str) -> PgConnection {
    let options: PgConnectOptions = url.parse().unwrap();
    PgConnection::connect_with(&options.extra_float_digits(None))
        .await
        .unwrap()
}

async fn center_orders(db: &TestDb, code: &str, date: &str) -> i64 {
    db.scalar(
        "SELECT COALESCE(SUM(d.total_orders), 0) FROM daily_metrics d \
         JOIN centers c ON c.id = d.center_id WHERE c.code = $1 AND d.date = $2::date",
        &[code.into(), date.into()],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_works_behind_transaction_pooler() {
    let Some((db, bouncer)) = database_and_bouncer("transaction", 2).await else {
        return;
    };
    let pooled = bouncer.url(&db);
    let vars = service_vars(&db, "true");
    let replica = Replica::start(&pooled, &vars);

    let answers = mixed_load(&replica).await;

    let failed: Vec<_> = answers
        .iter()
        .filter(|(_, status)| !status.is_success())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, such as {:?}: {}",
        failed.len(),
        answers.len(),
        failed.first(),
        replica.log()
    );
    for code in CENTERS {
        for offset in 1..=DAYS as i64 {
            let orders = center_orders(&db, code, &day(-offset)).await;
            assert_eq!(orders, orders_on(-offset), "{code} on day -{offset}");
        }
        let events = center_orders(&db, code, &day(0)).await;
        assert_eq!(events, EVENT_IDS as i64, "{code}: each event id once");
    }

    // Deleting a center's data is one transaction through the pooler too.
    let response = client()
        .delete(replica.url("/kpi/centers/PB4/data"))
        .header("X-API-Key", MASTER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", replica.log());
    let left = db
        .scalar(
            "SELECT COUNT(*) FROM daily_metrics d JOIN centers c ON c.id = d.center_id \
             WHERE c.code = 'PB4'",
            &[],
        )
        .await;
    assert_eq!(left, 0);

    // The command line reaches the database through the same settings.
    let added = run_command(&pooled, &vars, &["centers", "add", "PB5", "--name", "Five"]);
    assert!(added.status.success(), "{added:?}");
    let listed = run_command(&pooled, &vars, &["centers", "list"]);
    assert!(listed.status.success(), "{listed:?}");
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listing.contains("PB1") && listing.contains("PB5"),
        "{listing}"
    );
    assert!(!replica.log().contains("storage operation failed"));
}

/// Starts the service through a PgBouncer in transaction mode with
/// `servers` server connections, and returns its log once it has exited
/// with a failure. With `direct_through_pooler`, the pooler setting is on
/// and `DATABASE_DIRECT_URL` leads to the pooler too.
async fn failed_start_up(servers: u32, direct_through_pooler: bool) -> Option<String> {
    let (db, bouncer) = database_and_bouncer("transaction", servers).await?;
    let pooled = bouncer.url(&db);
    let mut vars = service_vars(
        &db,
        if direct_through_pooler {
            "true"
        } else {
            "false"
        },
    );
    if direct_through_pooler {
        vars.retain(|(name, _)| *name != "DATABASE_DIRECT_URL");
        vars.push(("DATABASE_DIRECT_URL", &pooled));
    }
    let mut replica = Replica::spawn(&pooled, &vars);

    let status = replica.wait_for_exit();

    assert!(!status.success(), "{}", replica.log());
    Some(replica.log())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_rejects_transaction_pooler() {
    for servers in [2, 1] {
        let Some(log) = failed_start_up(servers, false).await else {
            return;
        };

        assert!(
            log.contains("DATABASE_URL leads to a pooler in transaction mode"),
            "{servers} server connections: {log}"
        );
        assert!(
            log.contains("set DATABASE_TRANSACTION_POOLER=true"),
            "{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_rejects_direct_url_through_pooler() {
    let Some(log) = failed_start_up(2, true).await else {
        return;
    };

    assert!(
        log.contains("DATABASE_DIRECT_URL leads to a pooler in transaction mode"),
        "{log}"
    );
    assert!(log.contains("point it at PostgreSQL itself"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pooler_needs_no_setting() {
    // PgBouncer's default configuration: it rejects start-up parameters it
    // does not know, such as the `extra_float_digits` that sqlx sends by
    // default. In session mode each of the service's connections
    // keeps a server connection, so the pooler needs one for each.
    let Some((db, bouncer)) = database_and_bouncer("session", 12).await else {
        return;
    };
    let replica = Replica::start(&bouncer.url(&db), &service_vars(&db, "false"));

    let answers = mixed_load(&replica).await;

    let failed = answers.iter().filter(|(_, s)| !s.is_success()).count();
    assert_eq!(failed, 0, "{}", replica.log());
}

#[tokio::test]
async fn lost_prepared_statements_name_the_setting() {
    // The errors that a transaction pooler causes at run time carry the
    // hint, and other errors do not. All three come from the real server.
    let Some(server_url) = common::postgres_url() else {
        return;
    };
    let mut connection = PgConnection::connect(&server_url).await.unwrap();
    let missing = sqlx::raw_sql("EXECUTE kpi_missing_statement")
        .execute(&mut connection)
        .await
        .unwrap_err();
    let duplicate = sqlx::raw_sql("PREPARE kpi_twice AS SELECT 1; PREPARE kpi_twice AS SELECT 1")
        .execute(&mut connection)
        .await
        .unwrap_err();
    let other = sqlx::raw_sql("SELECT 1/0")
        .execute(&mut connection)
        .await
        .unwrap_err();

    for err in [missing, duplicate] {
        let err = StoreError::Database(err);
        let hint = err
            .pooler_hint()
            .unwrap_or_else(|| panic!("no hint for {err}"));
        assert!(hint.contains("DATABASE_TRANSACTION_POOLER=true"), "{hint}");
        let grouped = StoreError::Group(std::sync::Arc::new(err));
        assert!(grouped.pooler_hint().is_some());
    }
    let in_migration = sqlx::raw_sql("EXECUTE kpi_missing_statement")
        .execute(&mut connection)
        .await
        .unwrap_err();
    let in_migration = StoreError::Migration(MigrateError::ExecuteMigration(in_migration, 3));
    let hint = in_migration.pooler_hint().expect("a hint for a migration");
    assert!(hint.contains("DATABASE_DIRECT_URL"), "{hint}");
    assert_eq!(StoreError::Database(other).pooler_hint(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_requests_leave_no_transaction_open() {
    // Requests time out while their BEGIN waits in the pooler's queue behind
    // another client's transaction. A connection returned to the pool inside
    // a transaction that is never ended would keep the pooler's only server
    // connection from every client.
    let Some((db, bouncer)) = database_and_bouncer("transaction", 1).await else {
        return;
    };
    let pooled = bouncer.url(&db);
    let mut vars = service_vars(&db, "true");
    vars.push(("REQUEST_TIMEOUT", "1"));
    let replica = Replica::start(&pooled, &vars);
    assert_eq!(replica.register("PB1").await, StatusCode::OK);

    for round in 0..3 {
        let mut blocker = pooler_connection(&pooled).await;
        sqlx::raw_sql("BEGIN; SELECT 1")
            .execute(&mut blocker)
            .await
            .unwrap();
        let statuses = futures::future::join_all((0..8).map(|n| {
            let body = json!({"center_code": "PB1", "date": day(-1 - n), "total_orders": n});
            client()
                .post(replica.url("/kpi/submit"))
                .header("X-API-Key", MASTER_KEY)
                .json(&body)
                .send()
        }))
        .await;
        for status in statuses {
            assert_eq!(status.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        sqlx::raw_sql("COMMIT").execute(&mut blocker).await.unwrap();
        blocker.close().await.unwrap();

        // The pooler's one server connection must serve a new client soon.
        let mut probe = pooler_connection(&pooled).await;
        let served = tokio::time::timeout(
            Duration::from_secs(3),
            sqlx::raw_sql("SELECT 1").execute(&mut probe),
        )
        .await;
        assert!(
            matches!(served, Ok(Ok(_))),
            "round {round}: the server connection stayed taken: {}",
            replica.log()
        );
        assert_eq!(
            open_transactions_after(&db, Duration::from_secs(3)).await,
            0,
            "round {round}"
        );
    }
}

/// Counts the sessions idle in a transaction, waiting up to `wait` for them
/// to end. A queued BEGIN whose request timed out runs when the blocker
/// commits and is rolled back a moment later, so one look could catch it.
async fn open_transactions_after(db: &TestDb, wait: Duration) -> i64 {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let open = db
            .scalar(
                "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND state = 'idle in transaction'",
                &[],
            )
            .await;
        if open == 0 || tokio::time::Instant::now() >= deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
