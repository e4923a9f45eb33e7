//! The JSON read API, behind the dashboard credentials:
//! `GET /kpi/centers`, `GET /kpi/centers/{code}/metrics` and
//! `GET /kpi/stats/summary`.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Days, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use crate::dashboard_auth::Administrator;
use crate::error::{ApiError, FieldError, ProblemDocument};
use crate::store::{Center, DayRow};
use crate::SharedState;

/// The widest window a read may ask for, in days (about ten years).
pub const MAX_DAYS: u64 = 3650;

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/kpi/centers", get(list_centers))
        .route("/kpi/centers/{code}/metrics", get(center_metrics))
        .route("/kpi/stats/summary", get(summary))
}

/// A date window ending today (UTC) from the `days` query parameter: 0 means
/// today only, the default is 30.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub days: u64,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Window {
    pub fn ending_today(days: u64) -> Self {
        let to = Utc::now().date_naive();
        Self {
            days,
            from: to - Days::new(days),
            to,
        }
    }
}

/// The `days` query parameter as the OpenAPI document shows it; [`Window`]
/// parses it.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only the OpenAPI document uses this type.
pub struct DaysParam {
    /// Days before today (UTC) that the window starts; 0 means today only.
    #[param(minimum = 0, maximum = 3650, default = 30)]
    days: Option<u64>,
}

impl<S: Send + Sync> FromRequestParts<S> for Window {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let invalid = |msg: String| {
            ApiError::Validation(vec![FieldError::new(
                vec!["query".into(), "days".into()],
                msg,
                "int_range",
            )])
        };
        let Query(query) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|err| invalid(format!("invalid query string: {}", err.body_text())))?;
        let Some(text) = query.get("days") else {
            return Ok(Window::ending_today(30));
        };
        match text.trim().parse::<u64>() {
            Ok(days) if days <= MAX_DAYS => Ok(Window::ending_today(days)),
            _ => Err(invalid(format!(
                "days must be an integer from 0 to {MAX_DAYS}, got {text:?}"
            ))),
        }
    }
}

/// Formats a timestamp as RFC 3339 in UTC with a `Z` suffix.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A registered center; keys and their hashes are never shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CenterView {
    id: i32,
    code: String,
    name: String,
    country: Option<String>,
    city: Option<String>,
    /// 1 for an active center, 0 for an inactive one.
    #[schema(minimum = 0, maximum = 1)]
    is_active: i32,
    /// RFC 3339 in UTC with a `Z` suffix.
    #[schema(format = DateTime)]
    registered_at: String,
    /// RFC 3339 in UTC with a `Z` suffix. Null until the center's first batch
    /// or event, and again after its data is deleted.
    #[schema(format = DateTime)]
    last_sync_at: Option<String>,
}

impl From<&Center> for CenterView {
    fn from(center: &Center) -> Self {
        Self {
            id: center.id,
            code: center.code.clone(),
            name: center.name.clone(),
            country: center.country.clone(),
            city: center.city.clone(),
            is_active: i32::from(center.is_active),
            registered_at: timestamp(center.registered_at),
            last_sync_at: center.last_sync_at.map(timestamp),
        }
    }
}

/// A center's totals for one day.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayView {
    id: i32,
    center_id: i32,
    date: NaiveDate,
    total_orders: i32,
    total_results: i32,
    total_pets: i32,
    total_owners: i32,
    /// RFC 3339 in UTC with a `Z` suffix.
    #[schema(format = DateTime)]
    created_at: String,
}

impl From<&DayRow> for DayView {
    fn from(row: &DayRow) -> Self {
        Self {
            id: row.id,
            center_id: row.center_id,
            date: row.date,
            total_orders: row.total_orders,
            total_results: row.total_results,
            total_pets: row.total_pets,
            total_owners: row.total_owners,
            created_at: timestamp(row.created_at),
        }
    }
}

/// Network-wide totals over a window.
#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryView {
    total_centers: i64,
    active_centers: i64,
    date_range: DateRange,
    total_orders: i64,
    total_results: i64,
    total_pets: i64,
}

/// The window a read covers, both ends included.
#[derive(Debug, Serialize, ToSchema)]
pub struct DateRange {
    from: NaiveDate,
    to: NaiveDate,
    days: u64,
}

/// Lists every center, ordered by code.
#[utoipa::path(
    get,
    path = "/kpi/centers",
    tag = "read",
    security(("dashboard_credentials" = [])),
    responses(
        (status = 200, description = "Every center", body = Vec<CenterView>),
        (status = 401, description = "Missing or wrong dashboard credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Dashboard rate limit exceeded", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or the request timed out", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn list_centers(
    _: Administrator,
    State(state): State<SharedState>,
) -> Result<Json<Vec<CenterView>>, ApiError> {
    let centers = state.store.centers().await?;
    Ok(Json(centers.iter().map(CenterView::from).collect()))
}

/// Lists a center's daily totals in the window, newest first.
#[utoipa::path(
    get,
    path = "/kpi/centers/{code}/metrics",
    tag = "read",
    params(("code" = String, Path, description = "Center code"), DaysParam),
    security(("dashboard_credentials" = [])),
    responses(
        (status = 200, description = "The center's days in the window", body = Vec<DayView>),
        (status = 401, description = "Missing or wrong dashboard credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "Unknown center", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid `days`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Dashboard rate limit exceeded", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or the request timed out", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn center_metrics(
    _: Administrator,
    State(state): State<SharedState>,
    Path(code): Path<String>,
    window: Window,
) -> Result<Json<Vec<DayView>>, ApiError> {
    // No stored code contains NUL, and PostgreSQL rejects it in a query.
    if code.contains('\0') {
        return Err(ApiError::NotFound("Center not found".to_owned()));
    }
    let rows = state
        .store
        .center_days(&code, window.from, window.to)
        .await?
        .ok_or_else(|| ApiError::NotFound("Center not found".to_owned()))?;
    Ok(Json(rows.iter().map(DayView::from).collect()))
}

/// Returns the network-wide totals over the window.
#[utoipa::path(
    get,
    path = "/kpi/stats/summary",
    tag = "read",
    params(DaysParam),
    security(("dashboard_credentials" = [])),
    responses(
        (status = 200, description = "Totals over the window", body = SummaryView),
        (status = 401, description = "Missing or wrong dashboard credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid `days`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Dashboard rate limit exceeded", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or the request timed out", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn summary(
    _: Administrator,
    State(state): State<SharedState>,
    window: Window,
) -> Result<Json<SummaryView>, ApiError> {
    let summary = state.store.summary(window.from, window.to).await?;
    Ok(Json(SummaryView {
        total_centers: summary.total_centers,
        active_centers: summary.active_centers,
        date_range: DateRange {
            from: window.from,
            to: window.to,
            days: window.days,
        },
        total_orders: summary.total_orders,
        total_results: summary.total_results,
        total_pets: summary.total_pets,
    }))
}
