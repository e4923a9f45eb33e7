//! The JSON read API, behind the dashboard credentials:
//! `GET /kpi/centers`, `GET /kpi/centers/{code}/metrics` and
//! `GET /kpi/stats/summary`.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Days, NaiveDate, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::dashboard_auth::Administrator;
use crate::error::{ApiError, FieldError};
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

fn center_json(center: &Center) -> Value {
    json!({
        "id": center.id,
        "code": center.code,
        "name": center.name,
        "country": center.country,
        "city": center.city,
        "is_active": i32::from(center.is_active),
        "registered_at": timestamp(center.registered_at),
        "last_sync_at": center.last_sync_at.map(timestamp),
    })
}

fn day_json(row: &DayRow) -> Value {
    json!({
        "id": row.id,
        "center_id": row.center_id,
        "date": row.date.to_string(),
        "total_orders": row.total_orders,
        "total_results": row.total_results,
        "total_pets": row.total_pets,
        "total_owners": row.total_owners,
        "created_at": timestamp(row.created_at),
    })
}

async fn list_centers(
    _: Administrator,
    State(state): State<SharedState>,
) -> Result<Json<Value>, ApiError> {
    let centers = state.store.centers().await?;
    Ok(Json(centers.iter().map(center_json).collect()))
}

async fn center_metrics(
    _: Administrator,
    State(state): State<SharedState>,
    Path(code): Path<String>,
    window: Window,
) -> Result<Json<Value>, ApiError> {
    // No stored code contains NUL, and PostgreSQL rejects it in a query.
    if code.contains('\0') {
        return Err(ApiError::NotFound("Center not found".to_owned()));
    }
    let rows = state
        .store
        .center_days(&code, window.from, window.to)
        .await?
        .ok_or_else(|| ApiError::NotFound("Center not found".to_owned()))?;
    Ok(Json(rows.iter().map(day_json).collect()))
}

async fn summary(
    _: Administrator,
    State(state): State<SharedState>,
    window: Window,
) -> Result<Json<Value>, ApiError> {
    let summary = state.store.summary(window.from, window.to).await?;
    Ok(Json(json!({
        "total_centers": summary.total_centers,
        "active_centers": summary.active_centers,
        "date_range": {"from": window.from.to_string(), "to": window.to.to_string(), "days": window.days},
        "total_orders": summary.total_orders,
        "total_results": summary.total_results,
        "total_pets": summary.total_pets,
    })))
}
