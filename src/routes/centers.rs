//! Center metadata and data removal: `PUT /kpi/centers/{code}` and
//! `DELETE /kpi/centers/{code}/data`.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{delete, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::{authenticate_write, ClientIp};
use crate::auth::{self, AuthError, AuthFailure, Caller, PresentedKey};
use crate::error::{ApiError, FieldError};
use crate::extract::{parse, JsonObject};
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

/// Updates a center's metadata. Only the master key may register a new
/// center, and no request here ever changes a key: an `api_key` in the body
/// is read as the (deprecated) credential, never stored.
async fn update_center(
    State(state): State<SharedState>,
    ClientIp(client_ip): ClientIp,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: Option<JsonObject>,
) -> Result<Json<Value>, ApiError> {
    check_code(&code)?;
    let body = body.map_or_else(|| Value::Object(Map::new()), |JsonObject(value)| value);
    let update: CenterUpdate = parse(&body).map_err(ApiError::Validation)?;
    let caller = authenticate_write(
        &state,
        &headers,
        update.api_key.as_deref(),
        &code,
        client_ip,
        INVALID_DETAIL,
    )
    .await?;
    let changes = CenterChanges {
        name: update.name,
        city: update.city,
        country: update.country,
        is_active: update.is_active,
    };
    let center = state.store.upsert_center(&code, &changes).await?;
    if matches!(caller, Caller::MasterForUnknownCenter) {
        tracing::info!(center_code = %code, "center registered with the master key");
    } else {
        tracing::info!(center_code = %code, "center metadata updated");
    }
    Ok(Json(json!({
        "message": "Center metadata updated successfully",
        "center_code": center.code,
        "center_name": center.name,
    })))
}

/// Deletes every KPI row of a center. An unknown center and a wrong key get
/// the same 404, so the response does not reveal whether the center exists.
async fn delete_center_data(
    State(state): State<SharedState>,
    ClientIp(client_ip): ClientIp,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_code(&code)?;
    tracing::Span::current().record("center_code", code.as_str());
    let not_found = || ApiError::NotFound(format!("Center {code} not found or invalid API key"));
    let presented = PresentedKey::from_request(&headers, None);
    let caller = match auth::authenticate(
        state.store.as_ref(),
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
            auth::log_failure(failure, &code, client_ip);
            return Err(not_found());
        }
    };
    let Some(center) = caller.center() else {
        return Err(not_found());
    };
    let deleted = state.store.delete_center_data(center.id).await?;
    let total: u64 = deleted.iter().map(|(_, rows)| rows).sum();
    tracing::warn!(center_code = %code, rows = total, "center KPI data deleted");
    let counts: Map<String, Value> = deleted
        .into_iter()
        .map(|(table, rows)| (table.to_owned(), Value::from(rows)))
        .collect();
    Ok(Json(json!({
        "center_code": code,
        "deleted": counts,
        "message": "KPI data deleted successfully",
    })))
}
