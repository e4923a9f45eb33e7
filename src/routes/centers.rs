//! Center metadata and data removal: `PUT /kpi/centers/{code}` and
//! `DELETE /kpi/centers/{code}/data`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{delete, put};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{authenticate_write, ClientIp};
use crate::auth::{self, AuthError, AuthFailure, Caller, PresentedKey};
use crate::error::{ApiError, FieldError, ProblemDocument};
use crate::extract::{parse, JsonObject};
use crate::limits::Group;
use crate::model::{reject_nul_character, CenterUpdate};
use crate::store::CenterChanges;
use crate::SharedState;

const INVALID_DETAIL: &str = "Invalid center code or API key";

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/kpi/centers/{code}", put(update_center))
        .route("/kpi/centers/{code}/data", delete(delete_center_data))
}

fn check_code(code: &str) -> Result<(), ApiError> {
    if (1..=50).contains(&code.chars().count()) {
        return reject_nul_character(code).map_err(|error| {
            let message = error.message.unwrap_or_default();
            ApiError::Validation(vec![FieldError::new(
                vec!["path".into(), "code".into()],
                message,
                error.code,
            )])
        });
    }
    Err(ApiError::Validation(vec![FieldError::new(
        vec!["path".into(), "code".into()],
        "must have from 1 to 50 characters",
        "string_too_long",
    )]))
}

/// The response of `PUT /kpi/centers/{code}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CenterUpdated {
    #[schema(example = "Center metadata updated successfully")]
    message: &'static str,
    center_code: String,
    center_name: String,
}

/// The response of `DELETE /kpi/centers/{code}/data`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CenterDataDeleted {
    center_code: String,
    /// Rows removed, by table: every KPI table, the enhanced ones too.
    #[schema(example = json!({"daily_metrics": 3, "test_summaries": 6, "species_summaries": 2,
        "breed_summaries": 1, "performance_metrics": 0, "module_metrics": 0,
        "system_usage_metrics": 0, "payment_method_metrics": 0}))]
    deleted: BTreeMap<&'static str, u64>,
    #[schema(example = "KPI data deleted successfully")]
    message: &'static str,
}

/// Updates a center's metadata. Only the master key may register a new
/// center, and no request here ever changes a key: an `api_key` in the body
/// is read as the (deprecated) credential, never stored.
#[utoipa::path(
    put,
    path = "/kpi/centers/{code}",
    tag = "write",
    params(("code" = String, Path, description = "Center code, 1 to 50 characters")),
    request_body(content = CenterUpdate, description = "The fields to change. An empty body is accepted too and changes no field."),
    security(("center_api_key" = [])),
    responses(
        (status = 200, description = "Center updated, or registered with the master key", body = CenterUpdated),
        (status = 401, description = "Missing, invalid or expired API key, or an unknown center without the master key", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 1 MiB", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid code or fields", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Submit rate limit exceeded", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or the request timed out", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn update_center(
    State(state): State<SharedState>,
    ClientIp(client_ip): ClientIp,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: Option<JsonObject>,
) -> Result<Json<CenterUpdated>, ApiError> {
    check_code(&code)?;
    let body = body.map_or_else(|| Value::Object(Map::new()), |JsonObject(value)| value);
    let update: CenterUpdate = parse(&body).map_err(ApiError::Validation)?;
    // Changes to a center, and deletions, authenticate against its current
    // row, never a cached one that may predate a deactivation.
    state.centers.forget(&code);
    let caller = authenticate_write(
        &state,
        &headers,
        update.api_key.as_deref(),
        &code,
        client_ip,
        Group::Submit,
        INVALID_DETAIL,
    )
    .await?;
    // Only the master key may change an inactive center, so that a center
    // deactivated by an operator cannot reactivate itself.
    if let Caller::CenterKey(center) = &caller {
        if !center.is_active {
            tracing::warn!(center_code = ?code, client_ip = %client_ip, "metadata update for an inactive center");
            return Err(ApiError::Unauthorized(INVALID_DETAIL.to_owned()));
        }
    }
    let changes = CenterChanges {
        name: update.name,
        city: update.city,
        country: update.country,
        is_active: update.is_active,
    };
    let (store, target) = (state.store.clone(), code.clone());
    let center =
        super::complete(async move { store.upsert_center(&target, &changes).await }).await?;
    state.centers.forget(&code);
    if matches!(caller, Caller::MasterForUnknownCenter) {
        tracing::info!(center_code = ?code, "center registered with the master key");
    } else {
        tracing::info!(center_code = ?code, "center metadata updated");
    }
    Ok(Json(CenterUpdated {
        message: "Center metadata updated successfully",
        center_code: center.code,
        center_name: center.name,
    }))
}

/// Deletes every KPI row of a center. An unknown center and a wrong key get
/// the same 404, so the response does not reveal whether the center exists.
#[utoipa::path(
    delete,
    path = "/kpi/centers/{code}/data",
    tag = "write",
    params(("code" = String, Path, description = "Center code, 1 to 50 characters")),
    security(("center_api_key" = [])),
    responses(
        (status = 200, description = "Every KPI row of the center deleted; the center stays", body = CenterDataDeleted),
        (status = 401, description = "Missing API key", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "Unknown center, or an invalid or expired API key", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid code", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Submit rate limit exceeded", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or the request timed out", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn delete_center_data(
    State(state): State<SharedState>,
    ClientIp(client_ip): ClientIp,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Result<Json<CenterDataDeleted>, ApiError> {
    check_code(&code)?;
    tracing::Span::current().record("center_code", code.as_str());
    let not_found = || ApiError::NotFound(format!("Center {code} not found or invalid API key"));
    super::check_auth_throttle(&state, client_ip).await?;
    state.centers.forget(&code);
    let presented = PresentedKey::from_request(&headers, None);
    let caller = match auth::authenticate(
        state.store.as_ref(),
        &state.centers,
        state.master_key.as_ref(),
        &code,
        presented,
    )
    .await
    {
        Ok(caller) => caller,
        Err(AuthError::Store(err)) => return Err(err.into()),
        Err(AuthError::Failed(AuthFailure::MissingKey)) => {
            return Err(super::unauthorized(AuthFailure::MissingKey, INVALID_DETAIL));
        }
        Err(AuthError::Failed(failure)) => {
            state.limits.record_auth_failure(client_ip).await;
            auth::log_failure(failure, &code, client_ip);
            return Err(not_found());
        }
    };
    let Some(center) = caller.center() else {
        return Err(not_found());
    };
    // An inactive center's own key is shut out here too; the master key is not.
    if matches!(caller, Caller::CenterKey(_)) && !center.is_active {
        tracing::warn!(center_code = ?code, client_ip = %client_ip, "data deletion for an inactive center");
        return Err(not_found());
    }
    state.limits.check_center(Group::Submit, &code).await?;
    let (store, center_id) = (state.store.clone(), center.id);
    let deleted = super::complete(async move { store.delete_center_data(center_id).await }).await?;
    let total: u64 = deleted.iter().map(|(_, rows)| rows).sum();
    tracing::warn!(center_code = ?code, rows = total, "center KPI data deleted");
    Ok(Json(CenterDataDeleted {
        center_code: code,
        deleted: deleted.into_iter().collect(),
        message: "KPI data deleted successfully",
    }))
}
