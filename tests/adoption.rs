//! Adoption of a database that the Python service (release 2.0) created and
//! filled: the migrations keep every row, merge duplicate summary rows, hash
//! the plaintext keys and convert naive timestamps. PostgreSQL only, because
//! only the PostgreSQL migrations adopt existing tables (the SQLite schema
//! starts from an empty file).

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::{day, Backend, TestApp, TestDb};
use kpi_service::settings::DatabaseUrl;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// The old service's tables as SQLAlchemy creates them, with no unique
/// constraint on the summary tables. SQLAlchemy applies a column's `default=`
/// in Python and emits no `DEFAULT` clause for it.
// NOTE: the old models are not at hand. This assumes they used `default=`
// rather than `server_default=`, the case that leaves the most to adoption.
const OLD_SCHEMA: &str = "
CREATE TABLE centers (
    id SERIAL NOT NULL,
    code VARCHAR(50) NOT NULL,
    name VARCHAR(255) NOT NULL,
    api_key VARCHAR(255) NOT NULL,
    country VARCHAR(100),
    city VARCHAR(100),
    is_active INTEGER,
    registered_at TIMESTAMP WITHOUT TIME ZONE,
    last_sync_at TIMESTAMP WITHOUT TIME ZONE,
    PRIMARY KEY (id)
);
CREATE UNIQUE INDEX ix_centers_code ON centers (code);
CREATE INDEX ix_centers_id ON centers (id);

CREATE TABLE daily_metrics (
    id SERIAL NOT NULL,
    center_id INTEGER NOT NULL,
    date DATE NOT NULL,
    total_orders INTEGER,
    total_results INTEGER,
    total_pets INTEGER,
    total_owners INTEGER,
    created_at TIMESTAMP WITHOUT TIME ZONE,
    PRIMARY KEY (id),
    FOREIGN KEY (center_id) REFERENCES centers (id)
);

CREATE TABLE test_summaries (
    id SERIAL NOT NULL,
    center_id INTEGER NOT NULL,
    date DATE NOT NULL,
    test_code VARCHAR(50) NOT NULL,
    test_name VARCHAR(255),
    count INTEGER,
    PRIMARY KEY (id),
    FOREIGN KEY (center_id) REFERENCES centers (id)
);

CREATE TABLE species_summaries (
    id SERIAL NOT NULL,
    center_id INTEGER NOT NULL,
    date DATE NOT NULL,
    species VARCHAR(100) NOT NULL,
    count INTEGER,
    PRIMARY KEY (id),
    FOREIGN KEY (center_id) REFERENCES centers (id)
);

CREATE TABLE breed_summaries (
    id SERIAL NOT NULL,
    center_id INTEGER NOT NULL,
    date DATE NOT NULL,
    breed VARCHAR(255) NOT NULL,
    species VARCHAR(100),
    count INTEGER,
    PRIMARY KEY (id),
    FOREIGN KEY (center_id) REFERENCES centers (id)
);

CREATE TABLE performance_metrics (
    id SERIAL NOT NULL,
    center_id INTEGER NOT NULL,
    date DATE NOT NULL,
    avg_order_processing_time INTEGER,
    peak_hour INTEGER,
    peak_hour_orders INTEGER,
    completion_rate INTEGER,
    same_day_completion INTEGER,
    morning_orders INTEGER,
    afternoon_orders INTEGER,
    evening_orders INTEGER,
    night_orders INTEGER,
    created_at TIMESTAMP WITHOUT TIME ZONE,
    PRIMARY KEY (id),
    FOREIGN KEY (center_id) REFERENCES centers (id)
);

CREATE TABLE module_metrics (
    id SERIAL NOT NULL,
    center_id INTEGER NOT NULL,
    date DATE NOT NULL,
    module_name VARCHAR(100) NOT NULL,
    operations_count INTEGER,
    active_users INTEGER,
    total_revenue INTEGER,
    avg_transaction INTEGER,
    created_at TIMESTAMP WITHOUT TIME ZONE,
    PRIMARY KEY (id),
    FOREIGN KEY (center_id) REFERENCES centers (id)
);

CREATE TABLE system_usage_metrics (
    id SERIAL NOT NULL,
    center_id INTEGER NOT NULL,
    date DATE NOT NULL,
    total_active_users INTEGER,
    peak_concurrent_users INTEGER,
    avg_session_duration INTEGER,
    web_access_count INTEGER,
    mobile_access_count INTEGER,
    desktop_access_count INTEGER,
    total_workstations INTEGER,
    created_at TIMESTAMP WITHOUT TIME ZONE,
    PRIMARY KEY (id),
    FOREIGN KEY (center_id) REFERENCES centers (id)
);

CREATE TABLE payment_method_metrics (
    id SERIAL NOT NULL,
    center_id INTEGER NOT NULL,
    date DATE NOT NULL,
    payment_method VARCHAR(50) NOT NULL,
    transaction_count INTEGER,
    total_amount INTEGER,
    created_at TIMESTAMP WITHOUT TIME ZONE,
    PRIMARY KEY (id),
    FOREIGN KEY (center_id) REFERENCES centers (id)
);
";

/// The old centers: code, name, plaintext key, is_active. CVN's key is not
/// ASCII, so the digest must be taken over its UTF-8 bytes.
const OLD_CENTERS: [(&str, &str, &str, i32); 3] = [
    (
        "HVC",
        "Hospital Veterinario Central",
        "hvc-legacy-key-2023",
        1,
    ),
    (
        "CVN",
        "Clínica Veterinaria Norte",
        "cvn-clave-ñandú-2023",
        1,
    ),
    ("VSP", "Veterinaria San Pedro", "vsp-legacy-key-2022", 0),
];

/// The day of the duplicate rows.
const DAY: &str = "2025-01-14";

/// The old data. Rows of one key are listed oldest first, so ids grow in
/// list order. `{hvc}` and `{cvn}` are replaced by the centers' ids. One CVN
/// day row has NULL where a client bypassed the Python defaults.
const OLD_DATA: &str = "
INSERT INTO daily_metrics (center_id, date, total_orders, total_results, total_pets, total_owners, created_at)
VALUES ({hvc}, '2025-01-13', 30, 28, 20, 15, '2025-01-13 23:50:00'),
       ({hvc}, '2025-01-14', 12, 10, 8, 6, '2025-01-14 23:45:10'),
       ({cvn}, '2025-01-14', 5, 5, 3, 2, '2025-01-14 22:00:00'),
       ({cvn}, '2025-01-13', 4, 4, 1, NULL, NULL);

INSERT INTO test_summaries (center_id, date, test_code, test_name, count)
VALUES ({hvc}, '2025-01-14', 'GLU', 'Glucosa', 3),
       ({hvc}, '2025-01-14', 'GLU', NULL, 4),
       ({hvc}, '2025-01-14', 'BUN', 'Urea', 2),
       ({hvc}, '2025-01-13', 'GLU', 'Glucosa', 9),
       ({cvn}, '2025-01-14', 'GLU', 'Glucosa', 1);

INSERT INTO species_summaries (center_id, date, species, count)
VALUES ({hvc}, '2025-01-14', 'Canino', 5),
       ({hvc}, '2025-01-14', 'Canino', 6),
       ({hvc}, '2025-01-14', 'Felino', 2);

INSERT INTO breed_summaries (center_id, date, breed, species, count)
VALUES ({hvc}, '2025-01-14', 'Mestizo', NULL, 1),
       ({hvc}, '2025-01-14', 'Mestizo', NULL, 2),
       ({hvc}, '2025-01-14', 'Labrador', 'Canino', 3),
       ({hvc}, '2025-01-14', 'Labrador', 'Canino', 1),
       ({hvc}, '2025-01-14', 'Labrador', NULL, 4),
       ({hvc}, '2025-01-14', 'Siamés', 'Felino', 2);

INSERT INTO performance_metrics (center_id, date, avg_order_processing_time, peak_hour, peak_hour_orders,
                                 completion_rate, same_day_completion, morning_orders, afternoon_orders,
                                 evening_orders, night_orders, created_at)
VALUES ({hvc}, '2025-01-14', 80, 10, 5, 90, 10, 4, 5, 2, 1, '2025-01-14 12:00:00'),
       ({hvc}, '2025-01-14', 95, 16, 7, 92, 11, 4, 6, 2, 0, '2025-01-14 23:45:10');

INSERT INTO module_metrics (center_id, date, module_name, operations_count, active_users, total_revenue,
                            avg_transaction, created_at)
VALUES ({hvc}, '2025-01-14', 'laboratorio', 10, 2, 5000, 500, '2025-01-14 12:00:00'),
       ({hvc}, '2025-01-14', 'laboratorio', 5, 3, NULL, NULL, '2025-01-14 23:45:10'),
       ({hvc}, '2025-01-14', 'farmacia', 4, 1, 800, 200, '2025-01-14 23:45:10');

INSERT INTO system_usage_metrics (center_id, date, total_active_users, peak_concurrent_users,
                                  avg_session_duration, web_access_count, mobile_access_count,
                                  desktop_access_count, total_workstations, created_at)
VALUES ({hvc}, '2025-01-14', 4, 3, 30, 50, 5, 20, 4, '2025-01-14 12:00:00'),
       ({hvc}, '2025-01-14', 6, 4, 45, 120, 10, 60, 5, '2025-01-14 23:45:10');

INSERT INTO payment_method_metrics (center_id, date, payment_method, transaction_count, total_amount, created_at)
VALUES ({hvc}, '2025-01-14', 'tarjeta', 7, 14000, '2025-01-14 12:00:00'),
       ({hvc}, '2025-01-14', 'tarjeta', 3, 6000, '2025-01-14 23:45:10'),
       ({hvc}, '2025-01-14', 'efectivo', 2, NULL, '2025-01-14 23:45:10');
";

/// When the old service registered HVC and last heard from it, as the naive
/// UTC text it stored.
const HVC_REGISTERED_AT: &str = "2024-06-01 08:15:00";
const HVC_LAST_SYNC_AT: &str = "2025-01-14 23:45:10";

/// What adoption keeps of each table: its natural key, and per key the
/// aggregates that the merged row must hold (a NULL total counts as 0). Performance and system usage
/// keep the newest row of a day, so their aggregate picks the values of the
/// row with the highest id.
const MERGE_RULES: [(&str, &str, &str); 8] = [
    (
        "daily_metrics",
        "center_id, CAST(date AS TEXT)",
        "SUM(total_orders), SUM(total_results), SUM(total_pets), SUM(COALESCE(total_owners, 0))",
    ),
    (
        "test_summaries",
        "center_id, CAST(date AS TEXT), test_code",
        "SUM(count)",
    ),
    (
        "species_summaries",
        "center_id, CAST(date AS TEXT), species",
        "SUM(count)",
    ),
    (
        "breed_summaries",
        "center_id, CAST(date AS TEXT), breed, species",
        "SUM(count)",
    ),
    (
        "module_metrics",
        "center_id, CAST(date AS TEXT), module_name",
        "SUM(operations_count), MAX(active_users), SUM(total_revenue)",
    ),
    (
        "payment_method_metrics",
        "center_id, CAST(date AS TEXT), payment_method",
        "SUM(transaction_count), SUM(total_amount)",
    ),
    (
        "performance_metrics",
        "center_id, CAST(date AS TEXT)",
        "(array_agg(peak_hour ORDER BY id DESC))[1], (array_agg(avg_order_processing_time ORDER BY id DESC))[1]",
    ),
    (
        "system_usage_metrics",
        "center_id, CAST(date AS TEXT)",
        "(array_agg(total_active_users ORDER BY id DESC))[1], (array_agg(web_access_count ORDER BY id DESC))[1]",
    ),
];

fn pg_pool(db: &TestDb) -> &PgPool {
    match db {
        TestDb::Postgres { pool, .. } => pool,
        TestDb::Sqlite { .. } => panic!("adoption tests run on PostgreSQL only"),
    }
}

/// Creates a database with the old service's schema and data.
async fn old_database() -> TestDb {
    let db = TestDb::create(Backend::Postgres).await;
    let pool = pg_pool(&db);
    sqlx::raw_sql(OLD_SCHEMA)
        .execute(pool)
        .await
        .expect("create the old schema");

    let mut ids = Vec::new();
    for (index, (code, name, key, is_active)) in OLD_CENTERS.iter().enumerate() {
        let registered_at = if index == 0 {
            HVC_REGISTERED_AT.to_owned()
        } else {
            format!("2024-07-0{index} 12:00:00")
        };
        let last_sync_at = (index == 0).then_some(HVC_LAST_SYNC_AT);
        let id: i32 = sqlx::query_scalar(
            "INSERT INTO centers (code, name, api_key, country, city, is_active, registered_at, last_sync_at) \
             VALUES ($1, $2, $3, 'Venezuela', 'Caracas', $4, CAST($5 AS TIMESTAMP), CAST($6 AS TIMESTAMP)) \
             RETURNING id",
        )
        .bind(code)
        .bind(name)
        .bind(key)
        .bind(*is_active)
        .bind(registered_at)
        .bind(last_sync_at)
        .fetch_one(pool)
        .await
        .expect("insert an old center");
        ids.push(id);
    }

    let data = OLD_DATA
        .replace("{hvc}", &ids[0].to_string())
        .replace("{cvn}", &ids[1].to_string());
    sqlx::raw_sql(&data)
        .execute(pool)
        .await
        .expect("insert the old data");
    db
}

/// Reads each table's natural keys with their aggregates, in key order.
async fn merged_view(db: &TestDb) -> Vec<(&'static str, Vec<Vec<Value>>)> {
    let mut view = Vec::new();
    for (table, key, aggregates) in MERGE_RULES {
        let sql = format!("SELECT {key}, {aggregates} FROM {table} GROUP BY {key} ORDER BY {key}");
        view.push((table, db.rows(&sql, &[]).await));
    }
    view
}

/// Reads every row of the KPI and key tables, the columns, the indexes and
/// the applied migrations as text, to compare a database before and after a
/// step.
async fn snapshot(db: &TestDb) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for table in [
        "centers",
        "center_api_keys",
        "daily_metrics",
        "test_summaries",
        "species_summaries",
        "breed_summaries",
        "performance_metrics",
        "module_metrics",
        "system_usage_metrics",
        "payment_method_metrics",
    ] {
        let sql = format!("SELECT '{table}', CAST(to_jsonb(t) AS TEXT) FROM {table} t ORDER BY id");
        rows.extend(db.rows(&sql, &[]).await);
    }
    rows.extend(
        db.rows(
            "SELECT table_name, column_name, data_type, is_nullable, COALESCE(column_default, '') \
             FROM information_schema.columns WHERE table_schema = current_schema() \
             ORDER BY table_name, column_name",
            &[],
        )
        .await,
    );
    rows.extend(
        db.rows(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() \
             ORDER BY indexname",
            &[],
        )
        .await,
    );
    rows.extend(
        db.rows(
            "SELECT CAST(version AS TEXT), encode(checksum, 'hex'), CAST(installed_on AS TEXT) \
             FROM _sqlx_migrations ORDER BY version",
            &[],
        )
        .await,
    );
    rows
}

fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn old_key(code: &str) -> &'static str {
    OLD_CENTERS
        .iter()
        .find(|center| center.0 == code)
        .map(|center| center.2)
        .unwrap()
}

/// Reads a day's four totals as JSON, so that a NULL total shows as `null`
/// where the harness's `day_totals` would panic.
async fn nullable_totals(db: &TestDb, code: &str, date: &str) -> Vec<Vec<Value>> {
    db.rows(
        "SELECT d.total_orders, d.total_results, d.total_pets, d.total_owners \
         FROM daily_metrics d JOIN centers c ON c.id = d.center_id \
         WHERE c.code = $1 AND CAST(d.date AS TEXT) = $2",
        &[code.into(), date.into()],
    )
    .await
}

fn batch(code: &str) -> Value {
    json!({"center_code": code, "date": day(0), "total_orders": 4})
}

#[test]
fn adoption_keeps_every_row() {
    common::run(Backend::Postgres, |_| async {
        let db = old_database().await;
        let centers_before = db
            .rows(
                "SELECT id, code, name, city, country, is_active FROM centers ORDER BY id",
                &[],
            )
            .await;
        let before = merged_view(&db).await;

        let app = TestApp::spawn_on(db, &[]).await;

        let centers_after = app
            .db
            .rows(
                "SELECT id, code, name, city, country, is_active FROM centers ORDER BY id",
                &[],
            )
            .await;
        assert_eq!(centers_after, centers_before);
        let after = merged_view(&app.db).await;
        for ((table, keys_before), (_, keys_after)) in before.iter().zip(&after) {
            assert_eq!(keys_after, keys_before, "{table}");
            let rows = app
                .db
                .scalar(&format!("SELECT COUNT(*) FROM {table}"), &[])
                .await;
            assert_eq!(
                rows,
                keys_before.len() as i64,
                "{table} has one row per key"
            );
        }
    });
}

#[test]
fn adoption_merges_duplicates() {
    common::run(Backend::Postgres, |_| async {
        let app = TestApp::spawn_on(old_database().await, &[]).await;

        let tests = app
            .day_rows("test_summaries", "test_code, count", "HVC", DAY)
            .await;
        assert_eq!(
            tests,
            vec![vec![json!("BUN"), json!(2)], vec![json!("GLU"), json!(7)]]
        );
        let other_day = app
            .day_rows("test_summaries", "test_code, count", "HVC", "2025-01-13")
            .await;
        assert_eq!(other_day, vec![vec![json!("GLU"), json!(9)]]);
        let other_center = app
            .day_rows("test_summaries", "test_code, count", "CVN", DAY)
            .await;
        assert_eq!(other_center, vec![vec![json!("GLU"), json!(1)]]);

        let species = app
            .day_rows("species_summaries", "species, count", "HVC", DAY)
            .await;
        assert_eq!(
            species,
            vec![
                vec![json!("Canino"), json!(11)],
                vec![json!("Felino"), json!(2)]
            ]
        );

        let breeds = app
            .day_rows("breed_summaries", "breed, species, count", "HVC", DAY)
            .await;
        assert_eq!(
            breeds,
            vec![
                vec![json!("Labrador"), json!("Canino"), json!(4)],
                vec![json!("Labrador"), Value::Null, json!(4)],
                vec![json!("Mestizo"), Value::Null, json!(3)],
                vec![json!("Siamés"), json!("Felino"), json!(2)],
            ]
        );

        let modules = app
            .day_rows(
                "module_metrics",
                "module_name, operations_count, active_users, total_revenue",
                "HVC",
                DAY,
            )
            .await;
        assert_eq!(
            modules,
            vec![
                vec![json!("farmacia"), json!(4), json!(1), json!(800)],
                vec![json!("laboratorio"), json!(15), json!(3), json!(5000)],
            ]
        );

        let payments = app
            .day_rows(
                "payment_method_metrics",
                "payment_method, transaction_count, total_amount",
                "HVC",
                DAY,
            )
            .await;
        assert_eq!(
            payments,
            vec![
                vec![json!("efectivo"), json!(2), Value::Null],
                vec![json!("tarjeta"), json!(10), json!(20000)],
            ]
        );

        let performance = app
            .day_rows(
                "performance_metrics",
                "peak_hour, avg_order_processing_time",
                "HVC",
                DAY,
            )
            .await;
        assert_eq!(performance, vec![vec![json!(16), json!(95)]]);
        let usage = app
            .day_rows("system_usage_metrics", "total_active_users", "HVC", DAY)
            .await;
        assert_eq!(usage, vec![vec![json!(6)]]);
    });
}

#[test]
fn adoption_hashes_plaintext_keys() {
    common::run(Backend::Postgres, |_| async {
        let app = TestApp::spawn_on(old_database().await, &[]).await;

        let plaintext = app
            .db
            .scalar(
                "SELECT COUNT(*) FROM centers WHERE api_key IS NOT NULL",
                &[],
            )
            .await;
        assert_eq!(plaintext, 0);
        for (code, _, key, _) in OLD_CENTERS {
            let hashes = app
                .db
                .rows(
                    "SELECT k.key_hash, CAST(k.expires_at AS TEXT) FROM center_api_keys k \
                     JOIN centers c ON c.id = k.center_id WHERE c.code = $1",
                    &[code.into()],
                )
                .await;
            assert_eq!(
                hashes,
                vec![vec![json!(sha256_hex(key)), Value::Null]],
                "{code}"
            );
        }
    });
}

#[test]
fn old_keys_authenticate() {
    common::run(Backend::Postgres, |_| async {
        let app = TestApp::spawn_on(old_database().await, &[]).await;

        let (status, body) = app
            .post("/kpi/submit", Some(old_key("HVC")), &batch("HVC"))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["center"], "Hospital Veterinario Central");

        // CVN's key is not ASCII, so it can only travel in the JSON body.
        let mut in_body = batch("CVN");
        in_body["api_key"] = json!(old_key("CVN"));
        let (status, body) = app.post("/kpi/submit", None, &in_body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");

        let (status, body) = app
            .post("/kpi/submit", Some("hvc-legacy-key-2024"), &batch("HVC"))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["detail"], "Invalid center code or API key");

        let (status, _) = app
            .post("/kpi/submit", Some(old_key("HVC")), &batch("CVN"))
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "a key is bound to its center"
        );

        let (status, _) = app
            .post("/kpi/submit", Some(old_key("VSP")), &batch("VSP"))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "VSP stays inactive");
    });
}

#[test]
fn adoption_converts_timestamps() {
    common::run(Backend::Postgres, |_| async {
        let app = TestApp::spawn_on(old_database().await, &[]).await;

        let naive_columns = app
            .db
            .rows(
                "SELECT table_name, column_name FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND data_type = 'timestamp without time zone'",
                &[],
            )
            .await;
        assert_eq!(naive_columns, Vec::<Vec<Value>>::new());

        let listing = app.store.list_centers().await.expect("list centers");
        let hvc = &listing
            .iter()
            .find(|listing| listing.center.code == "HVC")
            .expect("HVC is listed")
            .center;
        assert_eq!(hvc.registered_at, utc(HVC_REGISTERED_AT));
        assert_eq!(hvc.last_sync_at, Some(utc(HVC_LAST_SYNC_AT)));

        let created_at = app
            .db
            .rows(
                "SELECT to_char(d.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') \
                 FROM daily_metrics d JOIN centers c ON c.id = d.center_id \
                 WHERE c.code = 'HVC' AND d.date = DATE '2025-01-14'",
                &[],
            )
            .await;
        assert_eq!(created_at, vec![vec![json!("2025-01-14 23:45:10")]]);
    });
}

/// Parses the old service's naive UTC text.
fn utc(text: &str) -> DateTime<Utc> {
    let naive = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap();
    Utc.from_utc_datetime(&naive)
}

#[test]
fn event_increments_merged_rows() {
    common::run(Backend::Postgres, |_| async {
        let app = TestApp::spawn_on(old_database().await, &[]).await;
        let event = json!({
            "center_code": "HVC", "event_type": "order_created",
            "timestamp": format!("{DAY}T10:00:00Z"),
            "data": {"tests": ["GLU"], "species": "Canino", "breed": "Labrador"},
        });

        let (status, body) = app.post("/kpi/events", Some(old_key("HVC")), &event).await;

        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(app.day_totals("HVC", DAY).await, Some([13, 10, 8, 6]));
        let tests = app
            .day_rows("test_summaries", "test_code, count", "HVC", DAY)
            .await;
        assert_eq!(
            tests,
            vec![vec![json!("BUN"), json!(2)], vec![json!("GLU"), json!(8)]]
        );
        let species = app
            .day_rows("species_summaries", "species, count", "HVC", DAY)
            .await;
        assert_eq!(
            species,
            vec![
                vec![json!("Canino"), json!(12)],
                vec![json!("Felino"), json!(2)]
            ]
        );
        let labrador = app
            .db
            .rows(
                "SELECT b.species, b.count FROM breed_summaries b JOIN centers c ON c.id = b.center_id \
                 WHERE c.code = 'HVC' AND b.date = DATE '2025-01-14' AND b.breed = 'Labrador' \
                 ORDER BY b.species",
                &[],
            )
            .await;
        assert_eq!(
            labrador,
            vec![vec![json!("Canino"), json!(5)], vec![Value::Null, json!(4)]]
        );
    });
}

#[test]
fn event_creates_day_in_old_tables() {
    common::run(Backend::Postgres, |_| async {
        let app = TestApp::spawn_on(old_database().await, &[]).await;
        let today = day(0);
        let event = json!({
            "center_code": "CVN", "api_key": old_key("CVN"), "event_type": "result_created",
            "timestamp": format!("{today}T09:30:00Z"), "data": {},
        });

        let (status, body) = app.post("/kpi/events", None, &event).await;

        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(
            nullable_totals(&app.db, "CVN", &today).await,
            vec![vec![json!(0), json!(1), json!(0), json!(0)]]
        );
    });
}

#[test]
fn adoption_fills_missing_values() {
    common::run(Backend::Postgres, |_| async {
        let app = TestApp::spawn_on(old_database().await, &[]).await;

        assert_eq!(
            nullable_totals(&app.db, "CVN", "2025-01-13").await,
            vec![vec![json!(4), json!(4), json!(1), json!(0)]]
        );
        let missing_times = app
            .db
            .scalar(
                "SELECT COUNT(*) FROM daily_metrics WHERE created_at IS NULL",
                &[],
            )
            .await;
        assert_eq!(missing_times, 0);
    });
}

#[test]
fn adopted_columns_match_fresh_schema() {
    common::run(Backend::Postgres, |_| async {
        let fresh = TestApp::spawn(Backend::Postgres).await;
        let adopted = TestApp::spawn_on(old_database().await, &[]).await;

        let sql = "SELECT table_name, column_name, data_type, \
                       CAST(character_maximum_length AS TEXT), is_nullable, column_default \
                   FROM information_schema.columns WHERE table_schema = current_schema() \
                     AND table_name <> '_sqlx_migrations' \
                   ORDER BY table_name, column_name";
        let expected = fresh.db.rows(sql, &[]).await;
        let columns = adopted.db.rows(sql, &[]).await;

        let missing: Vec<_> = expected.iter().filter(|c| !columns.contains(c)).collect();
        let unexpected: Vec<_> = columns.iter().filter(|c| !expected.contains(c)).collect();
        assert!(missing.is_empty(), "adopted database lacks {missing:?}");
        assert!(unexpected.is_empty(), "adopted database has {unexpected:?}");
    });
}

#[test]
fn second_migration_changes_nothing() {
    common::run(Backend::Postgres, |_| async {
        let app = TestApp::spawn_on(old_database().await, &[]).await;
        let before = snapshot(&app.db).await;

        let url = DatabaseUrl::Postgres(app.db.url().to_owned());
        let store = kpi_service::store::connect(&url)
            .await
            .expect("connect a second store");
        store.migrate().await.expect("migrate again");

        assert_eq!(snapshot(&app.db).await, before);
        let (status, body) = app
            .post("/kpi/submit", Some(old_key("HVC")), &batch("HVC"))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    });
}
