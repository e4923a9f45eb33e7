//! Feeds arbitrary bytes through the request body parser and validator of
//! every write endpoint, the same functions the handlers call.
//!
//! The target fails when parsing panics, or when a rejection does not name
//! the location of each failed rule. It also fails when an accepted body
//! breaks a limit that storage relies on: 32-bit counts, column lengths, no
//! NUL character, and dates from PostgreSQL's earliest date to tomorrow.

#![no_main]

use chrono::{Days, NaiveDate, Utc};
use kpi_service::error::{ApiError, FieldError};
use kpi_service::extract::{parse, JsonObject, MAX_REPORTED_ERRORS};
use kpi_service::lenient::INT_MAX;
use kpi_service::model::{
    CenterUpdate, EnhancedParts, EventBody, SubmitBody, MAX_EVENT_TESTS, MAX_LIST_ENTRIES,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use validator::Validate;

/// The first segment of every location: where in the request the value is.
const LOCATION_ROOTS: [&str; 4] = ["body", "path", "query", "header"];

fuzz_target!(|bytes: &[u8]| {
    // `PUT /kpi/centers/{code}` reads a blank body as an empty object.
    if bytes.iter().all(u8::is_ascii_whitespace) {
        let update = parse::<CenterUpdate>(&json!({}));
        assert!(update.is_ok(), "an empty update was rejected: {update:?}");
    }
    let body = match JsonObject::from_bytes(bytes) {
        Ok(JsonObject(body)) => body,
        Err(error) => {
            check_syntax_rejection(&error);
            return;
        }
    };
    if let Some(submit) = parse_and_check::<SubmitBody>(&body) {
        check_submit(&submit);
    }
    if let Some(parts) = parse_and_check::<EnhancedParts>(&body) {
        check_enhanced(&parts);
    }
    if let Some(event) = parse_and_check::<EventBody>(&body) {
        check_event(&event);
    }
    if let Some(update) = parse_and_check::<CenterUpdate>(&body) {
        check_center_update(&update);
    }
});

/// Checks the rejection of a body that is not a JSON object: one error about
/// the body as a whole.
fn check_syntax_rejection(error: &ApiError) {
    let ApiError::Validation(errors) = error else {
        panic!("a malformed body gave {error:?}, expected a validation error");
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].loc, vec![Value::from("body")], "{errors:?}");
    assert!(
        ["json_invalid", "model_type"].contains(&errors[0].kind.as_str()),
        "{errors:?}"
    );
}

/// Parses `T` from `body` and checks the errors of a rejection; returns the
/// accepted value.
fn parse_and_check<T: DeserializeOwned + Validate>(body: &Value) -> Option<T> {
    match parse::<T>(body) {
        Ok(value) => Some(value),
        Err(errors) => {
            check_errors(&errors);
            None
        }
    }
}

/// Checks that a rejection lists at least one error, at most the reported
/// maximum plus the note about the rest, and that each names its location.
fn check_errors(errors: &[FieldError]) {
    assert!(!errors.is_empty(), "a rejection listed no error");
    assert!(
        errors.len() <= MAX_REPORTED_ERRORS + 1,
        "a rejection listed {} errors",
        errors.len()
    );
    for error in errors {
        let root = error.loc.first().and_then(Value::as_str);
        assert!(
            root.is_some_and(|root| LOCATION_ROOTS.contains(&root)),
            "error without a location root: {error:?}"
        );
        for segment in &error.loc[1..] {
            assert!(
                segment.is_string() || segment.is_u64(),
                "location segment {segment} is neither a field name nor an index: {error:?}"
            );
        }
        assert!(!error.msg.is_empty(), "error without a message: {error:?}");
        assert!(!error.kind.is_empty(), "error without a type: {error:?}");
    }
}

fn check_submit(body: &SubmitBody) {
    check_text(&body.center_code, 1, 50, "center_code");
    check_date(body.date, "date");
    for (field, count) in [
        ("total_orders", body.total_orders),
        ("total_results", body.total_results),
        ("total_pets", body.total_pets),
        ("total_owners", body.total_owners),
    ] {
        check_count(count, field);
    }
    assert!(body.tests.len() <= MAX_LIST_ENTRIES);
    assert!(body.species.len() <= MAX_LIST_ENTRIES);
    assert!(body.breeds.len() <= MAX_LIST_ENTRIES);
    for test in &body.tests {
        check_text(&test.code, 1, 50, "tests.code");
        check_optional_text(test.name.as_deref(), 0, 255, "tests.name");
        check_count(test.count, "tests.count");
    }
    for species in &body.species {
        check_text(&species.species, 1, 100, "species.species");
        check_count(species.count, "species.count");
    }
    for breed in &body.breeds {
        check_text(&breed.breed, 1, 255, "breeds.breed");
        check_optional_text(breed.species.as_deref(), 0, 100, "breeds.species");
        check_count(breed.count, "breeds.count");
    }
}

fn check_enhanced(parts: &EnhancedParts) {
    if let Some(performance) = &parts.performance {
        check_optional_range(performance.peak_hour, 23, "performance.peak_hour");
        check_optional_range(
            performance.completion_rate,
            100,
            "performance.completion_rate",
        );
        for (field, count) in [
            (
                "performance.avg_order_processing_time",
                performance.avg_order_processing_time,
            ),
            ("performance.peak_hour_orders", performance.peak_hour_orders),
            (
                "performance.same_day_completion",
                performance.same_day_completion,
            ),
        ] {
            check_optional_range(count, INT_MAX, field);
        }
        for (field, count) in [
            ("performance.morning_orders", performance.morning_orders),
            ("performance.afternoon_orders", performance.afternoon_orders),
            ("performance.evening_orders", performance.evening_orders),
            ("performance.night_orders", performance.night_orders),
        ] {
            check_count(count, field);
        }
    }
    assert!(parts.modules.len() <= MAX_LIST_ENTRIES);
    for module in &parts.modules {
        check_text(&module.module_name, 1, 100, "modules.module_name");
        check_count(module.operations_count, "modules.operations_count");
        check_count(module.active_users, "modules.active_users");
        check_optional_range(module.total_revenue, INT_MAX, "modules.total_revenue");
        check_optional_range(module.avg_transaction, INT_MAX, "modules.avg_transaction");
    }
    if let Some(usage) = &parts.system_usage {
        for (field, count) in [
            ("system_usage.total_active_users", usage.total_active_users),
            (
                "system_usage.peak_concurrent_users",
                usage.peak_concurrent_users,
            ),
            ("system_usage.web_access_count", usage.web_access_count),
            (
                "system_usage.mobile_access_count",
                usage.mobile_access_count,
            ),
            (
                "system_usage.desktop_access_count",
                usage.desktop_access_count,
            ),
            ("system_usage.total_workstations", usage.total_workstations),
        ] {
            check_count(count, field);
        }
        check_optional_range(
            usage.avg_session_duration,
            INT_MAX,
            "system_usage.avg_session_duration",
        );
    }
    assert!(parts.payment_methods.len() <= MAX_LIST_ENTRIES);
    for method in &parts.payment_methods {
        check_text(
            &method.payment_method,
            1,
            50,
            "payment_methods.payment_method",
        );
        check_count(
            method.transaction_count,
            "payment_methods.transaction_count",
        );
        check_optional_range(method.total_amount, INT_MAX, "payment_methods.total_amount");
    }
}

fn check_event(event: &EventBody) {
    check_text(&event.center_code, 1, 50, "center_code");
    check_date(event.day(), "timestamp");
    check_optional_text(event.event_id.as_deref(), 1, 100, "event_id");
    let data = &event.data;
    assert!(data.tests.len() <= MAX_EVENT_TESTS);
    for code in &data.tests {
        check_text(&code.0, 1, 50, "data.tests");
    }
    check_optional_text(data.species.as_deref(), 1, 100, "data.species");
    check_optional_text(data.breed.as_deref(), 1, 255, "data.breed");
}

fn check_center_update(update: &CenterUpdate) {
    check_optional_text(update.name.as_deref(), 1, 255, "name");
    check_optional_text(update.city.as_deref(), 0, 100, "city");
    check_optional_text(update.country.as_deref(), 0, 100, "country");
}

/// Checks that an accepted count fits the 32-bit columns and is not negative.
fn check_count(value: i64, field: &str) {
    assert!(
        (0..=INT_MAX).contains(&value),
        "{field} = {value} was accepted"
    );
}

fn check_optional_range(value: Option<i64>, max: i64, field: &str) {
    if let Some(value) = value {
        assert!((0..=max).contains(&value), "{field} = {value} was accepted");
    }
}

/// Checks that accepted text fits its column: `min` to `max` characters and no NUL.
fn check_text(text: &str, min: usize, max: usize, field: &str) {
    let length = text.chars().count();
    assert!(
        (min..=max).contains(&length),
        "{field} of {length} characters was accepted"
    );
    assert!(
        !text.contains('\0'),
        "{field} {text:?} with NUL was accepted"
    );
}

fn check_optional_text(text: Option<&str>, min: usize, max: usize, field: &str) {
    if let Some(text) = text {
        check_text(text, min, max, field);
    }
}

/// Checks that an accepted date is at most tomorrow in UTC, and not before
/// the earliest date of PostgreSQL's `date` type, 4714-11-24 BC (year -4713
/// as chrono counts), which the backend could not store.
fn check_date(date: NaiveDate, field: &str) {
    let tomorrow = Utc::now().date_naive() + Days::new(1);
    assert!(
        date <= tomorrow,
        "{field} {date} after tomorrow was accepted"
    );
    let earliest = NaiveDate::from_ymd_opt(-4713, 11, 24).expect("valid date");
    assert!(
        date >= earliest,
        "{field} {date} before PostgreSQL's range was accepted"
    );
}
