//! Daily batches: `POST /kpi/submit` and `POST /kpi/submit/enhanced`.

use std::collections::HashMap;
use std::hash::Hash;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Serialize;
use utoipa::ToSchema;

use super::{authenticate_write, require_active, ClientIp};
use crate::error::{ApiError, FieldError, ProblemDocument};
use crate::extract::{parse, JsonObject};
use crate::lenient::INT_MAX;
use crate::limits::Group;
use crate::model::{EnhancedParts, EnhancedSubmitBody, SubmitBody};
use crate::store::{
    BreedRow, DayBatch, DayTotals, ModuleRow, PaymentMethodRow, PerformanceRow, SystemUsageRow,
    TestRow,
};
use crate::SharedState;

const INVALID_DETAIL: &str = "Invalid center code or API key";

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/kpi/submit", post(submit))
        .route("/kpi/submit/enhanced", post(submit_enhanced))
}

/// The response of `POST /kpi/submit`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubmitResponse {
    #[schema(example = "Metrics submitted successfully")]
    message: &'static str,
    /// The center's name.
    center: String,
    date: NaiveDate,
    total_orders: i64,
}

/// The response of `POST /kpi/submit/enhanced`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnhancedSubmitResponse {
    #[schema(example = "Enhanced metrics submitted successfully")]
    message: &'static str,
    /// The center's name.
    center: String,
    date: NaiveDate,
    saved: SavedParts,
}

/// Counts of the rows an enhanced batch stored, after merging duplicates, and
/// flags for the single-row parts it stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct SavedParts {
    /// Always true: the day's totals are always stored.
    daily_metrics: bool,
    tests: usize,
    species: usize,
    breeds: usize,
    performance: bool,
    modules: usize,
    system_usage: bool,
    payment_methods: usize,
}

/// Stores one center's totals for one day, replacing what was stored for that day.
#[utoipa::path(
    post,
    path = "/kpi/submit",
    tag = "write",
    request_body = SubmitBody,
    security(("center_api_key" = [])),
    responses(
        (status = 201, description = "Batch stored", body = SubmitResponse),
        (status = 401, description = "Missing or invalid API key, or an unknown or inactive center", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 1 MiB", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Submit rate limit exceeded", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or the request timed out", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn submit(
    State(state): State<SharedState>,
    ClientIp(client_ip): ClientIp,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    let base: SubmitBody = parse(&body).map_err(ApiError::Validation)?;
    let batch = day_batch(&base).map_err(ApiError::Validation)?;
    let center = authorize(&state, &headers, &base, client_ip).await?;
    let (store, stored) = (state.store.clone(), batch.clone());
    super::complete(async move { store.save_day(center.0, &stored).await }).await?;
    state.metrics.batch_stored(&base.center_code, "submit");
    tracing::info!(center_code = ?base.center_code, date = %base.date, "daily batch stored");
    let response = SubmitResponse {
        message: "Metrics submitted successfully",
        center: center.1,
        date: base.date,
        total_orders: base.total_orders,
    };
    Ok((StatusCode::CREATED, Json(response)))
}

/// Stores a batch with the optional enhanced parts.
#[utoipa::path(
    post,
    path = "/kpi/submit/enhanced",
    tag = "write",
    request_body = EnhancedSubmitBody,
    security(("center_api_key" = [])),
    responses(
        (status = 201, description = "Batch stored", body = EnhancedSubmitResponse),
        (status = 401, description = "Missing or invalid API key, or an unknown or inactive center", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 1 MiB", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or a module or payment method listed twice", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Submit rate limit exceeded", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or the request timed out", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn submit_enhanced(
    State(state): State<SharedState>,
    ClientIp(client_ip): ClientIp,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<EnhancedSubmitResponse>), ApiError> {
    // Both parts are read from the one body, and their errors reported together.
    let (base, extras) = match (parse::<SubmitBody>(&body), parse::<EnhancedParts>(&body)) {
        (Ok(base), Ok(extras)) => (base, extras),
        (base, extras) => {
            let errors = base
                .err()
                .into_iter()
                .chain(extras.err())
                .flatten()
                .collect();
            return Err(ApiError::Validation(errors));
        }
    };
    let mut batch = day_batch(&base).map_err(ApiError::Validation)?;
    add_enhanced(&mut batch, &extras).map_err(ApiError::Validation)?;
    let center = authorize(&state, &headers, &base, client_ip).await?;
    let (store, stored) = (state.store.clone(), batch.clone());
    super::complete(async move { store.save_day(center.0, &stored).await }).await?;
    state.metrics.batch_stored(&base.center_code, "enhanced");
    tracing::info!(center_code = ?base.center_code, date = %base.date, "enhanced daily batch stored");
    let response = EnhancedSubmitResponse {
        message: "Enhanced metrics submitted successfully",
        center: center.1,
        date: base.date,
        saved: SavedParts {
            daily_metrics: true,
            tests: batch.tests.len(),
            species: batch.species.len(),
            breeds: batch.breeds.len(),
            performance: batch.performance.is_some(),
            modules: batch.modules.len(),
            system_usage: batch.system_usage.is_some(),
            payment_methods: batch.payment_methods.len(),
        },
    };
    Ok((StatusCode::CREATED, Json(response)))
}

/// Authenticates a batch and returns the center's id and name. A batch may
/// only go to a registered, active center.
async fn authorize(
    state: &SharedState,
    headers: &HeaderMap,
    base: &SubmitBody,
    client_ip: std::net::IpAddr,
) -> Result<(i32, String), ApiError> {
    let caller = authenticate_write(
        state,
        headers,
        base.api_key.as_deref(),
        &base.center_code,
        client_ip,
        Group::Submit,
        INVALID_DETAIL,
    )
    .await?;
    require_active(&caller, client_ip, INVALID_DETAIL)?;
    match caller.center() {
        Some(center) => Ok((center.id, center.name.clone())),
        None => {
            tracing::warn!(center_code = ?base.center_code, client_ip = %client_ip, "batch for an unregistered center");
            Err(ApiError::Unauthorized(INVALID_DETAIL.to_owned()))
        }
    }
}

/// Builds the stored batch, merging list entries with the same key by
/// adding their counts. A merged count beyond the 32-bit column is reported
/// at the entry that overflowed it.
fn day_batch(body: &SubmitBody) -> Result<DayBatch, Vec<FieldError>> {
    let mut errors = Vec::new();
    let tests = merge(
        body.tests
            .iter()
            .map(|t| (t.code.clone(), t.count, t.name.clone())),
        "tests",
        &mut errors,
    )
    .into_iter()
    .map(|(code, count, name)| TestRow { code, name, count })
    .collect();
    let species = merge(
        body.species
            .iter()
            .map(|s| (s.species.clone(), s.count, ())),
        "species",
        &mut errors,
    )
    .into_iter()
    .map(|(species, count, ())| (species, count))
    .collect();
    let breeds = merge(
        body.breeds
            .iter()
            // An empty species is no species, as the unique index reads it.
            .map(|b| {
                (
                    (b.breed.clone(), b.species.clone().filter(|s| !s.is_empty())),
                    b.count,
                    (),
                )
            }),
        "breeds",
        &mut errors,
    )
    .into_iter()
    .map(|((breed, species), count, ())| BreedRow {
        breed,
        species,
        count,
    })
    .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(DayBatch {
        date: body.date,
        totals: DayTotals {
            orders: int(body.total_orders),
            results: int(body.total_results),
            pets: int(body.total_pets),
            owners: int(body.total_owners),
        },
        tests,
        species,
        breeds,
        ..DayBatch::default()
    })
}

/// Merges entries by key in first-seen order. For tests the first non-null
/// name wins.
fn merge<K: Eq + Hash + Clone, X: Clone + MaybeEmpty>(
    entries: impl Iterator<Item = (K, i64, X)>,
    list: &'static str,
    errors: &mut Vec<FieldError>,
) -> Vec<(K, i32, X)> {
    let mut merged: Vec<(K, i64, X)> = Vec::new();
    let mut positions: HashMap<K, usize> = HashMap::new();
    for (index, (key, count, extra)) in entries.enumerate() {
        let Some(&position) = positions.get(&key) else {
            positions.insert(key.clone(), merged.len());
            merged.push((key, count, extra));
            continue;
        };
        let entry = &mut merged[position];
        entry.1 += count;
        if entry.2.is_empty() {
            entry.2 = extra;
        }
        if entry.1 > INT_MAX {
            errors.push(FieldError::new(
                vec!["body".into(), list.into(), index.into(), "count".into()],
                format!(
                    "merged count of duplicate entries must be less than or equal to {INT_MAX}"
                ),
                "less_than_equal",
            ));
        }
    }
    merged
        .into_iter()
        .map(|(key, count, extra)| (key, int(count), extra))
        .collect()
}

/// Extra data carried with a merged entry; an empty one is replaced by a later one.
trait MaybeEmpty {
    fn is_empty(&self) -> bool;
}

impl MaybeEmpty for () {
    fn is_empty(&self) -> bool {
        false
    }
}

impl MaybeEmpty for Option<String> {
    fn is_empty(&self) -> bool {
        self.is_none()
    }
}

/// Narrows a validated value; validation has already bounded it to 0..=2^31-1.
fn int(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn opt_int(value: Option<i64>) -> Option<i32> {
    value.map(int)
}

fn add_enhanced(batch: &mut DayBatch, extras: &EnhancedParts) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    batch.performance = extras.performance.as_ref().map(|p| PerformanceRow {
        avg_order_processing_time: opt_int(p.avg_order_processing_time),
        peak_hour: opt_int(p.peak_hour),
        peak_hour_orders: opt_int(p.peak_hour_orders),
        completion_rate: opt_int(p.completion_rate),
        same_day_completion: opt_int(p.same_day_completion),
        morning_orders: int(p.morning_orders),
        afternoon_orders: int(p.afternoon_orders),
        evening_orders: int(p.evening_orders),
        night_orders: int(p.night_orders),
    });
    batch.system_usage = extras.system_usage.as_ref().map(|u| SystemUsageRow {
        total_active_users: int(u.total_active_users),
        peak_concurrent_users: int(u.peak_concurrent_users),
        avg_session_duration: opt_int(u.avg_session_duration),
        web_access_count: int(u.web_access_count),
        mobile_access_count: int(u.mobile_access_count),
        desktop_access_count: int(u.desktop_access_count),
        total_workstations: int(u.total_workstations),
    });
    batch.modules = unique_by_name(
        extras.modules.iter().map(|m| {
            let row = ModuleRow {
                module_name: m.module_name.clone(),
                operations_count: int(m.operations_count),
                active_users: int(m.active_users),
                total_revenue: opt_int(m.total_revenue),
                avg_transaction: opt_int(m.avg_transaction),
            };
            (m.module_name.clone(), row)
        }),
        ("modules", "module_name"),
        &mut errors,
    );
    batch.payment_methods = unique_by_name(
        extras.payment_methods.iter().map(|p| {
            let row = PaymentMethodRow {
                payment_method: p.payment_method.clone(),
                transaction_count: int(p.transaction_count),
                total_amount: opt_int(p.total_amount),
            };
            (p.payment_method.clone(), row)
        }),
        ("payment_methods", "payment_method"),
        &mut errors,
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Module and payment-method rows carry amounts that cannot be merged
/// meaningfully (averages), so a name listed twice is rejected.
fn unique_by_name<R>(
    rows: impl Iterator<Item = (String, R)>,
    (list, field): (&'static str, &'static str),
    errors: &mut Vec<FieldError>,
) -> Vec<R> {
    let mut seen = std::collections::HashSet::new();
    let mut unique = Vec::new();
    for (index, (name, row)) in rows.enumerate() {
        if seen.insert(name) {
            unique.push(row);
        } else {
            errors.push(FieldError::new(
                vec!["body".into(), list.into(), index.into(), field.into()],
                format!("{field} is listed more than once"),
                "duplicate",
            ));
        }
    }
    unique
}
