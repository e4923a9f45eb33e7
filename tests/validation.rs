//! Input validation of the write endpoints over HTTP, on both backends.
//!
//! Every rejected field gets a 422 problem document whose `errors[].loc`
//! names it, and a rejected request stores nothing. Body syntax, content
//! type and size, and the problem documents of routing errors are covered
//! at the end.

mod common;

use common::{day, Backend, TestApp, MASTER_KEY};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Tables that contain KPI rows. A rejected request adds no row to any of them.
const METRIC_TABLES: [&str; 8] = [
    "daily_metrics",
    "test_summaries",
    "species_summaries",
    "breed_summaries",
    "performance_metrics",
    "module_metrics",
    "system_usage_metrics",
    "payment_method_metrics",
];

const TOTALS: [&str; 4] = [
    "total_orders",
    "total_results",
    "total_pets",
    "total_owners",
];

/// Maximum request body size that the HTTP contract sets: 1 MiB.
const BODY_LIMIT: usize = 1024 * 1024;

const CODE: &str = "HVC";

/// Returns a valid daily batch with four tests, so that cases can address `tests[3]`.
fn batch(date: &str) -> Value {
    json!({
        "center_code": CODE,
        "date": date,
        "total_orders": 30,
        "total_results": 28,
        "total_pets": 20,
        "total_owners": 15,
        "tests": [
            {"code": "GLU", "name": "Glucosa", "count": 12},
            {"code": "BUN", "count": 4},
            {"code": "ALT", "count": 3},
            {"code": "CRE", "count": 2},
        ],
        "species": [{"species": "Canino", "count": 14}],
        "breeds": [{"breed": "Labrador", "species": "Canino", "count": 5}],
    })
}

/// Returns a valid enhanced batch: [`batch`] with every enhanced part.
fn enhanced(date: &str) -> Value {
    let mut body = batch(date);
    body["performance"] = json!({"avg_order_processing_time": 95, "peak_hour": 10,
        "peak_hour_orders": 8, "completion_rate": 92, "same_day_completion": 20,
        "morning_orders": 9, "afternoon_orders": 14, "evening_orders": 5, "night_orders": 2});
    body["modules"] = json!([{"module_name": "laboratorio", "operations_count": 40,
        "active_users": 3, "total_revenue": 90000, "avg_transaction": 2250}]);
    body["system_usage"] = json!({"total_active_users": 6, "peak_concurrent_users": 4,
        "avg_session_duration": 45, "web_access_count": 120, "mobile_access_count": 10,
        "desktop_access_count": 60, "total_workstations": 5});
    body["payment_methods"] =
        json!([{"payment_method": "tarjeta", "transaction_count": 22, "total_amount": 41000}]);
    body
}

/// Returns a valid `order_created` event at 10:00 UTC today.
fn event() -> Value {
    json!({
        "center_code": CODE,
        "event_type": "order_created",
        "timestamp": format!("{}T10:00:00Z", day(0)),
        "data": {"order_id": 7, "tests": ["GLU", "BUN"], "species": "Canino", "breed": "Labrador"},
    })
}

/// Returns a valid `PUT /kpi/centers/{code}` body that changes every field.
fn center_update() -> Value {
    json!({"name": "Central Norte", "city": "Lima", "country": "PE", "is_active": true})
}

/// A response's status, `Content-Type` and body. A body that is not JSON is
/// kept as a JSON string.
struct Reply {
    status: StatusCode,
    content_type: String,
    body: Value,
}

/// Sends `body` unchanged, with `content_type` as the `Content-Type` header
/// (no header when `None`) and `key` as `X-API-Key`.
async fn send_bytes(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Reply {
    let mut request = app
        .client
        .request(method, format!("{}{}", app.base_url, path))
        .body(body);
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        content_type,
        body,
    }
}

async fn send_json(app: &TestApp, method: Method, path: &str, key: &str, body: &Value) -> Reply {
    let bytes = serde_json::to_vec(body).expect("serialize body");
    send_bytes(
        app,
        method,
        path,
        Some(key),
        Some("application/json"),
        bytes,
    )
    .await
}

/// Asserts that `reply` is a problem document with this status and type,
/// whose `instance` is the request path.
fn assert_problem(reply: &Reply, status: StatusCode, kind: &str, path: &str, context: &str) {
    let body = &reply.body;
    assert_eq!(reply.status, status, "{context}: {body}");
    assert!(
        reply.content_type.starts_with("application/problem+json"),
        "{context}: Content-Type is {:?}",
        reply.content_type
    );
    assert_eq!(body["type"], kind, "{context}: {body}");
    assert!(
        body["title"]
            .as_str()
            .is_some_and(|title| !title.is_empty()),
        "{context}: no title in {body}"
    );
    assert_eq!(body["status"], status.as_u16(), "{context}: {body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|detail| !detail.is_empty()),
        "{context}: no detail in {body}"
    );
    assert_eq!(body["instance"], path, "{context}: {body}");
}

/// Asserts that `reply` is a 422 validation problem whose `errors` are
/// `{loc, msg, type}` objects, and returns each error's `loc` and `type`.
fn validation_errors(reply: &Reply, path: &str, context: &str) -> Vec<(Value, String)> {
    assert_problem(
        reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_error",
        path,
        context,
    );
    let body = &reply.body;
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{context}: no errors list in {body}"));
    let mut found = Vec::new();
    for error in errors {
        let mut keys: Vec<&str> = error
            .as_object()
            .unwrap_or_else(|| panic!("{context}: error {error} is not an object"))
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["loc", "msg", "type"], "{context}: {error}");
        assert!(
            error["loc"].is_array(),
            "{context}: loc is not a list in {error}"
        );
        assert!(
            error["msg"].as_str().is_some_and(|msg| !msg.is_empty()),
            "{context}: no msg in {error}"
        );
        let kind = error["type"]
            .as_str()
            .unwrap_or_else(|| panic!("{context}: type is not a string in {error}"));
        found.push((error["loc"].clone(), kind.to_owned()));
    }
    found
}

/// Asserts that `reply` is a 422 with exactly one error, at `loc` of type `kind`.
fn assert_field_error(reply: &Reply, path: &str, loc: &Value, kind: &str, context: &str) {
    let errors = validation_errors(reply, path, context);
    assert_eq!(errors.len(), 1, "{context}: {errors:?}");
    assert_eq!(&errors[0].0, loc, "{context}: loc");
    assert_eq!(errors[0].1, kind, "{context}: type");
}

/// Sorts (loc, type) pairs by the JSON text of `loc`, for comparing error lists.
fn sorted(mut errors: Vec<(Value, String)>) -> Vec<(Value, String)> {
    errors.sort_by_key(|(loc, _)| loc.to_string());
    errors
}

/// Asserts that no metric table has a row and no center has synced.
async fn assert_nothing_stored(app: &TestApp, context: &str) {
    for table in METRIC_TABLES {
        let rows = app
            .db
            .scalar(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .await;
        assert_eq!(rows, 0, "{context}: rows in {table}");
    }
    let synced = app
        .db
        .scalar(
            "SELECT COUNT(*) FROM centers WHERE last_sync_at IS NOT NULL",
            &[],
        )
        .await;
    assert_eq!(synced, 0, "{context}: last_sync_at was set");
}

/// Returns every center's code, name, city, country and is_active, ordered by code.
async fn centers(app: &TestApp) -> Vec<Vec<Value>> {
    app.db
        .rows(
            "SELECT code, name, city, country, is_active FROM centers ORDER BY code",
            &[],
        )
        .await
}

/// One invalid variant of a valid body, and the one error expected for it.
struct Case {
    /// JSON pointer to the field that the case changes.
    pointer: String,
    /// The field's new value, or `None` to remove the field.
    value: Option<Value>,
    loc: Value,
    kind: &'static str,
}

fn set(pointer: &str, value: Value, loc: Value, kind: &'static str) -> Case {
    Case {
        pointer: pointer.to_owned(),
        value: Some(value),
        loc,
        kind,
    }
}

fn remove(pointer: &str, loc: Value, kind: &'static str) -> Case {
    Case {
        pointer: pointer.to_owned(),
        value: None,
        loc,
        kind,
    }
}

impl Case {
    /// Returns a copy of `valid` with the case's change made. Panics when the
    /// pointer does not lead to an existing field, so no case is vacuous.
    fn apply(&self, valid: &Value) -> Value {
        let mut body = valid.clone();
        let (parent, key) = self
            .pointer
            .rsplit_once('/')
            .expect("pointer starts with /");
        let target = body
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("{}: no {parent:?} in {valid}", self.label()));
        match (target, &self.value) {
            (Value::Object(fields), Some(value)) => {
                fields.insert(key.to_owned(), value.clone());
            }
            (Value::Object(fields), None) => {
                fields
                    .remove(key)
                    .unwrap_or_else(|| panic!("{}: field not in {valid}", self.label()));
            }
            (Value::Array(items), Some(value)) => {
                let index: usize = key.parse().expect("list index");
                items[index] = value.clone();
            }
            (other, _) => panic!("{}: cannot change {other}", self.label()),
        }
        body
    }

    fn label(&self) -> String {
        match &self.value {
            Some(value) => format!("{} = {value}", self.pointer),
            None => format!("{} removed", self.pointer),
        }
    }
}

fn submit_cases() -> Vec<Case> {
    let mut cases = vec![
        remove("/center_code", json!(["body", "center_code"]), "missing"),
        set(
            "/center_code",
            json!(""),
            json!(["body", "center_code"]),
            "string_too_short",
        ),
        set(
            "/center_code",
            json!("C".repeat(51)),
            json!(["body", "center_code"]),
            "string_too_long",
        ),
        remove("/date", json!(["body", "date"]), "missing"),
        set(
            "/date",
            json!("2025-13-40"),
            json!(["body", "date"]),
            "value_error",
        ),
        set(
            "/date",
            json!("yesterday"),
            json!(["body", "date"]),
            "value_error",
        ),
        set(
            "/date",
            json!(day(2)),
            json!(["body", "date"]),
            "date_in_future",
        ),
        set(
            "/tests",
            json!("GLU"),
            json!(["body", "tests"]),
            "type_error",
        ),
        set(
            "/tests/3/count",
            json!(-1),
            json!(["body", "tests", 3, "count"]),
            "greater_than_equal",
        ),
        set(
            "/tests/0/count",
            json!(2_147_483_648_i64),
            json!(["body", "tests", 0, "count"]),
            "less_than_equal",
        ),
        set(
            "/tests/2/count",
            json!("x"),
            json!(["body", "tests", 2, "count"]),
            "value_error",
        ),
        remove(
            "/tests/1/count",
            json!(["body", "tests", 1, "count"]),
            "missing",
        ),
        remove(
            "/tests/0/code",
            json!(["body", "tests", 0, "code"]),
            "missing",
        ),
        set(
            "/tests/0/code",
            json!(""),
            json!(["body", "tests", 0, "code"]),
            "string_too_short",
        ),
        set(
            "/tests/0/code",
            json!("T".repeat(51)),
            json!(["body", "tests", 0, "code"]),
            "string_too_long",
        ),
        set(
            "/tests/0/name",
            json!("N".repeat(256)),
            json!(["body", "tests", 0, "name"]),
            "string_too_long",
        ),
        set(
            "/species/0/species",
            json!(""),
            json!(["body", "species", 0, "species"]),
            "string_too_short",
        ),
        set(
            "/species/0/species",
            json!("S".repeat(101)),
            json!(["body", "species", 0, "species"]),
            "string_too_long",
        ),
        set(
            "/species/0/count",
            json!(-1),
            json!(["body", "species", 0, "count"]),
            "greater_than_equal",
        ),
        set(
            "/breeds/0/breed",
            json!(""),
            json!(["body", "breeds", 0, "breed"]),
            "string_too_short",
        ),
        set(
            "/breeds/0/breed",
            json!("B".repeat(256)),
            json!(["body", "breeds", 0, "breed"]),
            "string_too_long",
        ),
        set(
            "/breeds/0/species",
            json!("S".repeat(101)),
            json!(["body", "breeds", 0, "species"]),
            "string_too_long",
        ),
        set(
            "/center_code",
            json!("H\u{0}VC"),
            json!(["body", "center_code"]),
            "string_contains_nul",
        ),
        set(
            "/tests/0/code",
            json!("G\u{0}LU"),
            json!(["body", "tests", 0, "code"]),
            "string_contains_nul",
        ),
        set(
            "/tests/0/name",
            json!("Gluc\u{0}osa"),
            json!(["body", "tests", 0, "name"]),
            "string_contains_nul",
        ),
        set(
            "/species/0/species",
            json!("Canino\u{0}"),
            json!(["body", "species", 0, "species"]),
            "string_contains_nul",
        ),
        set(
            "/breeds/0/breed",
            json!("\u{0}"),
            json!(["body", "breeds", 0, "breed"]),
            "string_contains_nul",
        ),
        set(
            "/breeds/0/species",
            json!("Can\u{0}ino"),
            json!(["body", "breeds", 0, "species"]),
            "string_contains_nul",
        ),
    ];
    let bad_totals = [
        (json!(-1), "greater_than_equal"),
        (json!(50.5), "value_error"),
        (json!(true), "type_error"),
        (json!(2_147_483_648_i64), "less_than_equal"),
        (json!("abc"), "value_error"),
    ];
    for field in TOTALS {
        for (value, kind) in &bad_totals {
            cases.push(set(
                &format!("/{field}"),
                value.clone(),
                json!(["body", field]),
                kind,
            ));
        }
    }
    cases
}

both_backends!(
    submit_rejects_invalid_fields,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key(CODE, "Central").await;
        let valid = batch(&day(0));

        for case in submit_cases() {
            let reply =
                send_json(&app, Method::POST, "/kpi/submit", &key, &case.apply(&valid)).await;

            assert_field_error(&reply, "/kpi/submit", &case.loc, case.kind, &case.label());
            assert_nothing_stored(&app, &case.label()).await;
        }

        // The unchanged body is stored, which shows that the checks above would see a write.
        let reply = send_json(&app, Method::POST, "/kpi/submit", &key, &valid).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        assert_eq!(app.count_rows("test_summaries", CODE).await, 4);
    }
);

both_backends!(
    submit_accepts_loose_integers,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key(CODE, "Central").await;
        // Each form goes to a day of its own, so that one cannot pass on the other's rows.
        let forms = [
            ("integral float", json!(50.0), day(-1)),
            ("digit string", json!("50"), day(-2)),
        ];

        for (form, value, date) in forms {
            let mut body = batch(&date);
            for field in TOTALS {
                body[field] = value.clone();
            }
            body["tests"][0]["count"] = value.clone();
            body["species"][0]["count"] = value.clone();
            body["breeds"][0]["count"] = value.clone();

            let reply = send_json(&app, Method::POST, "/kpi/submit", &key, &body).await;

            assert_eq!(reply.status, StatusCode::CREATED, "{form}: {}", reply.body);
            assert_eq!(reply.body["total_orders"], json!(50), "{form}");
            assert_eq!(app.day_totals(CODE, &date).await, Some([50; 4]), "{form}");
            let tests = app
                .day_rows("test_summaries", "test_code, count", CODE, &date)
                .await;
            assert!(
                tests.contains(&vec![json!("GLU"), json!(50)]),
                "{form}: {tests:?}"
            );
            let species = app
                .day_rows("species_summaries", "species, count", CODE, &date)
                .await;
            assert_eq!(species, vec![vec![json!("Canino"), json!(50)]], "{form}");
            let breeds = app
                .day_rows("breed_summaries", "breed, count", CODE, &date)
                .await;
            assert_eq!(breeds, vec![vec![json!("Labrador"), json!(50)]], "{form}");
        }
    }
);

both_backends!(submit_accepts_count_bounds, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key(CODE, "Central").await;
    let date = day(0);
    let mut body = batch(&date);
    body["total_orders"] = json!(0);
    body["total_results"] = json!(2_147_483_647_i64);
    body["tests"][0]["count"] = json!(2_147_483_647_i64);
    body["species"][0]["count"] = json!(0);

    let reply = send_json(&app, Method::POST, "/kpi/submit", &key, &body).await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(
        app.day_totals(CODE, &date).await,
        Some([0, 2_147_483_647, 20, 15])
    );
    let tests = app
        .day_rows("test_summaries", "test_code, count", CODE, &date)
        .await;
    assert!(
        tests.contains(&vec![json!("GLU"), json!(2_147_483_647_i64)]),
        "{tests:?}"
    );
    let species = app
        .day_rows("species_summaries", "species, count", CODE, &date)
        .await;
    assert_eq!(species, vec![vec![json!("Canino"), json!(0)]]);
});

both_backends!(submit_accepts_tomorrow, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key(CODE, "Central").await;
    let tomorrow = day(1);

    let reply = send_json(&app, Method::POST, "/kpi/submit", &key, &batch(&tomorrow)).await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["date"], json!(tomorrow));
    assert_eq!(
        app.day_totals(CODE, &tomorrow).await,
        Some([30, 28, 20, 15])
    );
});

both_backends!(
    submit_reads_null_lists_as_empty,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key(CODE, "Central").await;
        let date = day(0);
        send_json(&app, Method::POST, "/kpi/submit", &key, &batch(&date)).await;
        let mut body = batch(&date);
        body["tests"] = Value::Null;
        body["species"] = Value::Null;
        body["breeds"] = Value::Null;

        let reply = send_json(&app, Method::POST, "/kpi/submit", &key, &body).await;

        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        // An empty list clears the day's rows, so null must clear them too.
        for table in ["test_summaries", "species_summaries", "breed_summaries"] {
            assert_eq!(app.count_rows(table, CODE).await, 0, "{table}");
        }
        assert_eq!(app.day_totals(CODE, &date).await, Some([30, 28, 20, 15]));
    }
);

both_backends!(
    submit_ignores_unknown_fields,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key(CODE, "Central").await;
        let date = day(0);
        let mut body = batch(&date);
        body["software_version"] = json!("4.2.1");
        body["tests"][0]["unit"] = json!("mg/dL");
        body["species"][0]["legacy_id"] = json!(3);
        body["breeds"][0]["origin"] = json!({"country": "CA", "tags": [1, 2]});

        let reply = send_json(&app, Method::POST, "/kpi/submit", &key, &body).await;

        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        assert_eq!(app.day_totals(CODE, &date).await, Some([30, 28, 20, 15]));
        let tests = app
            .day_rows("test_summaries", "test_code, test_name, count", CODE, &date)
            .await;
        assert!(
            tests.contains(&vec![json!("GLU"), json!("Glucosa"), json!(12)]),
            "{tests:?}"
        );
        assert_eq!(tests.len(), 4, "{tests:?}");
        let species = app
            .day_rows("species_summaries", "species, count", CODE, &date)
            .await;
        assert_eq!(species, vec![vec![json!("Canino"), json!(14)]]);
        let breeds = app
            .day_rows("breed_summaries", "breed, species, count", CODE, &date)
            .await;
        assert_eq!(
            breeds,
            vec![vec![json!("Labrador"), json!("Canino"), json!(5)]]
        );
    }
);

both_backends!(
    submit_reports_every_violation,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key(CODE, "Central").await;
        let mut body = batch(&day(0));
        body["center_code"] = json!("");
        body["total_orders"] = json!(-1);
        body["tests"][0]["code"] = json!("");
        body["tests"][3]["count"] = json!(-1);
        body["species"][0]["species"] = json!("S".repeat(101));
        body["breeds"][0]["breed"] = json!("");

        let reply = send_json(&app, Method::POST, "/kpi/submit", &key, &body).await;

        let errors = validation_errors(&reply, "/kpi/submit", "six violations");
        let expected = vec![
            (
                json!(["body", "center_code"]),
                "string_too_short".to_owned(),
            ),
            (
                json!(["body", "total_orders"]),
                "greater_than_equal".to_owned(),
            ),
            (
                json!(["body", "tests", 0, "code"]),
                "string_too_short".to_owned(),
            ),
            (
                json!(["body", "tests", 3, "count"]),
                "greater_than_equal".to_owned(),
            ),
            (
                json!(["body", "species", 0, "species"]),
                "string_too_long".to_owned(),
            ),
            (
                json!(["body", "breeds", 0, "breed"]),
                "string_too_short".to_owned(),
            ),
        ];
        assert_eq!(sorted(errors), sorted(expected));
        assert_nothing_stored(&app, "six violations").await;
    }
);

both_backends!(
    rejected_submit_keeps_stored_day,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key(CODE, "Central").await;
        let date = day(0);
        send_json(&app, Method::POST, "/kpi/submit", &key, &batch(&date)).await;
        let stored_tests = app
            .day_rows("test_summaries", "test_code, count", CODE, &date)
            .await;
        // A replacement whose only fault is the last entry of its last list.
        let replacement = json!({"center_code": CODE, "date": date, "total_orders": 99,
        "tests": [{"code": "NEW", "count": 1}], "species": [],
        "breeds": [{"breed": "Mestizo", "count": 1}, {"breed": "Poodle", "count": -1}]});

        let reply = send_json(&app, Method::POST, "/kpi/submit", &key, &replacement).await;

        assert_field_error(
            &reply,
            "/kpi/submit",
            &json!(["body", "breeds", 1, "count"]),
            "greater_than_equal",
            "breeds[1].count = -1",
        );
        assert_eq!(app.day_totals(CODE, &date).await, Some([30, 28, 20, 15]));
        let tests = app
            .day_rows("test_summaries", "test_code, count", CODE, &date)
            .await;
        assert_eq!(tests, stored_tests);
        assert_eq!(app.count_rows("species_summaries", CODE).await, 1);
        let breeds = app.day_rows("breed_summaries", "breed", CODE, &date).await;
        assert_eq!(breeds, vec![vec![json!("Labrador")]]);
    }
);

fn enhanced_cases() -> Vec<Case> {
    vec![
        set(
            "/performance/peak_hour",
            json!(24),
            json!(["body", "performance", "peak_hour"]),
            "less_than_equal",
        ),
        set(
            "/performance/peak_hour",
            json!(-1),
            json!(["body", "performance", "peak_hour"]),
            "greater_than_equal",
        ),
        set(
            "/performance/peak_hour",
            json!(12.5),
            json!(["body", "performance", "peak_hour"]),
            "value_error",
        ),
        set(
            "/performance/completion_rate",
            json!(101),
            json!(["body", "performance", "completion_rate"]),
            "less_than_equal",
        ),
        set(
            "/performance/completion_rate",
            json!(-1),
            json!(["body", "performance", "completion_rate"]),
            "greater_than_equal",
        ),
        set(
            "/performance/night_orders",
            json!(-1),
            json!(["body", "performance", "night_orders"]),
            "greater_than_equal",
        ),
        set(
            "/modules/0/module_name",
            json!(""),
            json!(["body", "modules", 0, "module_name"]),
            "string_too_short",
        ),
        set(
            "/modules/0/module_name",
            json!("M".repeat(101)),
            json!(["body", "modules", 0, "module_name"]),
            "string_too_long",
        ),
        remove(
            "/modules/0/module_name",
            json!(["body", "modules", 0, "module_name"]),
            "missing",
        ),
        set(
            "/modules/0/total_revenue",
            json!(-1),
            json!(["body", "modules", 0, "total_revenue"]),
            "greater_than_equal",
        ),
        set(
            "/payment_methods/0/payment_method",
            json!("P".repeat(51)),
            json!(["body", "payment_methods", 0, "payment_method"]),
            "string_too_long",
        ),
        set(
            "/payment_methods/0/payment_method",
            json!(""),
            json!(["body", "payment_methods", 0, "payment_method"]),
            "string_too_short",
        ),
        set(
            "/payment_methods/0/total_amount",
            json!(2_147_483_648_i64),
            json!(["body", "payment_methods", 0, "total_amount"]),
            "less_than_equal",
        ),
        set(
            "/system_usage/total_workstations",
            json!(-1),
            json!(["body", "system_usage", "total_workstations"]),
            "greater_than_equal",
        ),
        set(
            "/system_usage/avg_session_duration",
            json!(true),
            json!(["body", "system_usage", "avg_session_duration"]),
            "type_error",
        ),
        set(
            "/modules/0/module_name",
            json!("lab\u{0}"),
            json!(["body", "modules", 0, "module_name"]),
            "string_contains_nul",
        ),
        set(
            "/payment_methods/0/payment_method",
            json!("tar\u{0}jeta"),
            json!(["body", "payment_methods", 0, "payment_method"]),
            "string_contains_nul",
        ),
        set(
            "/tests/0/count",
            json!(-1),
            json!(["body", "tests", 0, "count"]),
            "greater_than_equal",
        ),
    ]
}

both_backends!(
    enhanced_rejects_invalid_fields,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key(CODE, "Central").await;
        let path = "/kpi/submit/enhanced";
        let valid = enhanced(&day(0));

        for case in enhanced_cases() {
            let reply = send_json(&app, Method::POST, path, &key, &case.apply(&valid)).await;

            assert_field_error(&reply, path, &case.loc, case.kind, &case.label());
            assert_nothing_stored(&app, &case.label()).await;
        }

        let reply = send_json(&app, Method::POST, path, &key, &valid).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        assert_eq!(app.count_rows("payment_method_metrics", CODE).await, 1);
    }
);

both_backends!(enhanced_reports_both_parts, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key(CODE, "Central").await;
    let path = "/kpi/submit/enhanced";
    let mut rules = enhanced(&day(0));
    rules["center_code"] = json!("");
    rules["performance"]["peak_hour"] = json!(24);
    rules["payment_methods"][0]["payment_method"] = json!("P".repeat(51));
    // A type error ends the reading of its part, but not of the other part.
    let mut mixed = enhanced(&day(0));
    mixed["tests"][2]["count"] = json!("x");
    mixed["system_usage"]["total_workstations"] = json!(-1);

    let rules_reply = send_json(&app, Method::POST, path, &key, &rules).await;
    let mixed_reply = send_json(&app, Method::POST, path, &key, &mixed).await;

    let errors = validation_errors(&rules_reply, path, "rule violations");
    let expected = vec![
        (
            json!(["body", "center_code"]),
            "string_too_short".to_owned(),
        ),
        (
            json!(["body", "performance", "peak_hour"]),
            "less_than_equal".to_owned(),
        ),
        (
            json!(["body", "payment_methods", 0, "payment_method"]),
            "string_too_long".to_owned(),
        ),
    ];
    assert_eq!(sorted(errors), sorted(expected));
    let errors = validation_errors(&mixed_reply, path, "type error and rule violation");
    let expected = vec![
        (
            json!(["body", "tests", 2, "count"]),
            "value_error".to_owned(),
        ),
        (
            json!(["body", "system_usage", "total_workstations"]),
            "greater_than_equal".to_owned(),
        ),
    ];
    assert_eq!(sorted(errors), sorted(expected));
    assert_nothing_stored(&app, "both parts invalid").await;
});

both_backends!(enhanced_accepts_bounds, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key(CODE, "Central").await;
    let bounds = [(0, 0, day(-1)), (23, 100, day(-2))];

    for (peak_hour, completion_rate, date) in bounds {
        let mut body = enhanced(&date);
        body["performance"]["peak_hour"] = json!(peak_hour);
        body["performance"]["completion_rate"] = json!(completion_rate);

        let reply = send_json(&app, Method::POST, "/kpi/submit/enhanced", &key, &body).await;

        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        let performance = app
            .day_rows(
                "performance_metrics",
                "peak_hour, completion_rate",
                CODE,
                &date,
            )
            .await;
        assert_eq!(
            performance,
            vec![vec![json!(peak_hour), json!(completion_rate)]]
        );
    }
});

both_backends!(
    enhanced_ignores_unknown_fields,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key(CODE, "Central").await;
        let date = day(0);
        let mut body = enhanced(&date);
        body["performance"]["median_wait"] = json!(12);
        body["modules"][0]["owner"] = json!("lab");
        body["system_usage"]["printers"] = json!([1, 2]);
        body["payment_methods"][0]["currency"] = json!("PEN");

        let reply = send_json(&app, Method::POST, "/kpi/submit/enhanced", &key, &body).await;

        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        let saved = &reply.body["saved"];
        assert_eq!(saved["performance"], json!(true));
        assert_eq!(saved["modules"], json!(1));
        assert_eq!(saved["system_usage"], json!(true));
        assert_eq!(saved["payment_methods"], json!(1));
        let payments = app
            .day_rows(
                "payment_method_metrics",
                "payment_method, transaction_count, total_amount",
                CODE,
                &date,
            )
            .await;
        assert_eq!(
            payments,
            vec![vec![json!("tarjeta"), json!(22), json!(41000)]]
        );
        let usage = app
            .day_rows("system_usage_metrics", "total_workstations", CODE, &date)
            .await;
        assert_eq!(usage, vec![vec![json!(5)]]);
    }
);

fn event_cases() -> Vec<Case> {
    vec![
        remove("/center_code", json!(["body", "center_code"]), "missing"),
        set(
            "/center_code",
            json!("C".repeat(51)),
            json!(["body", "center_code"]),
            "string_too_long",
        ),
        set(
            "/event_type",
            json!("order_deleted"),
            json!(["body", "event_type"]),
            "enum",
        ),
        remove("/event_type", json!(["body", "event_type"]), "missing"),
        remove("/timestamp", json!(["body", "timestamp"]), "missing"),
        set(
            "/timestamp",
            json!("not a time"),
            json!(["body", "timestamp"]),
            "value_error",
        ),
        // 10:30 UTC tomorrow, but the day after tomorrow in its own offset.
        set(
            "/timestamp",
            json!(format!("{}T00:30:00+14:00", day(2))),
            json!(["body", "timestamp"]),
            "date_in_future",
        ),
        remove("/data", json!(["body", "data"]), "missing"),
        set(
            "/data/tests/1",
            json!("T".repeat(51)),
            json!(["body", "data", "tests", 1]),
            "string_too_long",
        ),
        set(
            "/data/tests/0",
            json!(""),
            json!(["body", "data", "tests", 0]),
            "string_too_short",
        ),
        set(
            "/data/species",
            json!(""),
            json!(["body", "data", "species"]),
            "string_too_short",
        ),
        set(
            "/data/species",
            json!("S".repeat(101)),
            json!(["body", "data", "species"]),
            "string_too_long",
        ),
        set(
            "/data/breed",
            json!("B".repeat(256)),
            json!(["body", "data", "breed"]),
            "string_too_long",
        ),
        set(
            "/data/order_id",
            json!(7.5),
            json!(["body", "data", "order_id"]),
            "value_error",
        ),
        set(
            "/center_code",
            json!("H\u{0}VC"),
            json!(["body", "center_code"]),
            "string_contains_nul",
        ),
        set(
            "/data/tests/0",
            json!("G\u{0}LU"),
            json!(["body", "data", "tests", 0]),
            "string_contains_nul",
        ),
        set(
            "/data/species",
            json!("Can\u{0}ino"),
            json!(["body", "data", "species"]),
            "string_contains_nul",
        ),
        set(
            "/data/breed",
            json!("Lab\u{0}rador"),
            json!(["body", "data", "breed"]),
            "string_contains_nul",
        ),
    ]
}

both_backends!(
    event_rejects_invalid_fields,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key(CODE, "Central").await;
        let valid = event();

        for case in event_cases() {
            let reply =
                send_json(&app, Method::POST, "/kpi/events", &key, &case.apply(&valid)).await;

            assert_field_error(&reply, "/kpi/events", &case.loc, case.kind, &case.label());
            assert_nothing_stored(&app, &case.label()).await;
        }

        let reply = send_json(&app, Method::POST, "/kpi/events", &key, &valid).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        assert_eq!(app.day_totals(CODE, &day(0)).await, Some([1, 0, 0, 0]));
    }
);

both_backends!(event_accepts_empty_data, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key(CODE, "Central").await;
    let mut body = event();
    body["data"] = json!({});

    let reply = send_json(&app, Method::POST, "/kpi/events", &key, &body).await;

    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(app.day_totals(CODE, &day(0)).await, Some([1, 0, 0, 0]));
    assert_eq!(app.count_rows("test_summaries", CODE).await, 0);
});

both_backends!(
    event_accepts_tomorrow_in_own_offset,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key(CODE, "Central").await;
        let tomorrow = day(1);
        // The day after tomorrow in UTC, but tomorrow in its own offset.
        let mut body = event();
        body["timestamp"] = json!(format!("{tomorrow}T23:30:00-04:00"));

        let reply = send_json(&app, Method::POST, "/kpi/events", &key, &body).await;

        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        assert_eq!(reply.body["date"], json!(tomorrow));
        assert_eq!(app.day_totals(CODE, &tomorrow).await, Some([1, 0, 0, 0]));
    }
);

both_backends!(
    event_ignores_unknown_fields,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key(CODE, "Central").await;
        let mut body = event();
        body["source"] = json!("reception");
        body["data"]["operator"] = json!({"id": 4});

        let reply = send_json(&app, Method::POST, "/kpi/events", &key, &body).await;

        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        assert_eq!(app.day_totals(CODE, &day(0)).await, Some([1, 0, 0, 0]));
        let tests = app
            .day_rows("test_summaries", "test_code, count", CODE, &day(0))
            .await;
        assert_eq!(
            tests,
            vec![vec![json!("BUN"), json!(1)], vec![json!("GLU"), json!(1)]]
        );
    }
);

fn center_update_cases() -> Vec<Case> {
    vec![
        set(
            "/name",
            json!("N".repeat(256)),
            json!(["body", "name"]),
            "string_too_long",
        ),
        set(
            "/name",
            json!(""),
            json!(["body", "name"]),
            "string_too_short",
        ),
        set("/name", json!(42), json!(["body", "name"]), "type_error"),
        set(
            "/city",
            json!("L".repeat(101)),
            json!(["body", "city"]),
            "string_too_long",
        ),
        set(
            "/country",
            json!("P".repeat(101)),
            json!(["body", "country"]),
            "string_too_long",
        ),
        set(
            "/is_active",
            json!("maybe"),
            json!(["body", "is_active"]),
            "value_error",
        ),
        set(
            "/is_active",
            json!(2),
            json!(["body", "is_active"]),
            "value_error",
        ),
        set(
            "/name",
            json!("Central\u{0}Norte"),
            json!(["body", "name"]),
            "string_contains_nul",
        ),
        set(
            "/city",
            json!("Li\u{0}ma"),
            json!(["body", "city"]),
            "string_contains_nul",
        ),
        set(
            "/country",
            json!("\u{0}"),
            json!(["body", "country"]),
            "string_contains_nul",
        ),
    ]
}

both_backends!(
    center_update_rejects_invalid_fields,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key(CODE, "Central").await;
        let path = format!("/kpi/centers/{CODE}");
        let valid = center_update();
        let before = centers(&app).await;

        for case in center_update_cases() {
            let reply = send_json(&app, Method::PUT, &path, &key, &case.apply(&valid)).await;

            assert_field_error(&reply, &path, &case.loc, case.kind, &case.label());
            assert_eq!(centers(&app).await, before, "{}", case.label());
        }

        let reply = send_json(&app, Method::PUT, &path, &key, &valid).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(
            centers(&app).await,
            vec![vec![
                json!(CODE),
                json!("Central Norte"),
                json!("Lima"),
                json!("PE"),
                json!(1)
            ]]
        );
    }
);

both_backends!(
    center_update_rejects_long_code,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let long_code = "C".repeat(51);
        let longest_code = "C".repeat(50);
        let path = format!("/kpi/centers/{long_code}");
        let body = json!({"name": "Nuevo"});

        // The master key may register an unknown center, so only validation stops this one.
        let reply = send_json(&app, Method::PUT, &path, MASTER_KEY, &body).await;

        assert_field_error(
            &reply,
            &path,
            &json!(["path", "code"]),
            "string_too_long",
            "51-character code",
        );
        assert!(centers(&app).await.is_empty());

        let path = format!("/kpi/centers/{longest_code}");
        let reply = send_json(&app, Method::PUT, &path, MASTER_KEY, &body).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(centers(&app).await.len(), 1);
    }
);

both_backends!(
    center_update_rejects_nul_in_code,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        // The path carries the NUL character percent-encoded, and `instance` is the path as sent.
        let path = "/kpi/centers/H%00VC";

        let reply = send_json(
            &app,
            Method::PUT,
            path,
            MASTER_KEY,
            &json!({"name": "Nuevo"}),
        )
        .await;

        assert_field_error(
            &reply,
            path,
            &json!(["path", "code"]),
            "string_contains_nul",
            "code with U+0000",
        );
        assert!(centers(&app).await.is_empty());
    }
);

both_backends!(
    center_update_ignores_unknown_fields,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key(CODE, "Central").await;
        let path = format!("/kpi/centers/{CODE}");
        let mut body = center_update();
        body["timezone"] = json!("America/Lima");
        body["contact"] = json!({"phone": null});

        let reply = send_json(&app, Method::PUT, &path, &key, &body).await;

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(
            centers(&app).await,
            vec![vec![
                json!(CODE),
                json!("Central Norte"),
                json!("Lima"),
                json!("PE"),
                json!(1)
            ]]
        );
    }
);

/// Returns every write endpoint with a valid body for it.
fn write_requests() -> Vec<(Method, String, Value)> {
    vec![
        (Method::POST, "/kpi/submit".to_owned(), batch(&day(0))),
        (
            Method::POST,
            "/kpi/submit/enhanced".to_owned(),
            enhanced(&day(0)),
        ),
        (Method::POST, "/kpi/events".to_owned(), event()),
        (Method::PUT, format!("/kpi/centers/{CODE}"), center_update()),
    ]
}

both_backends!(malformed_body_rejected, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key(CODE, "Central").await;
    let before = centers(&app).await;
    let bodies = [
        ("{\"center_code\": ", "json_invalid"),
        ("center_code=HVC", "json_invalid"),
        ("[1, 2]", "model_type"),
        ("\"HVC\"", "model_type"),
        ("42", "model_type"),
        ("null", "model_type"),
    ];

    for (method, path, _) in write_requests() {
        for (raw, kind) in bodies {
            let context = format!("{method} {path} with {raw}");

            let reply = send_bytes(
                &app,
                method.clone(),
                &path,
                Some(&key),
                Some("application/json"),
                raw.as_bytes().to_vec(),
            )
            .await;

            assert_field_error(&reply, &path, &json!(["body"]), kind, &context);
            assert_nothing_stored(&app, &context).await;
            assert_eq!(centers(&app).await, before, "{context}");
        }
    }
});

both_backends!(
    non_json_content_type_rejected,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key(CODE, "Central").await;
        let before = centers(&app).await;

        for (method, path, body) in write_requests() {
            for content_type in [
                "text/plain",
                "application/x-www-form-urlencoded",
                "application/xml",
            ] {
                let context = format!("{method} {path} as {content_type}");
                let bytes = serde_json::to_vec(&body).unwrap();

                let reply = send_bytes(
                    &app,
                    method.clone(),
                    &path,
                    Some(&key),
                    Some(content_type),
                    bytes,
                )
                .await;

                assert_problem(
                    &reply,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    &path,
                    &context,
                );
                assert_nothing_stored(&app, &context).await;
                assert_eq!(centers(&app).await, before, "{context}");
            }
        }
    }
);

both_backends!(json_content_types_accepted, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key(CODE, "Central").await;
    let date = day(0);
    let content_types = [
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("Application/JSON; charset=UTF-8"),
        Some("application/vnd.api+json"),
        Some("text/json"),
        None,
    ];

    for (orders, content_type) in (100..).zip(content_types) {
        let context = format!("Content-Type {content_type:?}");
        let mut body = batch(&date);
        body["total_orders"] = json!(orders);
        let bytes = serde_json::to_vec(&body).unwrap();

        let reply = send_bytes(
            &app,
            Method::POST,
            "/kpi/submit",
            Some(&key),
            content_type,
            bytes,
        )
        .await;

        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{context}: {}",
            reply.body
        );
        assert_eq!(
            app.day_totals(CODE, &date).await,
            Some([orders, 28, 20, 15]),
            "{context}"
        );
    }
});

/// Serializes `body` as JSON preceded by spaces, `size` bytes in all.
fn padded(body: &Value, size: usize) -> Vec<u8> {
    let json = serde_json::to_vec(body).unwrap();
    let mut bytes = vec![b' '; size - json.len()];
    bytes.extend_from_slice(&json);
    bytes
}

both_backends!(oversized_body_rejected, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key(CODE, "Central").await;
    let before = centers(&app).await;

    for (method, path, body) in write_requests() {
        let context = format!("{method} {path} of 1 MiB + 1 byte");

        let reply = send_bytes(
            &app,
            method,
            &path,
            Some(&key),
            Some("application/json"),
            padded(&body, BODY_LIMIT + 1),
        )
        .await;

        assert_problem(
            &reply,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &path,
            &context,
        );
        assert_nothing_stored(&app, &context).await;
        assert_eq!(centers(&app).await, before, "{context}");
    }
});

/// Posts `body` to `path` with chunked transfer encoding, so that the request
/// has no Content-Length. The response is read up to the closed connection.
async fn post_chunked(app: &TestApp, path: &str, key: &str, body: &[u8]) -> Reply {
    let address = app.base_url.trim_start_matches("http://");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nX-API-Key: {key}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(64 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");

    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    // The server may respond with 413 and close before it has read every chunk,
    // so a failed write still leaves a response to read.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read response");

    let text = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    Reply {
        status: StatusCode::from_u16(status).expect("HTTP status"),
        content_type,
        body,
    }
}

both_backends!(
    oversized_chunked_body_rejected,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key(CODE, "Central").await;

        let reply = post_chunked(
            &app,
            "/kpi/submit",
            &key,
            &padded(&batch(&day(0)), BODY_LIMIT + 1),
        )
        .await;

        assert_problem(
            &reply,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "/kpi/submit",
            "chunked body of 1 MiB + 1 byte",
        );
        assert_nothing_stored(&app, "chunked body of 1 MiB + 1 byte").await;
    }
);

both_backends!(body_at_limit_accepted, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key(CODE, "Central").await;
    let date = day(0);

    let reply = send_bytes(
        &app,
        Method::POST,
        "/kpi/submit",
        Some(&key),
        Some("application/json"),
        padded(&batch(&date), BODY_LIMIT),
    )
    .await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(app.day_totals(CODE, &date).await, Some([30, 28, 20, 15]));
});

both_backends!(
    unknown_path_returns_problem,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let requests = [
            (Method::GET, "/kpi/unknown"),
            (Method::POST, "/kpi/submit/extra"),
        ];

        for (method, path) in requests {
            let context = format!("{method} {path}");

            let reply = send_bytes(&app, method, path, None, None, Vec::new()).await;

            assert_problem(&reply, StatusCode::NOT_FOUND, "not_found", path, &context);
            assert_eq!(reply.body["detail"], json!("Not Found"), "{context}");
        }
    }
);

both_backends!(
    wrong_method_returns_problem,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let requests = [
            (Method::GET, "/kpi/submit"),
            (Method::DELETE, "/kpi/events"),
        ];

        for (method, path) in requests {
            let context = format!("{method} {path}");

            let reply = send_bytes(&app, method, path, None, None, Vec::new()).await;

            assert_problem(
                &reply,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                path,
                &context,
            );
            assert_eq!(
                reply.body["detail"],
                json!("Method Not Allowed"),
                "{context}"
            );
        }
    }
);
