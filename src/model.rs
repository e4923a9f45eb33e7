//! Request bodies of the write endpoints and their validation rules.
//!
//! Unknown fields are ignored at every level, because old clients send extra
//! ones. Every integer goes through [`crate::lenient`] and is then checked to
//! fit the 32-bit columns.

use chrono::{DateTime, Datelike, Days, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use validator::{Validate, ValidationError, ValidationErrors};

use crate::lenient::{self, INT_MAX};

/// The maximum number of entries in a batch's list: far beyond a clinic's catalogue
/// of tests or breeds, and small enough to bound one request's work.
pub const MAX_LIST_ENTRIES: usize = 10_000;

/// The maximum number of test codes one event may list, where an order has a handful.
pub const MAX_EVENT_TESTS: usize = 1_000;

/// Rejects a date after tomorrow in UTC: clinics are at most a day ahead of UTC,
/// so a later date is a client's clock or typing error.
pub fn not_after_tomorrow(date: &NaiveDate) -> Result<(), ValidationError> {
    let tomorrow = Utc::now().date_naive() + Days::new(1);
    if *date > tomorrow {
        let message =
            format!("date {date} is in the future; the latest accepted date is {tomorrow}");
        return Err(ValidationError::new("date_in_future").with_message(message.into()));
    }
    Ok(())
}

/// Rejects a date before 0001-01-01. chrono also reads signed years, such as
/// `-7972-12-03`, and PostgreSQL's `date` cannot store a date before
/// 4714-11-24 BC, so without this check the write would fail in the database.
pub fn not_before_year_one(date: &NaiveDate) -> Result<(), ValidationError> {
    if date.year() < 1 {
        let message = format!("date {date} is before the earliest accepted date, 0001-01-01");
        return Err(ValidationError::new("date_too_early").with_message(message.into()));
    }
    Ok(())
}

/// Rejects a string that contains U+0000. PostgreSQL text cannot store that
/// character, so without this check the write would fail in the database.
pub fn reject_nul_character(value: &str) -> Result<(), ValidationError> {
    if value.contains('\0') {
        let message = "must not contain the NUL character (U+0000)";
        return Err(ValidationError::new("string_contains_nul").with_message(message.into()));
    }
    Ok(())
}

/// A center's totals for one day, the body of `POST /kpi/submit`.
///
/// Integer fields also accept integral floats (`50.0`) and digit strings
/// (`"50"`); a fractional number such as `50.5` is rejected.
#[derive(Debug, Deserialize, Validate, ToSchema)]
pub struct SubmitBody {
    #[validate(length(min = 1, max = 50), custom(function = "reject_nul_character"))]
    #[schema(min_length = 1, max_length = 50, example = "HVC")]
    pub center_code: String,
    /// The center's key or the master key. Send it in the `X-API-Key` header
    /// instead; the header wins when both are present.
    #[serde(default)]
    #[schema(deprecated)]
    pub api_key: Option<String>,
    /// The day the totals belong to, from 0001-01-01 to tomorrow in UTC.
    #[validate(
        custom(function = "not_before_year_one"),
        custom(function = "not_after_tomorrow")
    )]
    pub date: NaiveDate,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub total_orders: i64,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub total_results: i64,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub total_pets: i64,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub total_owners: i64,
    /// Replaces the day's test counts; entries with the same code are merged
    /// by adding their counts.
    #[serde(
        default,
        deserialize_with = "lenient::list_max::<_, _, MAX_LIST_ENTRIES>"
    )]
    #[validate(nested)]
    pub tests: Vec<TestCount>,
    /// Replaces the day's species counts; entries with the same species are
    /// merged by adding their counts.
    #[serde(
        default,
        deserialize_with = "lenient::list_max::<_, _, MAX_LIST_ENTRIES>"
    )]
    #[validate(nested)]
    pub species: Vec<SpeciesCount>,
    /// Replaces the day's breed counts; entries with the same breed and
    /// species are merged by adding their counts.
    #[serde(
        default,
        deserialize_with = "lenient::list_max::<_, _, MAX_LIST_ENTRIES>"
    )]
    #[validate(nested)]
    pub breeds: Vec<BreedCount>,
}

/// A test's order count for the day.
#[derive(Debug, Deserialize, Validate, ToSchema)]
pub struct TestCount {
    #[validate(length(min = 1, max = 50), custom(function = "reject_nul_character"))]
    #[schema(min_length = 1, max_length = 50)]
    pub code: String,
    #[serde(default)]
    #[validate(length(max = 255), custom(function = "reject_nul_character"))]
    #[schema(max_length = 255)]
    pub name: Option<String>,
    /// Also accepts an integral float or a digit string.
    #[serde(deserialize_with = "lenient::int")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub count: i64,
}

/// The number of pets of one species seen on the day.
#[derive(Debug, Deserialize, Validate, ToSchema)]
pub struct SpeciesCount {
    #[validate(length(min = 1, max = 100), custom(function = "reject_nul_character"))]
    #[schema(min_length = 1, max_length = 100)]
    pub species: String,
    /// Also accepts an integral float or a digit string.
    #[serde(deserialize_with = "lenient::int")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub count: i64,
}

/// The number of pets of one breed seen on the day.
#[derive(Debug, Deserialize, Validate, ToSchema)]
pub struct BreedCount {
    #[validate(length(min = 1, max = 255), custom(function = "reject_nul_character"))]
    #[schema(min_length = 1, max_length = 255)]
    pub breed: String,
    #[serde(default)]
    #[validate(length(max = 100), custom(function = "reject_nul_character"))]
    #[schema(max_length = 100)]
    pub species: Option<String>,
    /// Also accepts an integral float or a digit string.
    #[serde(deserialize_with = "lenient::int")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub count: i64,
}

/// The parts that `/kpi/submit/enhanced` takes beyond a plain batch.
///
/// Integer fields also accept integral floats (`50.0`) and digit strings
/// (`"50"`); a fractional number such as `50.5` is rejected.
#[derive(Debug, Default, Deserialize, Validate, ToSchema)]
pub struct EnhancedParts {
    /// Replaces the day's performance row when present.
    #[serde(default)]
    #[validate(nested)]
    pub performance: Option<Performance>,
    /// Replaces the day's module rows when non-empty; an absent or empty
    /// list leaves them unchanged.
    #[serde(
        default,
        deserialize_with = "lenient::list_max::<_, _, MAX_LIST_ENTRIES>"
    )]
    #[validate(nested)]
    pub modules: Vec<ModuleUsage>,
    /// Replaces the day's system usage row when present.
    #[serde(default)]
    #[validate(nested)]
    pub system_usage: Option<SystemUsage>,
    /// Replaces the day's payment method rows when non-empty; an absent or
    /// empty list leaves them unchanged.
    #[serde(
        default,
        deserialize_with = "lenient::list_max::<_, _, MAX_LIST_ENTRIES>"
    )]
    #[validate(nested)]
    pub payment_methods: Vec<PaymentMethodUsage>,
}

/// The body of `POST /kpi/submit/enhanced`: every field of a plain batch plus
/// the enhanced parts.
// NOTE: only the OpenAPI document uses this type. The handler parses
// `SubmitBody` and `EnhancedParts` from the body separately, so that it
// reports the errors of both together.
#[derive(ToSchema)]
pub struct EnhancedSubmitBody {
    #[serde(flatten)]
    pub base: SubmitBody,
    #[serde(flatten)]
    pub extras: EnhancedParts,
}

/// Order timing of the day.
#[derive(Debug, Deserialize, Validate, ToSchema)]
pub struct Performance {
    #[serde(default, deserialize_with = "lenient::opt_int")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub avg_order_processing_time: Option<i64>,
    /// Hour of the day with the most orders.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    #[validate(range(min = 0, max = 23))]
    #[schema(minimum = 0, maximum = 23)]
    pub peak_hour: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub peak_hour_orders: Option<i64>,
    /// Percentage of orders completed.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    #[validate(range(min = 0, max = 100))]
    #[schema(minimum = 0, maximum = 100)]
    pub completion_rate: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub same_day_completion: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub morning_orders: i64,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub afternoon_orders: i64,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub evening_orders: i64,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub night_orders: i64,
}

/// Use of one module of the clinic software on the day.
#[derive(Debug, Deserialize, Validate, ToSchema)]
pub struct ModuleUsage {
    #[validate(length(min = 1, max = 100), custom(function = "reject_nul_character"))]
    #[schema(min_length = 1, max_length = 100)]
    pub module_name: String,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub operations_count: i64,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub active_users: i64,
    /// Cents.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub total_revenue: Option<i64>,
    /// Cents.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub avg_transaction: Option<i64>,
}

/// Users and access channels of the day.
#[derive(Debug, Deserialize, Validate, ToSchema)]
pub struct SystemUsage {
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub total_active_users: i64,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub peak_concurrent_users: i64,
    /// Minutes.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub avg_session_duration: Option<i64>,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub web_access_count: i64,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub mobile_access_count: i64,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub desktop_access_count: i64,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub total_workstations: i64,
}

/// Use of one payment method on the day.
#[derive(Debug, Deserialize, Validate, ToSchema)]
pub struct PaymentMethodUsage {
    #[validate(length(min = 1, max = 50), custom(function = "reject_nul_character"))]
    #[schema(min_length = 1, max_length = 50)]
    pub payment_method: String,
    #[serde(default, deserialize_with = "lenient::int_or_zero")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub transaction_count: i64,
    /// Cents.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    #[validate(range(min = 0, max = INT_MAX))]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub total_amount: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    OrderCreated,
    ResultCreated,
    PetCreated,
    OwnerCreated,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::OrderCreated => "order_created",
            EventType::ResultCreated => "result_created",
            EventType::PetCreated => "pet_created",
            EventType::OwnerCreated => "owner_created",
        }
    }
}

/// One real-time event, the body of `POST /kpi/events`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
pub struct EventBody {
    #[validate(length(min = 1, max = 50), custom(function = "reject_nul_character"))]
    #[schema(min_length = 1, max_length = 50, example = "HVC")]
    pub center_code: String,
    /// The center's key or the master key. Send it in the `X-API-Key` header
    /// instead; the header wins when both are present.
    #[serde(default)]
    #[schema(deprecated)]
    pub api_key: Option<String>,
    pub event_type: EventType,
    /// RFC 3339; a timestamp without an offset is taken as UTC. The event
    /// counts on the timestamp's calendar date in its own offset, which must
    /// be from 0001-01-01 to tomorrow in UTC.
    #[serde(deserialize_with = "timestamp")]
    #[validate(custom(function = "check_event_day"))]
    #[schema(example = "2025-11-17T22:30:00-04:00")]
    pub timestamp: DateTime<FixedOffset>,
    #[validate(nested)]
    pub data: EventData,
    /// The client's id for this event, so that a retry counts once: a repeat
    /// of an id the center sent before gets the first response again and
    /// counts nothing. Ids are kept for at least 7 days. The
    /// `Idempotency-Key` header wins when both are present.
    #[serde(default)]
    #[validate(length(min = 1, max = 100), custom(function = "reject_nul_character"))]
    #[schema(min_length = 1, max_length = 100, example = "order-58213")]
    pub event_id: Option<String>,
}

impl EventBody {
    /// Returns the day the event counts on: the timestamp's calendar date in its own offset.
    pub fn day(&self) -> NaiveDate {
        self.timestamp.date_naive()
    }
}

/// Checks the day an event counts on as a batch's date is checked. A
/// timestamp without an offset may have a signed year, as in `-16704-12-03T22:30:00`.
fn check_event_day(timestamp: &DateTime<FixedOffset>) -> Result<(), ValidationError> {
    not_before_year_one(&timestamp.date_naive())?;
    not_after_tomorrow(&timestamp.date_naive())
}

/// Details of an event; send `{}` when there are none.
///
/// Integer fields also accept integral floats (`50.0`) and digit strings
/// (`"50"`); a fractional number such as `50.5` is rejected.
#[derive(Debug, Deserialize, Validate, ToSchema)]
pub struct EventData {
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub order_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub result_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub pet_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub owner_id: Option<i64>,
    /// Informational only; the listed `tests` are what counts.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub test_count: Option<i64>,
    /// Test codes of an `order_created` event; each adds 1 to that test's count.
    #[serde(
        default,
        deserialize_with = "lenient::list_max::<_, _, MAX_EVENT_TESTS>"
    )]
    #[validate(nested)]
    pub tests: Vec<TestCode>,
    #[serde(default)]
    #[validate(length(min = 1, max = 100), custom(function = "reject_nul_character"))]
    #[schema(min_length = 1, max_length = 100)]
    pub species: Option<String>,
    /// Counted only when `species` is given too.
    #[serde(default)]
    #[validate(length(min = 1, max = 255), custom(function = "reject_nul_character"))]
    #[schema(min_length = 1, max_length = 255)]
    pub breed: Option<String>,
}

/// A test code listed in an event, 1 to 50 characters.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct TestCode(pub String);

/// Field name under which a value's own errors are filed; it adds nothing to the path.
pub const SELF_FIELD: &str = "__self__";

impl Validate for TestCode {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let length = self.0.chars().count();
        if (1..=50).contains(&length) {
            return reject_nul_character(&self.0).map_err(|error| {
                let mut errors = ValidationErrors::new();
                errors.add(SELF_FIELD, error);
                errors
            });
        }
        let mut error = ValidationError::new("length");
        error.add_param("min".into(), &1);
        error.add_param("max".into(), &50);
        error.add_param("value".into(), &self.0);
        let mut errors = ValidationErrors::new();
        errors.add(SELF_FIELD, error);
        Err(errors)
    }
}

/// Center metadata sent by `PUT /kpi/centers/{code}`; absent or null fields
/// are left unchanged.
#[derive(Debug, Default, Deserialize, Validate, ToSchema)]
pub struct CenterUpdate {
    /// The center's key or the master key. Send it in the `X-API-Key` header
    /// instead; the header wins when both are present. It is never stored as
    /// the center's key.
    #[serde(default)]
    #[schema(deprecated)]
    pub api_key: Option<String>,
    /// A center registered with the master key starts with its code as name.
    #[serde(default)]
    #[validate(length(min = 1, max = 255), custom(function = "reject_nul_character"))]
    #[schema(min_length = 1, max_length = 255)]
    pub name: Option<String>,
    #[serde(default)]
    #[validate(length(max = 100), custom(function = "reject_nul_character"))]
    #[schema(max_length = 100)]
    pub city: Option<String>,
    #[serde(default)]
    #[validate(length(max = 100), custom(function = "reject_nul_character"))]
    #[schema(max_length = 100)]
    pub country: Option<String>,
    /// Also accepts 0 and 1, and the strings `"true"`, `"false"`, `"1"` and `"0"`.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub is_active: Option<bool>,
}

/// Parses an RFC 3339 timestamp; one without an offset is taken as UTC.
fn timestamp<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<DateTime<FixedOffset>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_timestamp(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "invalid timestamp {text:?}; expected RFC 3339, such as 2025-11-17T22:30:00-04:00"
        ))
    })
}

pub fn parse_timestamp(text: &str) -> Option<DateTime<FixedOffset>> {
    let text = text.trim();
    if let Ok(parsed) = DateTime::parse_from_rfc3339(text) {
        return Some(parsed);
    }
    // Python's isoformat() may separate date and time with a space.
    let normalized = text.replacen(' ', "T", 1);
    if let Ok(parsed) = DateTime::parse_from_rfc3339(&normalized) {
        return Some(parsed);
    }
    let naive = NaiveDateTime::parse_from_str(&normalized, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(&normalized, "%Y-%m-%dT%H:%M"))
        .ok()?;
    Some(naive.and_utc().fixed_offset())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_their_own_offset() {
        let late = parse_timestamp("2025-11-17T22:30:00-04:00").unwrap();
        assert_eq!(late.date_naive().to_string(), "2025-11-17");
        let naive = parse_timestamp("2025-11-17T22:30:00").unwrap();
        assert_eq!(naive.offset().local_minus_utc(), 0);
        assert!(parse_timestamp("2025-11-17 22:30:00.123456+02:00").is_some());
        assert!(parse_timestamp("2025-11-17T22:30:00Z").is_some());
        assert!(parse_timestamp("yesterday").is_none());
        assert!(parse_timestamp("2025-13-01T00:00:00").is_none());
    }

    #[test]
    fn dates_after_tomorrow_are_rejected() {
        let today = Utc::now().date_naive();
        assert!(not_after_tomorrow(&today).is_ok());
        assert!(not_after_tomorrow(&(today + Days::new(1))).is_ok());
        assert!(not_after_tomorrow(&(today + Days::new(2))).is_err());
    }

    #[test]
    fn dates_before_year_one_are_rejected() {
        let first = NaiveDate::from_ymd_opt(1, 1, 1).unwrap();
        assert!(not_before_year_one(&first).is_ok());
        assert!(not_before_year_one(&first.pred_opt().unwrap()).is_err());
        let signed = NaiveDate::from_ymd_opt(-7972, 12, 3).unwrap();
        assert!(not_before_year_one(&signed).is_err());
        let signed_timestamp = parse_timestamp("-16704-12-03T22:30:00").unwrap();
        assert!(check_event_day(&signed_timestamp).is_err());
    }
}
