//! Property tests that send generated requests to every write endpoint, on
//! both backends: valid bodies with one field changed to an odd value,
//! arbitrary JSON, raw bytes, deep nesting and odd headers.
//!
//! For every request the status is below 500, every 4xx response is a
//! problem document, and a rejected request leaves every KPI table as it
//! was. An accepted request may write.
//!
//! Each test starts one service and runs its cases inside one runtime. The
//! seed is fixed, so a run repeats; `PROPTEST_RNG_SEED` picks another seed
//! and `PROPTEST_CASES` another number of cases per test.
//!
//! The service trusts the test client as a proxy and reads the client
//! address from `X-Real-IP`, and every request gets an address of its own.
//! Otherwise, after 20 wrong keys in a minute, the failed-key throttle would
//! return 429 to every later request from 127.0.0.1, valid keys included.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::{day, Arg, Backend, TestApp, TestDb, MASTER_KEY};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::Union;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The seed of every test unless `PROPTEST_RNG_SEED` is set.
const DEFAULT_SEED: u64 = 20_261_204;

/// Cases per test unless `PROPTEST_CASES` is set.
const CASES: u32 = 250;

/// The center that every valid body names. Each test has a service of its own.
const CENTER: &str = "FUZ";

/// Placeholders in generated `X-API-Key` values, replaced when the request is
/// sent, because the center's key is generated after the strategies exist.
const OWN_KEY: &[u8] = b"<own-key>";
const MASTER: &[u8] = b"<master-key>";

/// Tables whose rows a rejected request must leave unchanged.
/// `event_receipts` is missing before its migration, and is then skipped.
const KPI_TABLES: [&str; 10] = [
    "daily_metrics",
    "test_summaries",
    "species_summaries",
    "breed_summaries",
    "performance_metrics",
    "module_metrics",
    "system_usage_metrics",
    "payment_method_metrics",
    "centers",
    "event_receipts",
];

/// The first segment of every `loc` in a validation error.
const LOCATION_ROOTS: [&str; 4] = ["body", "path", "query", "header"];

/// The service's request body limit, 1 MiB.
const BODY_LIMIT: usize = 1024 * 1024;

/// Settings of every service in this file. The rate limits are far above
/// what a test sends, so that no case gets 429.
const SETTINGS: [(&str, &str); 4] = [
    ("RATE_LIMIT_SUBMIT", "1000000/second"),
    ("RATE_LIMIT_EVENTS", "1000000/second"),
    ("TRUSTED_PROXIES", "127.0.0.1"),
    ("CLIENT_IP_HEADER", "X-Real-IP"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Submit,
    Enhanced,
    Event,
    CenterUpdate,
    CenterDelete,
}

const ENDPOINTS: [Endpoint; 5] = [
    Endpoint::Submit,
    Endpoint::Enhanced,
    Endpoint::Event,
    Endpoint::CenterUpdate,
    Endpoint::CenterDelete,
];

impl Endpoint {
    fn method(self) -> Method {
        match self {
            Endpoint::Submit | Endpoint::Enhanced | Endpoint::Event => Method::POST,
            Endpoint::CenterUpdate => Method::PUT,
            Endpoint::CenterDelete => Method::DELETE,
        }
    }

    /// Returns the path for the center `code`, which goes into the path
    /// as it is, so that it may carry percent escapes.
    fn path(self, code: &str) -> String {
        match self {
            Endpoint::Submit => "/kpi/submit".to_owned(),
            Endpoint::Enhanced => "/kpi/submit/enhanced".to_owned(),
            Endpoint::Event => "/kpi/events".to_owned(),
            Endpoint::CenterUpdate => format!("/kpi/centers/{code}"),
            Endpoint::CenterDelete => format!("/kpi/centers/{code}/data"),
        }
    }

    fn success(self) -> StatusCode {
        match self {
            Endpoint::Submit | Endpoint::Enhanced => StatusCode::CREATED,
            Endpoint::Event => StatusCode::ACCEPTED,
            Endpoint::CenterUpdate | Endpoint::CenterDelete => StatusCode::OK,
        }
    }
}

/// Header names and raw values, in order; a name may repeat.
type Headers = Vec<(String, Vec<u8>)>;

/// One generated request. `label` describes how it was made.
#[derive(Clone)]
struct Case {
    endpoint: Endpoint,
    label: String,
    path: String,
    headers: Headers,
    body: Option<Vec<u8>>,
}

impl Case {
    /// Builds a JSON request to `endpoint` for the test center with its own key.
    fn json(endpoint: Endpoint, label: String, body: Option<Vec<u8>>) -> Case {
        Case {
            endpoint,
            label,
            path: endpoint.path(CENTER),
            headers: vec![
                ("content-type".to_owned(), b"application/json".to_vec()),
                ("x-api-key".to_owned(), OWN_KEY.to_vec()),
            ],
            body,
        }
    }

    fn with_key(mut self, key: &[u8]) -> Case {
        self.headers.retain(|(name, _)| name != "x-api-key");
        self.headers.push(("x-api-key".to_owned(), key.to_vec()));
        self
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} ({:?})", self.label, self.endpoint)?;
        writeln!(f, "{} {}", self.endpoint.method(), self.path)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {}", excerpt(value, 200))?;
        }
        match &self.body {
            Some(body) => write!(f, "\n{}", excerpt(body, 2000)),
            None => write!(f, "(no body)"),
        }
    }
}

/// Returns the start of `bytes` as text, each byte outside printable ASCII
/// written as `\xNN`, and the full length when it is cut. Backslashes stay
/// as they are, so that JSON escapes read as sent.
fn excerpt(bytes: &[u8], max: usize) -> String {
    let mut text = String::new();
    for &byte in &bytes[..bytes.len().min(max)] {
        if (0x20..0x7F).contains(&byte) {
            text.push(char::from(byte));
        } else {
            text.push_str(&format!("\\x{byte:02X}"));
        }
    }
    if bytes.len() > max {
        text.push_str(&format!("... ({} bytes in all)", bytes.len()));
    }
    text
}

// ---------------------------------------------------------------------------
// Valid bodies

/// Dates relative to today in UTC, as the service's date rules read them.
#[derive(Debug, Clone)]
struct Days {
    today: String,
    tomorrow: String,
    after_tomorrow: String,
}

impl Days {
    fn now() -> Days {
        Days {
            today: day(0),
            tomorrow: day(1),
            after_tomorrow: day(2),
        }
    }
}

fn submit_body(days: &Days) -> Value {
    json!({
        "center_code": CENTER,
        "date": days.today,
        "total_orders": 30,
        "total_results": 28,
        "total_pets": 20,
        "total_owners": 15,
        "tests": [
            {"code": "GLU", "name": "Glucosa", "count": 12},
            {"code": "BUN", "count": 4},
        ],
        "species": [{"species": "Canino", "count": 14}],
        "breeds": [{"breed": "Labrador", "species": "Canino", "count": 5}],
    })
}

fn enhanced_body(days: &Days) -> Value {
    let mut body = submit_body(days);
    let extras = json!({
        "performance": {
            "avg_order_processing_time": 35,
            "peak_hour": 10,
            "peak_hour_orders": 9,
            "completion_rate": 95,
            "same_day_completion": 20,
            "morning_orders": 12,
            "afternoon_orders": 10,
            "evening_orders": 6,
            "night_orders": 2,
        },
        "modules": [
            {"module_name": "laboratorio", "operations_count": 120, "active_users": 4,
             "total_revenue": 150000, "avg_transaction": 2500},
        ],
        "system_usage": {
            "total_active_users": 8,
            "peak_concurrent_users": 5,
            "avg_session_duration": 42,
            "web_access_count": 30,
            "mobile_access_count": 10,
            "desktop_access_count": 20,
            "total_workstations": 6,
        },
        "payment_methods": [
            {"payment_method": "efectivo", "transaction_count": 18, "total_amount": 90000},
        ],
    });
    for (name, value) in extras.as_object().expect("object") {
        body[name] = value.clone();
    }
    body
}

fn event_body(days: &Days) -> Value {
    json!({
        "center_code": CENTER,
        "event_type": "order_created",
        "timestamp": format!("{}T10:30:00-04:00", days.today),
        "data": {
            "order_id": 58213,
            "pet_id": 77,
            "test_count": 2,
            "tests": ["GLU", "BUN"],
            "species": "Canino",
            "breed": "Labrador",
        },
    })
}

fn center_update_body() -> Value {
    json!({"name": "Centro de pruebas", "city": "Santiago", "country": "DO", "is_active": true})
}

/// Returns the valid body of `endpoint`; `DELETE` takes none.
fn valid_body(endpoint: Endpoint, days: &Days) -> Option<Value> {
    match endpoint {
        Endpoint::Submit => Some(submit_body(days)),
        Endpoint::Enhanced => Some(enhanced_body(days)),
        Endpoint::Event => Some(event_body(days)),
        Endpoint::CenterUpdate => Some(center_update_body()),
        Endpoint::CenterDelete => None,
    }
}

fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON value serializes")
}

// ---------------------------------------------------------------------------
// Odd values, as raw JSON text

/// What a field holds, which picks the odd values tried on it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Date,
    Timestamp,
    Bool,
    EventType,
    Object,
    List(ListKind),
}

/// The lists of the bodies, each with its own entry shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListKind {
    Tests,
    Species,
    Breeds,
    Modules,
    PaymentMethods,
    EventTests,
}

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "-0",
    "-0.0",
    "0.0",
    "1.0",
    "50.0",
    "0.5",
    "50.5",
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "4294967296",
    "2147483647.0",
    "2147483648.0",
    "2147483647.5",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "123456789012345678901234567890",
    "9.2e18",
    "9.3e18",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "1e309",
    "-1e400",
    "5e-324",
    "1e-400",
    "1E2",
    "01",
    "+1",
    ".5",
    "1.",
    "0x10",
    "NaN",
    "Infinity",
    "-Infinity",
    "\"50\"",
    "\"-1\"",
    "\"0\"",
    "\"2147483647\"",
    "\"2147483648\"",
    "\"9223372036854775808\"",
    "\"-\"",
    "\"\"",
    "\" 5\"",
    "\"5 \"",
    "\"+5\"",
    "\"1e3\"",
    "\"50.0\"",
    "\"\\u0663\"",
    "\"\\uff15\"",
];

const TEXTS: &[&str] = &[
    "\"\"",
    "\" \"",
    "\"\\u0000\"",
    "\"GLU\\u0000\"",
    "\"\\ud800\"",
    "\"\\udfff\"",
    "\"\\ud800\\udc00\"",
    "\"\\ud83d\\ude00\"",
    "\"x\\ud800y\"",
    "\"\\udc00\\ud800\"",
    "\"\\u00\"",
    "\"\\x41\"",
    "\"\\/\"",
    "\"tab\tinside\"",
    "\"line\nbreak\"",
    "\"\\u200b\"",
    "\"\\u202eRTL\"",
    "\"e\\u0301\"",
    "\"\\ufeff\"",
    "\"\\uffff\"",
    "\"Perro \u{1F415} Caniche\"",
    "\"\u{0130}stanbul\"",
    "\"'; DROP TABLE centers; --\"",
    "\"%00\"",
    "\"null\"",
];

const BOOLS: &[&str] = &[
    "true",
    "false",
    "0",
    "1",
    "2",
    "-1",
    "1.0",
    "0.0",
    "\"true\"",
    "\"false\"",
    "\"TRUE\"",
    "\"1\"",
    "\"0\"",
    "\"yes\"",
    "\"\"",
    "null",
    "[]",
    "{}",
];

const EVENT_TYPES: &[&str] = &[
    "\"order_created\"",
    "\"result_created\"",
    "\"pet_created\"",
    "\"owner_created\"",
    "\"ORDER_CREATED\"",
    "\"order_created \"",
    "\"OrderCreated\"",
    "\"unknown\"",
    "\"\"",
    "\"order_created\\u0000\"",
    "0",
    "{\"order_created\": {}}",
];

const SHAPES: &[&str] = &[
    "null",
    "{}",
    "[]",
    "[null]",
    "[{}]",
    "[[]]",
    "\"x\"",
    "1",
    "{\"unknown\": 1}",
    "{\"count\": -1}",
];

fn raw(texts: &[&str]) -> Vec<Vec<u8>> {
    texts.iter().map(|text| text.as_bytes().to_vec()).collect()
}

fn quoted(texts: Vec<String>) -> Vec<Vec<u8>> {
    texts
        .into_iter()
        .map(|text| format!("\"{text}\"").into_bytes())
        .collect()
}

/// Units of long strings: a character of 1 to 4 bytes of UTF-8, or written
/// as an escape of 6 or 12 bytes.
const STRING_UNITS: &[&str] = &["a", "\u{e9}", "\u{1F415}", "\\u00e9", "\\ud83d\\ude00"];

/// Returns a JSON string of `unit` repeated `count` times.
fn repeated_string(unit: &str, count: usize) -> Vec<u8> {
    format!("\"{}\"", unit.repeat(count)).into_bytes()
}

/// Lengths of long strings in characters: at and past the column limits.
const CHARACTER_COUNTS: &[usize] = &[50, 51, 100, 101, 255, 256, 10_000];

/// Sizes of long strings in bytes, which bring the body to just under or
/// just over its 1 MiB limit. Bigger bodies make the service close the
/// connection while the client still writes, and the client then sees a
/// broken pipe, not the 413.
const BYTE_COUNTS: &[usize] = &[BODY_LIMIT - 4_096, BODY_LIMIT + 1];

/// Returns a long string of one of [`STRING_UNITS`], by character count or
/// by size in bytes.
fn long_string() -> BoxedStrategy<Vec<u8>> {
    let by_characters = (select(STRING_UNITS), select(CHARACTER_COUNTS))
        .prop_map(|(unit, count)| repeated_string(unit, count));
    let by_bytes = (select(STRING_UNITS), select(BYTE_COUNTS))
        .prop_map(|(unit, bytes)| repeated_string(unit, bytes / unit.len() + 1));
    prop_oneof![3 => by_characters, 1 => by_bytes].boxed()
}

fn date_strings(days: &Days) -> Vec<String> {
    let relative = [&days.today, &days.tomorrow, &days.after_tomorrow];
    let mut dates: Vec<String> = relative.iter().map(|d| d.to_string()).collect();
    dates.extend(relative.iter().map(|d| format!("+{d}")));
    dates.extend(
        [
            "2026-02-30",
            "2026-02-29",
            "2028-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-12-00",
            "2026-12-32",
            "0000-01-01",
            "0001-01-01",
            "-0001-01-01",
            "-4712-01-01",
            "-4713-11-24",
            "-4714-11-23",
            "-262143-01-01",
            "-262144-01-01",
            "+262142-12-31",
            "+262143-12-31",
            "+262144-01-01",
            "1582-10-10",
            "1900-01-01",
            "1970-01-01",
            "9999-12-31",
            "+10000-01-01",
            "+0002026-12-01",
            "2026-12-01T00:00:00",
            "2026-12-01Z",
            " 2026-12-01",
            "2026-12-01 ",
            "2026-1-1",
            "20261201",
            "2026/12/01",
            "01-12-2026",
            "today",
            "",
        ]
        .map(str::to_owned),
    );
    dates
}

fn timestamp_strings(days: &Days) -> Vec<String> {
    let (today, tomorrow, later) = (&days.today, &days.tomorrow, &days.after_tomorrow);
    let mut stamps = vec![
        format!("{today}T10:00:00Z"),
        format!("{today}T10:00:00+14:00"),
        format!("{tomorrow}T23:59:59-23:59"),
        format!("{tomorrow}T23:59:59+23:59"),
        format!("{later}T00:00:00+23:59"),
        format!("{later}T00:00:00-23:59"),
        format!("{today}T24:00:00Z"),
        format!("{today}T23:59:60Z"),
        format!("{today}T10:00:00+24:00"),
        format!("{today}T10:00:00+99:00"),
        format!("{today}T10:00:00.1234567890123456789Z"),
        format!("{today}T10:00:00+0400"),
        format!("{today}t10:00:00z"),
        format!("{today} 10:00:00"),
        format!("{today} 10:00:00.123456+02:00"),
        format!("{today}T10:00"),
        format!("{today}T10"),
        format!("{today}  10:00:00"),
        format!("\\u0020{today}T10:00:00Z"),
        today.clone(),
    ];
    stamps.extend(
        [
            "0000-01-01T00:00:00+23:59",
            "0000-01-01T00:00:00-23:59",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59-23:59",
            "9999-12-31T23:59:59Z",
            "1969-12-31T23:59:59Z",
            "+2026-12-01T10:00:00Z",
            "-0001-12-31T23:59:59Z",
            "-0001-12-31T23:59:59",
            "-4714-11-23T10:00:00",
            "-16704-12-03 22:30:0",
            "+262143-12-31T23:59:59",
            "2026-02-30T10:00:00Z",
            "10:00:00",
            "now",
            "",
        ]
        .map(str::to_owned),
    );
    stamps
}

/// Returns a list of `count` entries made by `entry` from the entry's index.
fn list_text(count: usize, entry: impl Fn(usize) -> String) -> Vec<u8> {
    let entries: Vec<String> = (0..count).map(entry).collect();
    format!("[{}]", entries.join(",")).into_bytes()
}

/// Lists at and past their length limits, and lists whose entries collide.
fn odd_lists(list: ListKind) -> Vec<Vec<u8>> {
    let (limit, entry): (usize, fn(usize) -> String) = match list {
        ListKind::Tests => (10_000, |i| format!("{{\"code\":\"T{i}\",\"count\":1}}")),
        ListKind::Species => (10_000, |i| format!("{{\"species\":\"S{i}\",\"count\":1}}")),
        ListKind::Breeds => (10_000, |i| format!("{{\"breed\":\"B{i}\",\"count\":1}}")),
        ListKind::Modules => (10_000, |i| format!("{{\"module_name\":\"M{i}\"}}")),
        ListKind::PaymentMethods => (10_000, |i| format!("{{\"payment_method\":\"P{i}\"}}")),
        ListKind::EventTests => (1_000, |i| format!("\"T{i}\"")),
    };
    let colliding: &[&str] = match list {
        ListKind::Tests => &[
            "[{\"code\":\"A\",\"count\":2147483647},{\"code\":\"A\",\"count\":1}]",
            "[{\"code\":\"A\",\"count\":1},{\"code\":\"A\",\"count\":2,\"name\":\"x\"}]",
            "[{\"code\":\"A\",\"count\":1},{\"code\":\"a\",\"count\":1}]",
        ],
        ListKind::Species => &[
            "[{\"species\":\"A\",\"count\":2147483647},{\"species\":\"A\",\"count\":1}]",
            "[{\"species\":\"A\",\"count\":1},{\"species\":\"A \",\"count\":1}]",
        ],
        ListKind::Breeds => &[
            "[{\"breed\":\"B\",\"species\":\"\",\"count\":1},{\"breed\":\"B\",\"count\":1}]",
            "[{\"breed\":\"B\",\"species\":null,\"count\":2147483647},{\"breed\":\"B\",\"count\":1}]",
        ],
        ListKind::Modules => &["[{\"module_name\":\"M\"},{\"module_name\":\"M\"}]"],
        ListKind::PaymentMethods => &["[{\"payment_method\":\"P\"},{\"payment_method\":\"P\"}]"],
        ListKind::EventTests => &["[\"GLU\",\"GLU\",\"GLU\"]", "[\"GLU\",\"glu\",\"GLU \"]"],
    };
    let mut lists: Vec<Vec<u8>> = [0, 1, 2, limit, limit + 1]
        .into_iter()
        .map(|count| list_text(count, entry))
        .collect();
    lists.extend(raw(colliding));
    lists
}

/// Returns the fixed odd values tried on a field of `kind`, as raw JSON text.
fn edge_values(kind: Kind, days: &Days) -> Vec<Vec<u8>> {
    match kind {
        Kind::Int => raw(NUMBERS),
        Kind::Text => raw(TEXTS),
        Kind::Date => quoted(date_strings(days)),
        Kind::Timestamp => quoted(timestamp_strings(days)),
        Kind::Bool => raw(BOOLS),
        Kind::EventType => raw(EVENT_TYPES),
        Kind::Object => raw(SHAPES),
        Kind::List(list) => odd_lists(list),
    }
}

/// Returns arbitrary numbers and strings as raw JSON text.
fn generated_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        any::<f64>().prop_map(|x| serde_json::to_vec(&x).expect("f64 serializes")),
        any::<String>().prop_map(|text| to_bytes(&Value::String(text))),
    ]
    .boxed()
}

/// Returns odd values of every kind but lists.
fn any_odd_value(days: &Days) -> BoxedStrategy<Vec<u8>> {
    let kinds = [
        Kind::Int,
        Kind::Text,
        Kind::Date,
        Kind::Timestamp,
        Kind::Bool,
        Kind::EventType,
        Kind::Object,
    ];
    let edges: Vec<Vec<u8>> = kinds
        .into_iter()
        .flat_map(|kind| edge_values(kind, days))
        .collect();
    prop_oneof![6 => select(edges), 1 => long_string(), 2 => generated_value()].boxed()
}

/// Returns odd values for a field of `kind`: mostly the edge values of its
/// own kind, sometimes `any`, an arbitrary number or string, or (for text)
/// a long string.
fn odd_value(kind: Kind, days: &Days, any: &BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let mut options = vec![
        (4, select(edge_values(kind, days)).boxed()),
        (1, generated_value()),
        (1, any.clone()),
    ];
    if kind == Kind::Text {
        options.push((1, long_string()));
    }
    Union::new_weighted(options).boxed()
}

// ---------------------------------------------------------------------------
// Mutations of valid bodies

/// Fields of each body as JSON pointers, with the kind of value they hold.
/// A pointer to a field that the valid body lacks adds the field.
fn fields(endpoint: Endpoint) -> &'static [(&'static str, Kind)] {
    use Kind::*;
    match endpoint {
        Endpoint::Submit => &[
            ("/center_code", Text),
            ("/api_key", Text),
            ("/date", Date),
            ("/total_orders", Int),
            ("/total_results", Int),
            ("/total_pets", Int),
            ("/total_owners", Int),
            ("/tests", List(ListKind::Tests)),
            ("/tests/0", Object),
            ("/tests/0/code", Text),
            ("/tests/0/name", Text),
            ("/tests/0/count", Int),
            ("/species", List(ListKind::Species)),
            ("/species/0/species", Text),
            ("/species/0/count", Int),
            ("/breeds", List(ListKind::Breeds)),
            ("/breeds/0/breed", Text),
            ("/breeds/0/species", Text),
            ("/breeds/0/count", Int),
            ("/unknown_field", Text),
        ],
        Endpoint::Enhanced => &[
            ("/center_code", Text),
            ("/date", Date),
            ("/total_orders", Int),
            ("/tests/0/count", Int),
            ("/performance", Object),
            ("/performance/avg_order_processing_time", Int),
            ("/performance/peak_hour", Int),
            ("/performance/peak_hour_orders", Int),
            ("/performance/completion_rate", Int),
            ("/performance/same_day_completion", Int),
            ("/performance/morning_orders", Int),
            ("/performance/night_orders", Int),
            ("/modules", List(ListKind::Modules)),
            ("/modules/0", Object),
            ("/modules/0/module_name", Text),
            ("/modules/0/operations_count", Int),
            ("/modules/0/active_users", Int),
            ("/modules/0/total_revenue", Int),
            ("/modules/0/avg_transaction", Int),
            ("/system_usage", Object),
            ("/system_usage/total_active_users", Int),
            ("/system_usage/peak_concurrent_users", Int),
            ("/system_usage/avg_session_duration", Int),
            ("/system_usage/total_workstations", Int),
            ("/payment_methods", List(ListKind::PaymentMethods)),
            ("/payment_methods/0/payment_method", Text),
            ("/payment_methods/0/transaction_count", Int),
            ("/payment_methods/0/total_amount", Int),
        ],
        Endpoint::Event => &[
            ("/center_code", Text),
            ("/api_key", Text),
            ("/event_type", EventType),
            ("/timestamp", Timestamp),
            ("/event_id", Text),
            ("/data", Object),
            ("/data/order_id", Int),
            ("/data/result_id", Int),
            ("/data/pet_id", Int),
            ("/data/owner_id", Int),
            ("/data/test_count", Int),
            ("/data/tests", List(ListKind::EventTests)),
            ("/data/tests/0", Text),
            ("/data/species", Text),
            ("/data/breed", Text),
            ("/data/unknown_field", Text),
        ],
        Endpoint::CenterUpdate => &[
            ("/name", Text),
            ("/city", Text),
            ("/country", Text),
            ("/is_active", Bool),
            ("/api_key", Text),
            ("/unknown_field", Int),
        ],
        Endpoint::CenterDelete => &[],
    }
}

/// One change to a valid body.
#[derive(Debug, Clone)]
enum Mutation {
    /// Sets the field at the pointer to raw JSON text.
    Replace(&'static str, Vec<u8>),
    /// Removes the field at the pointer.
    Remove(&'static str),
    /// Appends a second member with the top-level field's name.
    Duplicate(&'static str, Vec<u8>),
}

/// A string that no generated value contains; it marks where raw text goes.
const MARKER: &str = "__fuzz_bodies_marker__";

/// Applies `mutation` to `body` and returns the request body text.
fn mutate(mut body: Value, mutation: &Mutation) -> Vec<u8> {
    match mutation {
        Mutation::Replace(pointer, raw) => {
            set_pointer(&mut body, pointer, Value::from(MARKER));
            let text = to_bytes(&body);
            replace_marker(&text, raw)
        }
        Mutation::Remove(pointer) => {
            let (parent, last) = pointer.rsplit_once('/').expect("pointer starts with /");
            match body.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    map.remove(last);
                }
                Some(Value::Array(items)) => {
                    let index: usize = last.parse().expect("list index");
                    items.remove(index);
                }
                _ => {}
            }
            to_bytes(&body)
        }
        Mutation::Duplicate(pointer, raw) => {
            let mut text = to_bytes(&body);
            let closing = text.pop();
            assert_eq!(closing, Some(b'}'), "a valid body is an object");
            text.extend_from_slice(format!(",\"{}\":", &pointer[1..]).as_bytes());
            text.extend_from_slice(raw);
            text.push(b'}');
            text
        }
    }
}

/// Sets the value at a JSON pointer, adding the last member if it is missing.
fn set_pointer(body: &mut Value, pointer: &str, value: Value) {
    if let Some(slot) = body.pointer_mut(pointer) {
        *slot = value;
        return;
    }
    let (parent, last) = pointer.rsplit_once('/').expect("pointer starts with /");
    let parent = body
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("{pointer} has no parent object"));
    parent.insert(last.to_owned(), value);
}

fn replace_marker(text: &[u8], raw: &[u8]) -> Vec<u8> {
    let marker = format!("\"{MARKER}\"");
    let marker = marker.as_bytes();
    let start = text
        .windows(marker.len())
        .position(|window| window == marker)
        .expect("the marker is in the body");
    [&text[..start], raw, &text[start + marker.len()..]].concat()
}

/// Returns a mutation of one field of `endpoint`'s body.
fn mutation(endpoint: Endpoint, days: &Days) -> BoxedStrategy<Mutation> {
    let any = any_odd_value(days);
    // One strategy per field, built once, because edge values are built eagerly.
    let replace = fields(endpoint)
        .iter()
        .map(|&(pointer, kind)| {
            odd_value(kind, days, &any)
                .prop_map(move |raw| Mutation::Replace(pointer, raw))
                .boxed()
        })
        .collect::<Vec<_>>();
    let remove = select(fields(endpoint))
        .prop_map(|(pointer, _)| Mutation::Remove(pointer))
        .boxed();
    let top_level: Vec<&'static str> = fields(endpoint)
        .iter()
        .map(|(pointer, _)| *pointer)
        .filter(|pointer| pointer.matches('/').count() == 1)
        .collect();
    let duplicate = (select(top_level), select(raw(NUMBERS)))
        .prop_map(|(pointer, raw)| Mutation::Duplicate(pointer, raw))
        .boxed();
    prop_oneof![8 => Union::new(replace), 1 => remove, 1 => duplicate].boxed()
}

/// Codes placed in the path of the center endpoints, percent escapes included.
const PATH_CODES: &[&str] = &[
    CENTER,
    "fuz",
    "NOPE",
    "%00",
    "FUZ%00",
    "%FF",
    "%C3%A9",
    "%F0%9F%90%95",
    "%ED%A0%80",
    "%2F",
    "%2e%2e",
    "%20",
    "FUZ%20",
    "..",
    "%",
    "%zz",
    "a;b",
    "a?b=1",
    "%3F",
    "%23",
];

/// Lengths of long path codes: at and past the 50-character limit, and long URIs.
const LONG_CODE_LENGTHS: &[usize] = &[50, 51, 1_000, 8_000];

/// Returns a path code: one of [`PATH_CODES`], or a long one.
fn path_code() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(PATH_CODES).prop_map(str::to_owned),
        1 => select(LONG_CODE_LENGTHS).prop_map(|length| "C".repeat(length)),
    ]
    .boxed()
}

/// Returns a request to `endpoint` whose valid body has one field changed.
/// Most carry the center's own key and some the master key; for the center
/// endpoints the path code may be odd instead.
fn mutated_case(endpoint: Endpoint, days: &Days) -> BoxedStrategy<Case> {
    let base = valid_body(endpoint, days);
    let key = prop_oneof![4 => Just(OWN_KEY), 1 => Just(MASTER)];
    let center_path = matches!(endpoint, Endpoint::CenterUpdate | Endpoint::CenterDelete);
    let code = if center_path {
        prop_oneof![3 => Just(CENTER.to_owned()), 1 => path_code()].boxed()
    } else {
        Just(CENTER.to_owned()).boxed()
    };
    let change = match &base {
        Some(_) => mutation(endpoint, days).prop_map(Some).boxed(),
        None => Just(None).boxed(),
    };
    (change, key, code)
        .prop_map(move |(change, key, code)| {
            let body = match (&base, &change) {
                (Some(base), Some(change)) => Some(mutate(base.clone(), change)),
                (base, _) => base.as_ref().map(to_bytes),
            };
            let label = match &change {
                Some(change) => format!("mutation {}", describe_mutation(change)),
                None => "no body".to_owned(),
            };
            let mut case = Case::json(endpoint, label, body).with_key(key);
            case.path = endpoint.path(&code);
            case
        })
        .boxed()
}

fn describe_mutation(mutation: &Mutation) -> String {
    match mutation {
        Mutation::Replace(pointer, raw) => format!("{pointer} = {}", excerpt(raw, 200)),
        Mutation::Remove(pointer) => format!("{pointer} removed"),
        Mutation::Duplicate(pointer, raw) => {
            format!("{pointer} sent twice, second {}", excerpt(raw, 200))
        }
    }
}

/// Returns one request per edge value of each kind that `endpoint`'s body
/// holds, each value in the next field of its kind in turn, and for the
/// center endpoints one per odd path code. Random cases may miss a given
/// value, and these send each at least once.
fn edge_cases(endpoint: Endpoint, days: &Days) -> Vec<Case> {
    let mut cases = Vec::new();
    if let Some(base) = valid_body(endpoint, days) {
        let mut kinds: Vec<Kind> = Vec::new();
        for (_, kind) in fields(endpoint) {
            if !kinds.contains(kind) {
                kinds.push(*kind);
            }
        }
        for kind in kinds {
            let pointers: Vec<&'static str> = fields(endpoint)
                .iter()
                .filter(|(_, field_kind)| *field_kind == kind)
                .map(|(pointer, _)| *pointer)
                .collect();
            let mut values = edge_values(kind, days);
            if kind == Kind::Text {
                values.extend(long_strings());
            }
            for (index, value) in values.into_iter().enumerate() {
                let change = Mutation::Replace(pointers[index % pointers.len()], value);
                let label = format!("edge value {}", describe_mutation(&change));
                let body = mutate(base.clone(), &change);
                cases.push(Case::json(endpoint, label, Some(body)));
            }
        }
    }
    if matches!(endpoint, Endpoint::CenterUpdate | Endpoint::CenterDelete) {
        let body = valid_body(endpoint, days).map(|body| to_bytes(&body));
        let long_codes = LONG_CODE_LENGTHS.iter().map(|&length| "C".repeat(length));
        for code in PATH_CODES
            .iter()
            .map(|code| code.to_string())
            .chain(long_codes)
        {
            let mut case = Case::json(endpoint, format!("path code {code}"), body.clone());
            case.path = endpoint.path(&code);
            cases.push(case);
        }
    }
    cases
}

/// Returns every long string that [`long_string`] may generate.
fn long_strings() -> Vec<Vec<u8>> {
    let mut strings = Vec::new();
    for unit in STRING_UNITS {
        for count in CHARACTER_COUNTS {
            strings.push(repeated_string(unit, *count));
        }
        for bytes in BYTE_COUNTS {
            strings.push(repeated_string(unit, bytes / unit.len() + 1));
        }
    }
    strings
}

// ---------------------------------------------------------------------------
// Arbitrary bodies

/// Every field name of every body, so that arbitrary objects reach the typed
/// parsers more often than random keys would.
const FIELD_NAMES: &[&str] = &[
    "center_code",
    "api_key",
    "date",
    "total_orders",
    "total_results",
    "total_pets",
    "total_owners",
    "tests",
    "species",
    "breeds",
    "code",
    "name",
    "count",
    "breed",
    "performance",
    "modules",
    "system_usage",
    "payment_methods",
    "peak_hour",
    "completion_rate",
    "module_name",
    "payment_method",
    "total_amount",
    "event_type",
    "timestamp",
    "event_id",
    "data",
    "order_id",
    "city",
    "country",
    "is_active",
];

/// Returns arbitrary JSON values up to 4 levels deep and 64 nodes in all.
fn arbitrary_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|x| json!(x)),
        any::<String>().prop_map(Value::from),
        select(FIELD_NAMES).prop_map(Value::from),
        select(
            &[
                "order_created",
                "2026-12-03",
                "2026-12-03T10:00:00Z",
                CENTER
            ][..]
        )
        .prop_map(Value::from),
    ];
    let key = prop_oneof![3 => select(FIELD_NAMES).prop_map(str::to_owned), 1 => any::<String>()];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Returns an object of known field names with odd values, as raw text, so
/// that it can hold what a JSON value cannot (lone surrogates, 1e400).
fn odd_object(days: &Days) -> BoxedStrategy<Vec<u8>> {
    let member = (select(FIELD_NAMES), any_odd_value(days));
    prop::collection::vec(member, 0..10)
        .prop_map(|members| {
            let mut text = b"{".to_vec();
            for (index, (name, raw)) in members.iter().enumerate() {
                if index > 0 {
                    text.push(b',');
                }
                text.extend_from_slice(format!("\"{name}\":").as_bytes());
                text.extend_from_slice(raw);
            }
            text.push(b'}');
            text
        })
        .boxed()
}

/// Depths of nested JSON: around serde_json's recursion limit of 128, and far beyond.
const NESTING_DEPTHS: &[usize] = &[127, 128, 129, 1_000, 10_000, 100_000];

/// How nested JSON is built: opened only, or opened and closed, alone or as
/// the value of a field of a valid body.
#[derive(Debug, Clone, Copy)]
enum Nesting {
    OpenArrays,
    ClosedArrays,
    OpenObjects,
    ClosedObjects,
    OpenMixed,
    /// Closed arrays as the value of a field the body type has.
    KnownField,
    /// Closed arrays as the value of a field the body type ignores.
    UnknownField,
}

const NESTINGS: &[Nesting] = &[
    Nesting::OpenArrays,
    Nesting::ClosedArrays,
    Nesting::OpenObjects,
    Nesting::ClosedObjects,
    Nesting::OpenMixed,
    Nesting::KnownField,
    Nesting::UnknownField,
];

/// Returns a valid body of `endpoint`; `DELETE` gets an empty object, which it ignores.
fn valid_bytes(endpoint: Endpoint, days: &Days) -> Vec<u8> {
    valid_body(endpoint, days).map_or_else(|| b"{}".to_vec(), |body| to_bytes(&body))
}

/// Returns a valid body of `endpoint` with one more member, `name`, whose
/// value is `raw`.
fn with_member(endpoint: Endpoint, days: &Days, name: &str, raw: &[u8]) -> Vec<u8> {
    let mut text = valid_bytes(endpoint, days);
    text.pop();
    if text.len() > 1 {
        text.push(b',');
    }
    text.extend_from_slice(format!("\"{name}\":").as_bytes());
    text.extend_from_slice(raw);
    text.push(b'}');
    text
}

/// Returns a body nested `depth` levels deep, in the form of `nesting`.
fn nested_body(endpoint: Endpoint, days: &Days, depth: usize, nesting: Nesting) -> Vec<u8> {
    let closed_arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    match nesting {
        Nesting::OpenArrays => "[".repeat(depth).into_bytes(),
        Nesting::ClosedArrays => closed_arrays.into_bytes(),
        Nesting::OpenObjects => "{\"a\":".repeat(depth).into_bytes(),
        Nesting::ClosedObjects => {
            format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)).into_bytes()
        }
        Nesting::OpenMixed => "[{\"a\":".repeat(depth).into_bytes(),
        Nesting::KnownField => {
            let field = match endpoint {
                Endpoint::Submit => "tests",
                Endpoint::Enhanced => "modules",
                Endpoint::Event => "data",
                Endpoint::CenterUpdate | Endpoint::CenterDelete => "name",
            };
            with_member(endpoint, days, field, closed_arrays.as_bytes())
        }
        Nesting::UnknownField => with_member(endpoint, days, "nested", closed_arrays.as_bytes()),
    }
}

/// Bytes put before and after a valid body: a byte order mark, trailing
/// data, a comment, NUL and bytes that are not UTF-8.
const WRAPPINGS: &[(&[u8], &[u8])] = &[
    (b"\xEF\xBB\xBF", b""),
    (b"", b"x"),
    (b"", b"}"),
    (b"", b",{}"),
    (b"", b"\x00"),
    (b"\x00", b""),
    (b"[", b"]"),
    (b"/* note */", b""),
    (b"", b"// note"),
    (b" \n\t\r", b"\n\n\n"),
    (b"\xFF", b""),
    (b"", b"\xC0\x80"),
];

/// Whole bodies that are not a JSON object, or not JSON.
const NON_OBJECTS: &[&[u8]] = &[
    b"",
    b" ",
    b"\n\t",
    b"null",
    b"[]",
    b"[{}]",
    b"\"x\"",
    b"1",
    b"true",
    b"{",
    b"}",
    b"{}}",
    b"{\"a\"}",
    b"{\"a\":}",
    b"{,}",
    b"{'a': 1}",
    b"{\"a\": NaN}",
    b"\x00",
    b"\xFF\xFE{\x00}\x00",
];

/// Returns deeply nested JSON for `endpoint`.
fn deep_nesting(endpoint: Endpoint, days: &Days) -> BoxedStrategy<(String, Vec<u8>)> {
    let days = days.clone();
    (select(NESTING_DEPTHS), select(NESTINGS))
        .prop_map(move |(depth, nesting)| {
            let label = format!("{depth} levels of {nesting:?}");
            (label, nested_body(endpoint, &days, depth, nesting))
        })
        .boxed()
}

/// Returns a valid body of `endpoint` with bytes added around it, or cut short.
fn damaged_body(endpoint: Endpoint, days: &Days) -> BoxedStrategy<(String, Vec<u8>)> {
    let valid = valid_bytes(endpoint, days);
    let wrapped = {
        let valid = valid.clone();
        select(WRAPPINGS).prop_map(move |(before, after)| wrapped_body(&valid, before, after))
    };
    let cut = (0..valid.len()).prop_map(move |end| {
        let label = format!("valid body cut at byte {end}");
        (label, valid[..end].to_vec())
    });
    prop_oneof![wrapped, cut].boxed()
}

fn wrapped_body(valid: &[u8], before: &[u8], after: &[u8]) -> (String, Vec<u8>) {
    let label = format!(
        "valid body between {} and {}",
        excerpt(before, 20),
        excerpt(after, 20)
    );
    (label, [before, valid, after].concat())
}

/// Returns bytes made of JSON punctuation and literals in random order.
fn json_like_bytes() -> BoxedStrategy<Vec<u8>> {
    let token = select(
        &[
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"",
            "\\",
            "null",
            "true",
            "1",
            "-",
            "e",
            ".",
            "\"date\"",
            "\"tests\"",
            " ",
            "\u{0}",
        ][..],
    );
    prop::collection::vec(token, 0..40)
        .prop_map(|tokens| tokens.concat().into_bytes())
        .boxed()
}

/// Returns a request with an arbitrary body to any write endpoint.
fn arbitrary_case(days: &Days) -> BoxedStrategy<Case> {
    let per_endpoint = ENDPOINTS.map(|endpoint| {
        let bodies = prop_oneof![
            3 => arbitrary_json()
                .prop_map(|value| ("arbitrary JSON".to_owned(), to_bytes(&value))),
            3 => odd_object(days).prop_map(|body| ("object of odd values".to_owned(), body)),
            1 => deep_nesting(endpoint, days),
            1 => damaged_body(endpoint, days),
            1 => select(NON_OBJECTS).prop_map(|body| ("not an object".to_owned(), body.to_vec())),
            1 => prop::collection::vec(any::<u8>(), 0..256)
                .prop_map(|bytes| ("random bytes".to_owned(), bytes)),
            1 => json_like_bytes().prop_map(|bytes| ("JSON-like tokens".to_owned(), bytes)),
        ];
        let key = prop_oneof![4 => Just(OWN_KEY), 1 => Just(MASTER)];
        (bodies, key)
            .prop_map(move |((label, body), key)| {
                Case::json(endpoint, label, Some(body)).with_key(key)
            })
            .boxed()
    });
    Union::new(per_endpoint).boxed()
}

/// Returns every nesting, wrapping and non-object body for each endpoint.
fn fixed_body_cases(days: &Days) -> Vec<Case> {
    let mut cases = Vec::new();
    for endpoint in ENDPOINTS {
        let mut bodies = Vec::new();
        for &depth in NESTING_DEPTHS {
            for &nesting in NESTINGS {
                let label = format!("{depth} levels of {nesting:?}");
                bodies.push((label, nested_body(endpoint, days, depth, nesting)));
            }
        }
        let valid = valid_bytes(endpoint, days);
        for (before, after) in WRAPPINGS {
            bodies.push(wrapped_body(&valid, before, after));
        }
        for body in NON_OBJECTS {
            bodies.push(("not an object".to_owned(), body.to_vec()));
        }
        for (label, body) in bodies {
            cases.push(Case::json(endpoint, label, Some(body)));
        }
    }
    cases
}

// ---------------------------------------------------------------------------
// Odd headers

const CONTENT_TYPES: &[&[u8]] = &[
    b"application/json",
    b"application/json; charset=utf-8",
    b"Application/JSON",
    b" application/json ",
    b"text/json",
    b"application/problem+json",
    b"application/vnd.kpi+json",
    b"application/+json",
    b"+json",
    b"json",
    b"application/jsonp",
    b"text/plain",
    b"text/html",
    b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=x",
    b"application/json, text/plain",
    b"application/json; charset=utf-16",
    b"application/json;;;charset=",
    b";",
    b"",
    b"application/json\xFF",
    b"\xFF\xFE",
    b"\xC3\xA9",
];

const KEY_VALUES: &[&[&[u8]]] = &[
    &[OWN_KEY],
    &[MASTER],
    &[],
    &[b""],
    &[b"wrong-key"],
    &[OWN_KEY, b"wrong-key"],
    &[b"wrong-key", OWN_KEY],
    &[OWN_KEY, MASTER],
    &[b"", OWN_KEY],
    &[b"\xFF\xFE\x80"],
    &[b"\xC3\xA9"],
    &[b"key\twith\ttabs"],
];

const IDEMPOTENCY_KEYS: &[&[&[u8]]] = &[
    &[],
    &[b""],
    &[b"evt-1"],
    &[b"evt-1", b"evt-2"],
    &[b"\xFF"],
    &[b"\xC3\xA9"],
    &[b"with space"],
];

const REQUEST_IDS: &[&[u8]] = &[b"", b"\xFF\xFE", b"req-1", b"\"quoted\" <tag>"];

/// Returns odd header values: content types, keys, idempotency keys and
/// request ids, duplicated, not UTF-8 or long, and up to 64 KiB of filler.
fn odd_headers() -> BoxedStrategy<(String, Headers)> {
    let values =
        |list: &'static [&'static [u8]]| list.iter().map(|v| v.to_vec()).collect::<Vec<_>>();
    let content_type = prop_oneof![
        6 => select(CONTENT_TYPES).prop_map(|value| vec![value.to_vec()]),
        1 => Just(vec![]),
        1 => Just(vec![b"application/json".to_vec(), b"text/plain".to_vec()]),
        1 => Just(vec![format!("application/json; x={}", "a".repeat(20_000)).into_bytes()]),
    ];
    let key = prop_oneof![
        8 => select(KEY_VALUES).prop_map(values),
        1 => Just(vec!["k".repeat(8_000).into_bytes()]),
    ];
    let idempotency = prop_oneof![
        4 => select(IDEMPOTENCY_KEYS).prop_map(values),
        1 => select(vec![100_usize, 101, 5_000]).prop_map(|length| vec!["i".repeat(length).into_bytes()]),
    ];
    let request_id = prop_oneof![
        4 => Just(None),
        2 => select(REQUEST_IDS).prop_map(|value| Some(value.to_vec())),
        1 => Just(Some("r".repeat(8_000).into_bytes())),
    ];
    // The service rejects more than 16 KiB of headers itself. HTTP parsing
    // rejects more than 100 headers before the request reaches the service,
    // so the count stays below that.
    let filler = prop_oneof![
        5 => Just(0_usize),
        1 => select(vec![1_024_usize, 16_000, 16_385, 40_000, 65_536]),
    ];
    let many = select(vec![0_usize, 20, 80]);
    (content_type, key, idempotency, request_id, filler, many)
        .prop_map(
            |(content_type, key, idempotency, request_id, filler, many)| {
                let mut headers = Vec::new();
                for value in content_type {
                    headers.push(("content-type".to_owned(), value));
                }
                for value in key {
                    headers.push(("x-api-key".to_owned(), value));
                }
                for value in idempotency {
                    headers.push(("idempotency-key".to_owned(), value));
                }
                if let Some(value) = request_id {
                    headers.push(("x-request-id".to_owned(), value));
                }
                if filler > 0 {
                    headers.push(("x-filler".to_owned(), "f".repeat(filler).into_bytes()));
                }
                for index in 0..many {
                    headers.push((format!("x-extra-{index}"), b"1".to_vec()));
                }
                let label = format!("odd headers, {filler} bytes of filler, {many} extra headers");
                (label, headers)
            },
        )
        .boxed()
}

/// Returns a valid request to any write endpoint with odd headers.
fn odd_header_case(days: &Days) -> BoxedStrategy<Case> {
    let days = days.clone();
    (select(ENDPOINTS.to_vec()), odd_headers(), any::<bool>())
        .prop_map(move |(endpoint, (label, headers), delete_body)| {
            let mut case = valid_case(endpoint, &days, label, delete_body);
            case.headers = headers;
            case
        })
        .boxed()
}

/// Returns the valid request of `endpoint`. A `DELETE` may carry a body,
/// which the endpoint ignores.
fn valid_case(endpoint: Endpoint, days: &Days, label: String, delete_body: bool) -> Case {
    let body = match valid_body(endpoint, days) {
        Some(body) => Some(to_bytes(&body)),
        None => delete_body.then(|| b"{\"center_code\": 1}".to_vec()),
    };
    Case::json(endpoint, label, body)
}

/// Returns the valid request of every endpoint with one header changed to
/// each of the odd values.
fn fixed_header_cases(days: &Days) -> Vec<Case> {
    let mut variants: Vec<(String, &str, Vec<Vec<u8>>)> = Vec::new();
    for value in CONTENT_TYPES {
        variants.push((
            format!("Content-Type {}", excerpt(value, 40)),
            "content-type",
            vec![value.to_vec()],
        ));
    }
    variants.push(("no Content-Type".to_owned(), "content-type", vec![]));
    for values in KEY_VALUES {
        let excerpts: Vec<String> = values.iter().map(|value| excerpt(value, 40)).collect();
        let values = values.iter().map(|value| value.to_vec()).collect();
        variants.push((format!("X-API-Key {excerpts:?}"), "x-api-key", values));
    }
    for values in IDEMPOTENCY_KEYS {
        let excerpts: Vec<String> = values.iter().map(|value| excerpt(value, 40)).collect();
        let values = values.iter().map(|value| value.to_vec()).collect();
        variants.push((
            format!("Idempotency-Key {excerpts:?}"),
            "idempotency-key",
            values,
        ));
    }
    for value in REQUEST_IDS {
        variants.push((
            format!("X-Request-Id {}", excerpt(value, 40)),
            "x-request-id",
            vec![value.to_vec()],
        ));
    }
    for size in [16_000, 16_385, 65_536] {
        let filler = "f".repeat(size).into_bytes();
        variants.push((format!("{size} bytes of filler"), "x-filler", vec![filler]));
    }
    let mut cases = Vec::new();
    for (index, (label, name, values)) in variants.into_iter().enumerate() {
        for endpoint in ENDPOINTS {
            let mut case = valid_case(endpoint, days, label.clone(), index % 2 == 0);
            case.headers.retain(|(existing, _)| existing != name);
            for value in &values {
                case.headers.push((name.to_owned(), value.clone()));
            }
            cases.push(case);
        }
    }
    cases
}

// ---------------------------------------------------------------------------
// Running cases

/// The service under test, with the center's key and the tables to compare.
struct Fixture {
    app: TestApp,
    own_key: String,
    /// The statement that reads each KPI table, every column as text.
    tables: Vec<(&'static str, String)>,
    /// The last client address handed out, as a number within 10.0.0.0/8.
    address: AtomicU32,
    /// Responses by status code, printed after the run to show what the cases reached.
    statuses: Mutex<BTreeMap<u16, u32>>,
}

impl Fixture {
    async fn start(backend: Backend) -> Fixture {
        let app = TestApp::spawn_with(backend, &SETTINGS).await;
        let own_key = app.center_with_key(CENTER, "Centro de pruebas").await;
        let tables = table_statements(&app.db).await;
        Fixture {
            app,
            own_key,
            tables,
            address: AtomicU32::new(0),
            statuses: Mutex::default(),
        }
    }

    /// Returns a client address no earlier request used. The addresses wrap
    /// after 2^24 requests, far more than a run sends.
    fn next_address(&self) -> Ipv4Addr {
        let n = self.address.fetch_add(1, Ordering::Relaxed) + 1;
        Ipv4Addr::from(0x0A00_0000 | (n & 0x00FF_FFFF))
    }

    /// Reactivates the center when a case deactivated it, and stores a
    /// batch and an event when a case deleted its data, so that every case
    /// meets an active center with data that a rejected request must keep.
    async fn restore(&self) {
        let active = self
            .app
            .db
            .scalar(
                "SELECT is_active FROM centers WHERE code = $1",
                &[CENTER.into()],
            )
            .await;
        if active == 0 {
            let body = json!({"is_active": true});
            let path = format!("/kpi/centers/{CENTER}");
            let (status, reply) = self.app.put(&path, Some(MASTER_KEY), &body).await;
            assert_eq!(status, StatusCode::OK, "reactivation failed: {reply}");
        }
        if self.app.count_rows("daily_metrics", CENTER).await > 0 {
            return;
        }
        let days = Days::now();
        let mut batch = enhanced_body(&days);
        batch["date"] = json!(day(-3));
        let (status, reply) = self
            .app
            .post("/kpi/submit/enhanced", Some(MASTER_KEY), &batch)
            .await;
        assert_eq!(status, StatusCode::CREATED, "batch failed: {reply}");
        let mut event = event_body(&days);
        event["event_id"] = json!(format!("restore-{}", uuid::Uuid::new_v4()));
        let (status, reply) = self.app.post("/kpi/events", Some(MASTER_KEY), &event).await;
        assert_eq!(status, StatusCode::ACCEPTED, "event failed: {reply}");
    }

    /// Reads every KPI table, each row as JSON text, sorted.
    async fn snapshot(&self) -> BTreeMap<&'static str, Vec<String>> {
        let mut tables = BTreeMap::new();
        for (table, sql) in &self.tables {
            let mut rows: Vec<String> = self
                .app
                .db
                .rows(sql, &[])
                .await
                .into_iter()
                .map(|row| Value::Array(row).to_string())
                .collect();
            rows.sort();
            tables.insert(*table, rows);
        }
        tables
    }

    /// Sends a case from an address of its own, with the key placeholders replaced.
    async fn send(&self, case: &Case) -> Result<Reply, String> {
        let url = format!("{}{}", self.app.base_url, case.path);
        let method = case.endpoint.method();
        let mut request = self
            .app
            .client
            .request(method, url)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|err| format!("request not built: {err}"))?;

        let headers = request.headers_mut();
        for (name, value) in &case.headers {
            let value = match value.as_slice() {
                OWN_KEY => self.own_key.as_bytes(),
                MASTER => MASTER_KEY.as_bytes(),
                other => other,
            };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|err| err.to_string())?;
            let value = HeaderValue::from_bytes(value).map_err(|err| err.to_string())?;
            headers.append(name, value);
        }
        let address = self.next_address().to_string();
        headers.insert(
            "x-real-ip",
            HeaderValue::from_str(&address).expect("address"),
        );
        if let Some(body) = &case.body {
            *request.body_mut() = Some(body.clone().into());
        }

        let response = self
            .app
            .client
            .execute(request)
            .await
            .map_err(|err| format!("request failed: {err:?}"))?;

        let status = response.status();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let body = response
            .bytes()
            .await
            .map_err(|err| format!("response body not read: {err}"))?;
        Ok(Reply {
            status,
            content_type,
            body: body.to_vec(),
        })
    }

    /// Prints the responses by status since the last report, so that a run
    /// with `--nocapture` shows what the cases reached.
    fn report(&self, name: &str) {
        let statuses = std::mem::take(&mut *self.statuses.lock().expect("status counts"));
        eprintln!("{name}: responses by status {statuses:?}");
    }

    /// Sends one case and checks the response and the tables.
    async fn check(&self, case: &Case) -> Result<(), TestCaseError> {
        self.restore().await;
        let before = self.snapshot().await;
        let outcome = match self.send(case).await {
            Ok(reply) => {
                let mut statuses = self.statuses.lock().expect("status counts");
                *statuses.entry(reply.status.as_u16()).or_default() += 1;
                drop(statuses);
                check_reply(case, &reply)?;
                if reply.status.is_success() {
                    return Ok(());
                }
                format!("status {}", reply.status)
            }
            // The service returns 413 for an oversized body and closes the
            // connection without reading the rest, so a client still writing
            // may fail with a broken pipe before it reads the 413.
            Err(error)
                if case
                    .body
                    .as_ref()
                    .is_some_and(|body| body.len() > BODY_LIMIT) =>
            {
                format!("oversized body, {error}")
            }
            Err(error) => return Err(TestCaseError::fail(error)),
        };
        let after = self.snapshot().await;
        for (table, rows) in &before {
            let rows_after = &after[table];
            prop_assert!(
                rows == rows_after,
                "{outcome} but {table} changed; before: {}; after: {}",
                row_excerpt(rows, rows_after),
                row_excerpt(rows_after, rows),
            );
        }
        Ok(())
    }
}

/// Returns up to three rows of `rows` that `other` lacks.
fn row_excerpt(rows: &[String], other: &[String]) -> String {
    let missing: Vec<&String> = rows.iter().filter(|row| !other.contains(row)).collect();
    let examples: Vec<&str> = missing.iter().take(3).map(|row| row.as_str()).collect();
    format!(
        "{} rows, {} not in the other: {examples:?}",
        rows.len(),
        missing.len()
    )
}

/// Builds the statement that reads each KPI table present, every column
/// cast to text so that both backends read the same way.
async fn table_statements(db: &TestDb) -> Vec<(&'static str, String)> {
    let columns_sql = match db.backend() {
        Backend::Sqlite => "SELECT name FROM pragma_table_info($1) ORDER BY cid",
        Backend::Postgres => {
            "SELECT CAST(column_name AS TEXT) FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
        }
    };
    let mut statements = Vec::new();
    for table in KPI_TABLES {
        let columns = db.rows(columns_sql, &[Arg::from(table)]).await;
        if columns.is_empty() {
            continue;
        }
        let list: Vec<String> = columns
            .iter()
            .map(|row| {
                format!(
                    "CAST(\"{}\" AS TEXT)",
                    row[0].as_str().expect("column name")
                )
            })
            .collect();
        statements.push((table, format!("SELECT {} FROM {table}", list.join(", "))));
    }
    assert!(
        statements.len() >= KPI_TABLES.len() - 1,
        "KPI tables missing: {statements:?}"
    );
    statements
}

struct Reply {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Vec<u8>,
}

/// Checks a response: no 5xx, no 429 (see the file's documentation), the
/// endpoint's own success status, and a complete problem document for 4xx.
fn check_reply(case: &Case, reply: &Reply) -> Result<(), TestCaseError> {
    let status = reply.status;
    let text = excerpt(&reply.body, 1000);
    prop_assert!(!status.is_server_error(), "status {status}: {text}");
    prop_assert_ne!(status, StatusCode::TOO_MANY_REQUESTS, "{}", text);

    let content_type = reply.content_type.as_ref().map(HeaderValue::as_bytes);
    if status.is_success() {
        prop_assert_eq!(status, case.endpoint.success(), "{}", text);
        prop_assert_eq!(content_type, Some(&b"application/json"[..]), "{}", text);
        let body: Result<Value, _> = serde_json::from_slice(&reply.body);
        prop_assert!(
            body.is_ok_and(|body| body.is_object()),
            "not a JSON object: {text}"
        );
        return Ok(());
    }

    prop_assert!(status.is_client_error(), "status {status}: {text}");
    prop_assert_eq!(
        content_type,
        Some(&b"application/problem+json"[..]),
        "status {}: {}",
        status,
        text
    );

    let problem: Value = serde_json::from_slice(&reply.body)
        .map_err(|err| TestCaseError::fail(format!("problem is not JSON ({err}): {text}")))?;
    prop_assert_eq!(
        problem["status"].as_u64(),
        Some(u64::from(status.as_u16())),
        "{}",
        text
    );
    for member in ["type", "title", "detail", "instance"] {
        let value = problem[member].as_str();
        prop_assert!(value.is_some_and(|v| !v.is_empty()), "no {member}: {text}");
    }

    let errors = problem.get("errors");
    if status != StatusCode::UNPROCESSABLE_ENTITY {
        prop_assert!(errors.is_none(), "errors in a {status}: {text}");
        return Ok(());
    }

    let errors = errors.and_then(Value::as_array);
    prop_assert!(
        errors.is_some_and(|list| !list.is_empty()),
        "no errors: {text}"
    );
    for error in errors.into_iter().flatten() {
        let loc = error["loc"].as_array();
        let root = loc.and_then(|loc| loc.first()).and_then(Value::as_str);
        prop_assert!(
            root.is_some_and(|root| LOCATION_ROOTS.contains(&root)),
            "error without a location: {error}"
        );
        prop_assert!(error["msg"].is_string(), "error without msg: {error}");
        prop_assert!(error["type"].is_string(), "error without type: {error}");
    }
    Ok(())
}

/// Runs `strategy`'s cases against the fixture and panics with the smallest
/// failing case found, and the seed that repeats the run.
fn run_cases(fixture: &Fixture, name: &str, strategy: BoxedStrategy<Case>) {
    let defaults = Config::default();
    let seed = match defaults.rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => DEFAULT_SEED,
    };
    let cases = match std::env::var("PROPTEST_CASES") {
        Ok(_) => defaults.cases,
        Err(_) => CASES,
    };
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 200,
        ..defaults
    };
    let mut runner = TestRunner::new(config);
    let runtime = tokio::runtime::Handle::current();
    // The runner calls the check synchronously, so each case blocks this
    // worker while the service runs on the runtime's other worker.
    let result = tokio::task::block_in_place(|| {
        runner
            .run(&strategy, |case| runtime.block_on(fixture.check(&case)))
            .map_err(|error| error.to_string())
    });
    if let Err(error) = result {
        panic!("{name}: {error}\nrepeat with PROPTEST_RNG_SEED={seed}");
    }
    fixture.report(&format!("{name}, seed {seed}"));
}

/// Checks that the unchanged request of `endpoint` succeeds, so that the
/// mutations start from a body the endpoint accepts.
async fn check_valid_request(fixture: &Fixture, endpoint: Endpoint) {
    fixture.restore().await;
    let body = valid_body(endpoint, &Days::now()).map(|body| to_bytes(&body));
    let case = Case::json(endpoint, "valid request".to_owned(), body);
    let reply = fixture.send(&case).await.expect("valid request sent");
    assert_eq!(
        reply.status,
        endpoint.success(),
        "{}",
        excerpt(&reply.body, 1000)
    );
}

/// Sends every case of a fixed list, then panics with the failures, if any.
async fn run_edge_cases(fixture: &Fixture, name: &str, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(error) = fixture.check(case).await {
            failures.push(format!("{error}\nfailing input: {case:?}"));
        }
    }
    fixture.report(&format!("{name}, {} cases", cases.len()));
    if !failures.is_empty() {
        let first_failures = failures[..failures.len().min(10)].join("\n\n");
        panic!(
            "{name}: {} of {} cases failed:\n\n{first_failures}",
            failures.len(),
            cases.len()
        );
    }
}

async fn fuzz_mutations(backend: Backend, endpoint: Endpoint) {
    let fixture = Fixture::start(backend).await;
    let days = Days::now();
    check_valid_request(&fixture, endpoint).await;
    let name = format!("{endpoint:?} edge values");
    run_edge_cases(&fixture, &name, edge_cases(endpoint, &days)).await;
    let name = format!("{endpoint:?} mutations");
    run_cases(&fixture, &name, mutated_case(endpoint, &days));
}

both_backends!(submit_field_mutations, |backend: Backend| async move {
    fuzz_mutations(backend, Endpoint::Submit).await;
});

both_backends!(enhanced_field_mutations, |backend: Backend| async move {
    fuzz_mutations(backend, Endpoint::Enhanced).await;
});

both_backends!(event_field_mutations, |backend: Backend| async move {
    fuzz_mutations(backend, Endpoint::Event).await;
});

both_backends!(center_update_mutations, |backend: Backend| async move {
    fuzz_mutations(backend, Endpoint::CenterUpdate).await;
});

both_backends!(center_delete_paths, |backend: Backend| async move {
    fuzz_mutations(backend, Endpoint::CenterDelete).await;
});

both_backends!(arbitrary_bodies, |backend: Backend| async move {
    let fixture = Fixture::start(backend).await;
    let days = Days::now();
    run_edge_cases(&fixture, "fixed bodies", fixed_body_cases(&days)).await;
    run_cases(&fixture, "arbitrary bodies", arbitrary_case(&days));
});

both_backends!(odd_headers_on_valid_bodies, |backend: Backend| async move {
    let fixture = Fixture::start(backend).await;
    let days = Days::now();
    run_edge_cases(&fixture, "fixed headers", fixed_header_cases(&days)).await;
    run_cases(&fixture, "odd headers", odd_header_case(&days));
});
